"""The RL stage on the shipped base model: invariants of one update, the algorithm's registry names honoured, the
rollouts' reward rules and log-probs. Whole `r1lab rl` runs (resume, data parallelism, ...) are in
tests/test_rl_runs.py.

Tolerances (tests/tolerances.py) come from float32 and the size of what is compared. A parameter update is a sum of
per-sequence gradients that cancel; its rounding is at the size of those terms (sum_i |g_i|, taken with a hook at one
sequence per backward), over the batch's tokens (the longest reduction) through 2 x layers + 1 chained reductions.
"""
import copy
import dataclasses
import math

import pytest
import torch
from tolerances import logit_scale, logprob_atol, rounding_atol

from r1lab.config import ConfigError, load_config
from r1lab.model.load import load_model, resolve_checkpoint
from r1lab.rl import algos
from r1lab.rl.rollouts import Rollouts, pack, response_logp, score_rollouts
from r1lab.rl.train import RLConfig, algorithm, train_on

BASE = resolve_checkpoint("countdown-base")
SMALL = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=4",
         "samples_per_prompt=4", "max_new_tokens=160", "train_instances=40", "eval_instances=8", "threads=1",
         "sample_every=0", "dtype=fp32", "lr=1e-4"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def rollouts():
    """16 real rollouts of the shipped base (4 prompts x 4 samples) with their rewards."""
    from r1lab.engine import Engine, SamplingParams
    from r1lab.tasks import get_task

    torch.set_num_threads(1)
    model, tok = load_model(BASE)
    task = get_task("countdown")
    cfg = load_config(RLConfig, None, SMALL)
    pool = task.generate(4, seed=0, split="train", min_numbers=3, max_numbers=3, max_number=12, max_target=30)
    examples = [ex for ex in pool for _ in range(4)]
    outs = Engine(model, tok).generate([task.prompt(ex, "short") for ex in examples],
                                       SamplingParams(max_new_tokens=160, seed=3))
    # Rewards with spread in every group, so that every group has a nonzero advantage.
    scores, _ = score_rollouts(task, examples, outs, cfg, algorithm(cfg))
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0] * 4)
    return model, tok, cfg, Rollouts(examples, outs, scores, rewards)


def grad_magnitudes(params) -> list:
    """Per parameter, a tensor that sums |g| over every backward from now on (a hook on each of `params`)."""
    def summing(mag):
        def hook(g):
            mag.add_(g.abs())  # returns None: the gradient itself is left alone
        return hook

    mags = [torch.zeros_like(p) for p in params]
    for p, mag in zip(params, mags):
        p.register_hook(summing(mag))
    return mags


def step_params(model, roll, cfg, ref_model=None, magnitudes=False, **overrides):
    """One SGD (lr 1) update of a copy of `model`: (the copy, metrics, processed tokens[, sum_i |g_i| per parameter,
    g_i being each backward's gradient])."""
    cfg = dataclasses.replace(cfg, **overrides)
    m = copy.deepcopy(model)
    mags = grad_magnitudes(list(m.parameters())) if magnitudes else None
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    metrics, processed = train_on(m, ref_model, opt, roll, cfg, algorithm(cfg), None, 0, CPU)
    return (m, metrics, processed, mags) if magnitudes else (m, metrics, processed)


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo"])
def test_micro_batching_does_not_change_the_update(rollouts, preset):
    """Batch 8 x accumulation 1 == batch 1 x accumulation 8 (here 16 and 1 sequences per forward)."""
    model, tok, cfg, roll = rollouts
    big, _, _ = step_params(model, roll, cfg, preset=preset, device_batch_size=16, kl_coef=0.0)
    small, _, _, mags = step_params(model, roll, cfg, magnitudes=True, preset=preset, device_batch_size=1,
                                    kl_coef=0.0)
    n = len(roll.completions) * max(len(c.token_ids) for c in roll.completions)
    depth = 2 * model.config.num_hidden_layers + 1
    changed = 0
    for (name, p0), p1, p2, mag in zip(model.named_parameters(), big.parameters(), small.parameters(), mags):
        # per tensor, in norms: the largest of millions of elements would be a tail of the rounding distribution
        # p0 - g is rounded to p0's size as well
        atol = rounding_atol(float(mag.norm()), n, depth) + rounding_atol(float(p0.detach().norm()), 1)
        assert float((p1 - p2).detach().norm()) <= atol, name
        changed += not torch.equal(p0, p1)
    assert changed > 0  # parameters change after a step


