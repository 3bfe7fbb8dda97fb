"""r1lab.rl.algos: hand-computed cases, loop-vs-vectorised parity and invariants (hypothesis).

Tolerances (tests/tolerances.py): float32 results are compared with rounding_atol(magnitude, n), where magnitude is
the size of the numbers the rounding happens at (the inputs, when the result cancels) and n the longest sum.
"""
import dataclasses
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import float64_rtol, rounding_atol

from r1lab.rl import algos as A

T = torch.tensor


def close(actual, expected, magnitude=None, n=4, atol=None):
    """actual == expected up to float32 rounding of numbers of size `magnitude` (default max|expected|) in sums of
    at most n terms; exact where the magnitude is 0."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    if atol is None:
        atol = rounding_atol(float(expected.abs().max()) if magnitude is None else magnitude, n)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)

# ---------------------------------------------------------------------------------------------- advantages, by hand


def test_grpo_by_hand():
    # group 1: mean 0.25, unbiased std 0.5 -> (1.5, -0.5, -0.5, -0.5); group 2 has zero variance -> 0
    mask = T([[1, 1, 0]] * 8)
    adv, m = A.grpo_advantages(T([1., 0, 0, 0, 1, 1, 1, 1]), mask, G=4, eps=0.0)
    close(adv[:, 0], [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])
    assert (adv[:, 2] == 0).all() and (adv[:, 1] == adv[:, 0]).all()
    close(m["zero_std_frac"], 0.5)


def test_grpo_batch_std_by_hand():
    # group 1 (1, 0): centered (0.5, -0.5); group 2 (0, -0.1), wrong answers one a little longer: (0.05, -0.05).
    # The batch's unbiased std is 0.5188, so group 2 keeps a tenth of group 1's advantage; GRPO's group std would
    # give both groups (0.7071, -0.7071).
    rewards, mask = T([1., 0., 0., -0.1]), torch.ones(4, 1)
    std = float(rewards.double().std())
    adv, m = A.grpo_batch_std_advantages(rewards, mask, G=2, eps=0.0)
    close(adv[:, 0], [0.5 / std, -0.5 / std, 0.05 / std, -0.05 / std])
    close(m["reward/batch_std"], std)
    grpo, _ = A.grpo_advantages(rewards, mask, G=2, eps=0.0)
    close(grpo[:, 0], [0.5 ** 0.5, -0.5 ** 0.5, 0.5 ** 0.5, -0.5 ** 0.5])


def test_dr_grpo_and_rloo_by_hand():
    mask = torch.ones(4, 2)
    adv, _ = A.dr_grpo_advantages(T([1., 0, 0, 0]), mask, G=4)
    close(adv[:, 0], [0.75, -0.25, -0.25, -0.25])
    adv, _ = A.rloo_advantages(T([1., 0, 0, 0]), mask, G=4)
    close(adv[:, 1], [1.0, -1 / 3, -1 / 3, -1 / 3])  # r_i - mean of the other three
    with pytest.raises(ValueError):
        A.rloo_advantages(T([1.]), torch.ones(1, 1), G=1)


def test_reinforce_pp_by_hand():
    # centered (0.5, -0.5); returns over valid tokens (0.5, 0.5, -0.5): mean 1/6, std sqrt(2)/3
    mask = T([[1., 1.], [1., 0.]])
    adv, m = A.reinforce_pp_advantages(T([1., 0.]), mask, G=2, eps=0.0)
    close(adv, [[math.sqrt(0.5), math.sqrt(0.5)], [-math.sqrt(2), 0.0]])
    close(m["return_std"], math.sqrt(2) / 3)


def test_reinforce_pp_flat_returns_give_zero_advantage():
    """Every valid token has the same return, so whitening has nothing to scale: the advantage is 0.

    The case that found the bug: G = 3, rewards (0.5, 0, 0.5), lengths (2, 0, 4). Both valid rows centre to 1/6,
    the float32 std came out ~1.5e-8 instead of 0, and (ret - mean) / (std + 1e-6) gave advantages of 0.0147.
    """
    mask = T([[1., 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    adv, m = A.reinforce_pp_advantages(T([0.5, 0.0, 0.5]), mask, G=3)
    assert (adv == 0).all() and m["return_std"] == 0
    # The returns carry the rounding of the rewards, not only their own: two groups at different offsets, last row of
    # each empty (an overlong-filtered response), centre to 0.0125 each, apart by a rounding of 1.1.
    rewards = T([1.1] * 7 + [1.0] + [0.1] * 7 + [0.0])
    mask = torch.ones(16, 3).index_fill(0, T([7, 15]), 0.0)
    adv, m = A.reinforce_pp_advantages(rewards, mask, G=8)
    assert (adv == 0).all() and m["return_std"] == 0
    # With KL folded in (zero here, so the returns stay flat) the reverse cumsum's rounding counts too.
    adv, _ = A.reinforce_pp_advantages(rewards, mask, G=8, kl=torch.zeros(16, 3), kl_coef=0.1)
    assert (adv == 0).all()
    # A real spread is still whitened: the valid returns then have std 1 (eps aside).
    adv, m = A.reinforce_pp_advantages(T([1.1] * 7 + [1.0] + [0.1] * 6 + [0.0, 0.0]), torch.ones(16, 3), G=8)
    assert m["return_std"] > 0
    std = float(m["return_std"])
    close(adv.std(unbiased=False), std / (std + 1e-6), magnitude=1.0, n=48)


def test_fold_kl_into_rewards_by_hand():
    mask = T([[1., 1., 0.], [1., 0., 1.]])  # row 2: a forced token (mask 0) in the middle
    kl = T([[0.1, 0.2, 9.0], [0.3, 9.0, 0.4]])
    close(A.fold_kl_into_rewards(T([1., 2.]), mask, kl, 1.0), [[-0.1, 0.8, 0.0], [-0.3, 0.0, 1.6]])
    close(A.fold_kl_into_rewards(T([1., 2.]), mask), [[0, 1, 0], [0, 0, 2]])
    with pytest.raises(ValueError):  # KL in the reward is only meaningful with per-token returns
        A.grpo_advantages(T([1., 0.]), mask, G=2, kl=kl, kl_coef=0.1)


# ---------------------------------------------------------------------------------------------- loop vs vectorised


def loop_advantages(name, rewards, mask, G, eps):
    """Reference implementations written the slow, obvious way, in exact arithmetic on the float32 inputs (fractions;
    only a square root is rounded, to float64), so that equal returns are exactly equal.

    Returns the advantages (B, T) and the smallest divisor used (1 where none): rounding in the float32 version
    happens at the rewards' magnitude and is then divided by it.
    """
    B, T_ = mask.shape
    out = torch.zeros(B, T_, dtype=torch.float64)
    r = [Fraction(float(x)) for x in rewards]
    seq, divisor = [], 1.0
    batch_mean = sum(r) / B
    batch_std = math.sqrt(sum((x - batch_mean) ** 2 for x in r) / (B - 1)) if B > 1 else 0.0
    for i in range(B):
        g = r[(i // G) * G:(i // G) * G + G]
        mean = sum(g) / G
        if max(g) == min(g):
            seq.append(Fraction(0))
        elif name == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in g) / (G - 1))
            seq.append(Fraction(float(r[i] - mean) / (std + eps)))
            divisor = min(divisor, std + eps)
        elif name == "grpo_batch_std":
            seq.append(Fraction(float(r[i] - mean) / (batch_std + eps)))
            divisor = min(divisor, batch_std + eps)
        elif name in ("dr_grpo", "reinforce_pp"):
            seq.append(r[i] - mean)
        elif name == "rloo":
            seq.append(r[i] - (sum(g) - r[i]) / (G - 1))
    if name != "reinforce_pp":
        for i in range(B):
            for t in range(T_):
                out[i, t] = float(seq[i] * Fraction(float(mask[i, t])))
        return out, divisor
    vals = []
    for i in range(B):  # with gamma = 1 and reward only at the end, the return is the reward at every valid token
        for t in range(T_):
            if mask[i, t]:
                vals.append(seq[i])
    if not vals:
        return out, divisor
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    if var == 0:
        return out, divisor
    std = math.sqrt(var)
    for i in range(B):
        for t in range(T_):
            if mask[i, t]:
                out[i, t] = float(seq[i] - mean) / (std + eps)
    return out, std + eps


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_loop_matches_vectorised(data):
    G = data.draw(st.integers(2, 4))
    n = data.draw(st.integers(1, 3))
    rewards = T(data.draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.1]), min_size=n * G, max_size=n * G)))
    lengths = data.draw(st.lists(st.integers(0, 4), min_size=n * G, max_size=n * G))
    mask = T([[1.0 if t < L else 0.0 for t in range(4)] for L in lengths])
    for name, fn in A.ADVANTAGES.items():
        adv, _ = fn(rewards, mask, G=G, eps=1e-6)
        ref, divisor = loop_advantages(name, rewards, mask, G, 1e-6)
        # float32 rounds the group means (G terms), and for reinforce_pp the batch mean and std (n * G * 4 tokens),
        # at the rewards' magnitude; dividing by the divisor scales that error, and so does its own error (1 + |A|).
        magnitude = float(rewards.abs().max()) * (1 + float(ref.abs().max())) / divisor
        close(adv, ref, magnitude=magnitude, n=n * G * 4)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.floats(-1e6, 1e6, allow_nan=False), st.integers(1, 3))
def test_zero_variance_group_gives_zero_advantage(G, value, n):
    rewards = torch.full((n * G,), value)
    mask = torch.ones(n * G, 3)
    for name, fn in A.ADVANTAGES.items():
        if name == "rloo" and G < 2:
            continue
        adv, metrics = fn(rewards, mask, G=G)
        assert torch.isfinite(adv).all() and all(torch.isfinite(v).all() for v in metrics.values())
        assert (adv == 0).all(), name


# ---------------------------------------------------------------------------------------------- policy loss


def test_ppo_clip_by_hand():
    logp = torch.log(T([[1.5, 0.5, 5.0, 1.0]]))
    old = torch.zeros(1, 4)
    adv = T([[1.0, -1.0, -1.0, 2.0]])
    mask = torch.ones(1, 4)
    loss, m = A.ppo_clip(logp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    close(loss, [[-1.2, 0.8, 5.0, -2.0]])  # clip high, clip low, unbounded (no dual clip), ratio 1
    assert m["clip_frac_high"] == 0.25 and m["clip_frac_low"] == 0.25
    close(m["ratio_mean"], (1.5 + 0.5 + 5 + 1) / 4)
    loss, m = A.ppo_clip(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    close(loss, [[-1.28, 0.8, 3.0, -2.0]])  # clip-higher; dual clip caps the negative-advantage token at 3 * |A|
    assert m["dual_clip_frac"] == 0.25
    # r - 1 - log r cancels: its rounding is at the size of r (5), not of the result
    close(m["approx_kl"], sum(r - 1 - math.log(r) for r in (1.5, 0.5, 5.0, 1.0)) / 4, magnitude=5.0)


def test_on_policy_gradient_is_minus_advantage():
    logp = torch.log(T([[0.3, 0.6]])).requires_grad_()
    loss, _ = A.ppo_clip(logp, logp.detach(), T([[2.0, -1.0]]), torch.ones(1, 2))
    loss.sum().backward()
    close(logp.grad, [[-2.0, 1.0]])


def test_truncated_is_by_hand():
    old = T([[0.0, -1.0, -2.0, 5.0]])
    rollout = T([[-1.0, -1.0, -1.0, float("nan")]])  # the last token is padding, with garbage in it
    w, m = A.truncated_is(old, rollout, T([[1, 1, 1, 0]]), cap=2.0)
    close(w, [[2.0, 1.0, math.exp(-1.0), 0.0]])  # e^1 = 2.718 capped at 2; e^0; e^-1 below the cap; masked
    close(m["tis_ratio_mean"], (math.e + 1.0 + math.exp(-1.0)) / 3, magnitude=math.e)
    assert m["tis_capped_frac"] == pytest.approx(1 / 3) and m["tis_logp_diff_max"] == 1.0
    w, m = A.truncated_is(old, rollout, T([[1, 1, 1, 0]]), cap=3.0)
    close(w[0, :3], [math.e, 1.0, math.exp(-1.0)])  # nothing over 3
    assert m["tis_capped_frac"] == 0.0


def test_truncated_is_scales_the_gradient_and_is_not_differentiated():
    """On-policy PPO-clip with TIS weights w: the gradient is -A * w * grad logp; w is a constant."""
    logp = torch.log(T([[0.3, 0.6]])).requires_grad_()
    w, _ = A.truncated_is(logp, T([[math.log(0.15), math.log(0.6)]]), torch.ones(1, 2), cap=5.0)
    loss, _ = A.ppo_clip(logp, logp.detach(), T([[2.0, -1.0]]), torch.ones(1, 2))
    (loss * w).sum().backward()
    close(logp.grad, [[-2.0 * 2.0, 1.0 * 1.0]])  # ratios 0.3 / 0.15 = 2 and 1


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_masked_tokens_get_zero_gradient(data):
    B, T_ = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 5))
    mask = T(data.draw(st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=T_, max_size=T_), min_size=B,
                                max_size=B)))
    garbage = data.draw(st.sampled_from([-1e4, 1e4]))
    logp = torch.randn(B, T_).masked_fill(~mask.bool(), garbage).requires_grad_()  # garbage where masked
    nan_logp = torch.randn(B, T_).masked_fill(~mask.bool(), float("nan")).requires_grad_()
    old, ref, adv = torch.randn(B, T_), torch.randn(B, T_), torch.randn(B, T_)
    for mode in A.AGGREGATIONS:
        # the policy loss stays finite even with NaN on masked tokens; elementwise KL estimators need finite input
        loss_mat, _ = A.ppo_clip(nan_logp, old, adv, mask, clip_c=3.0)
        A.aggregate(loss_mat, mask, mode, max_tokens_const=T_).backward()
        assert torch.isfinite(nan_logp.grad).all() and (nan_logp.grad[~mask.bool()] == 0).all()
        for est in A.KL_ESTIMATORS.values():
            logp.grad = None
            loss_mat, _ = A.ppo_clip(logp, old, adv, mask, clip_c=3.0)
            loss = A.aggregate(loss_mat, mask, mode, max_tokens_const=T_)
            loss = loss + 0.1 * A.aggregate(est(logp, ref), mask, mode, max_tokens_const=T_)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
            assert (logp.grad[~mask.bool()] == 0).all()


# ---------------------------------------------------------------------------------------------- aggregation


def test_aggregate_by_hand():
    loss = T([[1.0, 3.0, 7.0], [5.0, 9.0, 9.0]])
    mask = T([[1, 1, 0], [1, 0, 0]])
    close(A.aggregate(loss, mask, "token_mean"), 3.0)  # (1 + 3 + 5) / 3
    close(A.aggregate(loss, mask, "seq_mean_token_mean"), 3.5)  # (2 + 5) / 2
    close(A.aggregate(loss, mask, "seq_mean_token_sum_norm", max_tokens_const=4), 1.125)  # (4/4 + 5/4) / 2
    close(A.aggregate(loss, mask, "token_mean", global_tokens=9), 1.0)
    with pytest.raises(ValueError, match="valid: token_mean"):
        A.aggregate(loss, mask, "mean")
    with pytest.raises(ValueError):
        A.aggregate(loss, mask, "seq_mean_token_sum_norm")


@pytest.mark.parametrize("mode", list(A.AGGREGATIONS))
def test_accumulation_invariance(mode):
    """batch 8 x accumulation 1 == batch 1 x accumulation 8, in loss and in gradients, on a tiny linear model."""
    torch.manual_seed(0)
    x, adv = torch.randn(8, 6, 5), torch.randn(8, 6)
    mask = (torch.arange(6)[None] < T([6, 1, 3, 0, 5, 2, 6, 4])[:, None]).float()  # ragged, one empty row
    head = torch.nn.Linear(5, 1)

    def loss_mat_fn(rows):
        z = head(x[rows]).squeeze(-1)  # (b, T)
        logp = torch.nn.functional.logsigmoid(z)
        return A.ppo_clip(logp, logp.detach() - 0.1, adv[rows], mask[rows], clip_high=0.28)[0], z

    full_mat, z = loss_mat_fn(slice(0, 8))
    full = A.aggregate(full_mat, mask, mode, max_tokens_const=6)
    dz = torch.autograd.grad(full, z, retain_graph=True)[0]  # (8, 6) each token's term of the gradients
    full.backward()
    grads_full = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    counts = dict(global_tokens=mask.sum(), global_seqs=(mask.sum(-1) > 0).sum())
    micro = sum(A.aggregate(loss_mat_fn(slice(i, i + 1))[0], mask[i:i + 1], mode, max_tokens_const=6, **counts)
                for i in range(8))  # each microbatch's own .backward() alike
    micro.backward()
    # The sums cancel (advantages of both signs): their rounding is at the size of the summed terms' magnitudes.
    n = int(mask.sum())
    close(micro, full, magnitude=float(A.aggregate(full_mat.detach().abs(), mask, mode, max_tokens_const=6)), n=n)
    weight_terms = (dz.abs()[..., None] * x.abs()).sum((0, 1))  # (5,) sum over tokens of |dL/dz * x|
    close(head.weight.grad[0], grads_full[0][0], magnitude=float(weight_terms.max()), n=n)
    close(head.bias.grad, grads_full[1], magnitude=float(dz.abs().sum()), n=n)


# ---------------------------------------------------------------------------------------------- KL, logits helpers


def test_kl_estimators_by_hand_and_unbiased():
    logp, ref = T(0.0), T(-1.0)
    close(A.kl_k1(logp, ref), 1.0)
    close(A.kl_k2(logp, ref), 0.5)
    close(A.kl_k3(logp, ref), math.exp(-1))
    # k1 and k3 are unbiased: their expectation under pi equals KL(pi || ref) exactly
    pi, rf = T([0.5, 0.3, 0.2], dtype=torch.float64), T([0.2, 0.2, 0.6], dtype=torch.float64)  # sum to 1 exactly
    kl = (pi * (pi / rf).log()).sum()
    for est in (A.kl_k1, A.kl_k3):  # float64: a few operations per term, three terms of size <= 1
        close((pi * est(pi.log(), rf.log())).sum(), kl, atol=float64_rtol(3 * 6))
    assert A.needs_reference(0.001) and not A.needs_reference(0.0)


def test_logprobs_and_entropy_from_logits_chunked():
    torch.manual_seed(0)
    logits, ids = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    magnitude = float(logits.abs().max()) + math.log(11)  # the logits and their logsumexp, summed over V = 11
    for chunk in (1, 4, 1024):
        close(A.logprobs_from_logits(logits, ids, chunk_size=chunk), ref, magnitude=magnitude, n=11)
        close(A.entropy_from_logits(logits, chunk_size=chunk), torch.distributions.Categorical(logits=logits)
              .entropy(), magnitude=magnitude, n=11)
    lp = A.logprobs_from_logits(logits.bfloat16(), ids)  # bf16 in, fp32 out
    assert lp.dtype == torch.float32
    close(A.entropy_from_logits(torch.zeros(1, 1, 8)), [[math.log(8)]])


# ---------------------------------------------------------------------------------------------- DAPO, presets


def test_dapo_filters_by_hand():
    assert A.filter_groups(T([1., 1., 0., 1., 0., 0.]), G=2).tolist() == [False, True, False]
    mask = torch.ones(2, 3)
    assert A.overlong_filter(mask, T([False, True])).tolist() == [[1, 1, 1], [0, 0, 0]]
    close(A.soft_overlong_penalty(T([10, 15, 20, 25]), max_len=20, cache_len=10), [0.0, -0.5, -1.0, -1.0])
    close(A.soft_overlong_penalty(T([10, 15, 20, 25]), 20, 10, factor=0.4), [0.0, -0.2, -0.4, -0.4])


def test_kimi_length_reward_by_hand():
    lengths, right = T([10, 20, 30, 40, 7, 7, 7, 7]), T([1, 0, 1, 0, 1, 0, 1, 1])
    # group 1 spans 10..40: lam = 0.5, 1/6, -1/6, -0.5; a right answer takes lam, a wrong one min(0, lam)
    close(A.group_length_reward(lengths, right, G=4), [0.5, 0.0, -1 / 6, -0.5, 0, 0, 0, 0])
    close(A.group_length_reward(lengths, right, G=4, wrong_too=False), [0.5, 0.0, -1 / 6, 0.0, 0, 0, 0, 0])
    # each group is ranked on its own lengths: 30 is the longest of its pair (-0.5), though shorter than 40
    close(A.group_length_reward(T([40, 10, 30, 20]), T([0, 1, 1, 0]), G=2), [-0.5, 0.5, -0.5, 0.0])
    # the group's shortest and longest always get +-0.5 (right) whatever the spread
    assert A.group_length_reward(T([100, 101]), T([1, 1]), G=2).tolist() == [0.5, -0.5]


def test_presets():
    g, d, dr = A.PRESETS["grpo"], A.PRESETS["dapo"], A.PRESETS["dr_grpo"]
    assert (g.advantage, g.loss_agg, g.kl_coef, g.kl_estimator, g.clip_low) == \
        ("grpo", "seq_mean_token_mean", 0.001, "k3", 0.2)
    assert (dr.advantage, dr.loss_agg, dr.kl_coef) == ("dr_grpo", "seq_mean_token_sum_norm", 0.0)
    assert (d.clip_low, d.clip_high, d.loss_agg, d.kl_coef, d.dynamic_sampling, d.soft_overlong) \
        == (0.2, 0.28, "token_mean", 0.0, True, True)
    for p in A.PRESETS.values():  # every name resolves in its registry
        assert p.advantage in A.ADVANTAGES and p.loss_agg in A.AGGREGATIONS
        assert p.kl_estimator in A.KL_ESTIMATORS and p.policy_loss in A.POLICY_LOSSES
    assert A.preset("dapo", clip_high=0.3).clip_high == 0.3 and A.PRESETS["dapo"].clip_high == 0.28
    assert A.preset("grpo") == A.PRESETS["grpo"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        A.PRESETS["grpo"].kl_coef = 0.0


@pytest.mark.parametrize("name, overrides, listed", [
    ("ppo", {}, "valid: grpo, dr_grpo, dapo"),
    ("dapo", {"clip_hi": 0.3}, "valid: advantage, policy_loss"),
    ("grpo", {"advantage": "ppo"},
     "unknown advantage 'ppo'; valid: grpo, grpo_batch_std, dr_grpo, rloo, reinforce_pp"),
    ("grpo", {"policy_loss": "clip"}, "unknown policy_loss 'clip'; valid: ppo_clip"),
    ("grpo", {"loss_agg": "mean"}, "unknown loss_agg 'mean'; valid: token_mean"),
    ("grpo", {"kl_estimator": "k4"}, "unknown kl_estimator 'k4'; valid: k1, k2, k3"),
    ("grpo", {"kl_as_reward": True}, "kl_as_reward: .* advantage 'grpo' does not have; use advantage = 'reinforce_pp'"),
    ("grpo", {"kl_estimator": "k1"}, "'k1' as a loss term: its gradient is zero in expectation"),
])
def test_preset_errors_list_the_valid_names(name, overrides, listed):
    with pytest.raises(ValueError, match=listed):
        A.preset(name, **overrides)


def test_batch_statistics_span_every_rank(tmp_path):
    """grpo_batch_std's std and reinforce_pp's whitening are over the whole batch: two gloo ranks, each holding two
    of the four groups, give the advantages one process gives the whole batch (up to float32 rounding: the sums
    are split in another order). A world of one is exact by construction (ONE_RANK is the identity)."""
    from test_runtime import torchrun_script

    gen = torch.Generator().manual_seed(0)
    rewards = torch.tensor([1., 0., 0., 0., 1.1, 0.1, 0.1, -0.9, 0.5, 0.5, 0.5, 0.5, 1., 1., 0., 1.])  # 4 groups of 4
    mask = (torch.arange(6) < torch.randint(1, 7, (16, 1), generator=gen)).float()  # (16, 6), lengths 1-6
    kl = torch.rand(16, 6, generator=gen) * mask
    torch.save({"rewards": rewards, "mask": mask, "kl": kl}, tmp_path / "batch.pt")
    cases = {"grpo_batch_std": {}, "reinforce_pp": {"kl": kl, "kl_coef": 0.1}}
    out = torchrun_script(tmp_path, f"""import torch
