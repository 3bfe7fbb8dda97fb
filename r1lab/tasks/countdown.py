"""Countdown: reach `target` with + - * / over `nums`, each number used exactly once (as in TinyZero and the
Jiayi-Pan/Countdown-Tasks-3to4 dataset: fields `nums`, `target`).

The answer is an arithmetic expression, optionally written "expr = target". It is parsed with `ast`, never
evaluated by Python: at most MAX_EXPR_CHARS ASCII characters, integer literals, binary + - * / and parentheses.
No unary operators: every number is positive, and `-b + a` is always `a - b`. Values are exact Fractions, every
intermediate bounded by MAX_MAGNITUDE; division by zero or an out-of-bound value makes the answer wrong. Before
parsing, the minus signs of common.MINUS_SIGNS become "-", "×" "*" and "÷" "/"; any other non-ASCII character
(unicode digits, other dashes) makes it wrong.
"""
from __future__ import annotations

import ast
import random
import re
from collections import Counter
from fractions import Fraction
from itertools import combinations

from r1lab.evaluation.behaviour import parse_steps, rejected_steps
from r1lab.tasks.common import MINUS_SIGNS, Score, combine, generate_distinct, load_rows, render_messages, render_prompt
from r1lab.tasks.format import parse_completion

NAME = "countdown"
FIELDS = ("nums", "target")

QUESTION = (
    "Using the numbers {nums}, create an equation that equals {target}. You can use basic arithmetic operations "
    "(+, -, *, /) and each number must be used exactly once. Show your work in <think> </think> tags and return "
    "the final equation in <answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>."
)
# TinyZero's wording, "each number can only be used once", read as "at most once", lets a subset solve the problem,
# which the verifier (like TinyZero's) grades wrong: 192 of 500 recipe problems have a subset solution.
# The "short" template is for tiny character-level models, where every prompt character costs compute; r1lab's
# base learnt from its corpus that every number is used, and the wording it was pretrained on stays.
SHORT_QUESTION = "Using the numbers {nums}, create an equation that equals {target}."

MAX_EXPR_CHARS = 200
MAX_NODES = 64  # a 6-number answer has 11 nodes
MAX_MAGNITUDE = 10**18  # bound on |numerator| and denominator of every value; 1000**6 still fits
MAX_NUMBERS = 6
_EXPR_CHARS = re.compile(r"[0-9+\-*/() \t\n]+")  # ASCII only: int() would also take '٣' or '３'
_TARGET = re.compile(r"\s*-?[0-9]{1,19}\s*")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_ASCII_OPS = str.maketrans({**dict.fromkeys(MINUS_SIGNS, "-"), "\u00d7": "*", "\u00f7": "/"})


# --- the verifier ----------------------------------------------------------------------------------------------

def _apply(op: str, a, b):
    """a op b exactly (int when integral, else Fraction); None on division by zero or beyond MAX_MAGNITUDE."""
    if op == "+":
        x = a + b
    elif op == "-":
        x = a - b
    elif op == "*":
        x = a * b
    elif b == 0:
        return None
    elif type(a) is int and type(b) is int and a % b == 0:
        x = a // b
    else:
        x = Fraction(a, b)
    if type(x) is not int:
        if x.denominator != 1:
            return x if abs(x.numerator) <= MAX_MAGNITUDE and x.denominator <= MAX_MAGNITUDE else None
        x = x.numerator
    return x if -MAX_MAGNITUDE <= x <= MAX_MAGNITUDE else None


def _walk(node, literals: list[int], depth: int = 0):
    """The exact value of an allowed expression tree, appending its literals; None for anything else."""
    if depth > MAX_NODES or len(literals) > MAX_NODES:
        return None
    if isinstance(node, ast.Constant):
        if type(node.value) is not int or node.value > MAX_MAGNITUDE:  # bool, float, str... are rejected
            return None
        literals.append(node.value)
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        a = _walk(node.left, literals, depth + 1)
        b = _walk(node.right, literals, depth + 1) if a is not None else None
        return _apply(_OPS[type(node.op)], a, b) if b is not None else None
    return None  # names, calls, attributes, unary ops, **, //, %...


