"""r1lab.rl.algos: hand-computed cases, loop-vs-vectorised parity and invariants (hypothesis)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.rl import algos as A

T = torch.tensor
close = lambda x, y, atol=1e-4: torch.testing.assert_close(torch.as_tensor(x).float(), torch.as_tensor(y).float(),
                                                           atol=atol, rtol=0)

# ---------------------------------------------------------------------------------------------- advantages, by hand


def test_grpo_by_hand():
    # group 1: mean 0.25, unbiased std 0.5 -> (1.5, -0.5, -0.5, -0.5); group 2 has zero variance -> 0
    mask = T([[1, 1, 0]] * 8)
    adv, m = A.grpo_advantages(T([1., 0, 0, 0, 1, 1, 1, 1]), mask, G=4, eps=0.0)
    close(adv[:, 0], [1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0])
    assert (adv[:, 2] == 0).all() and (adv[:, 1] == adv[:, 0]).all()
    close(m["adv/zero_std_frac"], 0.5)


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
    adv, _ = A.reinforce_pp_advantages(T([1., 0.]), mask, G=2, eps=0.0)
    close(adv, [[math.sqrt(0.5), math.sqrt(0.5)], [-math.sqrt(2), 0.0]])


def test_fold_kl_into_rewards_by_hand():
    mask = T([[1., 1., 0.], [1., 0., 1.]])  # row 2: a forced token (mask 0) in the middle
    kl = T([[0.1, 0.2, 9.0], [0.3, 9.0, 0.4]])
    close(A.fold_kl_into_rewards(T([1., 2.]), mask, kl, 1.0), [[-0.1, 0.8, 0.0], [-0.3, 0.0, 1.6]])
    close(A.fold_kl_into_rewards(T([1., 2.]), mask), [[0, 1, 0], [0, 0, 2]])
    with pytest.raises(ValueError):  # KL in the reward is only meaningful with per-token returns
        A.grpo_advantages(T([1., 0.]), mask, G=2, kl=kl, kl_coef=0.1)


# ---------------------------------------------------------------------------------------------- loop vs vectorised


def loop_advantages(name, rewards, mask, G, eps):
    """Reference implementations written the slow, obvious way."""
    B, T_ = mask.shape
    out = torch.zeros(B, T_)
    seq = []
    for i in range(B):
        g = [float(x) for x in rewards[(i // G) * G:(i // G) * G + G]]
        r, mean = float(rewards[i]), sum(g) / G
        if max(g) == min(g):
            seq.append(0.0)
        elif name == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in g) / (G - 1))
            seq.append((r - mean) / (std + eps))
        elif name in ("dr_grpo", "reinforce_pp"):
            seq.append(r - mean)
        elif name == "rloo":
            seq.append(r - (sum(g) - r) / (G - 1))
    if name != "reinforce_pp":
        for i in range(B):
            for t in range(T_):
                out[i, t] = seq[i] * float(mask[i, t])
        return out
    vals = []
    for i in range(B):  # with gamma = 1 and reward only at the end, the return is the reward at every valid token
        for t in range(T_):
            if mask[i, t]:
                vals.append(seq[i])
    if not vals:
        return out
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
    for i in range(B):
        for t in range(T_):
            if mask[i, t] and std > 0:
                out[i, t] = (seq[i] - mean) / (std + eps)
    return out


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
        close(adv, loop_advantages(name, rewards, mask, G, 1e-6), atol=1e-4)


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
    close(m["actor/clip_frac_high"], 0.25)
    close(m["actor/clip_frac_low"], 0.25)
    close(m["actor/ratio_mean"], (1.5 + 0.5 + 5 + 1) / 4)
    loss, m = A.ppo_clip(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, clip_c=3.0)
    close(loss, [[-1.28, 0.8, 3.0, -2.0]])  # clip-higher; dual clip caps the negative-advantage token at 3 * |A|
    close(m["actor/dual_clip_frac"], 0.25)
    close(m["actor/approx_kl"], sum(r - 1 - math.log(r) for r in (1.5, 0.5, 5.0, 1.0)) / 4)


def test_on_policy_gradient_is_minus_advantage():
    logp = torch.log(T([[0.3, 0.6]])).requires_grad_()
    loss, _ = A.ppo_clip(logp, logp.detach(), T([[2.0, -1.0]]), torch.ones(1, 2))
    loss.sum().backward()
    close(logp.grad, [[-2.0, 1.0]])


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

    def loss_fn(rows, **counts):
        logp = torch.nn.functional.logsigmoid(head(x[rows]).squeeze(-1))  # (b, T)
        loss_mat, _ = A.ppo_clip(logp, logp.detach() - 0.1, adv[rows], mask[rows], clip_high=0.28)
        return A.aggregate(loss_mat, mask[rows], mode, max_tokens_const=6, **counts)

    full = loss_fn(slice(0, 8))
    full.backward()
    grads_full = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    counts = dict(global_tokens=mask.sum(), global_seqs=(mask.sum(-1) > 0).sum())
    micro = sum(loss_fn(slice(i, i + 1), **counts) for i in range(8))  # each microbatch's own .backward() alike
    micro.backward()
    close(micro, full, atol=1e-6)
    for g, p in zip(grads_full, head.parameters()):
        close(p.grad, g, atol=1e-6)


# ---------------------------------------------------------------------------------------------- KL, logits helpers


def test_kl_estimators_by_hand_and_unbiased():
    logp, ref = T(0.0), T(-1.0)
    close(A.kl_k1(logp, ref), 1.0)
    close(A.kl_k2(logp, ref), 0.5)
    close(A.kl_k3(logp, ref), math.exp(-1))
    # k1 and k3 are unbiased: their expectation under pi equals KL(pi || ref) exactly
    pi, rf = T([0.5, 0.3, 0.2]).double(), T([0.2, 0.2, 0.6]).double()
    kl = (pi * (pi / rf).log()).sum()
    for est in (A.kl_k1, A.kl_k3):
        close((pi * est(pi.log(), rf.log())).sum(), kl, atol=1e-9)
    assert A.needs_reference(0.001) and not A.needs_reference(0.0)


def test_logprobs_and_entropy_from_logits_chunked():
    torch.manual_seed(0)
    logits, ids = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    for chunk in (1, 4, 1024):
        close(A.logprobs_from_logits(logits, ids, chunk_size=chunk), ref, atol=1e-5)
        close(A.entropy_from_logits(logits, chunk_size=chunk), torch.distributions.Categorical(logits=logits)
              .entropy(), atol=1e-5)
    lp = A.logprobs_from_logits(logits.bfloat16(), ids)  # bf16 in, fp32 out
    assert lp.dtype == torch.float32
    close(A.entropy_from_logits(torch.zeros(1, 1, 8)), [[math.log(8)]])


# ---------------------------------------------------------------------------------------------- DAPO, presets


def test_dapo_filters_by_hand():
    assert A.filter_groups(T([1., 1., 0., 1., 0., 0.]), G=2).tolist() == [False, True, False]
    mask = torch.ones(2, 3)
    assert A.overlong_filter(mask, T([False, True])).tolist() == [[1, 1, 1], [0, 0, 0]]
    close(A.soft_overlong_penalty(T([10, 15, 20, 25]), max_len=20, cache_len=10), [0.0, -0.5, -1.0, -1.0])


def test_presets():
    g, d, dr = A.PRESETS["grpo"], A.PRESETS["dapo"], A.PRESETS["dr_grpo"]
    assert (g["advantage"], g["loss_agg"], g["kl_coef"], g["kl_estimator"], g["clip_low"]) == \
        ("grpo", "seq_mean_token_mean", 0.001, "k3", 0.2)
    assert (dr["advantage"], dr["loss_agg"], dr["kl_coef"]) == ("dr_grpo", "seq_mean_token_sum_norm", 0.0)
    assert (d["clip_low"], d["clip_high"], d["loss_agg"], d["kl_coef"], d["dynamic_sampling"], d["soft_overlong"]) \
        == (0.2, 0.28, "token_mean", 0.0, True, True)
    for p in A.PRESETS.values():  # every name resolves in its registry
        assert p["advantage"] in A.ADVANTAGES and p["loss_agg"] in A.AGGREGATIONS
        assert p["kl_estimator"] in A.KL_ESTIMATORS and p["policy_loss"] in A.POLICY_LOSSES
    assert A.preset("dapo", clip_high=0.3)["clip_high"] == 0.3 and A.PRESETS["dapo"]["clip_high"] == 0.28
    with pytest.raises(ValueError, match="valid"):
        A.preset("dapo", clip_hi=0.3)