from r1lab.rl import algos
runtime.init_distributed()
rank = dist.get_rank()
b = torch.load({str(tmp_path / 'batch.pt')!r})
rows = slice(8 * rank, 8 * rank + 8)
ranks = algos.Ranks(runtime.sum_over_ranks, runtime.max_over_ranks)
kl = {{"grpo_batch_std": {{}}, "reinforce_pp": {{"kl": b["kl"][rows], "kl_coef": 0.1}}}}
adv = {{name: algos.ADVANTAGES[name](b["rewards"][rows], b["mask"][rows], 4, ranks=ranks, **kl[name])[0]
       for name in kl}}
torch.save(adv, {str(tmp_path)!r} + f"/rank{{rank}}.pt")
""")
    assert out.returncode == 0, out.stderr[-3000:]
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, extra in cases.items():
        whole, _ = A.ADVANTAGES[name](rewards, mask, 4, **extra)
        split = torch.cat([parts[0][name], parts[1][name]])
        assert split.abs().max() > 0.5  # not the trivial answer
        close(split, whole, magnitude=float(whole.abs().max()), n=16 * 6)
        shares, _ = A.ADVANTAGES[name](rewards[:8], mask[:8], 4, **{k: v[:8] if k == "kl" else v
                                                                    for k, v in extra.items()})
        assert (shares - whole[:8]).abs().max() > 1e-2  # one rank's own statistics would differ