def _parse(expr) -> tuple[int | Fraction, list[int]] | None:
    """(value, literals in order) of a bounded, allowed expression, or None."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS or not _EXPR_CHARS.fullmatch(expr):
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: e.g. a NUL byte
        return None
    literals: list[int] = []
    value = _walk(tree.body, literals)
    return None if value is None else (value, literals)


def evaluate(expr: str) -> Fraction | None:
    """The exact value of an allowed expression, None if it is not one. evaluate("(1 + 2) / 3") == Fraction(1)"""
    parsed = _parse(expr)
    return None if parsed is None else Fraction(parsed[0])


def numbers_used(expr: str) -> list[int] | None:
    """The integer literals of an allowed expression, in order. numbers_used("(1 + 2) / 3") == [1, 2, 3]"""
    parsed = _parse(expr)
    return None if parsed is None else parsed[1]


def _read_answer(answer, nums: list[int], use_all: bool) -> int | Fraction | None:
    """The value of a well-formed answer: an allowed expression over `nums` (each exactly once, or at most once),
    optionally followed by "= N" where N is that value. None otherwise."""
    if not isinstance(answer, str) or len(answer) > MAX_EXPR_CHARS:
        return None
    expr, eq, rhs = answer.translate(_ASCII_OPS).partition("=")
    if eq and not _TARGET.fullmatch(rhs):
        return None
    parsed = _parse(expr)
    if parsed is None:
        return None
    value, used = parsed
    if eq and int(rhs) != value:
        return None
    used, have = Counter(used), Counter(nums)
    return value if (used == have if use_all else used <= have) else None


def _instance(example) -> tuple[list[int], int] | None:
    """(nums, target) of a well-formed example, None for a malformed one."""
    if not isinstance(example, dict):
        return None
    nums, target = example.get("nums"), example.get("target")
    if not isinstance(nums, (list, tuple)) or not 1 <= len(nums) <= MAX_NODES or type(target) is not int:
        return None
    if any(type(x) is not int or abs(x) > MAX_MAGNITUDE for x in nums):
        return None
    return list(nums), target


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1,
          use_all: bool = True, strict: bool = False) -> Score:
    """Correct iff the <answer> expression uses the numbers exactly once (at most once with use_all=False) and
    equals the target. Never raises; a malformed example scores zero.

    strict=True (an RL reward option) also refuses an answer the reasoning does not support: every "a op b = c"
    step in the reasoning must be true, and the last one must reach the target; every rejected step ("10/3 no")
    must be true too. A chain ("3*5+7=22") is no step, so reasoning written only in chains is refused: the option
    is for models that show one operation a step, as r1lab's corpus does. Without it, RL on a small model
    learns to keep the answers and let the arithmetic in its reasoning decay (dev/LOG.md).
    """
    parsed = parse_completion(completion)
    answer, format_ok = parsed.answer, parsed.format_ok
    instance = _instance(example)
    if instance is None:
        return Score(0.0, False, False, answer)
    nums, target = instance
    correct = _read_answer(answer, nums, use_all) == target
    if correct and strict:
        steps = parse_steps(parsed.reasoning)
        correct = (bool(steps) and all(ok for ok, _ in steps) and steps[-1][1] == target
                   and all(rejected_steps(parsed.reasoning)))
    return Score(combine(correct, format_ok, accuracy_weight, format_weight), correct, format_ok, answer)


def answer_key(completion, example) -> str | None:
    """The value of a well-formed answer ("22", "7/3"), so correct answers share the key str(target); an answer
    with the wrong numbers keys as "invalid:<expr>"; None when nothing was extracted."""
    answer, instance = parse_completion(completion).answer, _instance(example)
    if answer is None or instance is None:
        return None
    value = _read_answer(answer, instance[0], use_all=True)
    return str(value) if value is not None else "invalid:" + "".join(answer.split())


# --- the solver ------------------------------------------------------------------------------------------------
# A multiset is a sorted tuple. values(S) maps every value reachable from all of S to how it was made, so a
# solution is rebuilt from back-pointers; reach(S, t) only asks whether t is reachable, splitting S in two and
# looking up the value the other side would need. Full value sets are built only for parts of up to n - 2
# numbers (for 6 numbers: a few thousand values each), which keeps 6 numbers at about 0.1 s when no solution
# exists; building them for bigger parts costs more than it saves.

_ORDERS = (("+", False), ("*", False), ("-", False), ("-", True), ("/", False), ("/", True))  # True: b op a


def _splits(ms: tuple) -> list[tuple[tuple, tuple]]:
    """Distinct unordered splits of a multiset into two non-empty parts, larger part first."""
    out = set()
    for k in range(1, len(ms) // 2 + 1):
        for idx in combinations(range(len(ms)), k):
            a = tuple(ms[i] for i in idx)
            b = tuple(ms[i] for i in range(len(ms)) if i not in idx)
            out.add((b, a) if (len(b), b) >= (len(a), a) else (a, b))
    return sorted(out)


def _values(ms: tuple, memo: dict) -> dict:
    if ms not in memo:
        if len(ms) == 1:
            memo[ms] = {ms[0]: None}
        else:
            table = {}
            for big, small in _splits(ms):
                vb, vs = _values(big, memo), _values(small, memo)
                for a in vb:
                    for b in vs:
                        for op, swap in _ORDERS:
                            v = _apply(op, b, a) if swap else _apply(op, a, b)
                            if v is not None and v not in table:
                                table[v] = (op, small, b, big, a) if swap else (op, big, a, small, b)
            memo[ms] = table
    return memo[ms]


def _needs(t, b):
    """(op, value a must have, a on the left) for each way `a op b` or `b op a` can equal t."""
    out = [("+", t - b, True), ("-", t + b, True), ("-", b - t, False)]
    if b != 0:
        out += [("*", _apply("/", t, b), True), ("/", _apply("*", t, b), True)]
    if t != 0 and b != 0:
        out.append(("/", _apply("/", b, t), False))
    return [(op, a, left) for op, a, left in out if a is not None]


def _reach(ms: tuple, t, memo: dict, full: int) -> tuple[str, int] | None:
    """(expression, precedence) using all of `ms` with value t, or None. Parts of up to `full` numbers are
    looked up in their value table, larger ones searched again for the value they would need."""
    if len(ms) == 1:
        return (str(ms[0]), 3) if ms[0] == t else None
    for big, small in _splits(ms):
        for b in _values(small, memo):
            if t == 0 and b == 0:  # anything times zero: the sum of `big` will do
                return _join("*", (" + ".join(map(str, big)), 1), _expr(small, b, memo))
            for op, a, left in _needs(t, b):
                if len(big) > full:
                    found = _reach(big, a, memo, full)
                else:
                    found = _expr(big, a, memo) if a in _values(big, memo) else None
                if found is not None:
                    e = _expr(small, b, memo)
                    return _join(op, found, e) if left else _join(op, e, found)
    return None


def _expr(ms: tuple, v, memo: dict) -> tuple[str, int]:
    how = _values(ms, memo)[v]
    if how is None:
        return str(v), 3
    op, ma, a, mb, b = how
    return _join(op, _expr(ma, a, memo), _expr(mb, b, memo))


def _join(op: str, left: tuple[str, int], right: tuple[str, int]) -> tuple[str, int]:
    """Render with the fewest parentheses; precedence 1 for + -, 2 for * /, 3 for a number."""
    p = 1 if op in "+-" else 2
    lt = left[0] if left[1] >= p else f"({left[0]})"
    rt = right[0] if right[1] > p or (right[1] == p and op in "+*") else f"({right[0]})"
    return f"{lt} {op} {rt}", p


def solve(nums: list[int], target: int, use_all: bool = True) -> str | None:
    """An expression over `nums` (each exactly once; at most once with use_all=False) equal to `target`, or None.

    >>> solve([3, 5, 7], 22)
    '5 * 3 + 7'
    """
    memo: dict = {}
    target = Fraction(target)
    t = target.numerator if target.denominator == 1 else target
    subsets = [tuple(sorted(nums))] if use_all else sorted(
        {tuple(sorted(c)) for k in range(1, len(nums) + 1) for c in combinations(nums, k)}, key=len)
    for ms in subsets:
        found = _reach(ms, t, memo, full=max(2, len(ms) - 2))
        if found is not None:
            return found[0]
    return None


# --- the task interface ----------------------------------------------------------------------------------------

def question(example: dict, short: bool = False) -> str:
    return (SHORT_QUESTION if short else QUESTION).format(nums=list(example["nums"]), target=example["target"])


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example, short=template == "short"), template)


def messages(example: dict, template: str = "r1") -> list[dict]:
    return render_messages(question(example, short=template == "short"), template)


def difficulty(example: dict) -> str:
    return f"{len(example['nums'])} numbers"


def _identity(nums, target) -> dict:
    """The fields that define an instance; nums sorted so a reordering cannot cross the train/test split."""
    return {"nums": sorted(nums), "target": target}


def generate(n: int, seed: int, split: str = "train", min_numbers: int = 3, max_numbers: int = 4,
             max_number: int = 100, min_target: int = 1, max_target: int = 100) -> list[dict]:
    """n distinct solvable instances of `split`: a size uniform in [min_numbers, max_numbers], numbers uniform in
    [1, max_number], target drawn uniformly from [min_target, max_target], kept when solve() finds a solution and
    the content hash lands in `split`. Small targets are solvable from more draws, so the kept ones lean small.

    The size is drawn first and kept until an instance of that size is accepted, so sizes are equally likely.
    (Drawing it afresh with every try lets the solvability filter pick it: 3 numbers reach far fewer targets
    than 4, and 80% of the instances had 4 numbers.)"""
    if not 3 <= min_numbers <= max_numbers <= MAX_NUMBERS:
        raise ValueError(f"need 3 <= min_numbers <= max_numbers <= {MAX_NUMBERS}, got {min_numbers}, {max_numbers}")
    if not 1 <= max_number <= 1000 or not min_target <= max_target:
        raise ValueError(f"need 1 <= max_number <= 1000 and min_target <= max_target, got {max_number}, "
                         f"{min_target}, {max_target}")
    rng = random.Random(seed)
    size = None  # the size being drawn; kept until an instance of that size is accepted

    def draw():
        nonlocal size
        size = size or rng.randint(min_numbers, max_numbers)
        nums = [rng.randint(1, max_number) for _ in range(size)]
        target = rng.randint(min_target, max_target)
        return _identity(nums, target), (nums, target)

    def build(candidate) -> dict | None:
        nonlocal size
        nums, target = candidate
        if solve(nums, target) is None:
            return None
        size = None
        return {"nums": nums, "target": target}

    # With 3 numbers about 3% of the draws are solvable, well within generate_distinct's budget of misses.
    return generate_distinct(n, split, FIELDS, draw, build, what="solvable {split} instances")


def load(source, split: str = "test", limit: int | None = None) -> list[dict]:
    return load_rows(source, FIELDS, split, limit, fix=_fix)


def _fix(row: dict) -> None:
    try:
        row["nums"], row["target"] = [int(x) for x in row["nums"]], int(row["target"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"nums must be a list of integers, target an integer ({e})") from None
