"""Metrics: JSONL always, one greppable console line per step, W&B / TensorBoard when asked and installed.

    log = MetricsLogger(run_dir, stage="rl", wandb=False, tensorboard=False)
    log.log(step, {"reward": 0.41, "acc": 0.3}, console_keys=("reward", "acc"))

A resumed run continues its trackers rather than starting new ones: W&B resumes the run whose id RUN/wandb_id holds
(written when the run starts; W&B's files go to RUN/wandb/), and TensorBoard purges the events an earlier attempt
logged after the checkpoint it resumes from, so neither shows a step twice.

A tracker that cannot log is a warning and the run logs to JSONL only: the metrics are never lost, and a dashboard
is not worth a refused multi-GPU launch. wandb not installed is said at the stage's settings check, before any work;
W&B that refuses to start (no key, no network) where the logger starts.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
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


def wandb_problem() -> str | None:
    """"wandb is not installed" when it is not, else None: found without importing it (that takes seconds).
    subtle: whether W&B can log in is wandb.init's to say (keys live in the environment, netrc files, settings files
    and more, by release); _start_wandb turns its refusal into the same warning."""
    return "wandb is not installed" if importlib.util.find_spec("wandb") is None else None


def check_tracking(cfg) -> None:
    """The settings check's word on cfg.wandb: a one-line warning (first rank only) before any work when wandb is not
    installed; the run goes on with JSONL (and TensorBoard when asked)."""
    if getattr(cfg, "wandb", False) and (why := wandb_problem()) and os.environ.get("RANK", "0") == "0":
        print(f"tracking: --wandb asked for but {why}; logging to JSONL only", file=sys.stderr)


def wandb_init_kwargs(run_dir, stage: str, config: dict, resume: bool) -> dict:
    """wandb.init's arguments: one W&B run per r1lab run. Its id is kept in RUN/wandb_id, so a resumed run continues
    it (resume="allow") rather than splitting; a fresh run (in a new folder, or over an aborted one) gets a new id.
    subtle: the id is written before wandb.init, so a run killed at once still resumes the run it had started."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / "wandb_id"
    run_id = path.read_text().strip() if resume and path.exists() else ""
    if not run_id:
        run_id = secrets.token_hex(4)  # 8 characters, as wandb's own ids
        path.write_text(run_id + "\n")
    return {"project": "r1lab", "id": run_id, "resume": "allow", "dir": str(run_dir), "name": run_dir.name,
            "config": config, "job_type": stage}


def tensorboard_kwargs(run_dir, resume_step: int | None) -> dict:
    """SummaryWriter's arguments: on resume, purge_step drops the events an earlier attempt logged after the
    checkpoint (steps > resume_step), which the resumed run logs again.
    tensorboard_kwargs("r", 4) == {"log_dir": "r/tensorboard", "purge_step": 5}"""
    return {"log_dir": str(Path(run_dir) / "tensorboard"),
            "purge_step": None if resume_step is None else resume_step + 1}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _start_wandb(run_dir, stage: str, config: dict, resume: bool):
    """The W&B run, or None with a warning (not installed, or wandb.init refused: no key, no network): JSONL only."""
    why = wandb_problem()
    if why is None:
        try:
            import wandb as wb
        except ImportError:
            why = "wandb is not installed"
    if why is None:
        try:
            return wb.init(**wandb_init_kwargs(run_dir, stage, config, resume))
        except Exception as e:  # no key, a rejected one, no network (wandb's errors by release): the run is fine
            why = (f"wandb.init failed ({str(e).splitlines()[0] if str(e) else type(e).__name__}; `wandb login`, "
                   "WANDB_API_KEY, or WANDB_MODE=offline to log locally)")
    print(f"tracking: --wandb asked for but {why}; logging to JSONL only", file=sys.stderr)
    return None


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
            self._wandb = _start_wandb(run_dir, stage, config or {}, resume_step is not None)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(**tensorboard_kwargs(run_dir, resume_step))
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
