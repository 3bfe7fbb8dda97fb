"""The RL math: advantages, the PPO-clip policy loss, KL estimators, loss aggregation and DAPO's filters.

Every function takes tensors and scalars (never a config object) and is looked up by name in a plain dict:
ADVANTAGES, POLICY_LOSSES, KL_ESTIMATORS, AGGREGATIONS. Functions that have something to log return
`(value, metrics)`; metrics are 0-dim detached tensors under the names the loop logs ("clip_frac_high"), no GPU sync
here (the loop calls float() when it logs). An Algorithm (bottom) is the frozen set of names and scalars one run uses.

Shapes, once for the whole module:
    B  sequences in the batch = prompts x G, grouped contiguously (rows g*G .. g*G+G-1 share one prompt)
    G  samples per prompt
    T  response tokens (right-padded; prompt tokens are not part of these tensors)
    rewards (B,)  one scalar reward per sequence
    mask    (B,T) 1 where a token is a policy action that counts in the loss, 0 for padding and forced tokens
    logp, old_logp, ref_logp, advantages, loss_mat  (B,T)

How the three presets differ (PRESETS at the bottom) is only: which advantage, which aggregation, the clip range,
the KL term and DAPO's sampling filters. Nothing else in the RL loop should know which preset is running.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, NamedTuple

import torch

# ----------------------------------------------------------------------------------------------------------------
# Advantages: rewards (B,) -> per-token advantages (B,T), zero on masked tokens.


class Ranks(NamedTuple):
    """How the statistics of a whole batch are taken when each data-parallel rank holds a share of it: sum and max
    map a 1-D tensor to its element-wise sum / max over ranks (train_on passes runtime.sum_over_ranks and
    max_over_ranks). Group statistics need none: a group's G rows are always on one rank."""
    sum: Callable[[torch.Tensor], torch.Tensor]
    max: Callable[[torch.Tensor], torch.Tensor]


ONE_RANK = Ranks(sum=lambda t: t, max=lambda t: t)


def _group_centered(rewards: torch.Tensor, G: int):
    """(r - group mean) as (B/G, G), exactly zero in groups whose rewards are all equal; also the grouped rewards."""
    if rewards.dim() != 1 or rewards.shape[0] % G:
        raise ValueError(f"rewards must be (B,) with B a multiple of G={G}, got {tuple(rewards.shape)}")
    r = rewards.float().view(-1, G)  # (B/G, G)
    flat = r.amax(-1, keepdim=True) == r.amin(-1, keepdim=True)  # (B/G, 1)
    # subtle: the float mean of G equal numbers need not equal them (3 x 0.1), and (r - mean) / (0 + eps) would turn
    # that rounding error into an advantage of ~0.01. Zero-variance groups are zeroed explicitly.
    centered = (r - r.mean(-1, keepdim=True)).masked_fill(flat, 0.0)
    return centered, r, flat


def _no_kl(name: str, kl, kl_coef: float):
    if kl is not None and kl_coef:
        raise ValueError(f"{name}: KL as a reward penalty needs per-token returns; use 'reinforce_pp' or a KL loss")


