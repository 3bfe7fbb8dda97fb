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


@pytest.fixture
def logged_out(monkeypatch, tmp_path):
    """No W&B credentials anywhere wandb looks (an empty home, no WANDB_* variables)."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL",
                "WANDB_CONFIG_DIR", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


def test_wandb_problem_reads_credentials_and_modes_as_wandb_does(fake_wandb, tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    (cwd / "wandb").mkdir(parents=True)
    home.mkdir()

    def problem(**env):
        return wandb_problem(env, home, cwd)

    assert "wandb is not logged in (no WANDB_API_KEY and no " in problem()
    assert "`wandb login`" in problem() and "WANDB_MODE=offline" in problem()
    assert problem(WANDB_API_KEY="k") is None and problem(WANDB_IDENTITY_TOKEN_FILE="/t") is None
    assert problem(WANDB_MODE="offline") is None and problem(WANDB_MODE="disabled") is None
    assert problem(WANDB_MODE="online") is not None and problem(WANDB_DISABLED="true") is None
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert problem() is None
    assert "for my.server" in problem(WANDB_BASE_URL="https://my.server:8080")  # another host's key
    (home / ".netrc").write_text("machine my.server:8080 login user password k\n")
    assert problem(WANDB_BASE_URL="https://my.server:8080") is None
    (home / ".netrc").unlink()
    (cwd / "wandb" / "settings").write_text("[default]\nmode = offline\n")  # `wandb offline`
    assert problem() is None
    assert problem(WANDB_MODE="online") is not None  # the variable first


def test_wandb_problem_without_wandb(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert wandb_problem({"WANDB_API_KEY": "k"}) == "wandb is not installed"


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
    monkeypatch.setenv("WANDB_API_KEY", "k")
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


def test_wandb_not_logged_in_is_one_warning_before_any_work_and_jsonl_only(fake_wandb, logged_out, tmp_path,
                                                                              capsys):
    """As when wandb is not installed: a warning, and the run logs to JSONL; said by the settings check (here
    before a missing data file stops the run) and again where the logger starts, which never calls wandb.init."""
    from r1lab.cli import main as cli_main

    assert cli_main(["sft", "--wandb", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "tracking: --wandb asked for but wandb is not logged in" in err and not (tmp_path / "r").exists()
    log = MetricsLogger(tmp_path / "r", "sft", wandb=True)
    log.log(1, {"loss": 1.0})
    log.close()
    assert "wandb is not logged in" in capsys.readouterr().err and fake_wandb.runs == []
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 1


def test_a_failing_wandb_init_is_a_warning(fake_wandb, tmp_path, monkeypatch, capsys):
    def init(**kwargs):
        raise fake_wandb.Error("api_key not valid\nmore")

    monkeypatch.setattr(fake_wandb, "init", init)
    monkeypatch.setenv("WANDB_API_KEY", "bad")
    MetricsLogger(tmp_path, "sft", wandb=True).close()
    assert "wandb.init failed (api_key not valid); logging to JSONL only" in capsys.readouterr().err
