"""Reasoning-behaviour metrics read off completions: arithmetic-step accuracy, markers, attempts.

    >>> arithmetic_steps("3*5=15, 7/3 no, 15+7=23 vs 22 miss")
    (2, 3)
    >>> has_marker("check (3*5)+7=22 ok", DEFAULT_MARKERS)
    True
"""
from __future__ import annotations

import re
from fractions import Fraction

# Self-verification and backtracking phrases (configurable wherever they are used).
DEFAULT_MARKERS = ("check", "back,", "wait", "verify", "let me re")

# subtle: a leading minus belongs to the first operand only at the start of an expression ("-2184+8594=6410"),
# never after a digit ("13-9=4" is thirteen minus nine). A step is one operation: the tail of a chain is none
# ("16 - 3 - 4 = 9" is no step "3 - 4 = 9", nor "2 * 3 + 4 = 10" one "3 + 4 = 10").
_STEP = re.compile(r"(?<![0-9.])(?<![-+*/])(?<![-+*/] )((?<![0-9]-)-?[0-9]{1,12})\s*([-+*/])\s*([0-9]{1,12})\s*=\s*"
                   r"(-?[0-9]{1,24})(?![0-9.])")
_REJECT = re.compile(r"(?<![0-9.])([0-9]{1,12})([-+*/])([0-9]{1,12}) no\b")
_ATTEMPT = re.compile(r" vs -?[0-9]+ (?:hit|miss)")


def parse_steps(text: str) -> list[tuple[bool, int]]:
    """(is it true, its stated result) for each "a op b = c" step with integers; division must be exact. A chain
    of operations is not a step.

    >>> parse_steps("7-3=4, 4*5=21, 16 - 3 - 4 = 9")
    [(True, 4), (False, 21)]
    """
    out = []
    for a, op, b, c in _STEP.findall(text if isinstance(text, str) else ""):
        a, b, c = int(a), int(b), int(c)
        if op == "/":
            ok = b != 0 and Fraction(a, b) == c
        else:
            ok = {"+": a + b, "-": a - b, "*": a * b}[op] == c
        out.append((ok, c))
    return out


def whole_result(a: int, op: str, b: int) -> int | None:
    """a op b for non-negative integers when the result is a whole non-negative number, else None: the legal steps
    of the countdown corpus; the others are the ones it writes as rejected ("10/3 no").

    >>> [whole_result(10, "/", 3), whole_result(4, "-", 5), whole_result(12, "/", 4)]
    [None, None, 3]
    """
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b != 0 and a % b == 0 else None


def rejected_steps(text: str) -> list[bool]:
    """Is it true, for each rejected step "a op b no": true iff a op b has no whole non-negative result.

    >>> rejected_steps("10/3 no, 4-5 no, 12/4 no, 3+4 no")
    [True, True, False, False]
    """
    return [whole_result(int(a), op, int(b)) is None
            for a, op, b in _REJECT.findall(text if isinstance(text, str) else "")]


def arithmetic_steps(text: str) -> tuple[int, int]:
    """(correct, total) over "a op b = c" steps with integers and rejected "a op b no" steps."""
    steps = [ok for ok, _ in parse_steps(text)] + rejected_steps(text)
    return sum(steps), len(steps)


def has_marker(text: str, markers=DEFAULT_MARKERS) -> bool:
    low = (text or "").lower()
    return any(m in low for m in markers)


def count_attempts(text: str) -> int:
    """Countdown search attempts ("... vs 22 miss" / "... vs 22 hit" lines)."""
    return len(_ATTEMPT.findall(text or ""))
