"""benchmarks/gpu_check.py, gpu_common.py, gpu_rollouts.py, gpu_rl.py and scripts/gpu_check.sh (issue 16's GPU check) in smoke
mode on the CPU: the shapes are Qwen2.5's, a failing part becomes its row and the others run, the verdicts follow the
targets, and the whole script runs end to end (the FSDP part on 2 gloo processes under torchrun). The vLLM parts skip
where vllm is not importable; with it (/work/vllm-venv/bin/python -m pytest tests/test_gpu_check.py) they run too, and
the weight sync must pass.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1lab.runtime import cpu_has_bf16
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
gpu_common = load_benchmark("gpu_common")
gpu_rollouts = load_benchmark("gpu_rollouts")
gpu_check = load_benchmark("gpu_check")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def count_params(name: str) -> int:
    """Parameters of gpu_common.QWEN[name] (the tied embedding once), counted on the meta device."""
    import torch
    from transformers import Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(gpu_common.qwen2_config(name))
    return sum(p.numel() for p in model.parameters())


def test_the_configs_have_qwen25s_published_parameter_counts():
    """Model cards: Qwen2.5-0.5B has 0.49B parameters (0.36B without embeddings), -1.5B 1.54B (1.31B)."""
    for name, total, body in (("0.5B", 0.49, 0.36), ("1.5B", 1.54, 1.31)):
        n = count_params(name)
        embedding = gpu_common.VOCAB * gpu_common.QWEN[name]["hidden_size"]
        assert (round(n / 1e9, 2), round((n - embedding) / 1e9, 2)) == (total, body)
    assert count_params("0.5B") == 494_032_768


def test_the_tokenizer_has_qwens_151936_ids_and_r1labs_characters():
    from r1lab.model.tokenizer import build_tokenizer

    tok, chars = gpu_common.build_tokenizer(), build_tokenizer()
    assert len(tok) == gpu_common.VOCAB == 151936
    assert (tok.pad_token_id, tok.eos_token_id) == (gpu_common.PAD_ID, gpu_common.EOS_ID)
    text = "User: 12+3\nAssistant: <think>"
    assert tok(text)["input_ids"] == chars(text)["input_ids"]
    assert tok.decode([8, 151935]) == "1<|t151935|>"


def test_a_part_that_raises_or_outruns_its_time_box_is_an_error_row_and_the_next_part_runs(tmp_path):
    rows = tmp_path / "rows.jsonl"

    def broken():
        raise RuntimeError("CUDA out of memory\nmore lines")

    t = time.perf_counter()
    gpu_common.guarded(["engine"], broken, 10, rows)
    gpu_common.guarded(["vllm"], lambda: time.sleep(30), 0.5, rows)
    gpu_common.guarded(["sync"], lambda: [{"key": "sync", "verdict": "PASS", "after": 0.0, "tol": 1e-5}], 10, rows)
    assert time.perf_counter() - t < 10
    got = {r["key"]: r for r in map(json.loads, rows.read_text().splitlines())}
    assert got["engine"]["verdict"] == "ERROR" and got["engine"]["note"] == "RuntimeError: CUDA out of memory"
    assert got["vllm"]["verdict"] == "ERROR" and got["vllm"]["note"].startswith("TimeoutError: over its time box")
    assert got["sync"]["verdict"] == "PASS"
    # the train part left no rows (its process was killed): ERROR rows say so; any ERROR makes the exit status 1
    table = gpu_check.finish_rows(list(got.values()), smoke=False)
    assert [(r["key"], r["verdict"]) for r in table] == [
        ("engine", "ERROR"), ("vllm", "ERROR"), ("ratio", "ERROR"), ("train", "ERROR"), ("train_eager", "ERROR"),
        ("train_gc", "ERROR"), ("sync", "PASS"), ("rl", "ERROR")]
    assert "died or was killed" in table[3]["note"]
    assert gpu_check.report(rows, tmp_path / "t.json", smoke=False) == 1


def test_verdicts_follow_the_targets_and_smoke_mode_has_none():
    rows = [{"key": "engine", "tokens_per_s": 1000.0}, {"key": "vllm", "tokens_per_s": 4990.0},
            {"key": "train", "tokens_per_s": 5e4, "mfu": 0.40}, {"key": "train_eager", "tokens_per_s": 4e4, "mfu": 0.32},
            {"key": "train_gc", "tokens_per_s": 4e4, "mfu": 0.3},
            {"key": "sync", "verdict": "PASS", "after": 0.01, "tol": 0.5},
            {"key": "rl", "verdict": "PASS", "note": "steps logged [1, 2]"}]
    verdicts = {r["key"]: r["verdict"] for r in gpu_check.finish_rows(rows, smoke=False)}
    assert verdicts == {"engine": "ok", "vllm": "ok", "ratio": "FAIL", "train": "PASS", "train_eager": "ok",
                        "train_gc": "ok", "sync": "PASS", "rl": "PASS"}
    rows[1]["tokens_per_s"] = 5000.0
    assert {r["key"]: r["verdict"] for r in gpu_check.finish_rows(rows, smoke=False)}["ratio"] == "PASS"
    assert {r["verdict"] for r in gpu_check.finish_rows(rows, smoke=True)} == {"ok", "PASS"}
    text = gpu_check.table(gpu_check.finish_rows(rows, smoke=False))
    assert "5.00x" in text and "40.0% (50,000 tok/s)" in text and "0.01 <= 0.5" in text and "runs, resumes" in text


def test_an_rl_run_that_fails_is_a_fail_row_with_its_last_error_line(tmp_path, monkeypatch):
    gpu_rl = load_benchmark("gpu_rl")
    fails = [sys.executable, "-c", "import sys; print('first', file=sys.stderr); sys.exit('r1lab rl: broken')"]
    monkeypatch.setattr(gpu_rl, "rl_command", lambda out, steps: fails)
    row = gpu_rl.run_rl_twice(tmp_path / "run", timeout_s=60)
    assert row["verdict"] == "FAIL" and row["note"] == "steps=1 exited 1: r1lab rl: broken"


def test_the_shell_script_in_smoke_mode_runs_every_part_and_prints_one_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--smoke", "--json", "table.json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train (torchrun, 2 processes) done" in out.stdout
    result = json.loads((tmp_path / "table.json").read_text())  # --json FILE is relative to the caller's directory
    rows = {r["key"]: r for r in result["rows"]}
    assert result["smoke"] and list(rows) == ["engine", "vllm", "ratio", "train", "train_eager", "train_gc", "sync",
                                              "rl"]
    assert rows["rl"]["verdict"] == "PASS" and rows["rl"]["note"].startswith("steps logged [1, 2], resumed at 1")
    assert rows["engine"]["verdict"] == "ok" and rows["engine"]["tokens_per_s"] > 0
    for key in ("train", "train_eager", "train_gc"):
        assert rows[key]["verdict"] == "ok" and rows[key]["mfu"] > 0
        assert rows[key]["note"].startswith("2 rank(s) on cpu")
        assert abs(rows[key]["loss"] - math.log(gpu_common.VOCAB)) < 0.1  # a random model's cross-entropy
    assert rows["train"]["loss"] == rows["train_gc"]["loss"]  # checkpointing recomputes, it changes nothing
    # compiled or eager, the same steps: fp32 sums of ~64 cross-entropy terms of ~12 in another order
    assert abs(rows["train"]["loss"] - rows["train_eager"]["loss"]) < 1e-4
    if HAS_VLLM:
        assert rows["vllm"]["verdict"] == "ok" and rows["sync"]["verdict"] == "PASS", rows["sync"]["note"]
    else:
        assert rows["vllm"]["verdict"] == rows["sync"]["verdict"] == rows["ratio"]["verdict"] == "SKIP"
    assert out.stdout.rstrip().splitlines()[-8].startswith("a     rollout tok/s, r1lab engine")


@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not importable (run with /work/vllm-venv/bin/python -m pytest)")
@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (avx512_bf16 / AMX)")
def test_in_bf16_the_weight_sync_passes_within_the_bf16_tolerance(tmp_path):
    """The GPU's dtypes on the CPU (avx512_bf16): vLLM in bf16, the policy under bf16 autocast."""
    rows = tmp_path / "rows.jsonl"
    assert gpu_check.main(["--smoke", "--bf16", "--part", "sync", "--rows", str(rows)]) == 0
    (row,) = [json.loads(x) for x in rows.read_text().splitlines()]
    assert row["verdict"] == "PASS" and row["after"] <= row["tol"] < row["moved"], row["note"]