def _broadcast(adv_seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return adv_seq.reshape(-1, 1) * mask.to(adv_seq.dtype)  # (B,1) * (B,T) -> (B,T)


def grpo_advantages(rewards, mask, G: int, eps: float = 1e-6, kl=None, kl_coef: float = 0.0,
                    ranks: Ranks = ONE_RANK):
    """GRPO (DeepSeekMath eq. 3): A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token.

    std is the unbiased sample std (torch.std, as DeepSeekMath, TRL and verl use). A zero-variance group gives 0.
    grpo_advantages(torch.tensor([1., 0.]), torch.ones(2, 1), G=2)[0] == [[0.7071], [-0.7071]]  (std = 0.7071)
    """
    _no_kl("grpo", kl, kl_coef)
    centered, r, flat = _group_centered(rewards, G)
    std = r.std(-1, keepdim=True) if G > 1 else torch.zeros_like(centered[:, :1])
    adv = torch.where(flat, 0.0, centered / (std + eps))  # where(): G=1 has std NaN, masked off here
    metrics = {"zero_std_frac": flat.float().mean(), "reward/group_std": std.mean()}
    return _broadcast(adv, mask), metrics


def grpo_batch_std_advantages(rewards, mask, G: int, eps: float = 1e-6, kl=None, kl_coef: float = 0.0,
                              ranks: Ranks = ONE_RANK):
    """(r - group mean) / std of every reward in the batch: "Lite PPO" (Liu et al. 2025, "Tricks or Traps"), TRL's
    scale_rewards="batch".

    Dividing by the group's own std gives a group whose rewards differ only by a small penalty (every answer wrong,
    some longer) advantages as large as a right-vs-wrong group's; the batch std keeps each group's advantages in
    proportion to its reward spread. The std is over the whole batch, every rank's share of it (`ranks`).
    grpo_batch_std_advantages(torch.tensor([1., 0., 0., -.1]), torch.ones(4, 1), G=2)[0]
        == [[0.9637], [-0.9637], [0.0964], [-0.0964]]  (batch std = 0.5188)
    """
    _no_kl("grpo_batch_std", kl, kl_coef)
    centered, r, flat = _group_centered(rewards, G)
    total, n = ranks.sum(torch.stack([r.sum(), r.new_tensor(r.numel())]))
    squares = ranks.sum(((r - total / n) ** 2).sum().reshape(1))[0]
    std = (squares / (n - 1)).sqrt() if n > 1 else r.new_zeros(())  # unbiased, as torch.std
    adv = torch.where(flat, 0.0, centered / (std + eps))
    return _broadcast(adv, mask), {"zero_std_frac": flat.float().mean(), "reward/batch_std": std}


def dr_grpo_advantages(rewards, mask, G: int, eps: float = 1e-6, kl=None, kl_coef: float = 0.0,
                       ranks: Ranks = ONE_RANK):
    """Dr. GRPO (Liu et al. 2025): A_i = r_i - mean(r_group); no std division, which biases toward easy/hard groups."""
    _no_kl("dr_grpo", kl, kl_coef)
    centered, _, flat = _group_centered(rewards, G)
    return _broadcast(centered, mask), {"zero_std_frac": flat.float().mean()}


def rloo_advantages(rewards, mask, G: int, eps: float = 1e-6, kl=None, kl_coef: float = 0.0,
                    ranks: Ranks = ONE_RANK):
    """RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j, the leave-one-out baseline.

    This equals G/(G-1) * (r_i - mean(r_group)) exactly, so "the paper's G/(G-1) scaling" and "plain leave-one-out"
    are the same estimator; we compute the second form. G must be at least 2.
    rloo_advantages(torch.tensor([1., 0., 0.]), torch.ones(3, 1), G=3)[0] == [[1.], [-0.5], [-0.5]]
    """
    _no_kl("rloo", kl, kl_coef)
    if G < 2:
        raise ValueError("rloo needs G >= 2 samples per prompt")
    centered, _, flat = _group_centered(rewards, G)
    return _broadcast(centered * (G / (G - 1)), mask), {"zero_std_frac": flat.float().mean()}


def fold_kl_into_rewards(rewards, mask, kl=None, kl_coef: float = 0.0):
    """Token-level rewards (B,T): the sequence reward on the last valid token, minus kl_coef * kl on every valid token.

    This is "KL as a reward penalty" (InstructGPT / OpenRLHF's REINFORCE++), the alternative to a KL loss term:
    the penalty then flows through the returns instead of the gradient. `kl` is a per-token estimate (B,T) such as
    kl_k1(logp, ref_logp), computed without grad from the rollout policy.
    fold_kl_into_rewards(torch.tensor([1.]), torch.tensor([[1, 1, 0]]), torch.tensor([[.1, .2, 9.]]), 1.0)
        == [[-0.1, 0.8, 0.0]]
    """
    mask = mask.float()
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & mask.bool()  # (B,T) one-hot on the last valid token
    token_rewards = last.float() * rewards.float().reshape(-1, 1)
    if kl is not None and kl_coef:
        token_rewards = token_rewards - kl_coef * kl.detach().float() * mask
    return token_rewards


def reinforce_pp_advantages(rewards, mask, G: int, eps: float = 1e-6, kl=None, kl_coef: float = 0.0,
                            ranks: Ranks = ONE_RANK):
    """REINFORCE++ with a group baseline (Hu 2025, OpenRLHF "reinforce_baseline").

    1. subtract the group mean from each sequence reward (no std division);
    2. fold the optional KL penalty into token-level rewards (fold_kl_into_rewards);
    3. returns = reverse cumulative sum over tokens (gamma = 1);
    4. whiten across the whole batch: (ret - mean) / (std + eps) with mean and std over all valid tokens of every
       rank (`ranks`); a std within float rounding of zero is zero (every valid token has the same return), and so
       is every advantage then.
    subtle: step 4 shifts every token by the batch mean, so a zero-variance group gets a small nonzero advantage here
    (longer sequences weigh more in a token mean); the other estimators give it exactly zero.
    """
    centered, r, flat = _group_centered(rewards, G)
    mask = mask.float()
    token_rewards = fold_kl_into_rewards(centered.reshape(-1), mask, kl, kl_coef)  # (B,T)
    returns = token_rewards.flip(-1).cumsum(-1).flip(-1) * mask  # (B,T) sum of rewards from t to the end
    total, n = ranks.sum(torch.stack([returns.sum(), mask.sum()]))
    n = n.clamp(min=1)
    mean = total / n
    std = ranks.sum((((returns - mean) * mask) ** 2).sum().reshape(1))[0].div(n).sqrt()
    kl_folded = kl is not None and bool(kl_coef)
    floor = ranks.max(_whitening_rounding(r, flat, token_rewards, returns, n, kl_folded).reshape(1))[0]
    std = std.masked_fill(std <= floor, 0.0)
    adv = torch.where(std > 0, (returns - mean) / (std + eps), 0.0) * mask
    return adv, {"zero_std_frac": flat.float().mean(), "return_std": std}


def _absmax(x: torch.Tensor) -> torch.Tensor:
    return x.abs().amax() if x.numel() else x.new_zeros(())


def _whitening_rounding(r, flat, token_rewards, returns, n, kl_folded: bool) -> torch.Tensor:
    """The largest std that float rounding alone leaves in reinforce_pp's step 4 when all valid returns are equal.

    subtle: such a batch (say the only valid rows of each group share one centered reward, the others being empty or
    overlong-filtered) computes a float std of a few ulps, not 0, and (ret - mean) / (std + eps) turns that noise into
    advantages of 0.01 or more. Each rounding is at most ulp x (terms summed) x (their magnitude), ulp = finfo.eps:
      group means     G terms of at most max|r| (flat groups are exact zeros and leave none);
      reverse cumsum  T terms of the row's |token rewards|, only with KL folded in (else it adds zeros, exactly);
      batch mean      a tree sum, as torch's reductions are: log2(n) + 1 roundings of at most max|returns|.
    The magnitude is the rewards', not only the returns': groups (1.1 x 7, 1.0) and (0.1 x 7, 0.0), G = 8, with the
    last row of each empty, both centre to returns of 0.0125, each carrying a rounding of the order of ulp x 1.1.
    """
    ulp = torch.finfo(returns.dtype).eps
    G, T = r.shape[-1], returns.shape[-1]
    floor = G * _absmax(r.masked_fill(flat, 0.0)) + (torch.log2(n) + 1) * _absmax(returns)
    if kl_folded:
        floor = floor + T * _absmax(token_rewards.abs().sum(-1))
    return ulp * floor


ADVANTAGES = {
    "grpo": grpo_advantages,
    "grpo_batch_std": grpo_batch_std_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
}

# ----------------------------------------------------------------------------------------------------------------
# Policy loss: per-token loss matrix (B,T); aggregate() turns it into a scalar.


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return ((x * mask).sum() / mask.sum().clamp(min=1)).detach()


def ppo_clip(logp, old_logp, advantages, mask, clip_low: float = 0.2, clip_high: float = 0.2, clip_c=None):
    """PPO-clip with asymmetric bounds (DAPO clip-higher) and optional dual clip (Ye et al. 2020).

    loss = -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A),  ratio = exp(logp - old_logp)
    dual clip (clip_c > 1, negative advantages only): loss = min(loss, -clip_c * A), bounding how hard a token whose
    ratio exploded can be pushed down. old_logp and advantages are constants (detached here).
    With one update per rollout (on-policy) ratio == 1 and the gradient is -A * grad logp.
    """
    old_logp, advantages = old_logp.detach(), advantages.detach()
    valid = mask.bool()
    # subtle: zero the log-ratio on masked tokens before exp(), so garbage there (inf, NaN) cannot reach the gradient.
    log_ratio = torch.where(valid, logp - old_logp, 0.0).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)  # (B,T)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high))
    metrics = {
        "clip_frac_low": _masked_mean(((ratio < 1.0 - clip_low) & (advantages < 0)).float(), mask),
        "clip_frac_high": _masked_mean(((ratio > 1.0 + clip_high) & (advantages > 0)).float(), mask),
        "approx_kl": _masked_mean(ratio - 1.0 - log_ratio, mask),  # k3 estimate of KL(old || new)
        "ratio_mean": _masked_mean(ratio, mask),
    }
    if clip_c is not None:
        if clip_c <= 1.0:
            raise ValueError(f"dual clip constant clip_c must be > 1, got {clip_c}")
        dual = advantages < 0
        metrics["dual_clip_frac"] = _masked_mean((dual & (loss > -clip_c * advantages)).float(), mask)
        loss = torch.where(dual, torch.minimum(loss, -clip_c * advantages), loss)
    return loss, metrics


