"""The RL stage on the shipped base model: invariants of one update, exact resume, and data parallelism."""
import copy
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from r1lab.config import load_config
from r1lab.model.load import load_model
from r1lab.model.load import resolve_checkpoint
from r1lab.rl.train import RLConfig, Rollouts, algorithm, score_rollouts, train_on

BASE = resolve_checkpoint("countdown-base")
SMALL = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=4",
         "samples_per_prompt=4", "max_new_tokens=160", "train_instances=40", "eval_instances=8", "threads=1",
         "sample_every=0", "dtype=fp32", "lr=1e-4"]


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


def step_params(model, roll, cfg, **overrides):
    cfg = dataclasses.replace(cfg, **overrides)
    m = copy.deepcopy(model)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    metrics, *_ = train_on(m, None, opt, roll, cfg, algorithm(cfg), None, 0, torch.device("cpu"))
    return m, metrics


@pytest.mark.parametrize("preset", ["grpo", "dr_grpo", "dapo"])
def test_micro_batching_does_not_change_the_update(rollouts, preset):
    """Batch 8 x accumulation 1 == batch 1 x accumulation 8 (here 16 and 1 sequences per forward)."""
    model, tok, cfg, roll = rollouts
    big, _ = step_params(model, roll, cfg, preset=preset, device_batch_size=16, kl_coef=0.0)
    small, _ = step_params(model, roll, cfg, preset=preset, device_batch_size=1, kl_coef=0.0)
    changed = 0
    for (name, p0), p1, p2 in zip(model.named_parameters(), big.parameters(), small.parameters()):
        assert torch.allclose(p1, p2, atol=1e-6, rtol=1e-4), name
        changed += not torch.equal(p0, p1)
    assert changed > 0  # parameters change after a step


def test_equal_rewards_change_nothing(rollouts):
    model, tok, cfg, roll = rollouts
    flat = Rollouts(roll.examples, roll.completions, roll.scores, torch.ones(16))
    m, metrics = step_params(model, flat, cfg, kl_coef=0.0)
    for p0, p1 in zip(model.parameters(), m.parameters()):
        assert torch.equal(p0, p1)
    assert metrics["zero_std_frac"] == 1.0


def run_rl(out, extra, env=None):
    args = [sys.executable, "-m", "r1lab.cli", "rl", "--model", BASE, "--out", str(out)] + sum(
        (["--set", s] for s in SMALL + extra), [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def metric_rows(run_dir, keys=("reward", "acc", "response_len", "grad_norm", "entropy")):
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [(r["step"], *[round(r[k], 4) for k in keys]) for r in rows if "reward" in r]


def test_resume_after_kill_matches_an_unbroken_run(tmp_path):
    curriculum = "eval_task_args=min_numbers=4,max_numbers=4,max_number=12,max_target=30"  # held out: 4 numbers
    straight = run_rl(tmp_path / "straight", ["steps=4", "save_every=4", curriculum])
    assert straight.wait() == 0, straight.stderr.read().decode()[-2000:]
    (eval_file,) = (tmp_path / "straight").glob("countdown-test-*.jsonl")
    (train_file,) = (tmp_path / "straight").glob("countdown-train-*.jsonl")
    assert {len(json.loads(ln)["nums"]) for ln in eval_file.read_text().splitlines()} == {4}
    assert {len(json.loads(ln)["nums"]) for ln in train_file.read_text().splitlines()} == {3}
    killed_dir = tmp_path / "killed"
    proc = run_rl(killed_dir, ["steps=4", "save_every=2", curriculum])
    latest = killed_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists()
    resumed = run_rl(killed_dir, ["steps=4", "save_every=2", curriculum])
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
    ref = metric_rows(tmp_path / "straight")
    assert len(ref) == 4 and metric_rows(killed_dir) == ref


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    one = run_rl(tmp_path / "one", ["steps=2", "save_every=2", "eval_instances=0"])
    assert one.wait() == 0, one.stderr.read().decode()[-2000:]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "-m", "r1lab.cli", "rl", "--model", BASE, "--out", str(tmp_path / "two")] + sum(
        (["--set", s] for s in SMALL + ["steps=2", "save_every=2", "eval_instances=0"]), [])
    two = subprocess.run(args, capture_output=True, timeout=600)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    assert metric_rows(tmp_path / "two", ("reward", "acc", "response_len")) == metric_rows(
        tmp_path / "one", ("reward", "acc", "response_len"))
    a, _ = load_model(str(tmp_path / "one" / "checkpoints" / "step_000002"))
    b, _ = load_model(str(tmp_path / "two" / "checkpoints" / "step_000002"))
    for (name, p1), p2 in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p1, p2, atol=1e-5), name


def test_shared_prompt_logp_equals_a_full_forward(rollouts):
    """Each distinct prompt runs once and its cache is shared by its samples: same log-probs and gradients."""
    from r1lab.rl import algos
    from r1lab.rl.train import pack, response_logp

    model, tok, cfg, roll = rollouts
    completions = roll.completions[:3] + roll.completions[5:7]  # two prompts, uneven groups
    prompts, ids, attn, mask = pack(completions, tok.pad_token_id)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    shared, _ = response_logp(m1, prompts, ids, attn, None)
    (shared * mask).sum().backward()
    full = []
    for c in completions:  # one row at a time, prompt + response, no padding anywhere
        seq = torch.tensor([list(c.prompt_ids) + list(c.token_ids)])
        logits = m2(input_ids=seq).logits[:, len(c.prompt_ids) - 1:-1]
        full.append(algos.logprobs_from_logits(logits, seq[:, len(c.prompt_ids):])[0])
    for i, f in enumerate(full):
        assert torch.allclose(shared[i, :len(f)], f, atol=1e-4)
    sum((f * torch.tensor(c.mask)).sum() for f, c in zip(full, completions)).backward()
    for (name, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-4, rtol=1e-3), name