class CopyBackend:
    """A stand-in for the vLLM backend: r1lab's engine on its own copy of the policy, refreshed by sync_weights alone
    (a sleeping GPU backend too: it wakes with the weights of the last sync); broken: never."""

    def __init__(self, model, tok, sleeps: bool, broken: bool = False):
        import copy

        from r1lab.engine import Engine

        self.model, self.sleeps, self.broken = model, sleeps, broken
        self.copy = copy.deepcopy(model)
        self.engine = Engine(self.copy, tok)

    def push(self):
        if not self.broken:
            self.copy.load_state_dict(self.model.state_dict())

    def generate(self, prompts, params):
        return self.engine.generate(prompts, params)

    def sync_weights(self, model):
        self.model = model
        self.push()


@pytest.mark.parametrize("sleeps, broken, verdict", [(False, False, "PASS"), (True, False, "PASS"),
                                                     (False, True, "FAIL"), (True, True, "FAIL")])
def test_the_sync_check_passes_a_working_sync_and_fails_a_broken_one(sleeps, broken, verdict):
    import torch

    r = gpu_rollouts.Rollouts(gpu_common.SMOKE, torch.device("cpu"), None, vllm_eager=False).ensure()
    r.vllm = CopyBackend(r.policy, r.tok, sleeps, broken)
    (row,) = r.sync()
    assert row["verdict"] == verdict, row["note"]
    assert row["matched"] <= row["tol"] < row["moved"]  # the step moved the log-probs past the tolerance
    if not broken:  # unsynced: the old weights, asleep or not
        assert row["unsynced"] > row["tol"]