POLICY_LOSSES = {"ppo_clip": ppo_clip}


def truncated_is(old_logp, rollout_logp, mask, cap: float):
    """Truncated importance sampling (TIS; Yao et al. 2025, verl PR #2953) for a rollout engine that is not the
    trainer: per-token weights (B,T) for the policy-loss matrix, detached, 0 on masked tokens.

    w = min(exp(old_logp - rollout_logp), cap)
    The rollouts were sampled by another engine (vLLM) whose numerics differ from the trainer's, so they come from
    pi_rollout, not from the pi_old the loss assumes; w reweights each token towards pi_old, and the cap bounds the
    variance that a token the rollout engine found much less likely than the trainer does would bring.
    old_logp is the trainer's log-prob of each sampled token under the weights that sampled it, rollout_logp the
    rollout engine's. Metrics: tis_ratio_mean (exp(old_logp - rollout_logp) before the cap), tis_capped_frac,
    tis_logp_diff_max (max |old_logp - rollout_logp|; the masked means are the loop's to average over batches).
    truncated_is(T([[0., -1., -2.]]), T([[-1., -1., -1.]]), T([[1, 1, 1]]), 2.0)[0] == [[2.0, 1.0, 0.3679]]
    """
    valid = mask.bool()
    diff = torch.where(valid, old_logp.detach() - rollout_logp.detach(), 0.0)
    ratio = torch.exp(diff.clamp(-20.0, 20.0))  # (B,T); clamp: a garbage log-prob must not overflow to inf
    weights = torch.where(valid, ratio.clamp(max=cap), 0.0)
    metrics = {
        "tis_ratio_mean": _masked_mean(ratio, mask),
        "tis_capped_frac": _masked_mean((ratio > cap).float(), mask),
        "tis_logp_diff_max": diff.abs().amax() if diff.numel() else diff.new_zeros(()),
    }
    return weights, metrics