def test_equal_rewards_change_nothing(rollouts):
    model, tok, cfg, roll = rollouts
    flat = Rollouts(roll.examples, roll.completions, roll.scores, torch.ones(16))
    m, metrics, _ = step_params(model, flat, cfg, kl_coef=0.0)
    for p0, p1 in zip(model.parameters(), m.parameters()):
        assert torch.equal(p0, p1)
    assert metrics["zero_std_frac"] == 1.0


def test_rollout_metrics_split_right_and_wrong():
    """Lengths, attempts and marker rates overall and for right vs wrong rollouts, on hand-made rollouts; a side
    with no rollout reads 0.0, as response_len_correct / _wrong always have."""
    from r1lab.engine.engine import Completion
    from r1lab.rl.rollouts import rollout_metrics
    from r1lab.tasks.common import Score

    def roll(*rows):  # (tokens, correct, text, finish_reason)
        comps = [Completion([1], [5] * n, [1] * n, text, finish) for n, _, text, finish in rows]
        scores = [Score(float(ok), ok, True, None) for _, ok, _, _ in rows]
        return Rollouts([{}] * len(rows), comps, scores, torch.zeros(len(rows)))

    hit = "1+2=3 vs 9 miss\n3*3=9 vs 9 hit\ncheck 3*3=9 ok"  # 2 attempts, a marker
    miss = "1+2=3 vs 9 miss\n"  # 1 attempt
    backtrack = "1+1=2 vs 6 miss\nback, 2*2=4 vs 6 miss\n2*3=6 vs 6 hit"  # 3 attempts
    m = rollout_metrics(roll((10, True, hit, "eos"), (20, True, backtrack, "eos"), (30, False, miss, "eos"),
                             (40, False, miss + miss + "wait", "length")))
    assert m["acc"] == 0.5 and m["truncated_rate"] == 0.25
    assert (m["response_len"], m["response_len_correct"], m["response_len_wrong"]) == (25, 15, 35)
    assert (m["attempts"], m["attempts_correct"], m["attempts_wrong"]) == (2, 2.5, 1.5)
    assert (m["marker_rate"], m["marker_rate_correct"], m["marker_rate_wrong"]) == (0.75, 1, 0.5)
    none_right = rollout_metrics(roll((30, False, miss, "eos"), (10, False, "", "eos")))
    assert none_right["acc"] == 0 and none_right["attempts_wrong"] == 0.5
    assert (none_right["response_len_correct"], none_right["attempts_correct"],
            none_right["marker_rate_correct"]) == (0.0, 0.0, 0.0)
    none_wrong = rollout_metrics(roll((10, True, hit, "eos")))
    assert (none_wrong["response_len_wrong"], none_wrong["attempts_wrong"], none_wrong["marker_rate_wrong"]) == (
        0.0, 0.0, 0.0)
    assert (none_wrong["attempts_correct"], none_wrong["marker_rate_correct"]) == (2, 1)


def test_every_algorithm_setting_is_a_config_field():
    settings = {f.name for f in dataclasses.fields(algos.Algorithm)}
    assert settings <= {f.name for f in dataclasses.fields(RLConfig)}
    cfg = RLConfig(preset="dapo", policy_loss="ppo_clip", kl_estimator="k2", clip_high=0.3)
    assert algorithm(cfg) == algos.preset("dapo", kl_estimator="k2", clip_high=0.3)
    # KL in the reward: k1 unless asked (k3 there followed KL(pi||ref) - KL(ref||pi), which nearly cancels)
    folded = dict(preset="grpo", advantage="reinforce_pp", kl_as_reward=True)
    assert algorithm(RLConfig(**folded)).kl_estimator == "k1"
    assert algorithm(RLConfig(**folded, kl_estimator="k3")).kl_estimator == "k3"
    with pytest.raises(ValueError, match="valid: ppo_clip"):
        algorithm(RLConfig(policy_loss="ppo"))


