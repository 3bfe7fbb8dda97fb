"""Part e of benchmarks/gpu_check.py: `r1lab rl` itself, end to end, on the machine's device (a GPU's first, under the
check; the CPU in smoke mode): the shipped countdown base, one step, then the same command with steps=2 resuming from
its checkpoint. What the throughput parts cannot show: the stage's own device placement, autocast, engine, account
(its MFU has a peak on the device) and a checkpoint that resumes there (the CUDA RNG state included).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

# the countdown recipe at a few seconds a step: 4 prompts x 4 samples, 64 new tokens, a held-out check of 8 problems
RL_SET = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=4",
          "samples_per_prompt=4", "max_new_tokens=64", "train_instances=40", "eval_instances=8",
          "eval_max_new_tokens=64", "sample_every=0", "save_every=1"]


def rl_command(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "r1lab.cli", "rl", "--recipe", "countdown_rl", "--out", str(out)] + sum(
        (["--set", s] for s in RL_SET + [f"steps={steps}"]), [])


def run_rl_twice(out: Path, timeout_s: float) -> dict:
    """The row: steps=1, then steps=2 on the same folder (a resume); PASS when both exit 0, the log holds steps 1 and
    2 once each, and the second step has an MFU (a peak was known for the device and dtypes)."""
    t0 = time.perf_counter()
    for steps in (1, 2):
        left = timeout_s - (time.perf_counter() - t0)
        proc = subprocess.run(rl_command(out, steps), capture_output=True, text=True, timeout=max(left, 1))
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            return {"key": "rl", "verdict": "FAIL", "seconds": round(time.perf_counter() - t0, 1),
                    "note": f"steps={steps} exited {proc.returncode}: {tail}"[:300]}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps_logged = [r for r in rows if r.get("stage") == "rl" and "reward" in r]  # the step rows, not evaluations
    steps, last = [r["step"] for r in steps_logged], (steps_logged[-1] if steps_logged else {})
    ok = steps == [1, 2] and last.get("mfu") is not None  # a restart instead of a resume would log step 1 twice
    mfu = "none" if last.get("mfu") is None else f"{last['mfu']:.1%}"
    note = (f"steps logged {steps}, resumed at 1; step 2: reward {last.get('reward')}, MFU {mfu}, "
            f"{last.get('step_time_s', 0):.1f} s")
    return {"key": "rl", "verdict": "PASS" if ok else "FAIL", "seconds": round(time.perf_counter() - t0, 1),
            "note": note}


def part_rl(S, rows_path) -> None:
    import tempfile

    from gpu_common import guarded

    with tempfile.TemporaryDirectory(prefix="gpu_check-rl-") as folder:
        guarded(["rl"], lambda: [run_rl_twice(Path(folder) / "run", S.budget_s["rl"] - 5)], S.budget_s["rl"],
                rows_path)
