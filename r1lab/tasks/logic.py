"""Knights and knaves (as in the K&K dataset and Logic-RL): knights always tell the truth, knaves always lie; each
of 2 to 8 people makes one statement; find everyone's role. Only puzzles with exactly one solution are emitted.

Fields as in K&K: `quiz`, `names`, `solution` (True = knight), `solution_text_format` ("(1) Zoey is a knight\\n
(2) Oliver is a knave"), and `statements`, person i's statement at index i, in K&K's nested form as JSON lists:
["telling-truth", j] (j is a knight), ["lying", j] (j is a knave), ["not", s], ["and", s1, s2, ...],
["or", s1, s2, ...], ["->", s1, s2], ["<=>", s1, s2]. K&K files store it as a Python tuple repr; load() reads that.

The answer block must name every person exactly once as "<name> is a knight/knave", one per line or separated
by commas, semicolons or "and"; numbering like "(1)" and a final period are allowed. Any other clause (a hedge
such as "Zoey is a knight or a knave", a name not in the puzzle) makes it wrong.
"""
from __future__ import annotations

import json
import random
import re
from functools import lru_cache
from itertools import permutations, product

from r1lab.tasks.common import Score, combine, generate_distinct, load_rows, render_messages, render_prompt
from r1lab.tasks.format import parse_completion

NAME = "logic"
FIELDS = ("quiz", "names", "solution", "solution_text_format")

INSTRUCTION = (
    "Show your work in <think> </think> tags and state the role of each person, one per line, in <answer> "
    "</answer> tags, for example <answer> (1) Zoey is a knight\n(2) Oliver is a knave </answer>."
)
NAMES = (
    "Zoey", "Oliver", "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Sophia", "Mason", "Isabella", "William",
    "Mia", "James", "Charlotte", "Benjamin", "Amelia", "Lucas", "Harper", "Henry", "Evelyn", "Alexander",
    "Abigail", "Michael", "Emily", "Daniel", "Elizabeth", "Jacob", "Sofia", "Logan", "Avery", "Jackson", "Ella",
    "Sebastian", "Scarlett", "Aiden", "Chloe", "Owen", "Lily", "Samuel",
)
VERBS = ("says", "said", "claimed", "stated", "remarked", "exclaimed")
MAX_PEOPLE = 8
MAX_ANSWER_CHARS = 2_000
_SPLIT = re.compile(r"[\n;,]|\band\b", re.I)
_CLAUSE = re.compile(r"(?:\(?[0-9]{1,2}[).:]|[-*])?\s*([A-Za-z]+)\s+is\s+an?\s+(knight|knave)\s*\.?", re.I | re.A)
_KEY = ("canonical",)  # what defines a generated puzzle, for ids and the train/test split: canonical_form()
_COMMUTATIVE = ("and", "or", "<=>")
SEMANTIC_PEOPLE = 4  # puzzles of up to this many people are told apart by meaning, not wording: canonical_form


# --- the solver: truth tables as bitsets over all 2^n assignments ------------------------------------------------
# Assignment a gives person j the role knight iff bit j of a is set; a statement's truth table is an int whose
# bit a says whether it holds under assignment a, so and/or/not are single int operations.

@lru_cache(maxsize=None)
def _knight_tables(n: int) -> tuple[int, ...]:
    return tuple(sum(1 << a for a in range(2**n) if a >> j & 1) for j in range(n))


def _truth(statement, n: int) -> int:
    """The truth table of a statement about n people; ValueError when it is not a well-formed statement."""
    if not isinstance(statement, (list, tuple)) or not statement:
        raise ValueError(f"not a statement: {statement!r}")
    op, args, every = statement[0], statement[1:], (1 << 2**n) - 1
    if op in ("telling-truth", "lying"):
        if len(args) != 1 or type(args[0]) is not int or not 0 <= args[0] < n:
            raise ValueError(f"{op} needs one person index in [0, {n}): {statement!r}")
        table = _knight_tables(n)[args[0]]
        return table if op == "telling-truth" else every ^ table
    tables = [_truth(s, n) for s in args]
    if op == "not" and len(tables) == 1:
        return every ^ tables[0]
    if op in ("and", "or") and len(tables) >= 2:
        out = tables[0]
        for t in tables[1:]:
            out = out & t if op == "and" else out | t
        return out
    if op == "->" and len(tables) == 2:
        return (every ^ tables[0]) | tables[1]
    if op == "<=>" and len(tables) == 2:
        return every ^ tables[0] ^ tables[1]
    raise ValueError(f"unknown operator or wrong arity: {statement!r}")


