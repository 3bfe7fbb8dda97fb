"""GSM8K: ground truth from "#### N", exact number comparison, every extraction path, hostile completions, loading."""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from r1lab.tasks import get_task
from r1lab.tasks import gsm8k as task
from r1lab.tasks.common import Score
from r1lab.tasks.format import MAX_COMPLETION_CHARS

REAL_DATA = Path("/work/shared/data/gsm8k_test.jsonl")  # optional: the project must pass without it

EGGS = {"question": "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4, and sells the rest at $2 "
                    "each. How much does she make every day?",
        "answer": "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"}
BIG = {"question": "q", "answer": "Total: <<600+634=1234>>1,234\n#### 1,234"}
NEGATIVE = {"question": "q", "answer": "#### -5"}
HALF = {"question": "q", "answer": "#### 3.5"}
FIXTURE = [EGGS, BIG, NEGATIVE, HALF]


def test_registered_and_interface():
    assert get_task("gsm8k") is task
    assert task.NAME == "gsm8k" and task.FIELDS == ("question", "answer")
    assert not hasattr(task, "generate")  # a dataset, not a generator
    assert task.question(EGGS) == EGGS["question"]
    assert task.prompt(EGGS, "short") == f"User: {EGGS['question']}\nAssistant: <think>"
    assert [m["role"] for m in task.messages(EGGS)] == ["system", "user"]


@pytest.mark.parametrize("example, value", [(EGGS, 18), (BIG, 1234), (NEGATIVE, -5), (HALF, Fraction(7, 2)),
                                            ({"answer": "42"}, 42), ({"answer": "#### about 5"}, None),
                                            ({"answer": 18}, None), ({}, None), ("#### 18", None)])
def test_gold(example, value):
    assert task.gold(example) == value


@pytest.mark.parametrize("completion, correct, format_ok", [
    ("9 eggs, 9 * 2 = 18</think> <answer>18</answer>", True, True),          # 1. tags, strict format
    ("<think>9 * 2 = 18</think>\n<answer>$18</answer>", True, True),          #    leading <think>, "$"
    ("9 * 2 = 18 <answer>18</answer>", True, False),                          #    no </think>: last number
    ("<answer>17</answer> 18</think> <answer>18</answer>", True, False),     #    answer in the reasoning
    ("9 * 2 = 18</think> I am not sure", False, False),                       #    the reasoning's numbers
    ("</think> <answer>18</answer> and that's final", True, False),           #    text after the answer
    ("</think> <answer>17</answer>", False, True),                            #    wrong, well formatted
    ("</think> <answer>18 dollars</answer>", True, True),                     #    units: the last number
    (r"so she makes \boxed{18} dollars", True, False),                        # 2. boxed
    (r"\boxed{\$18.00}", True, False),
    ("9 * 2 = 18\n#### 18", True, False),                                     # 3. ####
    ("#### 1,234", False, False),
    ("So the answer is 18. Let me check: 9 * 2 = 18.", True, False),         # 4. "the answer is"
    ("The final answer is: $18$", True, False),
    ("16 - 3 - 4 = 9 and 9 * 2 = 18", True, False),                          # 5. last number
    ("18.0", True, False),
    ("nothing here", False, False),
])
def test_extraction_paths(completion, correct, format_ok):
    s = task.score(completion, EGGS)
    assert (s.correct, s.format_ok) == (correct, format_ok)
    assert s.reward == 1.0 * correct + 0.1 * format_ok  # exact: the same float64 formula, rounded alike anywhere


@pytest.mark.parametrize("example, answer", [(BIG, "1234"), (BIG, "1,234"), (BIG, "$1,234.00"), (BIG, "1234."),
                                             (NEGATIVE, "-5"), (HALF, "3.5"), (HALF, "7/2"), (HALF, "3.50")])
def test_numbers_compare_exactly(example, answer):
    assert task.score(f"</think> <answer>{answer}</answer>", example).correct


@pytest.mark.parametrize("example, answer", [(BIG, "1233"), (NEGATIVE, "5"), (HALF, "3"), (HALF, "3.499999999")])
def test_near_misses_are_wrong(example, answer):
    assert not task.score(f"</think> <answer>{answer}</answer>", example).correct


def test_weights_and_answer_key():
    s = task.score("</think> <answer>18</answer>", EGGS, accuracy_weight=2.0, format_weight=0.5)
    assert s == Score(2.5, True, True, "18")
    assert task.answer_key("</think> <answer>$18.00</answer>", EGGS) == task.answer_key(r"\boxed{18}", EGGS) == "18"
    assert task.answer_key("</think> <answer>3.50</answer>", HALF) == "7/2"
    assert task.answer_key("no number", EGGS) is None


