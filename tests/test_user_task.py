"""A task of the user's own, given as a .py file or a module path wherever a task is named: loaded once, checked
against the protocol with clear errors, the optional functions filled in, its score guarded; and the commands
(data, score, eval, rl) run on examples/tasks/sort_numbers.py end to end."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1lab.config import ConfigError
from r1lab.pretrain.train import PretrainConfig, check as check_pretrain
from r1lab.rl.config import RLConfig, check as check_rl
from r1lab.tasks import get_task, parse_knobs
from r1lab.tasks.common import Score, render_messages, render_prompt

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tasks" / "sort_numbers.py"

MINIMAL = '''
from r1lab.tasks.common import Score, combine, load_rows
from r1lab.tasks.format import parse_completion

NAME = "echo"
FIELDS = ["word"]

def question(example):
    return f"Repeat {example['word']}."

def score(completion, example, accuracy_weight=1.0, format_weight=0.1):
    parsed = parse_completion(completion)
    correct = parsed.answer == example["word"]
    return Score(combine(correct, parsed.format_ok, accuracy_weight, format_weight), correct, parsed.format_ok,
                 parsed.answer)

def load(source, split="test", limit=None):
    return load_rows(source, tuple(FIELDS), split, limit)
'''


def write(path: Path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def completion(answer: str) -> str:
    return f"thinking</think> <answer>{answer}</answer>"


def test_the_example_loads_once_by_any_path_and_grades(monkeypatch):
    monkeypatch.chdir(ROOT)
    task = get_task("examples/tasks/sort_numbers.py")
    assert get_task(str(EXAMPLE)) is task and get_task("./examples/tasks/sort_numbers.py") is task
    assert task.NAME == "sort_numbers" and task.FIELDS == ("numbers",)
    ex = {"numbers": [5, 2, 9]}
    assert task.score(completion("2, 5, 9"), ex) == Score(1.1, True, True, "2, 5, 9")
    assert task.score(completion("5, 2, 9"), ex).correct is False
    assert task.score("2, 5, 9", ex) == Score(0.0, False, False, None)  # no </think>: still thinking
    assert task.answer_key(completion("2, 5, 9"), ex) == task.answer_key(completion("2,5,9"), ex) == "2,5,9"
    assert task.difficulty(ex) == "3 numbers"
    assert task.prompt(ex, "short") == render_prompt("Sort 5, 2, 9 from smallest to largest. Answer with the sorted "
                                                     "numbers, separated by commas.", "short")
    assert task.score(completion("[2 5 9]"), ex).correct and not task.score(completion("2 and 5 and 9"), ex).correct
    knobs = parse_knobs(task, "max_count=4,max_value=20")
    train, test = task.generate(60, 0, "train", **knobs), task.generate(20, 0, "test", **knobs)
    assert all(3 <= len(r["numbers"]) <= 4 and max(r["numbers"]) <= 20 for r in train + test)
    assert not {tuple(sorted(r["numbers"])) for r in train} & {tuple(sorted(r["numbers"])) for r in test}
    with pytest.raises(ValueError, match="sort_numbers has no knob 'digits'"):
        parse_knobs(task, "digits=3")


def test_a_minimal_task_gets_the_defaults(tmp_path):
    task = get_task(write(tmp_path / "echo.py", MINIMAL))
    ex = {"word": "tick"}
    assert task.FIELDS == ("word",)  # a list is taken as the tuple the protocol names
    assert task.prompt(ex) == render_prompt("Repeat tick.", "r1")
    assert task.prompt(ex, "short") == render_prompt("Repeat tick.", "short")
    assert task.messages(ex, "short") == render_messages("Repeat tick.", "short")
    assert task.answer_key(completion("  tick "), ex) == "tick"
    assert task.answer_key("no answer", ex) is None
    assert task.difficulty(ex) == "all"
    data = tmp_path / "words.jsonl"
    data.write_text('{"word": "a"}\n{"word": "b"}\n')
    assert task.load(str(data)) == [{"word": "a"}, {"word": "b"}]


def test_a_module_path(tmp_path, monkeypatch):
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    write(tmp_path / "mytasks" / "echo_mod.py", MINIMAL)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("mytasks.echo_mod")
    assert task.NAME == "echo" and get_task("mytasks.echo_mod") is task
    with pytest.raises(ValueError, match="task module 'mytasks.nothing' not found"):
        get_task("mytasks.nothing")


@pytest.mark.parametrize("text, message", [
    (MINIMAL.replace("def score(", "def grade("), "lacks score"),
    (MINIMAL.replace("def load(", "def read("), "lacks generate or load"),
    ("NAME = 'x'\n", "lacks FIELDS, question, score, generate or load"),
    (MINIMAL.replace('NAME = "echo"', "NAME = 3"), "NAME must be a non-empty string"),
    (MINIMAL.replace('FIELDS = ["word"]', 'FIELDS = "word"'), "FIELDS must be a tuple of field names"),
    (MINIMAL + "difficulty = 'easy'\n", "difficulty must be a function"),
    (MINIMAL + "def broken(:\n", "failed to import: SyntaxError"),
    ("import no_such_package_here\n", "failed to import: ModuleNotFoundError"),
])
def test_a_bad_task_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        get_task(write(tmp_path / "bad.py", text))


def test_unknown_names_say_what_a_task_can_be(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task 'chess'; valid tasks: countdown.*\.py file or a module path"):
        get_task("chess")
    with pytest.raises(ValueError, match="task file .*nope.py' does not exist"):
        get_task(str(tmp_path / "nope.py"))


def test_a_score_that_raises_or_returns_a_number_stops_with_the_task_named(tmp_path):
    raising = MINIMAL.replace("parsed = parse_completion(completion)", "parsed = parse_completion(completion)\n"
                              "    if 'boom' in completion:\n        raise KeyError('boom')")
    task = get_task(write(tmp_path / "raising.py", raising))
    assert task.score(completion("tick"), {"word": "tick"}).correct
    with pytest.raises(RuntimeError, match=r"task 'echo': score raised KeyError: 'boom' on the completion 'boom"):
        task.score("boom</think>", {"word": "tick"})
    number = get_task(write(tmp_path / "number.py", MINIMAL.replace("return Score(", "return float(correct); Score(")))
    with pytest.raises(TypeError, match="task 'echo': score must return r1lab.tasks.common.Score.*got float"):
        number.score(completion("tick"), {"word": "tick"})


def test_configs_take_a_task_file_and_pretraining_refuses_one_without_a_corpus(tmp_path):
    check_rl(RLConfig(task=str(EXAMPLE), task_args="max_count=4"))
    with pytest.raises(ConfigError, match="task = 'nope.py': task file 'nope.py' does not exist"):
        check_rl(RLConfig(task="nope.py", task_args=""))
    with pytest.raises(ConfigError, match="task_args: sort_numbers has no knob 'max_number'"):
        check_rl(RLConfig(task=str(EXAMPLE), task_args="max_number=12"))
    for task in (str(EXAMPLE), "gsm8k"):  # gsm8k used to fail at the first batch, after the folder was made
        with pytest.raises(ConfigError, match="pretraining writes its corpus from search traces of countdown and"):
            check_pretrain(PretrainConfig(task=task, task_args=""))


def r1lab(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "r1lab.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_commands_run_on_a_task_file(tmp_path):
    task = str(EXAMPLE)
    r1lab("data", "--task", task, "--n", "4", "--out", "rows.jsonl", "--task-arg", "max_count=3", cwd=tmp_path)
    rows = [json.loads(line) for line in open(tmp_path / "rows.jsonl")]
    with open(tmp_path / "done.jsonl", "w") as f:
        for i, row in enumerate(rows):  # half right
            listed = sorted(row["numbers"]) if i % 2 == 0 else sorted(row["numbers"], reverse=True)
            f.write(json.dumps({**row, "completion": completion(", ".join(map(str, listed)))}) + "\n")
    out = r1lab("score", "done.jsonl", "--task", task, "--json", cwd=tmp_path)
    assert json.loads(out.strip().splitlines()[-1])["accuracy"] == 0.5
    r1lab("eval", "--model", "countdown-base", "--task", task, "--task-arg", "max_count=3", "--n", "2", "--samples",
          "2", "--max-new-tokens", "16", "--out", "eval.json", cwd=tmp_path)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["completions"] == 4 and list(result["by_difficulty"]) == ["3 numbers"]
    r1lab("rl", "--model", "countdown-base", "--out", "run", "--set", f"task={task}", "--set", "task_args=max_count=3",
          *sum((["--set", s] for s in ["prompts_per_step=2", "samples_per_prompt=2", "max_new_tokens=16", "steps=1",
                                       "train_instances=4", "eval_instances=2", "threads=1", "sample_every=0"]), []),
          cwd=tmp_path)
    steps = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [s["step"] for s in steps if "reward" in s] == [1]
    assert (tmp_path / "run" / "sort_numbers-train-n4-s0-max_count3.jsonl").exists()
