"""GSM8K: ground truth from "#### N", exact number comparison, every extraction path, hostile completions, loading."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from r1lab.tasks import get_task
from r1lab.tasks import gsm8k as task
from r1lab.tasks.common import Score

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
    ("code", "</think> <answer>__import__('os').system('echo 18')</answer>", False),  # not one number
    ("code, no number", "</think> <answer>__import__('os').getcwd()</answer>", False),
    ("multiple answers, last wins", "</think> <answer>17</answer> <answer>18</answer>", True),
    ("two numbers, last wins", "</think> <answer>18 or 20</answer>", False),
    ("surrogates", "</think> <answer>\ud800 18</answer>", False),
    ("nul bytes", "</think> <answer>\x0018\x00</answer>", False),
    ("no tags, last number", "9 * 2 = 18, so she makes 18", True),  # rule 5: the last number standing alone
]


@pytest.mark.parametrize("name, completion, correct", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial(name, completion, correct):
    start = time.perf_counter()
    s = task.score(completion, EGGS)
    assert time.perf_counter() - start < 0.25
    assert isinstance(s, Score) and s.correct is correct
    key = task.answer_key(completion, EGGS)
    assert key is None or isinstance(key, str)


# An answer is ONE number (tasks.extract): a hedge that holds the right number is wrong, in the tags and in the
# other places an answer is read from.
HEDGES = ["17 or 18", "18 or 17", "not 18", "no 18", "1,2,3,...,18", "17, 18", "17; 18", "18 and 17", "17 18",
          "18 or more", "about 18", "18 is wrong", "2 * 9 = 18", "\\write18{rm -rf /}", "\\boxed{17} \\boxed{18}",
          "$17$ or $18$", "1,8", "18/1 or 17", "\\text{not } 18", "x = 17 = 18",
          "\u221218", "\u201318", "\u201418", "\uff11\uff18", "\u0661\u0668", "\u06f1\u06f8", "\u00b9\u2078",
          "\u2081\u2088", "\U0001d7cf\U0001d7d6", "1\u200b8"]


@pytest.mark.parametrize("hedge", HEDGES)
@pytest.mark.parametrize("where", ["</think> <answer>{}</answer>", "\\boxed{{{}}}", "so\n#### {}", "The answer is {}."])
def test_hedges_are_wrong(hedge, where):
    if "boxed" in hedge and ("####" in where or "answer is" in where):
        pytest.skip("two boxes in free text: the last box is the answer, as the last number is")
    assert not task.score(where.format(hedge), EGGS).correct


NEG18 = {"question": "q", "answer": "#### -18"}


@pytest.mark.parametrize("example, answer", [
    (EGGS, "18"), (EGGS, "$18"), (EGGS, "\\$18"), (EGGS, "18."), (EGGS, "18.00"), (EGGS, "+18"), (EGGS, "18%"),
    (EGGS, "18 dollars"), (EGGS, "$18 per day"), (EGGS, "18 more eggs"), (EGGS, "18 \\text{ dollars}"),
    (EGGS, "\\boxed{18}"), (EGGS, "$\\boxed{18}$"), (EGGS, "\\(18\\)"), (EGGS, "x = 18"), (EGGS, "Answer: 18"),
    (EGGS, "The answer is 18"), (EGGS, " 18 \n"), (NEG18, "-18"), (NEG18, "\u221218"), (NEG18, "\u201318"),
    (NEG18, "-$18"), (NEG18, "$-18"), (BIG, "$1,234.00"), (BIG, "1234"), (BIG, "1234."), (BIG, "1,234 dollars"),
    (HALF, "7/2"), (HALF, "3.50"), (HALF, "3.5 dollars"),
])
def test_one_number_forms_are_right(example, answer):
    assert task.score(f"</think> <answer>{answer}</answer>", example).correct


def test_unicode_minus_is_a_minus():
    for minus in "\u2212\u2013\ufe63\uff0d":
        assert not task.score(f"</think> <answer>{minus}18</answer>", EGGS).correct
        assert task.score(f"</think> <answer>{minus}18</answer>", NEG18).correct
        assert task.score(f"so she loses {minus}18", NEG18).correct  # rule 5 reads it too
    assert task.answer_key("</think> <answer>\u221218</answer>", NEG18) == "-18"


def test_answer_is_runs_to_the_end_of_the_sentence():
    assert task.score("So the answer is 18. Then 9 * 2 = 18.", EGGS).correct
    assert not task.score("The answer is 18, 17.", EGGS).correct  # a comma does not end it: two answers


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
    with pytest.raises(ValueError, match=r"\.jsonl:1: field 'answer' must end in '#### N'"):
        task.load(path)
    # the file and the line a user sees in an editor: blank lines count, rows do not
    path.write_text(json.dumps(FIXTURE[0]) + "\n\n" + json.dumps({"question": "q", "answer": "none"}) + "\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:3: field 'answer'"):
        task.load(path)


def test_load_a_json_array_and_a_snapshot_with_two_configurations(tmp_path):
    array = tmp_path / "gsm8k.json"
    array.write_text(json.dumps(FIXTURE, indent=1))
    assert task.load(array) == FIXTURE  # before: "invalid JSON (Expecting value at column 2)"
    array.write_text(json.dumps([FIXTURE[0], 7]))
    with pytest.raises(ValueError, match=r"gsm8k\.json row 2: expected a JSON object, got int"):
        task.load(array)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    snapshot = tmp_path / "snapshot"  # openai/gsm8k as downloaded: main/ and socratic/ side by side
    for config in ("main", "socratic"):
        (snapshot / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(FIXTURE), snapshot / config / "test-00000-of-00001.parquet")
    assert task.load(snapshot) == FIXTURE  # before: every problem twice
    from r1lab.tasks.common import load_rows
    with pytest.raises(ValueError, match="test files in 2 folders .* each a configuration of one dataset"):
        load_rows(snapshot, ("question",))


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") or importlib.util.find_spec("pandas"),
                    reason="pyarrow/pandas installed: the missing-library error cannot happen")
def test_load_parquet_without_pyarrow_says_so(tmp_path):
    path = tmp_path / "test.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pyarrow"):
        task.load(path)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="datasets installed")
def test_load_hub_id_without_datasets_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    (tmp_path / "datasets--openai--gsm8k").mkdir()  # cached: the hub is not asked first
    with pytest.raises(ValueError, match="pip install datasets"):  # one line from every command, not a traceback
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
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("openai/gsm8k", "nobody/nothing"):  # in the cache: the hub is not asked first
        (tmp_path / "hub" / f"datasets--{name.replace('/', '--')}").mkdir(parents=True)
    assert task.load("openai/gsm8k", limit=2) == FIXTURE[:2] and calls == [("openai/gsm8k", "main", "test")]
    with pytest.raises(ValueError, match="could not load 'nobody/nothing'.*ConnectionError: offline"):
        task.load("nobody/nothing", split="train")
    with pytest.raises(FileNotFoundError, match="no such file"):  # a path, not a hub id: never sent to the hub
        task.load(tmp_path / "missing.jsonl")
    assert len(calls) == 2


def test_a_hub_dataset_out_of_reach_is_one_line_at_once(monkeypatch, tmp_path, capsys):
    # before: ~30 s of the datasets library's retries, then a traceback (in rl, from every rank)
    from r1lab.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert main(["eval", "--model", "countdown-base", "--task", "gsm8k", "--data", "openai/gsm8k", "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert "openai/gsm8k: not available offline" in err and "hf download --repo-type dataset openai/gsm8k" in err
    assert "Traceback" not in err and time.perf_counter() - t0 < 20


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
