import json
import time
from fractions import Fraction
from itertools import permutations

import pytest
from conftest import best_of_three
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.tasks import countdown as cd
from r1lab.tasks.common import split_of

EX = {"nums": [3, 5, 7], "target": 22}


def wrap(answer: str) -> str:
    return f"3 * 5 = 15, 15 + 7 = 22</think> <answer>{answer}</answer>"


def timed_score(completion, example=EX, **kw):
    return best_of_three(cd.score, completion, example, **kw)


# --- hand-made examples ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, reward", [
    (wrap("3 * 5 + 7"), 1.1),
    (wrap("(5 * 3) + 7 = 22"), 1.1),
    ("<think>3*5+7</think>\n<answer>7 + 5 * 3</answer>\n", 1.1),
    (wrap("3 * 5 + 7") + " I hope this helps", 1.0),
    ("<answer>3 * 5 + 7</answer>", 0.0),  # no </think>: still thinking, so no answer (r1lab.tasks.format)
    ("3 * 5 + 7</think>\n<answer>3 * 5 + 7</answer>", 1.1),  # a leading <think> is optional
    (wrap("3 * 5 + 7 = 23"), 0.1),  # the claimed value is wrong
    (wrap("3 * 7 + 5"), 0.1),
    (wrap("3 + 5 + 7"), 0.1),
    ("the answer is 3 * 5 + 7", 0.0),
    (wrap("3 * 7 + 5") + "!", 0.0),
])
def test_hand_made_rewards(completion, reward):
    # exact: a reward is 1.0 * correct + 0.1 * format_ok in float64, which IEEE 754 rounds alike on every machine
    assert cd.score(completion, EX).reward == reward


def test_fraction_intermediates_and_weights():
    ex = {"nums": [3, 3, 8, 8], "target": 24}
    s = cd.score(wrap("8 / (3 - 8 / 3)"), ex, accuracy_weight=2.0, format_weight=0.5)
    assert (s.correct, s.format_ok, s.reward, s.answer) == (True, True, 2.5, "8 / (3 - 8 / 3)")


def test_use_all_false_allows_unused_numbers():
    ex = {"nums": [3, 5, 7, 2], "target": 22}
    assert not cd.score(wrap("3 * 5 + 7"), ex).correct
    assert cd.score(wrap("3 * 5 + 7"), ex, use_all=False).correct
    assert not cd.score(wrap("3 * 5 + 7 + 7 - 7"), ex, use_all=False).correct  # at most once still holds


def test_evaluate_and_numbers_used():
    assert cd.evaluate("(1 + 2) / 3") == Fraction(1)
    assert cd.evaluate("8 / (3 - 8 / 3)") == Fraction(24)
    assert cd.evaluate("1 / 3") == Fraction(1, 3)
    assert cd.numbers_used("(1 + 2) / 3") == [1, 2, 3]
    for bad in ["1 / 0", "1 / (2 - 2)", "2 ** 3", "7 // 2", "-1 + 2", "1.5 + 1", "x + 1", "", "()", "7 % 2"]:
        assert cd.evaluate(bad) is None and cd.numbers_used(bad) is None, bad


def test_answer_key_groups_by_value():
    keys = {cd.answer_key(wrap(a), EX) for a in ["3 * 5 + 7", "7 + 5 * 3", "(3 * 5) + 7 = 22"]}
    assert keys == {"22"}
    assert cd.answer_key(wrap("3 + 5 + 7"), EX) == "15"
    assert cd.answer_key(wrap("2 * 11"), EX) == "invalid:2*11"  # wrong numbers never share a value key
    assert cd.answer_key("no answer", EX) is None


def test_question_prompt_messages_difficulty():
    q = cd.question(EX)
    assert q.startswith("Using the numbers [3, 5, 7], create an equation that equals 22.")
    assert "<answer> (1 + 2) / 3 </answer>" in q
    assert cd.prompt(EX).endswith(q + " Assistant: <think>")
    short = "User: Using the numbers [3, 5, 7], create an equation that equals 22.\nAssistant: <think>"
    assert cd.prompt(EX, "short") == short
    assert [m["role"] for m in cd.messages(EX)] == ["system", "user"] and cd.messages(EX)[1]["content"] == q
    assert cd.difficulty(EX) == "3 numbers"


# --- adversarial inputs: never raise, never correct, always fast -------------------------------------------------