# Hostile completions: each must return a Score quickly, never raise, and grade as stated.
ADVERSARIAL = [
    ("none", None, False),
    ("bytes", b"</think> <answer>18</answer>", False),
    ("int", 18, False),
    ("1 MB of digits", "9" * 1_000_000, False),
    ("1 MB then the answer", "x" * 1_000_000 + "<answer>18</answer>", False),  # cut at MAX_COMPLETION_CHARS
    ("answer then 1 MB", "</think> <answer>18</answer>" + " " * 1_000_000, True),
    ("huge number", "</think> <answer>" + "1" * 5000 + "</answer>", False),
    ("huge exponent", "</think> <answer>9^{9^{9^{9}}}</answer>", False),
    ("1e400", "</think> <answer>18e400</answer>", False),
    ("nested braces", r"\boxed{" + "{" * 10_000 + "18" + "}" * 10_000 + "}", True),  # box cut off: last number
    ("many boxes", r"\boxed{" * 5000, False),
    ("many tags", "<answer>" * 5000, False),
    ("arabic-indic digits", "</think> <answer>١٨</answer>", False),
    ("fullwidth digits", "</think> <answer>１８</answer>", False),
    ("code", "</think> <answer>__import__('os').system('echo 18')</answer>", True),  # its last number is 18
    ("code, no number", "</think> <answer>__import__('os').getcwd()</answer>", False),
    ("multiple answers, last wins", "</think> <answer>17</answer> <answer>18</answer>", True),
    ("two numbers, last wins", "</think> <answer>18 or 20</answer>", False),
    ("surrogates", "</think> <answer>\ud800 18</answer>", True),
    ("nul bytes", "</think> <answer>\x0018\x00</answer>", True),
]


@pytest.mark.parametrize("name, completion, correct", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial(name, completion, correct):
    start = time.perf_counter()
    s = task.score(completion, EGGS)
    assert time.perf_counter() - start < 0.25
    assert isinstance(s, Score) and s.correct is correct
    key = task.answer_key(completion, EGGS)
    assert key is None or isinstance(key, str)


@pytest.mark.parametrize("example", [None, {}, {"question": "q"}, {"question": "q", "answer": None},
                                     {"question": "q", "answer": "no number"}, "#### 18", [1, 2]])
def test_malformed_example_scores_zero(example):
    assert task.score("</think> <answer>18</answer>", example).correct is False


@pytest.mark.parametrize("example, problem", [
    (EGGS, None), ({"question": "q"}, "missing field 'answer'"), ({"answer": "#### 1"}, "missing field 'question'"),
    ({"question": "q", "answer": 18}, "field 'answer' must be a string, got int"),
    ({"question": "q", "answer": "eighteen"}, "field 'answer' must end in '#### N' with N a number"),
])
def test_check(example, problem):
    assert task.check(example) == problem


def test_difficulty():
    assert task.difficulty(EGGS) == "2 steps"
    assert task.difficulty({"answer": "\n".join(["x"] * 12) + "\n#### 1"}) == "8+ steps"


def test_load_jsonl_fixture(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in FIXTURE))
    assert task.load(path) == FIXTURE
    assert task.load(str(path), limit=2) == FIXTURE[:2]
    path.write_text(json.dumps({"question": "q", "answer": "no final answer"}) + "\n")
    with pytest.raises(ValueError, match="row 0: field 'answer' must end in '#### N'"):
        task.load(path)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") or importlib.util.find_spec("pandas"),
                    reason="pyarrow/pandas installed: the missing-library error cannot happen")
def test_load_parquet_without_pyarrow_says_so(tmp_path):
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pyarrow"):
        task.load(path)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_load_hub_id_without_datasets_says_so():
    with pytest.raises(ImportError, match="pip install datasets"):
        task.load("openai/gsm8k")


def test_hub_ids_load_through_the_one_loader_with_clear_errors(monkeypatch, tmp_path):
    calls = []

    class FakeDatasets:  # stands in for the `datasets` library: no network in tests
        @staticmethod
        def load_dataset(name, config, split):
            calls.append((name, config, split))
            if name == "nobody/nothing":
                raise ConnectionError("offline")
            return FIXTURE

    monkeypatch.setitem(sys.modules, "datasets", FakeDatasets)
    assert task.load("openai/gsm8k", limit=2) == FIXTURE[:2] and calls == [("openai/gsm8k", "main", "test")]
    with pytest.raises(RuntimeError, match="could not load 'nobody/nothing'.*ConnectionError: offline"):
        task.load("nobody/nothing", split="train")
    with pytest.raises(FileNotFoundError, match="no such file"):  # a path, not a hub id: never sent to the hub
        task.load(tmp_path / "missing.jsonl")
    assert len(calls) == 2


@pytest.mark.skipif(not REAL_DATA.exists(), reason=f"{REAL_DATA} absent (optional development data)")
def test_real_gsm8k_graded_against_its_own_answers():
    rows = task.load(REAL_DATA)
    assert len(rows) == 1319
    for row in rows:
        truth = task.gold(row)
        assert truth is not None, row["answer"]
        assert task.score(row["answer"], row).correct, row["answer"]  # its own solution, via "#### N"
        number = row["answer"].rsplit("####", 1)[1].strip()
        assert task.score(f"...</think> <answer>{number}</answer>", row) == Score(1.1, True, True, number)
        assert not task.score(f"</think> <answer>{truth + 1}</answer>", row).correct
    assert len(task.load(REAL_DATA, limit=5)) == 5