def test_policy_loss_is_looked_up_by_name(rollouts, monkeypatch):
    """train_on uses the algorithm's policy loss, not ppo_clip whatever the setting."""
    model, tok, cfg, roll = rollouts
    calls = []

    def no_update(logp, old_logp, advantages, mask, clip_low, clip_high, clip_c):
        calls.append(logp.shape)
        return logp * 0.0, {}

    monkeypatch.setitem(algos.POLICY_LOSSES, "no_update", no_update)
    m, metrics, _ = step_params(model, roll, cfg, kl_coef=0.0, policy_loss="no_update")
    assert calls and metrics["grad_norm"] == 0.0 and "clip_frac_low" not in metrics
    for p0, p1 in zip(model.parameters(), m.parameters()):
        assert torch.equal(p0, p1)


def test_kl_as_reward_uses_the_chosen_estimator(rollouts):
    """KL folded into the rewards (reinforce_pp) uses KL_ESTIMATORS[kl_estimator]: the returns' std the step logs is
    the one computed here by hand with that estimator, and differs between estimators. Also the token account:
    old log-probs (for the KL) and reference log-probs are one no-grad pass each."""
    model, tok, cfg, roll = rollouts
    ref_model = copy.deepcopy(model)
    with torch.no_grad():  # a reference that differs from the policy, so that the KL is not zero
        ref_model.lm_head.weight.mul_(1.5)
    prompts, ids, attn, mask = pack(roll.completions, 0)
    with torch.no_grad():
        logp, _ = response_logp(model.eval(), prompts, ids, attn, None)
        ref_logp, _ = response_logp(ref_model, prompts, ids, attn, None)
    stds = {}
    for name, est in algos.KL_ESTIMATORS.items():
        _, metrics, processed = step_params(model, roll, cfg, ref_model, advantage="reinforce_pp", kl_as_reward=True,
                                            kl_coef=0.5, kl_estimator=name)
        _, by_hand = algos.reinforce_pp_advantages(roll.rewards, mask, 4, kl=est(logp, ref_logp) * mask, kl_coef=0.5)
        stds[name] = float(by_hand["return_std"])
        n = int(mask.shape[0] * mask.shape[1])  # the same formula in the same order; sums of at most n terms
        assert metrics["return_std"] == pytest.approx(stds[name], abs=rounding_atol(stds[name], n)), name
        train, forward = processed["train"], processed["forward"]
        assert forward == (2 * train[0], train[1])  # mu = 1: one training pass; old + reference: two forward
    low, mid, high = sorted(stds.values())  # the estimators give different returns, far beyond rounding
    assert mid - low > 100 * rounding_atol(high, n) and high - mid > 100 * rounding_atol(high, n)
    _, _, processed = step_params(model, roll, cfg, kl_coef=0.0)
    assert "forward" not in processed  # on-policy without KL: no extra pass