def solve(statements) -> list[list[bool]]:
    """Every role assignment (True = knight) under which each knight's statement is true and each knave's false.

    >>> solve([["lying", 1], ["and", ["telling-truth", 0], ["telling-truth", 1]]])
    [[True, False]]
    """
    n = len(statements)
    every, knights = (1 << 2**n) - 1, _knight_tables(n)
    consistent = every
    for i, s in enumerate(statements):
        consistent &= every ^ (knights[i] ^ _truth(s, n))  # person i is a knight iff their statement holds
    return [[bool(a >> j & 1) for j in range(n)] for a in range(2**n) if consistent >> a & 1]


# --- the verifier ------------------------------------------------------------------------------------------------

def parse_roles(answer, names: list[str]) -> dict[str, bool] | None:
    """{name: is_knight} naming every person exactly once, or None.

    >>> parse_roles("(1) Zoey is a knight\\n(2) Oliver is a knave.", ["Zoey", "Oliver"])
    {'Zoey': True, 'Oliver': False}
    """
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    by_lower, roles = {name.lower(): name for name in names}, {}
    for clause in _SPLIT.split(answer):
        if not clause.strip():
            continue
        m = _CLAUSE.fullmatch(clause.strip())
        name = by_lower.get(m.group(1).lower()) if m else None
        if name is None or name in roles:  # an unreadable clause, a stranger, or a person named twice
            return None
        roles[name] = m.group(2).lower() == "knight"
    return roles if len(roles) == len(names) else None


def _labels(example) -> tuple[list[str], list[bool]] | None:
    """(names, solution) of a well-formed example, None for a malformed one."""
    if not isinstance(example, dict):
        return None
    names, solution = example.get("names"), example.get("solution")
    if not isinstance(names, (list, tuple)) or not isinstance(solution, (list, tuple)):
        return None
    if not 1 <= len(names) == len(solution) <= 16 or any(type(x) is not bool for x in solution):
        return None
    if any(not isinstance(x, str) for x in names) or len({x.lower() for x in names}) != len(names):
        return None
    return list(names), list(solution)


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> Score:
    """Correct iff the <answer> block gives every person their role in `solution`. Never raises; a malformed
    example scores zero."""
    parsed = parse_completion(completion)
    answer, format_ok = parsed.answer, parsed.format_ok
    labels = _labels(example)
    if labels is None:
        return Score(0.0, False, False, answer)
    names, solution = labels
    roles = parse_roles(answer, names)
    correct = roles is not None and [roles[name] for name in names] == solution
    return Score(combine(correct, format_ok, accuracy_weight, format_weight), correct, format_ok, answer)


def answer_key(completion, example) -> str | None:
    """The stated roles in the puzzle's name order ("knight,knave"), None unless everyone is named once."""
    labels = _labels(example)
    roles = parse_roles(parse_completion(completion).answer, labels[0]) if labels else None
    return None if roles is None else ",".join("knight" if roles[name] else "knave" for name in labels[0])


# --- the generator -----------------------------------------------------------------------------------------------

def _shape(statement, labels, mark: int | None = None) -> str:
    """A statement as text with person j written as labels[j] (person `mark` as "*"), the operands of and / or /
    <=> sorted: "A and B" and "B and A" read alike."""
    op, args = statement[0], statement[1:]
    if op in ("telling-truth", "lying"):
        return f"{op[0]}{'*' if args[0] == mark else labels[args[0]]}"
    parts = [_shape(s, labels, mark) for s in args]
    return f"{op}({','.join(sorted(parts) if op in _COMMUTATIVE else parts)})"


def _people(statement) -> set[int]:
    return {statement[1]} if statement[0] in ("telling-truth", "lying") else set().union(*map(_people, statement[1:]))


def _relabel(statement, position: dict[int, int]) -> list:
    if statement[0] in ("telling-truth", "lying"):
        return [statement[0], position[statement[1]]]
    return [statement[0]] + [_relabel(s, position) for s in statement[1:]]


