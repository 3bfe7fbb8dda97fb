"""Metrics: JSONL always, one greppable console line per step, W&B / TensorBoard when asked and installed.

    log = MetricsLogger(run_dir, stage="rl", wandb=False, tensorboard=False)
    log.log(step, {"reward": 0.41, "acc": 0.3}, console_keys=("reward", "acc"))
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from r1lab.jsonl import read_jsonl, write_jsonl


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop rows logged after `after_step` (a resumed run logs them again, so the file matches an unbroken run).
    A torn last line (the run was killed while appending) is dropped too; the rewrite is atomic."""
    if not path.exists():
        return
    write_jsonl(path, [row for row in read_jsonl(path, bad="torn") if row.get("step", 0) <= after_step])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class MetricsLogger:
    def __init__(self, run_dir, stage: str, wandb: bool = False, tensorboard: bool = False, config: dict | None = None,
                 resume_step: int | None = None, also: tuple[str, ...] = ()):
        """also: other JSONL logs of the run with a "step" in each row (RL's samples.jsonl), kept by the same rule."""
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path in [self.path, *(self.path.parent / name for name in also)]:
            if resume_step is not None:
                truncate_metrics(path, resume_step)
            elif path.exists():  # a fresh run: nothing of an earlier, aborted one stays
                path.unlink()
        self.stage = stage
        self.t0 = time.time()
        self._wandb = self._tb = None
        if wandb:
            try:
                import wandb as wb

                self._wandb = wb.init(project="r1lab", config=config or {}, job_type=stage)
            except ImportError:
                print("tracking: --wandb asked for but wandb is not installed; logging to JSONL only", file=sys.stderr)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                print("tracking: --tensorboard asked for but tensorboard is not installed; JSONL only", file=sys.stderr)

    def log(self, step: int, metrics: dict, console_keys: tuple[str, ...] = (), echo: bool = True) -> None:
        row = {"step": step, "stage": self.stage, "time": round(time.time() - self.t0, 3), **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
        if echo and console_keys:
            parts = " | ".join(f"{k} {_fmt(metrics[k])}" for k in console_keys if k in metrics)
            print(f"{self.stage} step {step:5d} | {parts}", flush=True)
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(f"{self.stage}/{k}", v, step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
