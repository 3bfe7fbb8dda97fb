"""Bad input to the command line: one line naming the key, the value and what is allowed, exit status 2, no
traceback, and nothing left behind (no run directory, no temporary file). Each case runs the real CLI in-process."""
import shutil

import pytest

from r1lab.cli import main
from r1lab.model.load import ASSETS

RL = ["rl", "--recipe", "countdown_rl_quick"]
PRETRAIN = ["pretrain", "--recipe", "countdown_base_short"]


@pytest.mark.parametrize("argv, message", [
    (RL + ["--set", "lr=-1"], "lr = -1.0: must be > 0"),
    (RL + ["--set", "lr=nan"], "lr = nan: must be a finite number"),
    (RL + ["--set", "samples_per_prompt=0"], "samples_per_prompt = 0: must be >= 2"),
    (RL + ["--set", "samples_per_prompt=1"], "samples_per_prompt = 1: must be >= 2"),
    (RL + ["--set", "prompts_per_step=0"], "prompts_per_step = 0: must be >= 1"),
    (RL + ["--set", "prompts_per_step=5000"], "more than the training pool holds"),
    (RL + ["--set", "max_new_tokens=0"], "max_new_tokens = 0: must be >= 1"),
    (RL + ["--set", "temperature=-1"], "temperature = -1.0: must be > 0"),
    (RL + ["--set", "template=fancy"], "template = 'fancy': must be one of"),
    (RL + ["--set", "task=chess"], "task = 'chess': unknown task 'chess'"),
    (RL + ["--set", "task=gsm8k"], "task = 'gsm8k' is a dataset, which takes no generator knobs, and task_args set "
                                   "them: clear them (--set task_args=) and give its problems as data"),
    (["rl", "--recipe", "sft_countdown"], "sft_countdown.toml is an `r1lab sft` recipe; this command takes `r1lab rl`"),
    (["pipeline", "--recipe", "countdown_rl"], "countdown_rl.toml is an `r1lab rl` recipe; this command takes"),
    (RL + ["--set", "steps=-1"], "steps = -1: must be >= 1"),
    (RL + ["--set", "steps=1e999"], "steps: expected int, got '1e999'"),
    (RL + ["--set", "steps=1.5e0"], "steps: expected int, got '1.5e0'"),
    (RL + ["--set", "preset=ppo"], "unknown preset 'ppo'"),
    (RL + ["--set", "task_args=colour=red"], "task_args: countdown has no knob 'colour'"),
    (RL + ["--set", "nonsense=1"], "unknown key 'nonsense'"),
    (RL + ["--model", "runs/no/such/model"], "runs/no/such/model: no such file or directory"),
    (PRETRAIN + ["--set", "lr=0"], "lr = 0.0: must be > 0"),
    (PRETRAIN + ["--set", "give_up_prob=1.5"], "give_up_prob = 1.5: must be [0, 1]"),
    (PRETRAIN + ["--set", "seq_len=1"], "seq_len = 1: must be >= 2"),
    (PRETRAIN + ["--set", "dtype=fp8"], "dtype = 'fp8': must be one of"),
    (PRETRAIN + ["--recipe", "nope"], "no recipe 'nope'"),
])
def test_bad_stage_configs_are_one_line_and_make_no_run_directory(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_an_unreadable_model_is_one_line_in_rl(tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(ASSETS / "countdown-base", broken)
    (broken / "model.safetensors").write_bytes(b"")  # a save killed at its first byte
    assert main(RL + ["--model", str(broken), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot load a model from {broken}" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("argv, message", [
    (["score", "{dir}", "--task", "gsm8k"], "a directory; score takes one JSONL file"),
    (["score", "{dir}/x.jsonl", "--task", "gsm8k", "--accuracy-weight", "nan"], "must be finite numbers"),
    (["data", "--task", "countdown", "--n", "0", "--out", "{dir}/x.jsonl"], "--n must be at least 1"),
    (["data", "--task", "gsm8k", "--n", "3", "--out", "{dir}/x.jsonl"], "is a dataset and has no generator"),
    (["eval", "--model", "countdown-base", "--task", "countdown", "--n", "0"], "at least 1"),
])
def test_bad_command_arguments_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "x.jsonl").write_text('{"question": "q", "answer": "#### 1", "completion": "1"}\n')
    assert main([a.format(dir=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_score_keeps_every_good_line_when_some_lines_are_hostile(tmp_path, capsys):
    """A lone surrogate, an integer past Python's 4,300-digit limit and nesting past the recursion limit: each is
    reported as FILE:LINE and skipped, every other line is scored, and no temporary file is left."""
    import json

    good = '{"question": "q", "answer": "#### 18", "completion": "x</think> <answer>18</answer>"}'
    lines = [good,
             '{"question": "q", "answer": "#### 18", "completion": "\\ud800 <answer>18</answer>"}',  # lone surrogate
             '{"question": "q", "answer": "#### 18", "completion": "x", "n": ' + "9" * 5000 + "}",
             "[" * 100_000 + "]" * 100_000,
             good]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    assert main(["score", str(source), "--task", "gsm8k", "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["count"], summary["errors"]) == (3, 2), summary  # the surrogate line is valid JSON: scored
    assert f"{source}:3:" in captured.err and f"{source}:4:" in captured.err
    scored = (tmp_path / "in.scored.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(scored) == 3 and json.loads(scored[1])["completion"].startswith("\ud800")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "in.scored.jsonl"]


def test_serve_refuses_an_address_it_cannot_listen_on_before_loading(capsys):
    import socket

    assert main(["serve", "--model", "countdown-base", "--port", "-5"]) == 2
    assert capsys.readouterr().err.strip() == "r1lab serve: --port -5: must be in 0..65535"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "countdown-base", "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"r1lab serve: cannot listen on 127.0.0.1:{port}: ") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("argv, package, extra", [
    (["serve", "--model", "countdown-base", "--port", "0"], "uvicorn", "serve"),
    (["report", "run", "--out", "report"], "matplotlib", "report"),
])
def test_a_missing_optional_package_names_its_extra(argv, package, extra, monkeypatch, capsys, tmp_path):
    """The package is hidden (None in sys.modules makes its import fail as if it were not installed)."""
    import json
    import sys

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "stage": "rl", "reward": s / 10})
                                                            + "\n" for s in (1, 2)))

    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"needs {package}, which is not installed: pip install 'r1lab[{extra}]'" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_prompts_that_cannot_fit_the_model_are_refused_before_sampling(tmp_path_factory, tmp_path, capsys, command):
    # before: they stopped mid-run with the engine's ValueError traceback (a local HF model of 64 positions did)
    from conftest import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path_factory, "short", max_positions=512)
    out = tmp_path / "out.jsonl"
    argv = [command, "--model", str(ckpt), "--task", "countdown", "--n", "2", "--max-new-tokens", "512",
            "--threads", "1", "--out", str(out)] + (["--samples", "2"] if command == "sample" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "+ --max-new-tokens 512 need" in err and "has 512; lower --max-new-tokens to at most" in err
    assert "Traceback" not in err and not out.exists()