def test_a_sleeping_vllm_is_also_timed_awake(monkeypatch):
    """On a GPU the backend sleeps between generate() calls; the vLLM row then also times a call without the
    wake-up, push and sleep around it, and leaves the backend sleeping as it found it."""
    import torch

    r = gpu_rollouts.Rollouts(gpu_common.SMOKE, torch.device("cpu"), None, vllm_eager=False).ensure()

    def build(eager):
        r.vllm = CopyBackend(r.policy, r.tok, sleeps=True)
        return r.vllm

    monkeypatch.setattr(r, "build_vllm", build)
    (row,) = r.vllm_rollout()
    assert row["tokens_per_s"] > 0 and row["tokens_per_s_awake"] > 0 and "without the sleep/wake" in row["note"]
    assert r.vllm.sleeps
    from r1lab.engine.vllm_backend import VLLMBackend  # the attribute gpu_rollouts toggles is the real backend's

    assert VLLMBackend(llm=None, model=None, tokenizer=None, sleeps=True).sleeps


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 (avx512_bf16 / AMX)")
def test_fsdp_with_the_gpus_mixed_precision_on_two_gloo_processes(tmp_path):
    """--bf16: shard()'s bf16 parameters and fp32 reductions, as on the GPU, under torchrun with 2 processes (the
    eager row: the smoke test above runs the compiled ones)."""
    rows = tmp_path / "rows.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--bf16", "--part", "train", "--rows", str(rows),
           "--train-rows", "train_eager"]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = {r["key"]: r for r in map(json.loads, rows.read_text().splitlines())}
    assert set(got) == {"train_eager"}
    for r in got.values():
        assert "verdict" not in r and r["mfu"] > 0 and abs(r["loss"] - math.log(gpu_common.VOCAB)) < 0.1, r


def test_the_training_sweeps_chunked_loss_equals_the_full_logits_loss(capsys):
    """benchmarks/gpu_train_sweep.py in smoke mode: each variant is a timed row, and the loss taken 1024 positions at
    a time from the last hidden state is the full-logits loss of the same step (same model, seed and data)."""
    sweep = load_benchmark("gpu_train_sweep")
    assert sweep.main(["--smoke", "--variants", "nofsdp,nofsdp_chunkloss,rl_pass"]) == 0
    rows = [json.loads(line.split(": ", 1)[1]) for line in capsys.readouterr().out.splitlines()
            if line.startswith("gpu_train_sweep: ")]
    assert [r["variant"] for r in rows] == ["nofsdp", "nofsdp_chunkloss", "rl_pass"]
    assert all(r["tokens_per_s"] > 0 and r["fwd_bwd_ms"] > 0 for r in rows)
    assert rows[0]["opt_ms"] > 0 and rows[1]["opt_ms"] > 0 and rows[2]["tokens_per_step"] > 0
    # fp32 sums of ~64 terms of ~12 each, in another order: rounding well under 1e-4
    assert abs(rows[0]["loss"] - rows[1]["loss"]) < 1e-4 and abs(rows[0]["loss"] - math.log(gpu_common.VOCAB)) < 0.1
