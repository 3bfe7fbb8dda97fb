"""`r1lab rl` runs end to end on the shipped base: exact resume after a kill, two gloo processes against one, a run
directory as the model, the rollout backend chosen by name, dataset tasks, a curriculum and the held-out evaluation's
own budget. The update's invariants are in tests/test_rl.py.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import gloo_env
from tolerances import rounding_atol

from r1lab.config import ConfigError, load_config
from r1lab.model.load import load_model
from r1lab.rl.train import RLConfig, main
from test_rl import BASE, SMALL


def run_rl(out, extra, env=None):
    args = [sys.executable, "-m", "r1lab.cli", "rl", "--model", BASE, "--out", str(out)] + sum(
        (["--set", s] for s in SMALL + extra), [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


TIMINGS = ("time", "step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s", "flops_per_s", "mfu")


def metric_rows(run_dir):
    """The logged rows without their timings."""
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def test_resume_after_kill_matches_an_unbroken_run(tmp_path):
    """Exactly: the resumed run does the same float operations in the same order (one thread) from the same state,
    even when the kill tore the last line of metrics.jsonl and of the cached problem pool."""
    curriculum = "eval_task_args=min_numbers=4,max_numbers=4,max_number=12,max_target=30"  # held out: 4 numbers
    straight = run_rl(tmp_path / "straight", ["steps=4", "save_every=4", curriculum, "sample_every=1"])
    assert straight.wait() == 0, straight.stderr.read().decode()[-2000:]
    (eval_file,) = (tmp_path / "straight").glob("countdown-test-*.jsonl")
    (train_file,) = (tmp_path / "straight").glob("countdown-train-*.jsonl")
    assert {len(json.loads(ln)["nums"]) for ln in eval_file.read_text().splitlines()} == {4}
    assert {len(json.loads(ln)["nums"]) for ln in train_file.read_text().splitlines()} == {3}
    killed_dir = tmp_path / "killed"
    proc = run_rl(killed_dir, ["steps=4", "save_every=2", curriculum, "sample_every=1"])
    latest = killed_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists()
    # a kill can land mid-append: tear the last line of the metrics and of the cached training pool
    with open(killed_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "stage": "rl", "rew')
    (pool,) = killed_dir.glob("countdown-train-*.jsonl")
    pool.write_bytes(pool.read_bytes()[:-7])
    resumed = run_rl(killed_dir, ["steps=4", "save_every=2", curriculum, "sample_every=1"])
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
    ref = metric_rows(tmp_path / "straight")
    assert len([r for r in ref if "reward" in r]) == 4 and metric_rows(killed_dir) == ref
    samples = (tmp_path / "straight" / "samples.jsonl").read_text()
    assert [json.loads(line)["step"] for line in samples.splitlines()] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert (killed_dir / "samples.jsonl").read_text() == samples  # the killed run's rows after step 2 went
    # A finished run run again: no second final evaluation (its row read back), nothing appended.
    again = run_rl(killed_dir, ["steps=4", "save_every=2", curriculum, "sample_every=1"])
    assert again.wait() == 0, again.stderr.read().decode()[-2000:]
    assert metric_rows(killed_dir) == ref and (killed_dir / "samples.jsonl").read_text() == samples


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    """The same rollouts (exactly: each row keeps its seed) and, at step 1, the same gradient up to rounding.

    Parameters are not compared: AdamW's first steps are lr * g / (|g| + 1e-8), so a gradient element at rounding
    level can move its parameter anywhere within 2 lr; any two runs from one start agree to that.
    """
    one = run_rl(tmp_path / "one", ["steps=2", "save_every=2", "eval_instances=0"])
    assert one.wait() == 0, one.stderr.read().decode()[-2000:]
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "-m", "r1lab.cli", "rl", "--model", BASE, "--out", str(tmp_path / "two")] + sum(
        (["--set", s] for s in SMALL + ["steps=2", "save_every=2", "eval_instances=0"]), [])
    two = subprocess.run(args, capture_output=True, timeout=600, env=gloo_env())
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    rows_one, rows_two = metric_rows(tmp_path / "one"), metric_rows(tmp_path / "two")
    rollout_keys = ("reward", "acc", "response_len", "generated_tokens", "step_acc", "attempts")  # over all ranks
    assert [[r[k] for k in rollout_keys] for r in rows_two] == [[r[k] for k in rollout_keys] for r in rows_one]
    # The gradient's norm: float32 rounding at its size (its largest elements, which dominate it, barely cancel),
    # over the batch's tokens, through the model's depth.
    config = load_model(BASE)[0].config
    n, depth = 16 * 160, 2 * config.num_hidden_layers + 1
    g = rows_one[0]["grad_norm"]
    assert abs(rows_two[0]["grad_norm"] - g) <= rounding_atol(g, n, depth)
    # The account holds both ranks' work (it held rank 0's half before session 21); MFU is against two peaks.
    acc_one, acc_two = (json.loads((tmp_path / d / "account.json").read_text()) for d in ("one", "two"))
    assert (acc_one["devices"], acc_two["devices"]) == (1, 2) and acc_two["peak_source"].startswith("2 x cpu")
    assert acc_two["flops_by_kind"]["generate"] == pytest.approx(acc_one["flops_by_kind"]["generate"], rel=1e-9)
    assert acc_two["flops"] == pytest.approx(acc_one["flops"], rel=0.1)  # training: each rank's prompts once


def test_main_accepts_a_run_directory_as_model(tmp_path, capsys):
    """`r1lab demo --from-scratch` hands RL the pretraining run's directory: its latest checkpoint is the model."""
    from r1lab.checkpoint import save_checkpoint

    model, tok = load_model(BASE)
    ckpt = save_checkpoint(tmp_path / "base", 7, model, tok, {})
    cfg = load_config(RLConfig, None, SMALL + [f"model={tmp_path / 'base'}", f"out_dir={tmp_path / 'rl'}", "steps=1",
                                               "eval_instances=0", "save_every=0", "max_new_tokens=16"])
    final = main(cfg)
    assert final == tmp_path / "rl" / "checkpoints" / "step_000001"
    assert f"from {ckpt}" in capsys.readouterr().out