NESTED = "(" * 10_000 + "3 * 5 + 7" + ")" * 10_000
ADVERSARIAL = [
    ("power tower", wrap("9**9**9")),
    ("power in expression", wrap("3 * 5 + 7 ** 1")),
    ("nested parentheses", wrap(NESTED)),
    ("nested parentheses no tags", NESTED),
    ("1 MB digits in answer", wrap("1" * 1_000_000)),
    ("1 MB garbage", "x" * 1_000_000),
    ("1 MB of open parens", wrap("(" * 1_000_000)),
    ("arabic-indic digits", wrap("٣ * ٥ + ٧")),
    ("full-width digits", wrap("３ * ５ + ７")),
    ("import", wrap("__import__('os').system('x')")),
    ("lambda", wrap("(lambda: 22)()")),
    ("statement", wrap("3 * 5 + 7; import os")),
    ("reused number", wrap("3 * 5 + 7 + 7 - 7")),
    ("number not in list", wrap("2 * 11")),
    ("bare target", wrap("22")),
    ("division by zero", wrap("3 * 5 + 7 + 5 / (3 - 3)")),
    ("division by zero literal", wrap("3 * 5 + 7 / 0")),
    ("float", wrap("3 * 5 + 7.0")),
    ("exponent float", wrap("3 * 5 + 7e0")),
    ("underscore literal", wrap("3 * 5 + 0_7")),
    ("leading zero", wrap("3 * 5 + 07")),
    ("unary minus", wrap("-3 + 5 * 5")),
    ("floor division", wrap("3 * 5 + 7 // 1")),
    ("modulo", wrap("3 * 5 + 7 % 8")),
    ("call", wrap("(3 * 5 + 7)(1)")),
    ("equality", wrap("3 * 5 + 7 == 22")),
    ("two equals", wrap("3 * 5 + 7 = 22 = 22")),
    ("target first", wrap("22 = 3 * 5 + 7")),
    ("unicode rhs", wrap("3 * 5 + 7 = ٢٢")),
    ("huge product", wrap("*".join(["99999999999"] * 16))),
    ("huge literal", wrap("9" * 199)),
    ("long sum", wrap("+".join(["1"] * 99))),
    ("nul byte", wrap("3 * 5 + 7\x00")),
    ("empty answer", wrap("")),
    ("blank answer", wrap("   ")),
    ("multiple answers, last wrong", wrap("3 * 5 + 7") + "<answer>3 + 5 + 7</answer>"),
    ("repeated answer tags", "<answer>" * 3000),
    ("repeated think and answer", "</think> <answer>" * 2000),
    ("None", None),
    ("bytes", b"</think> <answer>3 * 5 + 7</answer>"),
    ("int", 22),
    ("list", ["3 * 5 + 7"]),
]


@pytest.mark.parametrize("name, completion", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_never_correct(name, completion):
    s, seconds = timed_score(completion)
    assert not s.correct and s.reward <= 0.1
    assert seconds < 0.05
    cd.answer_key(completion, EX)  # must not raise either


# Several candidates, negations, look-alikes: wrong. The minus signs of common.MINUS_SIGNS, "×" and "÷" are operators.
@pytest.mark.parametrize("answer", [
    "3 * 5 + 7 or 3 + 5 + 7", "3 + 5 + 7 or 3 * 5 + 7", "3 * 5 + 7, 3 * 7 + 5", "3 * 5 + 7; 3 * 7 + 5", "not 3 * 5 + 7",
    "3 * 5 + 7 = 22 = 22", "3 * 5 + 7 = 23", "3 * 5 + 7 \u2260 21", "3 * 5 + 7 + 0", "(3 * 5 + 7) * 1",
    "\u2212(3 * 5 + 7)", "3 * 5 + \uff17", "3 * \u0665 + 7", "\u00b3 * 5 + 7", "3 * 5 \u2014 7 + 14", "3 \u00b7 5 + 7",
])
def test_hedges_and_lookalikes_are_wrong(answer):
    assert not cd.score(wrap(answer), EX).correct


@pytest.mark.parametrize("answer", ["3 \u00d7 5 + 7", "(5 \u00d7 3) + 7 = 22", "7 + 5\u00d73"])
def test_unicode_operators(answer):
    assert cd.score(wrap(answer), EX).correct


def test_unicode_minus_and_division():
    ex = {"nums": [8, 3, 3, 8], "target": 24}
    assert cd.score(wrap("8 \u00f7 (3 \u2212 8 \u00f7 3)"), ex).correct
    assert cd.score(wrap("8 / (3 \u2013 8 / 3)"), ex).correct


@pytest.mark.parametrize("completion, correct, format_ok", [
    (wrap("3 * 5 + 7") + " trailing text", True, False),
    (wrap("3 + 5 + 7") + "<answer>3 * 5 + 7</answer>", True, False),  # the last answer counts, format broken
    (" " * 19_000 + wrap("3 * 5 + 7") + "x", True, False),  # leading blanks once made the format check take 1.6 s
    ("<think>a</think><think>b</think><answer>3 * 5 + 7</answer>", True, False),
])
def test_format_breakers(completion, correct, format_ok):
    s, seconds = timed_score(completion)
    assert (s.correct, s.format_ok) == (correct, format_ok) and seconds < 0.05


@pytest.mark.parametrize("example", [
    None, {}, [], "nums", {"nums": [3, 5, 7]}, {"target": 22}, {"nums": "357", "target": 22},
    {"nums": [3, 5, 7], "target": "22"}, {"nums": [3, 5, 7], "target": 22.0}, {"nums": [True, 5, 7], "target": 22},
    {"nums": [3, 5, None], "target": 22}, {"nums": [], "target": 22}, {"nums": [10**100], "target": 22},
    {"nums": list(range(10**5)), "target": 22},
])
def test_malformed_example_scores_zero(example):
    s = cd.score(wrap("3 * 5 + 7"), example)
    assert (s.reward, s.correct, s.format_ok) == (0.0, False, False)
    assert cd.answer_key(wrap("3 * 5 + 7"), example) is None


# --- the solver --------------------------------------------------------------------------------------------------

def brute_force(nums, target) -> bool:
    """Reference: every way of combining two numbers, recursively, exact, no memo."""
    vals = [Fraction(x) for x in nums]
    if len(vals) == 1:
        return vals[0] == target
    for i, j in permutations(range(len(vals)), 2):
        a, b, rest = vals[i], vals[j], [v for k, v in enumerate(vals) if k not in (i, j)]
        for v in [a + b, a - b, a * b] + ([a / b] if b else []):
            if brute_force(rest + [v], target):
                return True
    return False


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=3, max_size=3), st.integers(1, 40))
def test_solver_matches_brute_force(nums, target):
    found = cd.solve(nums, target)
    assert (found is not None) == brute_force(nums, target)
    if found is not None:
        assert cd.evaluate(found) == target and sorted(cd.numbers_used(found)) == sorted(nums)


