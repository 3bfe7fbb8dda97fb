import json
from itertools import product

import pytest
from conftest import best_of_three
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.tasks import logic as lg

# Zoey: "Oliver is a knave." Oliver: "Zoey is a knight and Oliver is a knight." -> Zoey knight, Oliver knave.
STATEMENTS = [["lying", 1], ["and", ["telling-truth", 0], ["telling-truth", 1]]]
EX = {
    "quiz": lg.render_quiz(STATEMENTS, ["Zoey", "Oliver"], __import__("random").Random(0)),
    "names": ["Zoey", "Oliver"],
    "solution": [True, False],
    "solution_text_format": "(1) Zoey is a knight\n(2) Oliver is a knave",
    "statements": STATEMENTS,
}
RIGHT = "(1) Zoey is a knight\n(2) Oliver is a knave"


def wrap(answer: str) -> str:
    return f"If Zoey were a knave, Oliver would be a knight...</think> <answer>{answer}</answer>"


def timed_score(completion, example=EX):
    return best_of_three(lg.score, completion, example)


# --- hand-made examples ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, reward", [
    (wrap(RIGHT), 1.1),
    (wrap("Zoey is a knight, and Oliver is a knave."), 1.1),
    (wrap("oliver is a KNAVE; zoey is a knight"), 1.1),
    (wrap("- Zoey is a knight\n- Oliver is a knave\n"), 1.1),
    (wrap(RIGHT) + " So that's it.", 1.0),
    ("<answer>" + RIGHT + "</answer>", 0.0),  # no </think>: still thinking, so no answer (r1lab.tasks.format)
    ("a</think> b</think> <answer>" + RIGHT + "</answer>", 1.0),  # two </think>: right, broken format
    (wrap("(1) Zoey is a knave\n(2) Oliver is a knave"), 0.1),
    (wrap("(1) Zoey is a knight"), 0.1),
    (RIGHT, 0.0),
])
def test_hand_made_rewards(completion, reward):
    # exact: a reward is 1.0 * correct + 0.1 * format_ok in float64, which IEEE 754 rounds alike on every machine
    assert lg.score(completion, EX).reward == reward


def test_quiz_and_interface():
    assert EX["quiz"].startswith("A very special island is inhabited only by knights and knaves.")
    assert '"Oliver is a knave."' in EX["quiz"] and '"Zoey is a knight and Oliver is a knight."' in EX["quiz"]
    assert EX["quiz"].endswith("So who is a knight and who is a knave?")
    q = lg.question(EX)
    assert q == EX["quiz"] + " " + lg.INSTRUCTION and lg.prompt(EX).endswith(q + " Assistant: <think>")
    assert lg.prompt(EX, "short") == f"User: {EX['quiz']}\nAssistant: <think>"
    assert [m["role"] for m in lg.messages(EX)] == ["system", "user"]
    assert lg.difficulty(EX) == "2 people"
    assert lg.answer_key(wrap("Oliver is a knave, Zoey is a knight"), EX) == "knight,knave"
    assert lg.answer_key(wrap("Zoey is a knight"), EX) is None


# --- adversarial inputs: never raise, never correct, always fast -------------------------------------------------

ADVERSARIAL = [
    ("hedge", wrap("Zoey is a knight or a knave\nOliver is a knave")),
    ("both roles", wrap("Zoey is a knight\nZoey is a knave\nOliver is a knave")),
    ("named twice", wrap(RIGHT + "\nZoey is a knight")),
    ("stranger", wrap(RIGHT + "\nEmma is a knight")),
    ("missing person", wrap("Zoey is a knight")),
    ("negation", wrap("Zoey is not a knave\nOliver is a knave")),
    ("extra sentence", wrap(RIGHT + "\nI am sure.")),
    ("all roles listed", wrap("Zoey is a knight/knave, Oliver is a knight/knave")),
    ("unicode name", wrap("Zoеy is a knight\nOliver is a knave")),  # Cyrillic e
    ("kelvin sign", wrap("Zoey is a \u212anight\nOliver is a knave")),
    ("cyrillic k", wrap("Zoey is a \u043anight\nOliver is a knave")),
    ("fullwidth k", wrap("Zoey is a \uff4bnight\nOliver is a knave")),
    ("hedge in brackets", wrap("Zoey is a knight (or a knave)\nOliver is a knave")),
    ("hedge at the end", wrap(RIGHT + " or the other way round")),
    ("both answers", wrap(RIGHT + "\n(1) Zoey is a knave\n(2) Oliver is a knight")),
    ("question mark", wrap("Zoey is a knight?\nOliver is a knave")),
    ("power tower", wrap("9**9**9")),
    ("import", wrap("__import__('os').system('x')")),
    ("nested parentheses", wrap("(" * 10_000 + RIGHT + ")" * 10_000)),
    ("1 MB answer", wrap("Zoey is a knight\n" * 60_000)),
    ("1 MB garbage", "x" * 1_000_000),
    ("empty answer", wrap("")),
    ("blank answer", wrap(" \n ")),
    ("multiple answers, last wrong", wrap(RIGHT) + "<answer>Zoey is a knave, Oliver is a knave</answer>"),
    ("repeated answer tags", "<answer>" * 3000),
    ("repeated think and answer", "</think> <answer>" * 2000),
    ("None", None),
    ("bytes", f"</think> <answer>{RIGHT}</answer>".encode()),
    ("dict", {"Zoey": "knight"}),
]


