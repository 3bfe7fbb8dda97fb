"""Metrics: JSONL always, one greppable console line per step, W&B / TensorBoard when asked and installed.

    log = MetricsLogger(run_dir, stage="rl", wandb=False, tensorboard=False)
    log.log(step, {"reward": 0.41, "acc": 0.3}, console_keys=("reward", "acc"))

A resumed run continues its trackers rather than starting new ones: W&B resumes the run whose id RUN/wandb_id holds
(written when the run starts; W&B's files go to RUN/wandb/), and TensorBoard purges the events an earlier attempt
logged after the checkpoint it resumes from, so neither shows a step twice.

A tracker that cannot log (not installed; W&B not logged in) is a warning, once at the stage's settings check before
any work and again where the logger starts, and the run logs to JSONL only: the metrics are never lost, and a
dashboard is not worth a refused multi-GPU launch.
"""
from __future__ import annotations

import configparser
import importlib.util
import json
import netrc
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


WANDB_OFF_MODES = ("offline", "disabled", "dryrun")  # WANDB_MODE values that need no API key


def wandb_problem(env=None, home: Path | None = None, cwd: Path | None = None) -> str | None:
    """Why `--wandb` cannot log, or None: "wandb is not installed", or not logged in (no API key where wandb looks:
    WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, a netrc entry for WANDB_BASE_URL's host) outside an offline or
    disabled mode (WANDB_MODE, or `mode` in wandb's settings files). Found without importing wandb (seconds).
    wandb_problem({"WANDB_MODE": "offline"}) is None where wandb is installed."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME", "~")).expanduser() if home is None else home
    if importlib.util.find_spec("wandb") is None:
        return "wandb is not installed"
    settings = _wandb_settings(env, home, cwd or Path.cwd())
    mode = env.get("WANDB_MODE") or settings.get("mode", "")
    if mode in WANDB_OFF_MODES or env.get("WANDB_DISABLED", "").lower() in ("1", "true"):
        return None
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE") or settings.get("api_key"):
        return None
    base = env.get("WANDB_BASE_URL") or settings.get("base_url") or "https://api.wandb.ai"
    host = base.split("://", 1)[-1].split("/", 1)[0]
    path = Path(env["NETRC"]).expanduser() if env.get("NETRC") else next(
        (p for p in (home / ".netrc", home / "_netrc") if p.exists()), home / ".netrc")
    try:
        if netrc.netrc(str(path)).authenticators(host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return (f"wandb is not logged in (no WANDB_API_KEY and no {path} entry for {host}): run `wandb login`, or set "
            "WANDB_MODE=offline to log locally")


def _wandb_settings(env, home: Path, cwd: Path) -> dict:
    """wandb's own settings files' [default] section: the global one, then the working directory's (`wandb offline`
    writes `mode` there)."""
    config_dir = Path(env["WANDB_CONFIG_DIR"]) if env.get("WANDB_CONFIG_DIR") else home / ".config" / "wandb"
    parser = configparser.ConfigParser()
    try:
        parser.read([config_dir / "settings", cwd / "wandb" / "settings"])
    except configparser.Error:
        return {}
    return dict(parser["default"]) if parser.has_section("default") else {}


def check_tracking(cfg) -> None:
    """The settings check's word on cfg.wandb: a one-line warning (first rank only) before any work when W&B cannot
    log; the run goes on with JSONL (and TensorBoard when asked)."""
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
    """The W&B run, or None with a warning (not installed, not logged in, or wandb.init failed): JSONL only."""
    why = wandb_problem()
    if why is None:
        try:
            import wandb as wb
        except ImportError:
            why = "wandb is not installed"
    if why is None:
        try:
            return wb.init(**wandb_init_kwargs(run_dir, stage, config, resume))
        except wb.Error as e:  # a rejected key, no network: the run itself is fine
            why = f"wandb.init failed ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
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
