r"""Final answers out of free-form math completions (gsm8k, math): pure, linear-time, nothing is ever evaluated.

The completion is read by r1lab.tasks.format.parse_completion, the rule every verifier and the server share. Its
answer is the first of these that is present:

    1. <answer>X</answer>      the parser's answer: the last block after the first </think>
    2. the last \boxed{X}      balanced braces, at most MAX_ANSWER_CHARS inside (\fbox{} too)
    3. #### X                  the last one: GSM8K's own solutions end this way
    4. "the answer is X"       the last one, X up to the end of its sentence or line
    5. the last number

Rules 2-5 read the reply, the text after the first </think> (answer tags removed), so a number or box inside the
reasoning is never the answer of a completion that ended its thinking; a completion without </think> (an
instruct model that does not use the tags, or one cut off) is read whole. format_ok is the parser's verdict
alone, so an answer found by 2-5 never earns the format reward. A tag, box or marker with nothing usable after
it falls through to the next rule, except <answer></answer>: an empty answer is still the model's answer.
Numbers are ASCII only: '١٨' or '１８' is not 18.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

from r1lab.tasks.format import parse_completion

MAX_ANSWER_CHARS = 1000  # a \boxed{} body or answer longer than this is no answer (real MATH answers are < 200)
MAX_NUMBER_CHARS = 50  # longer digit strings are not numbers (and int() refuses > 4300 digits anyway)

_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_ANSWER_IS = re.compile(r"\banswer is\b\s*:?", re.I)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
# 1,234 only with groups of three, so "1,2345" is two numbers; no exponents, no unicode digits.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?", re.ASCII)
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)(?:/0*[1-9]\d*)?", re.ASCII)
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


class Extracted(NamedTuple):
    answer: str | None
    format_ok: bool
    source: str | None  # "answer_tag", "boxed", "####", "answer_is", "last_number"; None when nothing was found


def extract_answer(completion) -> Extracted:
    r"""The final answer of a completion, by the rules in the module docstring.

    >>> extract_answer("2+2=4</think> <answer>4</answer>")
    Extracted(answer='4', format_ok=True, source='answer_tag')
    >>> extract_answer(r"so x = \boxed{\frac{1}{2}}.").answer
    '\\frac{1}{2}'
    >>> extract_answer("9 * 2 = 18 dollars.\n#### 18")
    Extracted(answer='18', format_ok=False, source='####')
    >>> extract_answer("The answer is $42$. Done.")
    Extracted(answer='42', format_ok=False, source='answer_is')
    >>> extract_answer("16 - 3 - 4 = 9, and 9 * 2 = 18")
    Extracted(answer='18', format_ok=False, source='last_number')
    """
    parsed = parse_completion(completion)
    if parsed.answer is not None:
        return Extracted(clean(parsed.answer), parsed.format_ok, "answer_tag")
    text = parsed.content if parsed.closed else parsed.reasoning
    boxed = last_boxed(text)
    if boxed:
        return Extracted(clean(boxed), False, "boxed")
    hashes = text.rfind("####")
    if hashes >= 0:
        answer = clean(text[hashes + 4:hashes + 4 + MAX_ANSWER_CHARS].lstrip("#").split("\n", 1)[0])
        if answer:
            return Extracted(answer, False, "####")
    answer = _after_answer_is(text)
    if answer:
        return Extracted(answer, False, "answer_is")
    number = last_number(text)
    return Extracted(number, False, "last_number" if number is not None else None)


def _after_answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_IS.finditer(text):
        pass
    if last is None:
        return None
    line = text[last.end():last.end() + MAX_ANSWER_CHARS].split("\n", 1)[0]
    end = _SENTENCE_END.search(line)
    return clean(line[:end.start()] if end else line)


def last_boxed(text: str) -> str | None:
    r"""The body of the \boxed{...} that opens last among those that close, braces balanced; None if there is none.

    >>> last_boxed(r"\boxed{1}, no: \boxed{\frac{2}{3}}")
    '\\frac{2}{3}'
    """
    if "box" not in text:
        return None
    stack = []  # per open brace: where a \boxed body starts, or -1 for a plain "{"
    best = None  # (start, end) of the chosen body
    for m in _BOX_TOKENS.finditer(text):
        token = m.group()
        if token == "}":
            start = stack.pop() if stack else -1
            if start >= 0 and m.start() - start <= MAX_ANSWER_CHARS and text[start:m.start()].strip():
                if best is None or start > best[0]:
                    best = (start, m.start())
        else:
            stack.append(-1 if token == "{" else m.end())
    return None if best is None else text[best[0]:best[1]].strip()


def clean(answer: str) -> str:
    r"""An answer without its wrapping: a \boxed{} inside, $...$, \(...\), \[...\], a trailing period.

    >>> clean(r" $\boxed{7}$. ")
    '7'
    """
    s = answer.strip().rstrip(".").strip()
    boxed = last_boxed(s)
    if boxed:
        s = boxed
    for left, right in _WRAPPERS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
            break
    return s.rstrip(".").strip()


def last_number(text: str) -> str | None:
    """The last number in a text, as written. last_number("5 - 3 = 2 apples") == "2" """
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    number = last.group()
    if number.startswith("-") and last.start() > 0 and text[last.start() - 1].isalnum():
        number = number[1:]  # "x-3", "5-3": a minus sign, not a negative number
    return number


def parse_number(text) -> Fraction | None:
    r"""The exact value of a text that is only a number, with $, commas, %, and a trailing period allowed.

    >>> parse_number("$1,234.50")
    Fraction(2469, 2)
    >>> parse_number("18 eggs") is None
    True
    """
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    s = text.replace("\\$", "").replace("$", "").replace(",", "").strip().rstrip(".")
    s = s.removesuffix("\\%").removesuffix("%").strip()
    return Fraction(s) if _PLAIN_NUMBER.fullmatch(s) else None


def to_number(answer) -> Fraction | None:
    """The number an answer stands for: all of it when it is a number, else its last number.

    >>> to_number("18 dollars a day")
    Fraction(18, 1)
    """
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    value = parse_number(answer)
    if value is None:
        number = last_number(answer)
        value = parse_number(number) if number is not None else None
    return value
