"""Multi-digit arithmetic: `a op b` with op in + - *, difficulty set by the digit counts.

Fields: `a`, `op`, `b` define the instance; `answer` is derived for convenience and never trusted (score
recomputes it). The answer must be one integer: optional minus (any of common.MINUS_SIGNS: "−18" is -18), ASCII
digits, optional comma thousands separators ("-1,234"), surrounding blanks. Anything else in the <answer> block is
wrong: several numbers, words ("not 18"), unicode digits ("１８", "١٨", "¹⁸"), "+18", "18.0".
"""
from __future__ import annotations

import random
import re

from r1lab.tasks.common import Score, ascii_minus, combine, generate_distinct, load_rows, render_messages, render_prompt
from r1lab.tasks.format import parse_completion

NAME = "arithmetic"
FIELDS = ("a", "op", "b")

QUESTION = (
    "Calculate {a} {op} {b}. Show your work in <think> </think> tags and return only the final integer in "
    "<answer> </answer> tags, for example <answer> 1234 </answer>."
)
# The "short" template is for tiny character-level models, where every prompt character costs compute.
SHORT_QUESTION = "Calculate {a} {op} {b}."

OPS = {"+": "addition", "-": "subtraction", "*": "multiplication"}
MAX_DIGITS = 30  # per operand, for the generator and for examples scored
MAX_ANSWER_CHARS = 100
_INTEGER = re.compile(r"\s*(-?)([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)\s*", re.ASCII)  # int() takes '٣' too


def parse_integer(answer) -> int | None:
    """The integer an answer states, or None. parse_integer(" -1,234 ") == -1234; parse_integer("1,23") is None"""
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    m = _INTEGER.fullmatch(ascii_minus(answer))
    if not m:
        return None
    value = int(m.group(2).replace(",", ""))
    return -value if m.group(1) else value


def _result(example) -> int | None:
    """a op b recomputed from the example, None when the example is malformed."""
    if not isinstance(example, dict):
        return None
    a, op, b = example.get("a"), example.get("op"), example.get("b")
    if type(a) is not int or type(b) is not int or not isinstance(op, str) or op not in OPS:
        return None
    if max(abs(a), abs(b)) >= 10**MAX_DIGITS:
        return None
    return a + b if op == "+" else a - b if op == "-" else a * b


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> Score:
    """Correct iff the <answer> block states a op b. Never raises; a malformed example scores zero."""
    parsed = parse_completion(completion)
    answer, format_ok = parsed.answer, parsed.format_ok
    result = _result(example)
    if result is None:
        return Score(0.0, False, False, answer)
    correct = parse_integer(answer) == result
    return Score(combine(correct, format_ok, accuracy_weight, format_weight), correct, format_ok, answer)


def answer_key(completion, example) -> str | None:
    """The stated integer as a plain string ("-1234"), None when there is none."""
    value = parse_integer(parse_completion(completion).answer)
    return None if value is None else str(value)


def question(example: dict, short: bool = False) -> str:
    return (SHORT_QUESTION if short else QUESTION).format(a=example["a"], op=example["op"], b=example["b"])


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example, short=template == "short"), template)


def messages(example: dict, template: str = "r1") -> list[dict]:
    return render_messages(question(example, short=template == "short"), template)


def difficulty(example: dict) -> str:
    """ "3-digit multiplication": the longer operand's digit count and the operation."""
    digits = len(str(max(abs(example["a"]), abs(example["b"]))))
    return f"{digits}-digit {OPS[example['op']]}"


def _identity(a: int, op: str, b: int) -> dict:
    """The fields that define an instance; + and * are ordered so that b + a cannot cross the train/test split."""
    if op in "+*":
        a, b = min(a, b), max(a, b)
    return {"a": a, "op": op, "b": b}


def generate(n: int, seed: int, split: str = "train", min_digits: int = 1, max_digits: int = 3,
             ops: str = "+-*") -> list[dict]:
    """n distinct instances of `split`: op uniform in `ops`, each operand's digit count uniform in
    [min_digits, max_digits], then the operand uniform among numbers of that many digits (0-9 for one digit)."""
    if not 1 <= min_digits <= max_digits <= MAX_DIGITS:
        raise ValueError(f"need 1 <= min_digits <= max_digits <= {MAX_DIGITS}, got {min_digits}, {max_digits}")
    if not ops or any(op not in OPS for op in ops):
        raise ValueError(f"ops must be a non-empty string of {''.join(OPS)}, got {ops!r}")
    rng = random.Random(seed)

    def operand() -> int:
        d = rng.randint(min_digits, max_digits)
        return rng.randint(0 if d == 1 else 10 ** (d - 1), 10**d - 1)

    def draw():
        a, op, b = operand(), rng.choice(ops), operand()
        return _identity(a, op, b), (a, op, b)

    def build(candidate) -> dict:
        a, op, b = candidate
        return {"a": a, "op": op, "b": b, "answer": _result({"a": a, "op": op, "b": b})}

    return generate_distinct(n, split, FIELDS, draw, build)


def load(source, split: str = "test", limit: int | None = None) -> list[dict]:
    return load_rows(source, FIELDS, split, limit, fix=_fix)


def _fix(row: dict) -> None:
    try:
        row["a"], row["b"] = int(row["a"]), int(row["b"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"a and b must be integers ({e})") from None
    if row["op"] not in OPS:
        raise ValueError(f"op must be one of {list(OPS)}, got {row['op']!r}")