def test_dynamic_sampling_judges_groups_by_accuracy_alone():
    """DAPO filters on accuracy: a group of wrong answers that differ only in length and format (so the soft
    overlong penalty and the format bonus make their rewards differ) is replaced; a group with a right answer is
    kept. Scripted rollouts (the filter is the subject, not the sampler): one problem all wrong, short and truncated,
    half of them without answer tags; the other one right, three wrong."""
    from r1lab.engine import Completion
    from r1lab.rl.rollouts import collect_rollouts
    from r1lab.rl.train import algorithm
    from r1lab.tasks import countdown
    from r1lab.tasks.format import render_completion

    cfg = load_config(RLConfig, None, ["preset=dapo", "prompts_per_step=2", "samples_per_prompt=4",
                                       "max_new_tokens=16", "overlong_cache_frac=0.5", "max_sampling_rounds=3"])
    algo = algorithm(cfg)
    assert algo.dynamic_sampling and algo.soft_overlong
    wrong, right = {"nums": [2, 3, 5], "target": 11}, {"nums": [1, 4, 6], "target": 10}
    right_text = render_completion("4+6=10, 10*1=10 vs 10 hit", "(4+6)*1")
    wrong_text = render_completion("2+3=5 vs 11 miss", "2+3")
    unformatted = "2+3=5 vs 11 miss, give up"  # no </think>, no answer: format 0
    by_prompt = {countdown.prompt(wrong, template=cfg.template): [wrong_text, wrong_text, unformatted, unformatted],
                 countdown.prompt(right, template=cfg.template): [right_text] + [wrong_text] * 3}

    class Scripted:
        def generate(self, prompts, params):
            outs = []
            for k, p in enumerate(prompts):
                text = by_prompt[p][k % 4]
                n = 16 if k % 2 else 4  # odd rows run to the budget: penalty -1; even rows end early: none
                outs.append(Completion([1], list(range(n)), [1] * n, text, "length" if n == 16 else "eos"))
            return outs

    roll, stats = collect_rollouts(0, Scripted(), countdown, [wrong, right], cfg, algo)
    assert [ex["target"] for ex in roll.examples] == [10] * 8  # the batch filled with the right group, twice
    assert stats == {"groups_sampled": 4, "groups_dropped": 2}  # the all-wrong group, in each of the 2 rounds
    # what the step's generation cost: all 16 rows sampled, the dropped ones too (the account counted 8)
    assert len(roll.sampled) == 16 and sorted({n for _, n in roll.sampled}) == [4, 16]
    assert roll.rewards.tolist() == pytest.approx([1.1, -0.9, 0.1, -0.9] * 2)  # the penalty still shapes what is kept
    half = dataclasses.replace(algo, overlong_penalty=0.5)  # its size at the budget
    roll, _ = collect_rollouts(0, Scripted(), countdown, [wrong, right], cfg, half)
    assert roll.rewards.tolist() == pytest.approx([1.1, -0.4, 0.1, -0.4] * 2)


def test_length_reward_ranks_each_group_by_length():
    """Kimi's length reward on scored rollouts: within each prompt's group, right answers from +0.5 (shortest) to
    -0.5 (longest) on top of the verifier's 1, wrong ones only charged (length_reward_wrong) or left at 0; scaled by
    length_reward; with DAPO's soft overlong penalty the two add up. Scripted completions of known lengths."""
    from r1lab.engine import Completion
    from r1lab.rl.config import check
    from r1lab.tasks import countdown
    from r1lab.tasks.format import render_completion

    ex = {"nums": [1, 4, 6], "target": 10}
    right = render_completion("4+6=10, 10*1=10 vs 10 hit", "(4+6)*1")
    wrong = render_completion("4*6=24 vs 10 miss", "4*6")
    # group 1: right 4 tokens, wrong 8, right 12, wrong 16; group 2: the same texts, every one 6 tokens long
    outs = [Completion([1], list(range(n)), [1] * n, text, "eos")
            for n, text in [(4, right), (8, wrong), (12, right), (16, wrong)] + [(6, right), (6, wrong)] * 2]
    settings = ["prompts_per_step=2", "samples_per_prompt=4", "max_new_tokens=16", "format_weight=0"]

    def rewards(*more):
        cfg = load_config(RLConfig, None, settings + list(more))
        return score_rollouts(countdown, [ex] * 8, outs, cfg, algorithm(cfg))[1].tolist()

    plain = [1.0, 0.0, 1.0, 0.0] * 2
    assert rewards() == plain  # off by default
    kimi = [1.5, 0.0, 1 - 1 / 6, -0.5] + plain[4:]
    assert rewards("length_reward=1") == pytest.approx(kimi)
    assert rewards("length_reward=0.4") == pytest.approx([1.2, 0.0, 1 - 0.4 / 6, -0.2] + plain[4:])
    assert rewards("length_reward=1", "length_reward_wrong=false") == pytest.approx(kimi[:3] + [0.0] + plain[4:])
    # with the soft overlong penalty over the last half of the 16-token budget: 0 up to 8 tokens, -0.5 at 12, -1 at 16
    assert rewards("length_reward=1", "soft_overlong=true", "overlong_cache_frac=0.5") == pytest.approx(
        [1.5, 0.0, 1 - 1 / 6 - 0.5, -1.5] + plain[4:])
    with pytest.raises(ConfigError, match="length_reward"):
        check(load_config(RLConfig, None, ["length_reward=-1"]))