def test_solver_known_cases():
    assert cd.evaluate(cd.solve([3, 3, 8, 8], 24)) == 24  # needs a fraction on the way
    assert cd.solve([1, 1, 1], 100) is None
    assert cd.solve([7, 50, 60], 7) is None and cd.solve([7, 50, 60], 7, use_all=False) == "7"
    assert cd.evaluate(cd.solve([4, 4, 4, 4, 4, 4], 0)) == 0


@pytest.mark.parametrize("nums, target", [
    ([97, 89, 83, 79, 73, 71], 99991),  # unsolvable: the whole space is searched
    ([2, 3, 5, 7, 11, 13], 9973),
    ([1, 1, 1, 1, 1, 1], 1000),
    ([25, 50, 75, 100, 3, 6], 952),
])
def test_solver_six_numbers_is_fast(nums, target):
    t = time.process_time()  # CPU time: a busy machine must not fail this, a slow solver must
    found = cd.solve(nums, target)
    assert time.process_time() - t < 1.0
    assert found is None or (cd.evaluate(found) == target and sorted(cd.numbers_used(found)) == sorted(nums))


# --- the generator -----------------------------------------------------------------------------------------------

def key(ex):
    return tuple(sorted(ex["nums"])), ex["target"]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([(3, 3), (3, 4), (5, 6)]))
def test_generated_instances_are_solvable_and_perturbations_fail(seed, sizes):
    for ex in cd.generate(4, seed, min_numbers=sizes[0], max_numbers=sizes[1], max_target=200):
        assert sizes[0] <= len(ex["nums"]) <= sizes[1] and 1 <= ex["target"] <= 200
        sol = cd.solve(ex["nums"], ex["target"])
        assert cd.score(wrap(sol), ex).reward == 1.1
        assert cd.score(f"{sol}</think> <answer>{sol}</answer> done", ex).reward == 1.0
        assert not cd.score(wrap(sol), {**ex, "target": ex["target"] + 1}).correct
        assert not cd.score(wrap(sol), {**ex, "nums": [ex["nums"][0] + 1] + ex["nums"][1:]}).correct


def test_sizes_are_equally_likely_despite_the_solvability_filter():
    # 3 numbers reach far fewer targets than 4: drawing the size with every try made 80% of instances 4 numbers
    sizes = [len(ex["nums"]) for ex in cd.generate(400, 0, max_number=12, max_target=100)]
    assert 0.4 < sizes.count(3) / len(sizes) < 0.6