def canonical_form(statements) -> str:
    """The puzzle up to the order of its people: the same text for every relabelling, so a puzzle whose people are
    merely listed in another order cannot land in train and test both.

    Up to SEMANTIC_PEOPLE people it is what each person's statement means (its truth table), the least over all
    orderings: two people make only about a hundred different puzzles, so wording alone ("if A then B" / "A is a
    knave or B is a knight") must not tell a test puzzle from its train twin. Past that, wordings rarely meet, and
    it is the statements' text with the operands of and / or / <=> sorted: people are first told apart by what
    they say and what is said of them (colour refinement, invariant under relabelling), then the least text over
    the orderings that keep those colours in order, usually one or a few, not n!.

    >>> canonical_form([["lying", 1], ["telling-truth", 0]]) == canonical_form([["telling-truth", 1], ["lying", 0]])
    True
    """
    n = len(statements)
    if n <= SEMANTIC_PEOPLE:
        tables = []
        for order in permutations(range(n)):
            position = {person: k for k, person in enumerate(order)}
            tables.append(tuple(_truth(_relabel(statements[i], position), n) for i in order))
        return f"tables{min(tables)}"
    mentions = [_people(s) for s in statements]
    colour = [0] * n
    for _ in range(n):
        labels = [f"c{c}" for c in colour]
        sigs = [(colour[i], _shape(statements[i], labels, mark=i),
                 sorted(_shape(statements[j], labels, mark=i) for j in range(n) if j != i and i in mentions[j]))
                for i in range(n)]
        ranks = {sig: k for k, sig in enumerate(sorted(set(map(repr, sigs))))}
        refined = [ranks[repr(sig)] for sig in sigs]
        if len(set(refined)) == len(set(colour)):
            break  # stable: each round only splits classes
        colour = refined
    classes = [[i for i in range(n) if colour[i] == c] for c in sorted(set(colour))]
    best = None
    for ordering in product(*(permutations(c) for c in classes)):
        order = [i for part in ordering for i in part]
        position = {person: k for k, person in enumerate(order)}
        labels = [str(position[j]) for j in range(n)]
        text = "|".join(_shape(statements[i], labels) for i in order)
        best = text if best is None or text < best else best
    return best


def _degenerate(statement, n: int) -> bool:
    """Whether a statement is always true or always false ("Avery is a knave if and only if Avery is a knight"),
    or a connective names one person twice among its own leaves ("Ava is a knight or Ava is a knight")."""
    table = _truth(statement, n)
    if table in (0, (1 << 2**n) - 1):
        return True
    if statement[0] in ("telling-truth", "lying"):
        return False
    leaves = [s[1] for s in statement[1:] if s[0] in ("telling-truth", "lying")]
    return len(leaves) != len(set(leaves)) or any(_degenerate(s, n) for s in statement[1:])

def _random_statement(rng: random.Random, n: int, depth: int, width: int, speaker: int | None = None,
                      avoid: frozenset = frozenset()) -> list:
    """A leaf ("j is a knight/knave") or a connective over smaller statements. A top-level leaf is about someone
    else: "I am a knight" says nothing and "I am a knave" cannot be said. The leaves of one connective name
    different people ("Ava is a knight or Ava is a knave" is no statement), so and/or take at most n operands."""
    if depth == 1 or rng.random() < 0.4:
        target = rng.choice([j for j in range(n) if j != speaker and j not in avoid] or [0])
        return [rng.choice(["telling-truth", "lying"]), target]
    op = rng.choice(["and", "or", "->", "<=>"])
    k = rng.randint(2, min(width, n)) if op in ("and", "or") else 2
    parts, named = [], set()
    for _ in range(k):
        parts.append(_random_statement(rng, n, depth - 1, width, avoid=frozenset(named)))
        if parts[-1][0] in ("telling-truth", "lying"):
            named.add(parts[-1][1])
    return [op] + parts


def _say(statement, names: list[str]) -> str:
    op, args = statement[0], statement[1:]
    if op in ("telling-truth", "lying"):
        return f"{names[args[0]]} is a {'knight' if op == 'telling-truth' else 'knave'}"
    parts = [_say(s, names) if s[0] in ("telling-truth", "lying", "not") else f"({_say(s, names)})" for s in args]
    if op == "not":
        return f"it is not the case that {parts[0]}"
    if op == "->":
        return f"if {parts[0]} then {parts[1]}"
    if op == "<=>":
        return f"{parts[0]} if and only if {parts[1]}"
    return f" {op} ".join(parts)


