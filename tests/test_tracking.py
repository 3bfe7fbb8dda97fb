"""W&B and TensorBoard (r1lab/tracking.py) without either installed: the decisions are plain functions (is W&B
usable, wandb.init's and SummaryWriter's arguments), and MetricsLogger is checked against stand-in modules that
record what they are given. tests/test_report.py checks the warning when neither is installed."""
import importlib.machinery
import sys
import types

import pytest

from r1lab.tracking import MetricsLogger, tensorboard_kwargs, wandb_init_kwargs, wandb_problem


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs)) or self


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` package: find_spec finds it and `import wandb` gives it; .runs records each wandb.init."""
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    module.Error = type("Error", (Exception,), {})
    module.runs = []

    def init(**kwargs):
        run = Recorder()
        module.runs.append((kwargs, run))
        return run

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_wandb_problem_is_whether_it_is_installed(fake_wandb, monkeypatch):
    assert wandb_problem() is None
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert wandb_problem() == "wandb is not installed"


def test_one_wandb_run_per_r1lab_run(tmp_path):
    """A fresh run gets a new id and keeps it in RUN/wandb_id; a resume continues it; a fresh run over an aborted
    one starts another; a resume of a run without the file (older) starts one and keeps it from then on."""
    run_dir = tmp_path / "runs" / "sft-a"
    run_dir.mkdir(parents=True)
    first = wandb_init_kwargs(run_dir, "sft", {"lr": 1.0}, resume=False)
    assert first == {"project": "r1lab", "id": first["id"], "resume": "allow", "dir": str(run_dir.resolve()),
                     "name": "sft-a", "config": {"lr": 1.0}, "job_type": "sft"}
    assert len(first["id"]) == 8 and (run_dir / "wandb_id").read_text().strip() == first["id"]
    assert wandb_init_kwargs(run_dir, "sft", {}, resume=True)["id"] == first["id"]
    again = wandb_init_kwargs(run_dir, "sft", {}, resume=False)["id"]
    assert again != first["id"] and wandb_init_kwargs(run_dir, "sft", {}, resume=True)["id"] == again
    (run_dir / "wandb_id").unlink()
    older = wandb_init_kwargs(run_dir, "sft", {}, resume=True)["id"]
    assert (run_dir / "wandb_id").read_text().strip() == older


def test_tensorboard_purges_what_a_resumed_run_logs_again():
    assert tensorboard_kwargs("r", None) == {"log_dir": "r/tensorboard", "purge_step": None}
    assert tensorboard_kwargs("r", 4) == {"log_dir": "r/tensorboard", "purge_step": 5}


def test_metrics_logger_resumes_its_trackers(fake_wandb, tmp_path, monkeypatch):
    writers = []
    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = lambda **kwargs: writers.append(kwargs) or Recorder()
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", tb)
    run_dir = tmp_path / "run"
    log = MetricsLogger(run_dir, "rl", wandb=True, tensorboard=True, config={"lr": 1.0})
    log.log(1, {"reward": 0.5})
    log.close()
    log = MetricsLogger(run_dir, "rl", wandb=True, tensorboard=True, config={"lr": 1.0}, resume_step=4)
    log.close()
    (fresh, run), (resumed, _) = fake_wandb.runs
    assert resumed["id"] == fresh["id"] and resumed["resume"] == "allow" and resumed["dir"] == str(run_dir.resolve())
    assert ("log", ({"reward": 0.5},), {"step": 1}) in run.calls and ("finish", (), {}) in run.calls
    assert [w["purge_step"] for w in writers] == [None, 5]


def test_wandb_not_logged_in_is_a_warning_and_jsonl_only(fake_wandb, tmp_path, capsys):
    """A W&B that refuses to start (wandb 0.31 without a key: UsageError "No API key configured") crashed the run
    after the model had loaded; it is a warning, as when wandb is not installed, and the run logs to JSONL."""
    def init(**kwargs):
        raise fake_wandb.Error("No API key configured. Use `wandb login` to log in.")

    fake_wandb.init = init
    log = MetricsLogger(tmp_path / "r", "sft", wandb=True)
    log.log(1, {"loss": 1.0})
    log.close()
    err = capsys.readouterr().err
    assert "tracking: --wandb asked for but wandb.init failed (No API key configured." in err
    assert "WANDB_MODE=offline" in err and (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 1


def test_a_failing_wandb_init_is_a_warning(fake_wandb, tmp_path, monkeypatch, capsys):
    def init(**kwargs):
        raise fake_wandb.Error("api_key not valid\nmore")

    monkeypatch.setattr(fake_wandb, "init", init)
    MetricsLogger(tmp_path, "sft", wandb=True).close()
    err = capsys.readouterr().err
    assert "wandb.init failed (api_key not valid; `wandb login`" in err and err.endswith("logging to JSONL only\n")