def test_a_rollout_temperature_with_tis_is_refused():
    """The backends' rollout log-probs are of the raw distribution; the loss's are of logits / temperature."""
    from r1lab.rl.config import check

    with pytest.raises(ConfigError, match=r"temperature = 0.6 with truncated IS \(tis_cap 2.0\).*set tis_cap = 0"):
        check(load_config(RLConfig, None, ["temperature=0.6", "tis_cap=2"]))
    check(load_config(RLConfig, None, ["temperature=0.6"]))  # the engine's default: no TIS
    # LoRA dropout: the trainer's log-probs with it, the backend's without (0.16 apart in one probe): noise as weights
    with pytest.raises(ConfigError, match=r"lora_dropout = 0.1 with truncated IS \(tis_cap 2.0\).*lora_dropout = 0"):
        check(load_config(RLConfig, None, ["temperature=1", "tis_cap=2", "lora_r=8", "lora_dropout=0.1"]))
    check(load_config(RLConfig, None, ["temperature=1", "lora_r=8", "lora_dropout=0.1"]))  # no TIS


def test_tis_weights_scale_the_update_by_the_capped_ratio(rollouts):
    """Rollout log-probs log(1.5) below the trainer's: every token's ratio is 1.5, capped at 1.2, so the gradient
    (and an SGD step without clipping, no KL) is exactly 1.2 times the one without TIS; with the cap at 2, 1.5 times."""
    from r1lab.rl.rollouts import pack

    model, tok, cfg, roll = rollouts
    prompts, ids, attn, mask = pack(roll.completions, 0)
    with torch.no_grad():
        logp = response_logp(model, prompts, ids, attn, None)[0]
    shifted = [dataclasses.replace(c, logprobs=(logp[i, :len(c.token_ids)] - math.log(1.5)).tolist())
               for i, c in enumerate(roll.completions)]
    shifted = Rollouts(roll.examples, shifted, roll.scores, roll.rewards)
    plain, _, _, mags = step_params(model, roll, cfg, magnitudes=True, kl_coef=0.0, grad_clip=1e9, tis_cap=0.0)
    n = len(roll.completions) * ids.shape[1]
    depth = 2 * model.config.num_hidden_layers + 1
    for cap, scale in ((1.2, 1.2), (2.0, 1.5)):
        tis, metrics, _ = step_params(model, shifted, cfg, kl_coef=0.0, grad_clip=1e9, tis_cap=cap)
        assert metrics["tis_ratio_mean"] == pytest.approx(1.5, rel=1e-5)
        assert metrics["tis_capped_frac"] == (1.0 if cap < 1.5 else 0.0)
        assert metrics["tis_logp_diff_max"] == pytest.approx(math.log(1.5), rel=1e-5)
        for (name, p0), p1, p2, mag in zip(model.named_parameters(), plain.parameters(), tis.parameters(), mags):
            atol = rounding_atol(scale * float(mag.norm()), n, depth) + rounding_atol(float(p0.detach().norm()), 1)
            assert float(((p2 - p0) - scale * (p1 - p0)).detach().norm()) <= atol, name
    with pytest.raises(ValueError, match="a rollout has no log-probs"):
        step_params(model, roll, cfg, tis_cap=2.0)