# ----------------------------------------------------------------------------------------------------------------
# KL to a reference policy, per token, for samples drawn from the current policy (Schulman 2020, "Approximating KL").
# All three estimate KL(pi || ref); with log_r = ref_logp - logp: k1 = -log_r (unbiased, high variance, can be
# negative), k2 = log_r^2 / 2 (biased, low variance), k3 = exp(log_r) - log_r - 1 (unbiased, >= 0; GRPO's choice).
# Use as a loss term: aggregate(KL_ESTIMATORS["k3"](logp, ref_logp), mask, mode) * kl_coef, aggregated like the
# policy loss; or as a reward penalty: fold_kl_into_rewards(..., kl=kl_k1(logp, ref_logp), kl_coef).


def kl_k1(logp, ref_logp):
    return logp - ref_logp


def kl_k2(logp, ref_logp):
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp, ref_logp):
    """kl_k3(torch.tensor(0.), torch.tensor(-1.)) == exp(-1) + 1 - 1 == 0.3679"""
    log_r = (ref_logp - logp).clamp(-20.0, 20.0)  # clamp: exp() of a huge gap would overflow to inf
    return torch.exp(log_r) - log_r - 1.0


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def needs_reference(kl_coef: float) -> bool:
    """Whether a reference model must be loaded at all. With kl_coef == 0 callers load none and skip its forward."""
    return kl_coef != 0.0