def render_quiz(statements, names: list[str], rng: random.Random) -> str:
    """K&K's wording: the island, the inhabitants, one quoted statement each, the question."""
    who = ", ".join(names[:-1]) + f", and {names[-1]}"
    quotes = [_say(s, names) for s in statements]
    said = " ".join(f'{name} {rng.choice(VERBS)}, "{q[0].upper() + q[1:]}."' for name, q in zip(names, quotes))
    return ("A very special island is inhabited only by knights and knaves. Knights always tell the truth, and "
            f"knaves always lie. You meet {len(names)} inhabitants: {who}. {said} "
            "So who is a knight and who is a knave?")


def solution_text(names: list[str], solution: list[bool]) -> str:
    roles = ["knight" if r else "knave" for r in solution]
    return "\n".join(f"({i}) {name} is a {role}" for i, (name, role) in enumerate(zip(names, roles), 1))


def generate(n: int, seed: int, split: str = "train", min_people: int = 2, max_people: int = 8,
             max_depth: int = 2, max_width: int = 2) -> list[dict]:
    """n distinct puzzles of `split` with exactly one solution. Statements nest up to max_depth levels deep
    (2: a connective over "j is a knight/knave" leaves), and/or take up to max_width operands. Instances are told
    apart, and split, by canonical_form(statements): neither the names, the order of the people nor the order of
    commutative operands can carry a test puzzle into train. No statement is always true or always false, and no
    connective names one person twice among its leaves: such a statement fixes its speaker without reasoning.

    subtle: with leaves alone ("i says j is a knight") every constraint reads role_i == role_j or role_i != role_j,
    so flipping everyone is a second solution; uniqueness needs a connective, hence max_depth >= 2."""
    if not 2 <= min_people <= max_people <= MAX_PEOPLE:
        raise ValueError(f"need 2 <= min_people <= max_people <= {MAX_PEOPLE}, got {min_people}, {max_people}")
    if not 2 <= max_depth <= 3 or not 2 <= max_width <= 4:  # depth 1 never has a unique solution, see below
        raise ValueError(f"need 2 <= max_depth <= 3 and 2 <= max_width <= 4, got {max_depth}, {max_width}")
    rng = random.Random(seed)

    def draw():
        k = rng.randint(min_people, max_people)
        statements = [_random_statement(rng, k, max_depth, max_width, speaker=i) for i in range(k)]
        return {"canonical": canonical_form(statements)}, statements

    def build(statements) -> dict | None:
        if any(_degenerate(s, len(statements)) for s in statements):
            return None
        solutions = solve(statements)
        if len(solutions) != 1:
            return None
        names = rng.sample(NAMES, len(statements))  # subtle: drawn for accepted puzzles only
        return {"quiz": render_quiz(statements, names, rng), "names": names, "solution": solutions[0],
                "solution_text_format": solution_text(names, solutions[0]), "statements": statements}

    return generate_distinct(n, split, _KEY, draw, build, what="{split} puzzles")


# --- the task interface ----------------------------------------------------------------------------------------

def question(example: dict, short: bool = False) -> str:
    return example["quiz"] if short else f"{example['quiz']} {INSTRUCTION}"


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example, short=template == "short"), template)


def messages(example: dict, template: str = "r1") -> list[dict]:
    return render_messages(question(example, short=template == "short"), template)


def difficulty(example: dict) -> str:
    return f"{len(example['names'])} people"


def load(source, split: str = "test", limit: int | None = None) -> list[dict]:
    return load_rows(source, FIELDS, split, limit, fix=_fix)


def _fix(row: dict) -> None:
    row["names"], row["solution"] = [str(x) for x in row["names"]], [bool(x) for x in row["solution"]]
    if len(row["names"]) != len(row["solution"]):
        raise ValueError(f"{len(row['names'])} names but {len(row['solution'])} roles")
    if isinstance(row.get("statements"), str):  # K&K: "(('lying', 1), ('telling-truth', 0))"
        try:
            row["statements"] = json.loads(row["statements"].replace("(", "[").replace(")", "]").replace("'", '"'))
        except json.JSONDecodeError:
            raise ValueError(f"cannot read statements {row['statements'][:80]!r}") from None