@pytest.mark.parametrize("name, completion", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial_never_correct(name, completion):
    s, seconds = timed_score(completion)
    assert not s.correct and s.reward <= 0.1
    assert seconds < 0.05
    lg.answer_key(completion, EX)


@pytest.mark.parametrize("completion, correct, format_ok", [
    (wrap(RIGHT) + " trailing text", True, False),
    (wrap("Zoey is a knave") + f"<answer>{RIGHT}</answer>", True, False),
    (" " * 19_000 + wrap(RIGHT) + "x", True, False),
])
def test_format_breakers(completion, correct, format_ok):
    s, seconds = timed_score(completion)
    assert (s.correct, s.format_ok) == (correct, format_ok) and seconds < 0.05


@pytest.mark.parametrize("example", [
    None, {}, "quiz", {"names": ["Zoey"]}, {"names": ["Zoey", "Oliver"], "solution": [True]},
    {"names": ["Zoey", "Oliver"], "solution": [1, 0]}, {"names": ["Zoey", "zoey"], "solution": [True, False]},
    {"names": "ZO", "solution": [True, False]}, {"names": [1, 2], "solution": [True, False]},
    {"names": [], "solution": []}, {"names": [f"P{i}" for i in range(40)], "solution": [True] * 40},
])
def test_malformed_example_scores_zero(example):
    s = lg.score(wrap(RIGHT), example)
    assert (s.reward, s.correct, s.format_ok) == (0.0, False, False)
    assert lg.answer_key(wrap(RIGHT), example) is None


# --- the solver --------------------------------------------------------------------------------------------------

def holds(s, roles) -> bool:
    """Reference semantics, one assignment at a time."""
    op, args = s[0], s[1:]
    if op == "telling-truth":
        return roles[args[0]]
    if op == "lying":
        return not roles[args[0]]
    vals = [holds(a, roles) for a in args]
    return {"not": lambda: not vals[0], "and": lambda: all(vals), "or": lambda: any(vals),
            "->": lambda: (not vals[0]) or vals[1], "<=>": lambda: vals[0] == vals[1]}[op]()


def leaf(n):
    return st.tuples(st.sampled_from(["telling-truth", "lying"]), st.integers(0, n - 1)).map(list)


def statement(n):
    return st.recursive(leaf(n), lambda inner: st.one_of(
        st.tuples(st.just("not"), inner).map(list),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)).map(lambda t: [t[0]] + t[1]),
        st.tuples(st.sampled_from(["->", "<=>"]), inner, inner).map(list),
    ), max_leaves=5)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.lists(statement(n), min_size=n, max_size=n)))
def test_solver_matches_truth_table_reference(statements):
    n = len(statements)
    expected = [list(r) for r in product([False, True], repeat=n)
                if all(holds(s, r) == r[i] for i, s in enumerate(statements))]
    assert sorted(lg.solve(statements)) == sorted(expected)


@pytest.mark.parametrize("bad", [
    [["telling-truth", 2], ["lying", 0]], [["maybe", 0], ["lying", 0]], [["and", ["lying", 0]], ["lying", 0]],
    [[], ["lying", 0]], [["lying", True], ["lying", 0]],
])
def test_solver_rejects_malformed_statements(bad):
    with pytest.raises(ValueError):
        lg.solve(bad)


def test_classic_puzzles():
    assert lg.solve(STATEMENTS) == [[True, False]]
    assert lg.solve([["lying", 0]]) == []  # "I am a knave" cannot be said
    assert len(lg.solve([["telling-truth", 0]])) == 2  # "I am a knight" says nothing


# --- the generator -----------------------------------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32), st.integers(2, 8), st.integers(2, 3), st.integers(2, 3))
def test_generated_puzzles_unique_and_scored(seed, people, depth, width):
    for ex in lg.generate(3, seed, min_people=people, max_people=people, max_depth=depth, max_width=width):
        assert len(ex["names"]) == people == len(set(ex["names"]))
        assert lg.solve(ex["statements"]) == [ex["solution"]]
        assert lg.score(wrap(ex["solution_text_format"]), ex).reward == 1.1
        for i in range(people):  # flipping any one role is wrong
            roles = [r != (j == i) for j, r in enumerate(ex["solution"])]
            flipped = "\n".join(f"{n} is a {'knight' if r else 'knave'}" for n, r in zip(ex["names"], roles))
            assert lg.score(wrap(flipped), ex).reward == 0.1