# ----------------------------------------------------------------------------------------------------------------
# Aggregation: the only place where GRPO, Dr. GRPO and DAPO normalise differently.


def _token_mean(loss, mask, tokens, seqs, const):
    return loss.sum() / tokens


def _seq_mean_token_mean(loss, mask, tokens, seqs, const):
    return (loss.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / seqs


def _seq_mean_token_sum_norm(loss, mask, tokens, seqs, const):
    return (loss.sum(-1) / const).sum() / seqs


AGGREGATIONS = {
    "token_mean": _token_mean,  # DAPO: every token weighs the same, whatever its sequence's length
    "seq_mean_token_mean": _seq_mean_token_mean,  # GRPO: mean per sequence, then mean over sequences
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,  # Dr. GRPO: token sum / a constant, then mean over seqs
}


def aggregate(loss_mat, mask, mode: str, global_tokens=None, global_seqs=None, max_tokens_const=None):
    """Reduce a per-token loss (B,T) to a scalar.

    global_tokens / global_seqs are the valid-token count and the count of sequences with at least one valid token
    over the WHOLE optimizer step (all microbatches, all data-parallel ranks). Pass them whenever the batch is split:
    the microbatch losses then sum to the full-batch loss, so accumulation and data parallelism never change the
    update (with DDP, which averages gradients over ranks, multiply by the world size). They default to this
    batch's counts. max_tokens_const (Dr. GRPO) must be given explicitly, e.g. max_new_tokens, for the same reason.
    aggregate(torch.tensor([[1., 3.], [5., 0.]]), torch.tensor([[1, 1], [1, 0]]), "token_mean") == 3.0
    aggregate(same, same, "seq_mean_token_mean") == (2 + 5) / 2 == 3.5
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {mode!r}; valid: {', '.join(AGGREGATIONS)}")
    if mode == "seq_mean_token_sum_norm" and max_tokens_const is None:
        raise ValueError("seq_mean_token_sum_norm needs max_tokens_const (e.g. max_new_tokens)")
    mask = mask.to(loss_mat.dtype)
    loss_mat = torch.where(mask.bool(), loss_mat, 0.0)  # where(), not *: inf * 0 on a masked token would be NaN
    tokens = mask.sum().clamp(min=1) if global_tokens is None else global_tokens
    seqs = (mask.sum(-1) > 0).sum().clamp(min=1) if global_seqs is None else global_seqs
    return AGGREGATIONS[mode](loss_mat, mask, tokens, seqs, max_tokens_const)


# ----------------------------------------------------------------------------------------------------------------
# Log-probs and entropy from logits, in chunks of rows so that the fp32 (N, V) temporaries stay small.


def logprobs_from_logits(logits, ids, chunk_size: int = 1024):
    """log softmax(logits)[ids]: (B,T,V), (B,T) -> (B,T) float32, computed chunk_size rows at a time.

    Equal to torch.log_softmax(logits.float(), -1).gather(-1, ids[..., None])[..., 0] without materialising the full
    (B,T,V) fp32 log-softmax. Under autograd the fp32 copy of each chunk is still kept for backward.
    """
    V = logits.shape[-1]
    flat, flat_ids = logits.reshape(-1, V), ids.reshape(-1)
    out = []
    for start in range(0, flat.shape[0], chunk_size):
        z = flat[start:start + chunk_size].float()  # (n, V)
        picked = z.gather(-1, flat_ids[start:start + chunk_size, None]).squeeze(-1)
        out.append(picked - torch.logsumexp(z, -1))
    return torch.cat(out).view(ids.shape)


def entropy_from_logits(logits, chunk_size: int = 1024):
    """Entropy of softmax(logits) per position: (B,T,V) -> (B,T) float32. H = logsumexp(z) - sum(softmax(z) * z)."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    out = []
    for start in range(0, flat.shape[0], chunk_size):
        z = flat[start:start + chunk_size].float()
        out.append(torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1))
    return torch.cat(out).view(logits.shape[:-1])


