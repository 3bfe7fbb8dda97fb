import json

import pytest
from conftest import best_of_three
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.jsonl import read_jsonl, write_jsonl
from r1lab.tasks import arithmetic as ar
from r1lab.tasks.common import cached_generate, generate_distinct, split_of

EX = {"a": 1234, "op": "*", "b": 56, "answer": 69104}


def wrap(answer: str) -> str:
    return f"1234 * 56 = 1234 * 50 + 1234 * 6</think> <answer>{answer}</answer>"


def timed_score(completion, example=EX):
    return best_of_three(ar.score, completion, example)


# --- hand-made examples ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, reward", [
    (wrap("69104"), 1.1),
    (wrap(" 69,104 "), 1.1),
    ("<think>x</think>\n<answer>\n69104\n</answer>\n", 1.1),
    (wrap("69104") + " done", 1.0),
    ("<answer>69104</answer>", 0.0),  # no </think>: still thinking, so no answer (r1lab.tasks.format)
    ("<answer>69104</answer></think> <answer>1</answer>", 0.0),  # an answer inside the reasoning is not one
    (wrap("69105"), 0.1),
    (wrap("69,10,4"), 0.1),
    ("69104", 0.0),
    (wrap("69105") + ".", 0.0),
])
def test_hand_made_rewards(completion, reward):
    # exact: a reward is 1.0 * correct + 0.1 * format_ok in float64, which IEEE 754 rounds alike on every machine
    assert ar.score(completion, EX).reward == reward


def test_score_recomputes_and_never_trusts_answer_field():
    assert not ar.score(wrap("1"), {**EX, "answer": 1}).correct
    assert ar.score(wrap("69104"), {**EX, "answer": 1}).correct
    neg = {"a": 12, "op": "-", "b": 1300}
    assert ar.score(wrap("-1,288"), neg).correct and ar.score(wrap("-1288"), neg).correct
    assert not ar.score(wrap("1288"), neg).correct


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("-0", 0), (" 1,234,567 ", 1234567), ("-12", -12), ("007", 7), ("1234", 1234),
    ("1,23", None), ("12,3456", None), (",123", None), ("1,234,", None), ("+5", None), ("5.0", None), ("1e3", None),
    ("0x10", None), ("1_000", None), ("12 34", None), ("--5", None), ("\u22125", -5), ("\u20135", -5),
    ("\u20145", None), ("٣", None), ("３", None),
    ("", None), ("five", None), ("5 apples", None), (None, None), ("9" * 101, None),
])
def test_parse_integer(text, value):
    assert ar.parse_integer(text) == value


def test_answer_key_question_prompt_difficulty():
    assert ar.answer_key(wrap(" 69,104"), EX) == "69104" and ar.answer_key("none", EX) is None
    q = ar.question(EX)
    assert q.startswith("Calculate 1234 * 56.") and "<answer> 1234 </answer>" in q
    assert ar.prompt(EX).endswith(q + " Assistant: <think>")
    assert ar.prompt(EX, "short") == "User: Calculate 1234 * 56.\nAssistant: <think>"
    assert [m["role"] for m in ar.messages(EX)] == ["system", "user"]
    assert ar.difficulty(EX) == "4-digit multiplication"
    assert ar.difficulty({"a": 5, "op": "-", "b": -123}) == "3-digit subtraction"


# --- adversarial inputs: never raise, never correct, always fast -------------------------------------------------

ADVERSARIAL = [
    ("power tower", wrap("9**9**9")),
    ("expression", wrap("1234 * 56")),
    ("nested parentheses", wrap("(" * 10_000 + "69104" + ")" * 10_000)),
    ("1 MB digits", wrap("6" * 1_000_000)),
    ("1 MB garbage", "x" * 1_000_000),
    ("many commas", wrap("1" + ",000" * 5000)),
    ("arabic-indic digits", wrap("٦٩١٠٤")),
    ("full-width digits", wrap("６９１０４")),
    ("unicode minus", wrap("−69104")),
    ("import", wrap("__import__('os').system('x')")),
    ("float", wrap("69104.0")),
    ("exponent", wrap("6.9104e4")),
    ("underscores", wrap("69_104")),
    ("hex", wrap("0x10DF0")),
    ("two numbers", wrap("69104 69104")),
    ("sentence", wrap("The answer is 69104")),
    ("equation", wrap("1234 * 56 = 69104")),
    ("division by zero", wrap("1/0")),
    ("nul byte", wrap("69104\x00")),
    ("empty answer", wrap("")),
    ("blank answer", wrap("  \n ")),
    ("multiple answers, last wrong", wrap("69104") + "<answer>1</answer>"),
    ("repeated answer tags", "<answer>" * 3000),
    ("repeated think and answer", "</think> <answer>" * 2000),
    ("None", None),
    ("bytes", b"</think> <answer>69104</answer>"),
    ("int", 69104),
]