def test_splits_never_overlap_and_generation_is_deterministic():
    train = [key(ex) for seed in range(3) for ex in cd.generate(150, seed)]
    test = [key(ex) for seed in range(3) for ex in cd.generate(30, seed, split="test")]
    assert not set(train) & set(test)
    assert all(split_of({"nums": list(k[0]), "target": k[1]}, cd.FIELDS) == "test" for k in test)
    assert len(set(train[:150])) == 150  # distinct within one call
    assert cd.generate(20, 7) == cd.generate(20, 7) and cd.generate(20, 7) != cd.generate(20, 8)


@pytest.mark.parametrize("knobs", [
    {"min_numbers": 2}, {"max_numbers": 7}, {"min_numbers": 5, "max_numbers": 4}, {"max_number": 0},
    {"min_target": 10, "max_target": 1}, {"split": "dev"},
])
def test_bad_knobs_raise(knobs):
    with pytest.raises(ValueError):
        cd.generate(2, 0, **knobs)


def test_impossible_request_raises_instead_of_looping():
    with pytest.raises(ValueError, match="distinct"):
        cd.generate(50, 0, min_numbers=3, max_numbers=3, max_number=1, max_target=3)


def test_a_negative_target_may_be_written_after_the_expression():
    # before: "... = -12" was graded wrong although the knobs allow min_target < 0
    row = cd.generate(1, 0, "test", min_target=-20, max_target=-1)[0]
    found = cd.solve(row["nums"], row["target"])
    assert cd.score(f"x</think> <answer>{found} = {row['target']}</answer>", row).correct
    assert cd.score(f"x</think> <answer>{found} = \u2212{-row['target']}</answer>", row).correct
    assert not cd.score(f"x</think> <answer>{found} = {-row['target']}</answer>", row).correct
    assert not cd.score(f"x</think> <answer>{found} = - {-row['target']}</answer>", row).correct


def test_the_prompt_says_every_number_is_used():
    # the verifier requires every number; TinyZero's "can only be used once" reads as "at most once"
    assert "each number must be used exactly once" in cd.question(EX)


def test_whole_number_knobs_refuse_fractions():
    from r1lab.tasks import get_task, parse_knobs
    assert parse_knobs(cd, "max_number=12.0") == {"max_number": 12}
    with pytest.raises(ValueError, match="'max_number' takes a whole number"):
        parse_knobs(cd, "max_number=12.5")
    with pytest.raises(ValueError, match="'max_depth' takes a whole number"):  # nested without end before
        parse_knobs(get_task("logic"), "max_depth=2.5")


# --- loading -----------------------------------------------------------------------------------------------------

def test_load_jsonl(tmp_path):
    path = tmp_path / "cd.jsonl"
    rows = [{"nums": [3, 5, 7], "target": 22}, {"nums": ["1", 2, 3], "target": 6}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    rows = cd.load(path)
    assert rows[1]["nums"] == [1, 2, 3] and cd.load(path, limit=1) == [EX]
    (tmp_path / "test.jsonl").write_text(path.read_text())
    assert cd.load(tmp_path, split="test") == rows


def test_load_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"nums": [1, 2]}) + "\n")
    with pytest.raises(ValueError, match="target"):
        cd.load(bad)
    bad.write_text(json.dumps({"nums": [1, "x"], "target": 3}) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:1: "):
        cd.load(bad)
    with pytest.raises(FileNotFoundError):
        cd.load(tmp_path / "missing.jsonl")


def test_load_parquet_or_clear_error(tmp_path):
    path = tmp_path / "cd.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(ImportError, match="pyarrow"):
            cd.load(path)
        return
    pq.write_table(pa.Table.from_pylist([EX]), path)
    assert cd.load(path) == [EX]


@pytest.mark.parametrize("think, correct", [
    ("3*5=15, 15+7=22 vs 22 hit\ncheck (3*5)+7=22 ok\n", True),
    ("7-3=4, 4*5=20 vs 22 miss\n3*5=15, 15+7=22 vs 22 hit\n", True),
    ("3*5=15, 15+7=23 vs 22 miss\n", False),          # a false step
    ("3*5=16, 16+7=22 vs 22 hit\n", False),           # right answer, but the reasoning's arithmetic is wrong
    ("7-3=4, 4*5=20 vs 22 miss\n", False),            # the reasoning never reached the target
    ("I just know it.\n", False),                     # no reasoning at all
])
def test_strict_reward_needs_reasoning_that_supports_the_answer(think, correct):
    ex = {"nums": [3, 5, 7], "target": 22}
    completion = f"{think}</think> <answer>(3*5)+7</answer>"
    assert cd.score(completion, ex).correct
    assert cd.score(completion, ex, strict=True).correct is correct