# ----------------------------------------------------------------------------------------------------------------
# DAPO (Yu et al. 2025): dynamic sampling and overlong handling.


def filter_groups(rewards, G: int):
    """Dynamic sampling: keep mask (B/G,) over groups, False where every reward in the group is equal. DAPO passes
    accuracy (1 right, 0 wrong), so the groups kept are those with 0 < right < G.

    Such groups have zero advantage and only dilute the batch; DAPO drops them and samples more prompts.
    filter_groups(torch.tensor([1., 1., 0., 1.]), G=2) == [False, True]
    """
    r = rewards.view(-1, G)
    return r.amax(-1) != r.amin(-1)


def overlong_filter(mask, truncated):
    """Overlong filtering: zero the loss mask (B,T) of truncated responses (truncated: (B,) bool, finish == length)."""
    return mask * (~truncated.bool()).to(mask.dtype).reshape(-1, 1)


def soft_overlong_penalty(lengths, max_len: int, cache_len: int, factor: float = 1.0):
    """DAPO eq. 13, added to the reward: 0 up to max_len - cache_len, then linear down to -factor at max_len, -factor
    beyond. factor is 1 in the paper (verl's overlong_buffer.penalty_factor).

    soft_overlong_penalty(torch.tensor([10, 15, 20, 25]), max_len=20, cache_len=10) == [0, -0.5, -1, -1]
    """
    expected = max_len - cache_len
    return ((expected - lengths.float()) / cache_len).clamp(min=-1.0, max=0.0) * factor


# ----------------------------------------------------------------------------------------------------------------
# Kimi k1.5 (Kimi Team 2025, sec. 2.3.3): a length reward within each group.


def group_length_reward(lengths, correct, G: int, wrong_too: bool = True):
    """Kimi k1.5's length reward, added to the reward (scaled by the run's weight): within each group of G,
    lam = 0.5 - (len - shortest) / (longest - shortest), so from +0.5 for the group's shortest response to -0.5 for
    its longest. A right answer gets lam, a wrong one min(0, lam): no bonus for a short wrong answer, a penalty for
    a long one. wrong_too=False: wrong answers get 0, so only the right ones are ranked by length. A group whose
    responses are all one length gets 0. lengths, correct: (B,) with B = groups x G, rows of a group adjacent.

    group_length_reward(torch.tensor([10, 20, 30, 40]), torch.tensor([1, 0, 1, 0]), G=4) == [0.5, 0, -1/6, -0.5]
    """
    L = lengths.float().view(-1, G)
    shortest, longest = L.amin(-1, keepdim=True), L.amax(-1, keepdim=True)
    lam = torch.where(longest > shortest, 0.5 - (L - shortest) / (longest - shortest).clamp(min=1),
                      torch.zeros_like(L))
    wrong = lam.clamp(max=0.0) if wrong_too else torch.zeros_like(lam)
    return torch.where(correct.bool().view(-1, G), lam, wrong).reshape(-1)


# ----------------------------------------------------------------------------------------------------------------
# The algorithm's settings and the presets: flat, each a name into the registries above or a scalar.