def test_splits_never_overlap_and_generation_is_deterministic():
    def keys(rows):
        return [json.dumps(ex["statements"]) for ex in rows]
    train = [k for seed in range(3) for k in keys(lg.generate(200, seed, max_people=4))]
    test = [k for seed in range(3) for k in keys(lg.generate(50, seed, split="test", max_people=4))]
    assert not set(train) & set(test)
    assert len(set(train[:200])) == 200
    assert lg.generate(10, 5) == lg.generate(10, 5) and lg.generate(10, 5) != lg.generate(10, 6)


@pytest.mark.parametrize("knobs", [
    {"min_people": 1}, {"max_people": 9}, {"min_people": 4, "max_people": 3}, {"max_depth": 1}, {"max_width": 1},
    {"split": "val"},
])
def test_bad_knobs_raise(knobs):
    with pytest.raises(ValueError):
        lg.generate(2, 0, **knobs)


def test_impossible_request_raises_instead_of_looping():
    with pytest.raises(ValueError, match="distinct"):
        lg.generate(5000, 0, min_people=2, max_people=2)  # fewer distinct 2-person puzzles exist


# --- loading -----------------------------------------------------------------------------------------------------

def test_load_reads_kk_rows(tmp_path):
    kk = {k: EX[k] for k in lg.FIELDS}
    kk["statements"] = "(('lying', 1), ('and', ('telling-truth', 0), ('telling-truth', 1)))"  # as K&K stores it
    path = tmp_path / "people2.jsonl"
    path.write_text(json.dumps(kk) + "\n")
    (row,) = lg.load(path)
    assert row["statements"] == STATEMENTS and lg.solve(row["statements"]) == [row["solution"]]
    path.write_text(json.dumps({k: v for k, v in kk.items() if k != "quiz"}) + "\n")
    with pytest.raises(ValueError, match="quiz"):
        lg.load(path)
    path.write_text(json.dumps({**kk, "solution": [True]}) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:1: "):
        lg.load(path)


# --- the generator's identity: one puzzle, one split ------------------------------------------------------------

def _relabelled(statements, order):
    """The puzzle with person order[k] listed k-th."""
    position = {person: k for k, person in enumerate(order)}

    def move(s):
        return [s[0], position[s[1]]] if s[0] in ("telling-truth", "lying") else [s[0]] + [move(x) for x in s[1:]]
    return [move(statements[person]) for person in order]


def test_canonical_form_ignores_the_order_of_people_and_operands():
    import random
    rng = random.Random(0)
    for row in lg.generate(100, 0, "train", max_depth=3, max_width=4):
        st = row["statements"]
        for _ in range(3):
            order = list(range(len(st)))
            rng.shuffle(order)
            assert lg.canonical_form(_relabelled(st, order)) == lg.canonical_form(st)
    # up to SEMANTIC_PEOPLE, meaning decides: "if Zoey is a knight then Oliver is a knave" is "Zoey is a knave or
    # Oliver is a knave"; past it, wording does, but not the order of commutative operands
    if_then = [["lying", 1], ["->", ["telling-truth", 0], ["lying", 1]]]
    either = [["lying", 1], ["or", ["lying", 0], ["lying", 1]]]
    assert lg.canonical_form(if_then) == lg.canonical_form(either)
    assert lg.canonical_form(if_then) != lg.canonical_form([["lying", 1], ["and", ["lying", 0], ["lying", 1]]])
    rest = [["telling-truth", 0], ["lying", 1], ["telling-truth", 2], ["lying", 3]]
    five = [["and", ["lying", 0], ["telling-truth", 1]]] + rest
    assert lg.canonical_form(five) == lg.canonical_form([["and", ["telling-truth", 1], ["lying", 0]]] + rest)
    assert lg.canonical_form(five) != lg.canonical_form([["->", ["lying", 0], ["telling-truth", 1]]] + rest)
    assert lg.canonical_form(five) != lg.canonical_form([["->", ["telling-truth", 1], ["lying", 0]]] + rest)


def test_train_and_test_share_no_puzzle_even_with_its_people_reordered():
    # before: the split hashed person indices, and 14 of 31 two-person test puzzles had a twin in train (51 of
    # 300 test puzzles meant what a train puzzle meant)
    train = {lg.canonical_form(r["statements"]) for r in lg.generate(2000, 0, "train")}
    test = lg.generate(300, 1, "test")
    assert sum(lg.canonical_form(r["statements"]) in train for r in test) == 0
    twins = [_relabelled(r["statements"], list(range(len(r["names"])))[::-1]) for r in test]
    assert sum(lg.canonical_form(t) in train for t in twins) == 0


def test_no_statement_fixes_its_speaker_without_reasoning():
    # before: 36% of puzzles held a statement like "Avery is a knave if and only if Avery is a knight"
    for row in lg.generate(150, 3, "test", max_depth=3, max_width=4) + lg.generate(150, 3, "test"):
        n = len(row["statements"])
        for s in row["statements"]:
            assert lg._truth(s, n) not in (0, (1 << 2**n) - 1), s
            if s[0] not in ("telling-truth", "lying"):
                leaves = [x[1] for x in s[1:] if x[0] in ("telling-truth", "lying")]
                assert len(leaves) == len(set(leaves)), s