def test_logp_at_a_temperature_is_of_the_scaled_logits(rollouts):
    """Rollouts sampled at temperature T train the policy softmax(logits / T): its log-probs and entropy."""
    model, tok, cfg, roll = rollouts
    prompts, ids, attn, mask = pack(roll.completions[:4], tok.pad_token_id)
    atol = logprob_atol(model.config, *logit_scale(model, roll.completions[:4])) / 0.5
    with torch.no_grad():
        plain, _ = response_logp(model, prompts, ids, attn, None)
        cold, ent = response_logp(model, prompts, ids, attn, None, with_entropy=True, temperature=0.5)
        for i, c in enumerate(roll.completions[:4]):
            seq = torch.tensor([list(c.prompt_ids) + list(c.token_ids)])
            logits = model(input_ids=seq).logits[:, len(c.prompt_ids) - 1:-1] / 0.5
            n = len(c.token_ids)
            torch.testing.assert_close(cold[i, :n], algos.logprobs_from_logits(logits, seq[:, -n:])[0], atol=atol,
                                       rtol=0)
            torch.testing.assert_close(ent[i, :n], algos.entropy_from_logits(logits)[0], atol=atol, rtol=0)
    assert not torch.allclose(plain * mask[:4], cold * mask[:4])


def test_shared_prompt_logp_equals_a_full_forward(rollouts):
    """Each distinct prompt runs once and its cache is shared by its samples: same log-probs and gradients."""
    model, tok, cfg, roll = rollouts
    completions = roll.completions[:3] + roll.completions[5:7]  # two prompts, uneven groups
    prompts, ids, attn, mask = pack(completions, tok.pad_token_id)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    shared, _ = response_logp(m1, prompts, ids, attn, None)
    (shared * mask).sum().backward()
    mags = grad_magnitudes(list(m2.parameters()))
    full = []
    for c in completions:  # one row at a time, prompt + response, no padding anywhere; one backward per row
        seq = torch.tensor([list(c.prompt_ids) + list(c.token_ids)])
        logits = m2(input_ids=seq).logits[:, len(c.prompt_ids) - 1:-1]
        full.append(algos.logprobs_from_logits(logits, seq[:, len(c.prompt_ids):])[0])
        (full[-1] * torch.tensor(c.mask)).sum().backward()
    max_logit, context = logit_scale(model, completions)
    atol = logprob_atol(model.config, max_logit, context)
    for i, f in enumerate(full):
        torch.testing.assert_close(shared[i, :len(f)], f, atol=atol, rtol=0)
    n = max(model.config.intermediate_size, context)
    depth = 2 * model.config.num_hidden_layers + 1
    for (name, p1), p2, mag in zip(m1.named_parameters(), m2.parameters(), mags):
        assert float((p1.grad - p2.grad).norm()) <= rounding_atol(float(mag.norm()), n, depth), name


def test_dynamic_sampling_leaves_every_rank_the_same_rows(tmp_path):
    """Two gloo ranks; rank 1's groups are mostly flat, so within max_sampling_rounds it refills only 3 of its 4
    groups. It used to train on 12 rows against rank 0's 16: fewer micro-batches, and under FSDP (a collective in
    every forward and backward) rank 0 waited for it until the timeout. Both now keep 12."""
    from test_runtime import torchrun_script

    out = torchrun_script(tmp_path, f"""import torch
from r1lab.config import load_config
from r1lab.engine import Completion
from r1lab.rl.config import RLConfig, algorithm
from r1lab.rl.rollouts import collect_rollouts
from r1lab.tasks import get_task
from r1lab.tasks.format import render_completion
runtime.init_distributed()
rank = dist.get_rank()
task = get_task("arithmetic")
pool = task.generate(40, 0)
answers = {{task.prompt(ex, template="short"): ex["answer"] for ex in pool}}

class Scripted:  # rank 0: one right answer in every group; rank 1: in the first group of a round only
    def generate(self, prompts, params):
        return [Completion([1], [2], [1], render_completion("r", str(answers[p] + (k % 4 != 0 or
                           (rank == 1 and k >= 4)))), "eos") for k, p in enumerate(prompts)]

cfg = load_config(RLConfig, None, ["preset=dapo", "task=arithmetic", "task_args=", "prompts_per_step=8",
                                   "samples_per_prompt=4", "max_sampling_rounds=3"])
roll, stats = collect_rollouts(0, Scripted(), task, pool, cfg, algorithm(cfg))
open({str(tmp_path)!r} + f"/rank{{rank}}", "w").write(f"{{len(roll.examples)}} {{stats['groups_dropped']}}")
""")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["12 0", "12 9"]