@dataclass(frozen=True)
class Algorithm:
    """One run's algorithm: names into the registries above and the scalars their functions take.

    Frozen: a run reads it, nothing changes it. Build one with preset(name, **overrides); a name that is not in its
    registry is a ValueError listing the valid ones.
    """
    advantage: str                # ADVANTAGES
    policy_loss: str              # POLICY_LOSSES
    loss_agg: str                 # AGGREGATIONS
    clip_low: float               # ratio clipped to [1 - clip_low, 1 + clip_high]
    clip_high: float
    clip_c: float | None          # dual clip constant (> 1), None: off
    kl_coef: float                # 0: no KL term and no reference model
    kl_estimator: str             # KL_ESTIMATORS
    kl_as_reward: bool            # the KL penalty folded into the rewards (reinforce_pp) instead of a loss term
    dynamic_sampling: bool        # DAPO: replace groups whose answers are all right or all wrong
    overlong_filter: bool         # DAPO: no loss on truncated responses
    soft_overlong: bool           # DAPO: the soft overlong penalty on the reward
    overlong_cache_frac: float    # its ramp, as a fraction of max_new_tokens
    overlong_penalty: float = 1.0  # its size at the budget (DAPO: 1, the size of a right-vs-wrong reward difference)
    length_reward: float = 0.0     # Kimi k1.5's length reward, its weight (1: a term of +-0.5); 0: off
    length_reward_wrong: bool = True  # it also charges long wrong answers (Kimi's rule); False: right answers only

    def __post_init__(self):
        for field, registry in (("advantage", ADVANTAGES), ("policy_loss", POLICY_LOSSES),
                                ("loss_agg", AGGREGATIONS), ("kl_estimator", KL_ESTIMATORS)):
            if getattr(self, field) not in registry:
                raise ValueError(f"unknown {field} {getattr(self, field)!r}; valid: {', '.join(registry)}")
        if self.kl_as_reward and self.kl_coef and self.advantage != "reinforce_pp":
            raise ValueError(f"kl_as_reward: KL as a reward penalty needs per-token returns, which advantage "
                             f"{self.advantage!r} does not have; use advantage = 'reinforce_pp' or a KL loss "
                             f"(kl_as_reward = false)")
        if self.kl_coef and not self.kl_as_reward and self.kl_estimator == "k1":
            raise ValueError("kl_estimator 'k1' as a loss term: its gradient is zero in expectation (the mean of the "
                             "score function), so it would not hold the policy near the reference; use k3 (GRPO's) "
                             "or k2, or fold k1 into the rewards (kl_as_reward = true)")


PRESETS = {
    # DeepSeekMath / R1: group-std advantages, per-sequence mean, k3 KL as a loss at R1's 0.001 (DeepSeekMath: 0.04),
    # symmetric clip 0.2.
    "grpo": Algorithm(advantage="grpo", policy_loss="ppo_clip", loss_agg="seq_mean_token_mean", clip_low=0.2,
                      clip_high=0.2, clip_c=None, kl_coef=0.001, kl_estimator="k3", kl_as_reward=False,
                      dynamic_sampling=False, overlong_filter=False, soft_overlong=False, overlong_cache_frac=0.0),
    # Dr. GRPO: mean-only advantages, token sum / max_new_tokens, no KL (no reference model loaded).
    "dr_grpo": Algorithm(advantage="dr_grpo", policy_loss="ppo_clip", loss_agg="seq_mean_token_sum_norm",
                         clip_low=0.2, clip_high=0.2, clip_c=None, kl_coef=0.0, kl_estimator="k3", kl_as_reward=False,
                         dynamic_sampling=False, overlong_filter=False, soft_overlong=False, overlong_cache_frac=0.0),
    # DAPO: clip-higher, token mean, no KL, dynamic sampling, soft overlong penalty over the last 20% of the budget
    # (4096 of 20480 in the paper). Overlong filtering (no loss on truncated responses) is off: it would drop the -1
    # the penalty gives them, its strongest signal; DAPO's ablation adds the two one after the other (its Table 1).
    "dapo": Algorithm(advantage="grpo", policy_loss="ppo_clip", loss_agg="token_mean", clip_low=0.2, clip_high=0.28,
                      clip_c=None, kl_coef=0.0, kl_estimator="k3", kl_as_reward=False, dynamic_sampling=True,
                      overlong_filter=False, soft_overlong=True, overlong_cache_frac=0.2),
}


def preset(name: str, **overrides) -> Algorithm:
    """PRESETS[name] with overrides: preset("dapo", clip_high=0.3). Unknown presets, settings or registry names are
    ValueErrors that list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    valid = [f.name for f in fields(Algorithm)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; valid: {', '.join(valid)}")
    return replace(PRESETS[name], **overrides)
