"""`r1lab pipeline`: the R1 recipe as ordinary commands in stage folders. The plan is pure and every stage's command
line parses with the real CLI; the quick recipe runs every stage end to end, is killed mid-run and resumes from the
last finished stage; a folder holding other settings is refused."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1lab.cli import build_parser, main
from r1lab.config import ConfigError, load_config
from r1lab.pipeline import PipelineConfig, check, plan
from r1lab.recipes import resolve_recipe


def cfg_of(recipe="r1_countdown", **over):
    return load_config(PipelineConfig, resolve_recipe(recipe), [f"{k}={v}" for k, v in over.items()])


def names(cfg):
    return [s.name for s in plan(cfg)]


def test_plan_follows_the_r1_paper_and_every_stage_is_a_valid_command(tmp_path):
    cfg = cfg_of(out_dir=tmp_path)
    check(cfg)
    stages = plan(cfg)
    assert [s.name for s in stages] == ["zero", "cold_data", "cold", "rl", "rejection", "sft"]
    parser = build_parser()
    for s in stages:
        args = parser.parse_args(s.argv)  # argparse exits on an unknown flag: the stage's command accepts it
        assert args.command == s.argv[0]
    by = {s.name: s for s in stages}
    # the cold start and the final SFT both start from the base; RL starts from the cold start
    assert by["cold"].argv[by["cold"].argv.index("--model") + 1] == "countdown-base"
    assert by["sft"].argv[by["sft"].argv.index("--model") + 1] == "countdown-base"
    assert by["rl"].argv[by["rl"].argv.index("--model") + 1] == str(tmp_path / "cold")
    assert by["cold_data"].argv[by["cold_data"].argv.index("--teacher") + 1] == str(tmp_path / "zero")
    assert by["rejection"].argv[by["rejection"].argv.index("--model") + 1] == str(tmp_path / "rl")
    # a given teacher replaces the zero stage; an API teacher is called through distill's API form
    assert names(cfg_of(teacher="runs/x")) == ["cold_data", "cold", "rl", "rejection", "sft"]
    api = plan(cfg_of(teacher_url="http://127.0.0.1:9/v1", teacher_model="m"))[0].argv
    assert api[:5] == ["distill", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"]
    assert names(cfg_of(rl2_steps=5))[-1] == "rl2"
    assert "--shortest-first" in by["cold_data"].argv
    assert "--shortest-first" not in plan(cfg_of(cold_shortest_first="false"))[1].argv


@pytest.mark.parametrize("over, message", [
    ({"teacher": "a", "teacher_url": "http://x/v1", "teacher_model": "m"}, "not both"),
    ({"teacher_url": "http://x/v1"}, "go together"),
    ({"rl_recipe": "no_such_recipe"}, "no recipe"),
    ({"cold_n": 0}, "cold_n"),
    ({"task": "nope"}, "task"),
    # a stage's own settings: refused before the stages before it ran (they used to stop it at that stage)
    ({"cold_set": '["stpes=3"]'}, "stage cold (cold_recipe, cold_set): unknown key 'stpes'"),
    ({"rl2_steps": 2, "rl2_set": '["lr=-1"]'}, "stage rl2 (rl_recipe, rl_set, rl2_set): lr = -1.0: must be > 0"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, over, message, capsys):
    args = ["pipeline", "--recipe", "r1_countdown", "--out", str(tmp_path / "run")]
    for k, v in over.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("recipe", ["r1_countdown", "r1_countdown_demo", "r1_countdown_quick"])
def test_every_shipped_pipeline_recipe_plans_valid_commands(tmp_path, recipe):
    cfg = cfg_of(recipe, out_dir=tmp_path)
    check(cfg)
    parser = build_parser()
    for s in plan(cfg):
        assert parser.parse_args(s.argv).command == s.argv[0]


def test_demo_r1_is_the_pipeline_and_takes_no_other_mode(tmp_path, capsys):
    assert main(["demo", "--r1", "--quick", "--out", str(tmp_path)]) == 2
    assert "--r1 runs from the shipped base" in capsys.readouterr().err


def test_bad_override_list_item_is_refused():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        check(cfg_of(rl_set='["steps"]'))


@pytest.mark.slow
def test_quick_pipeline_runs_every_stage_and_resumes_after_a_kill(tmp_path):
    out = tmp_path / "r1"
    cmd = [sys.executable, "-m", "r1lab.cli", "pipeline", "--recipe", "r1_countdown_quick", "--out", str(out),
           "--set", "threads=2"]
    # kill -9 as soon as the cold start has finished: zero, cold_data and cold are done, rl has not
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not (out / "cold" / ".done").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "cold" / ".done").is_file() and not (out / "rl" / ".done").exists()
    finished = {name: (out / name / ".done").stat().st_mtime_ns for name in ("zero", "cold_data", "cold")}

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for name in finished:  # skipped, not redone
        assert f"{name}: " in res.stdout and "done, skipped" in res.stdout
        assert (out / name / ".done").stat().st_mtime_ns == finished[name]
    stages = ["zero", "cold_data", "cold", "rl", "rejection", "sft", "rl2"]
    assert all((out / s / ".done").is_file() for s in stages)
    traces = [json.loads(line) for line in (out / "cold_data" / "traces.jsonl").read_text().splitlines()]
    assert traces and all(t["correct"] for t in traces)
    assert all(t.get("teacher") for t in traces)
    kept = [json.loads(line) for line in (out / "rejection" / "traces.jsonl").read_text().splitlines()]
    assert kept and all(t["correct"] for t in kept)
    for model in ("base", "zero", "cold", "rl", "sft", "rl2"):
        r = json.loads((out / "eval" / f"{model}.json").read_text())
        assert r["settings"]["n"] == 16 and 0.0 <= r["pass1"] <= 1.0
    html = (out / "report" / "report.html").read_text()
    assert "The R1 pipeline on countdown" in html and "rl2" in html
    assert "pass@1" in res.stdout and "cold" in res.stdout

    # the same folder with other settings is refused, and nothing in it changes
    again = subprocess.run(cmd + ["--set", "rs_n=17"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "other settings (rs_n)" in again.stderr
    threads = subprocess.run(cmd[:-1] + ["threads=1"], capture_output=True, text=True, timeout=300)
    assert threads.returncode == 0, threads.stderr[-3000:]  # threads may change, as in the stages' own resume


def test_the_summary_table_gives_each_stage_its_wall_time_and_the_base_none(tmp_path):
    from r1lab.pipeline import summary_table

    (tmp_path / "eval").mkdir()
    for name, p in (("base", 0.1), ("rl", 0.35)):
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(
            {"pass1": p, "cons_at_k": p, "format_rate": 1.0, "response_len": {"mean": 100.0}}))
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / ".done").write_text(json.dumps({"wall_s": 61.4}))
    rows = summary_table(tmp_path, ["base", "rl"]).splitlines()[1:]
    assert rows[1].split() == ["base", "0.100", "0.100", "1.000", "100.0", "-"]
    assert rows[2].split() == ["rl", "0.350", "0.350", "1.000", "100.0", "61"]