# One integer, nothing else: several candidates, negations, lists and look-alike digits are wrong.
HEDGES = ["69104 or 69105", "69105 or 69104", "not 69104", "69104 or more", "69,103, 69,104", "69103; 69104",
          "1, 2, 3, ..., 69104", "69104?", "69104...", "\\boxed{69104}", "69104 \\text{or more}", "x = 69104", "+69104",
          "\u221269104", "\u201469104", "\uff16\uff19\uff11\uff10\uff14", "\u2076\u2079\u00b9\u2070\u2074",
          "\u0666\u0669\u0661\u0660\u0664", "69\u200b104", "69,10 4"]


@pytest.mark.parametrize("answer", HEDGES)
def test_hedges_are_wrong(answer):
    assert not ar.score(wrap(answer), EX).correct


def test_unicode_minus_is_a_minus():
    neg = {"a": 12, "op": "-", "b": 1300}
    for minus in "\u2212\u2013\ufe63\uff0d":
        assert ar.score(wrap(f"{minus}1,288"), neg).correct and not ar.score(wrap(f"{minus}69104"), EX).correct


@pytest.mark.parametrize("name, completion", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_never_correct(name, completion):
    s, seconds = timed_score(completion)
    assert not s.correct and s.reward <= 0.1
    assert seconds < 0.05
    ar.answer_key(completion, EX)


@pytest.mark.parametrize("completion, correct, format_ok", [
    (wrap("69104") + " trailing text", True, False),
    (wrap("1") + "<answer>69104</answer>", True, False),
    (" " * 19_000 + wrap("69104") + "x", True, False),
])
def test_format_breakers(completion, correct, format_ok):
    s, seconds = timed_score(completion)
    assert (s.correct, s.format_ok) == (correct, format_ok) and seconds < 0.05


@pytest.mark.parametrize("example", [
    None, {}, "1+1", {"a": 1, "op": "+"}, {"a": 1, "op": "/", "b": 2}, {"a": "1", "op": "+", "b": 2},
    {"a": 1.0, "op": "+", "b": 2}, {"a": True, "op": "+", "b": 2}, {"a": 1, "op": ["+"], "b": 2},
    {"a": 10**400, "op": "*", "b": 10**400},
])
def test_malformed_example_scores_zero(example):
    s = ar.score(wrap("3"), example)
    assert (s.reward, s.correct, s.format_ok) == (0.0, False, False)


# --- the generator -----------------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 12), st.integers(0, 8), st.sampled_from(["+", "-", "*", "+-*"]))
def test_generated_answers_score_and_perturbations_fail(seed, lo, span, ops):
    rows = ar.generate(5, seed, min_digits=lo, max_digits=lo + span, ops=ops)
    for ex in rows:
        assert ex["op"] in ops and lo <= len(str(max(ex["a"], ex["b"]))) <= lo + span
        assert ar.score(wrap(str(ex["answer"])), ex).reward == 1.1
        assert ar.score(wrap(f"{ex['answer']:,}"), ex).reward == 1.1
        assert ar.score(wrap(str(ex["answer"] + 1)), ex).reward == 0.1
        moved = {**ex, "b": ex["b"] + 1}
        if ar._result(moved) != ex["answer"]:  # 0 * b is 0 for every b
            assert not ar.score(wrap(str(ex["answer"])), moved).correct


@settings(max_examples=100, deadline=None)
@given(st.integers(-10**20, 10**20), st.sampled_from(list(ar.OPS)), st.integers(-10**20, 10**20))
def test_any_operands(a, op, b):
    value = a + b if op == "+" else a - b if op == "-" else a * b
    ex = {"a": a, "op": op, "b": b}
    assert ar.score(wrap(f"{value:,}"), ex).correct and not ar.score(wrap(str(value - 1)), ex).correct


def key(ex):
    a, b = (min(ex["a"], ex["b"]), max(ex["a"], ex["b"])) if ex["op"] in "+*" else (ex["a"], ex["b"])
    return a, ex["op"], b


def test_splits_never_overlap_and_generation_is_deterministic():
    train = [key(ex) for seed in range(3) for ex in ar.generate(300, seed, max_digits=2)]
    test = [key(ex) for seed in range(3) for ex in ar.generate(100, seed, split="test", max_digits=2)]
    assert not set(train) & set(test)
    assert all(split_of(dict(zip(("a", "op", "b"), k)), ar.FIELDS) == "test" for k in test)
    assert len(set(train[:300])) == 300  # distinct within a call, b + a counted as a + b
    assert ar.generate(20, 3) == ar.generate(20, 3) and ar.generate(20, 3) != ar.generate(20, 4)


@pytest.mark.parametrize("knobs", [
    {"min_digits": 0}, {"max_digits": 31}, {"min_digits": 3, "max_digits": 2}, {"ops": "/"}, {"ops": ""},
    {"split": "validation"},
])
def test_bad_knobs_raise(knobs):
    with pytest.raises(ValueError):
        ar.generate(2, 0, **knobs)


def test_impossible_request_raises_instead_of_looping():
    with pytest.raises(ValueError, match="found only 47 of 60 distinct train instances; widen the knobs"):
        ar.generate(60, 0, max_digits=1, ops="+")  # only 55 unordered pairs exist, 47 of them hash into train


def test_generate_distinct_builds_only_new_identities_of_the_split_and_counts_misses_in_a_row():
    keys = ("i",)
    train = [i for i in range(40) if split_of({"i": i}, keys) == "train"]
    test = [i for i in range(40) if split_of({"i": i}, keys) == "test"]
    draws = iter([test[0], train[0], train[0], train[1], train[2], train[0], test[0], train[0], train[0]])
    built = []

    def build(i):
        built.append(i)
        return None if i == train[1] else {"i": i}  # train[1]: rejected by the task (say, unsolvable)

    def draw():
        i = next(draws)
        return {"i": i}, i

    with pytest.raises(ValueError, match="found only 2 of 3 distinct train rows"):
        generate_distinct(3, "train", keys, draw, build, what="{split} rows", max_misses=3)
    assert built == [train[0], train[1], train[2]]  # never for the test split or a repeat


def test_cached_generate_reuses_its_cache_and_regenerates_a_torn_one(tmp_path):
    rows = cached_generate(ar, 20, 3, "train", tmp_path, max_digits=2)
    assert rows == ar.generate(20, 3, max_digits=2)
    [path] = tmp_path.glob("arithmetic-train-n20-s3-*.jsonl")
    write_jsonl(path, [{**r, "answer": 0} for r in rows])
    assert [r["answer"] for r in cached_generate(ar, 20, 3, "train", tmp_path, max_digits=2)] == [0] * 20  # read
    path.write_text(path.read_text()[:-5])  # a torn last line, as a kill in the middle of a plain write leaves
    assert cached_generate(ar, 20, 3, "train", tmp_path, max_digits=2) == rows  # 19 rows: generated again
    assert read_jsonl(path) == rows and [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


# --- loading -----------------------------------------------------------------------------------------------------

def test_load(tmp_path):
    path = tmp_path / "ar.jsonl"
    path.write_text(json.dumps({"a": "12", "op": "+", "b": 3}) + "\n" + json.dumps(EX) + "\n")
    rows = ar.load(path)
    assert rows[0] == {"a": 12, "op": "+", "b": 3} and ar.load(path, limit=1) == rows[:1]
    path.write_text(json.dumps({"a": 1, "b": 2}) + "\n")
    with pytest.raises(ValueError, match="op"):
        ar.load(path)
    path.write_text(json.dumps({"a": 1, "op": "/", "b": 2}) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:1: "):
        ar.load(path)