def test_the_rollout_backend_is_chosen_by_name_and_synced_after_every_update(tmp_path, monkeypatch):
    """rollout_backend names a registered backend; the loop calls its sync_weights(model) after each optimizer step
    (a vLLM backend must receive the new weights there). A real engine backend that counts its syncs."""
    from r1lab.engine import backend as backends
    from r1lab.rl.config import check

    synced = []

    class Counting(backends.EngineBackend):
        def sync_weights(self, model):
            synced.append(model)
            super().sync_weights(model)

    monkeypatch.setitem(backends.BACKENDS, "counting", Counting)
    cfg = load_config(RLConfig, None, SMALL + ["rollout_backend=counting", f"out_dir={tmp_path}", "steps=2",
                                               "eval_instances=0", "save_every=0", "max_new_tokens=16"])
    main(cfg)
    assert len(synced) == 2 and all(isinstance(m, torch.nn.Module) for m in synced)
    with pytest.raises(ValueError, match="rollout_backend = 'vlm': must be one of engine"):
        check(load_config(RLConfig, None, ["rollout_backend=vlm"]))


def test_vllm_rollouts_need_the_extra_and_a_sane_tis_cap(monkeypatch):
    """Checked before anything loads, with one line naming the key (CI has no vLLM; simulated where it is)."""
    from r1lab.rl.config import check
    from r1lab.rl.rollouts import tis_cap

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError, match=r"rollout_backend = 'vllm': .*not installed: pip install 'r1lab\[vllm\]'"):
        check(load_config(RLConfig, None, ["rollout_backend=vllm"]))
    for value, message in (("0.5", "must be 0 \\(off\\) or at least 1"), ("-1", "must be >= 0")):
        with pytest.raises(ConfigError, match=f"tis_cap = {float(value)!r}: {message}"):
            check(load_config(RLConfig, None, [f"tis_cap={value}"]))
    assert [tis_cap(load_config(RLConfig, None, o)) for o in ([], ["rollout_backend=vllm"], ["tis_cap=0"],
                                                               ["rollout_backend=vllm", "tis_cap=0"],
                                                               ["tis_cap=3"])] == [0.0, 2.0, 0.0, 0.0, 3.0]


