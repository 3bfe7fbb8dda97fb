"""`r1lab score` and `r1lab data` end to end, through r1lab.cli.main and once through the console script."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from r1lab.cli import main
from r1lab.tasks import parse_value
from r1lab.evaluation.scoring import default_output

HAS_COUNTDOWN = importlib.util.find_spec("r1lab.tasks.countdown") is not None
needs_countdown = pytest.mark.skipif(not HAS_COUNTDOWN, reason="r1lab/tasks/countdown.py not written yet")

EGGS = {"question": "16 eggs, eats 3, bakes 4, sells the rest at $2. Dollars per day?", "answer": "9 * 2 = 18\n#### 18"}
GSM8K_LINES = [
    {**EGGS, "completion": "9 * 2 = 18</think> <answer>18</answer>"},  # correct, formatted: 1.1
    {**EGGS, "completion": "9 * 2 = 18, so \\boxed{18}"},  # correct, no format: 1.0
    {**EGGS, "completion": "</think> <answer>17</answer>"},  # wrong, formatted: 0.1
    {**EGGS, "completion": "I don't know"},  # 0.0
]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_score_gsm8k(tmp_path, capsys):
    source = write_lines(tmp_path / "samples.jsonl", GSM8K_LINES)
    assert main(["score", "--task", "gsm8k", str(source), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"task": "gsm8k", "file": str(source), "output": str(tmp_path / "samples.scored.jsonl"),
                       "count": 4, "accuracy": 0.5, "format_rate": 0.5, "mean_reward": 0.55, "errors": 0,
                       "seconds": summary["seconds"]}
    rows = read_jsonl(tmp_path / "samples.scored.jsonl")
    assert [r["reward"] for r in rows] == pytest.approx([1.1, 1.0, 0.1, 0.0])
    assert [(r["correct"], r["format_ok"]) for r in rows] == [(True, True), (True, False), (False, True),
                                                              (False, False)]
    assert [{k: r[k] for k in ("question", "answer", "completion")} for r in rows] == GSM8K_LINES


def test_score_weights_output_and_text_summary(tmp_path, capsys):
    source = write_lines(tmp_path / "samples.jsonl", GSM8K_LINES)
    out = tmp_path / "sub" / "graded.jsonl"
    assert main(["score", "--task", "gsm8k", str(source), "--out", str(out), "--accuracy-weight", "2",
                 "--format-weight", "0.5"]) == 0
    assert [r["reward"] for r in read_jsonl(out)] == [2.5, 2.0, 0.5, 0.0]
    text = capsys.readouterr().out
    assert "scored 4 lines" in text and "accuracy 0.5000" in text and "errors 0" in text
    assert default_output("runs/a.jsonl") == Path("runs/a.scored.jsonl")
    assert default_output("a") == Path("a.scored.jsonl")


def test_score_math(tmp_path, capsys):
    lines = [{"problem": "1 - 1/2?", "answer": "\\frac{1}{2}", "completion": "</think> <answer>0.5</answer>"},
             {"problem": "2x = 10", "solution": "$x = \\boxed{5}$", "completion": "so x = \\boxed{5}"},
             {"problem": "1 - 1/2?", "answer": "\\frac{1}{2}", "completion": "</think> <answer>1/3</answer>"}]
    source = write_lines(tmp_path / "math.jsonl", lines)
    assert main(["score", "--task", "math", str(source), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["count"], summary["accuracy"], summary["errors"]) == (3, 0.6667, 0)
    assert [r["correct"] for r in read_jsonl(tmp_path / "math.scored.jsonl")] == [True, True, False]


def test_score_reports_bad_lines_and_scores_the_rest(tmp_path, capsys):
    lines = [GSM8K_LINES[0], "{not json\n", {"question": "q", "completion": "18"}, {**EGGS, "completion": 18},
             {**EGGS}, "[1, 2]\n", "\n", {**EGGS, "answer": "no final number", "completion": "18"}, GSM8K_LINES[1]]
    source = write_lines(tmp_path / "bad.jsonl", lines)
    with open(source, "ab") as f:
        f.write(b'{"question": "\xff"}\n')  # not UTF-8, line 10
    assert main(["score", "--task", "gsm8k", str(source), "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["count"], summary["errors"], summary["accuracy"]) == (2, 7, 1.0)
    assert captured.err.splitlines() == [
        f"{source}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{source}:3: missing field 'answer'",
        f"{source}:4: field 'completion' must be a string, got int",
        f"{source}:5: missing field 'completion'",
        f"{source}:6: expected a JSON object, got list",
        f"{source}:8: field 'answer' must end in '#### N' with N a number",
        f"{source}:10: not valid UTF-8",
    ]
    assert len(read_jsonl(tmp_path / "bad.scored.jsonl")) == 2


def test_score_usage_errors(tmp_path, capsys):
    assert main(["score", "--task", "nope", str(tmp_path / "x.jsonl")]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["score", "--task", "gsm8k", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_data_for_a_dataset_task_says_so(tmp_path, capsys):
    assert main(["data", "--task", "gsm8k", "--n", "5", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "is a dataset and has no generator" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_parse_value():
    assert [parse_value(v) for v in ("5", "-2", "0.5", "1e-3", "abc", "")] == [5, -2, 0.5, 0.001, "abc", ""]


@needs_countdown
def test_data_countdown_train_and_test_never_overlap(tmp_path, capsys):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    assert main(["data", "--task", "countdown", "--n", "100", "--seed", "0", "--out", str(train)]) == 0
    assert main(["data", "--task", "countdown", "--n", "100", "--seed", "0", "--split", "test",
                 "--out", str(test)]) == 0
    assert "wrote 100 countdown test instances" in capsys.readouterr().out
    key = lambda row: (tuple(sorted(row["nums"])), row["target"])  # noqa: E731
    train_keys, test_keys = {key(r) for r in read_jsonl(train)}, {key(r) for r in read_jsonl(test)}
    assert len(train_keys) == len(test_keys) == 100 and not train_keys & test_keys


@needs_countdown
def test_data_knobs_are_converted_and_checked(tmp_path, capsys):
    out = tmp_path / "five.jsonl"
    assert main(["data", "--task", "countdown", "--n", "20", "--seed", "3", "--out", str(out),
                 "--task-arg", "min_numbers=5", "--task-arg", "max_numbers=5"]) == 0
    assert all(len(r["nums"]) == 5 for r in read_jsonl(out))
    assert main(["data", "--task", "countdown", "--n", "2", "--out", str(out), "--task-arg", "colour=red"]) == 2
    assert "no knob 'colour'; its knobs (with defaults): min_numbers=3" in capsys.readouterr().err
    assert main(["data", "--task", "countdown", "--n", "2", "--out", str(out), "--task-arg", "max_number=big"]) == 2
    assert "takes a number" in capsys.readouterr().err


@needs_countdown
def test_score_countdown_malformed_nums(tmp_path, capsys):
    good = {"nums": [1, 2, 3], "target": 6, "completion": "</think> <answer>1 + 2 + 3</answer>"}
    lines = [good, {**good, "nums": ["1", 2, 3]}, {**good, "nums": 7}, {**good, "target": "6"},
             {"nums": [1, 2, 3], "completion": ""}]
    source = write_lines(tmp_path / "cd.jsonl", lines)
    assert main(["score", "--task", "countdown", str(source), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"] == 1 and json.loads(captured.out)["accuracy"] == 1.0
    assert captured.err.splitlines() == [
        f"{source}:2: field 'nums' must be a list of int, got [\"1\", 2, 3]",
        f"{source}:3: field 'nums' must be a list of int, got 7",
        f"{source}:4: field 'target' must be an int, got \"6\"",
        f"{source}:5: missing field 'target'",
    ]


def test_console_script(tmp_path):
    script = shutil.which("r1lab", path=str(Path(sys.executable).parent)) or shutil.which("r1lab")
    if script is None:
        pytest.skip("the r1lab console script is not installed (pip install -e .)")
    source = write_lines(tmp_path / "samples.jsonl", GSM8K_LINES[:2] + ["oops\n"])
    done = subprocess.run([script, "score", "--task", "gsm8k", str(source), "--json"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert json.loads(done.stdout)["count"] == 2
    assert f"{source}:3: invalid JSON" in done.stderr