def test_dataset_tasks_train_on_problem_files(tmp_path):
    """gsm8k has no generator: rl reads its training problems from `data` and the held-out ones from `eval_data`,
    and says which key is missing, before any work, when they are not given."""
    rows = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
             "answer": f"{a} + {b} = {a + b}\n#### {a + b}"} for a, b in [(3, 4), (5, 9), (2, 2), (7, 1), (6, 3)]]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    test.write_text(json.dumps(rows[4]) + "\n")
    dataset = ["task=gsm8k", "task_args=", "prompts_per_step=2", "train_instances=4", "eval_instances=1",
               "max_new_tokens=24", "steps=1"]
    proc = run_rl(tmp_path / "run", dataset + [f"data={train}", f"eval_data={test}"])
    assert proc.wait() == 0, proc.stderr.read().decode()[-2000:]
    logged = metric_rows(tmp_path / "run")
    assert logged[-1]["step"] == 1 and "eval/pass1" in logged[0] and logged[1]["generated_tokens"] > 0
    for extra, message in [([], b"is a dataset: set data ="), ([f"data={train}"], b"set eval_data ="),
                           ([f"data={tmp_path / 'nope.jsonl'}", "eval_instances=0"], b"no such file or folder"),
                           ([f"data={train}", f"eval_data={train}"], b"the held-out set would be trained on")]:
        proc = run_rl(tmp_path / "bad", dataset + extra)
        assert proc.wait() == 2 and message in proc.stderr.read(), extra
        assert not (tmp_path / "bad").exists()


def test_a_curriculum_switches_the_training_problems_at_its_step(tmp_path, monkeypatch):
    """curriculum_step = 2: step 1 trains on task_args' problems (3 numbers), steps 2 and 3 on curriculum_task_args'
    (4 numbers); a curriculum needs both settings, and a generator."""
    from r1lab.config import ConfigError
    from r1lab.rl import train
    from r1lab.rl.config import check

    sizes = []
    real = train.collect_rollouts

    def recording(step, backend, task, pool, *args, **kwargs):
        roll, stats = real(step, backend, task, pool, *args, **kwargs)
        sizes.append(sorted({len(ex["nums"]) for ex in roll.examples}))
        return roll, stats

    monkeypatch.setattr(train, "collect_rollouts", recording)
    cfg = load_config(RLConfig, None, SMALL + [f"out_dir={tmp_path}", "steps=3", "eval_instances=0", "save_every=0",
                                               "max_new_tokens=16", "curriculum_step=2",
                                               "curriculum_task_args=min_numbers=4,max_numbers=4,max_target=30"])
    main(cfg)
    assert sizes == [[3], [4], [4]]
    for extra, message in [(["curriculum_step=2"], "a curriculum needs both"),
                           (["curriculum_task_args=max_numbers=4"], "a curriculum needs both"),
                           (["curriculum_step=2", "curriculum_task_args=max_numbrs=4"], "max_numbrs")]:
        with pytest.raises(ConfigError, match=message):
            check(load_config(RLConfig, None, SMALL + extra))


def test_the_held_out_evaluation_has_its_own_budget(tmp_path, monkeypatch):
    """eval_max_new_tokens sets the held-out evaluation's budget (0: the training one); `r1lab demo` evaluates with
    the same budget."""
    from r1lab.evaluation import evaluate

    budgets = []
    real = evaluate.evaluate_model

    def recording(*args, **kwargs):
        budgets.append(kwargs["max_new_tokens"])
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_model", recording)
    for extra, want in [(["eval_max_new_tokens=24"], 24), ([], 16)]:
        budgets.clear()
        cfg = load_config(RLConfig, None, SMALL + [f"out_dir={tmp_path / str(want)}", "steps=1", "eval_instances=2",
                                                   "save_every=0", "max_new_tokens=16"] + extra)
        main(cfg)
        assert budgets == [want, want]  # before the first step and after the last
