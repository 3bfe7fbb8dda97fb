r"""Final answers out of free-form math completions (gsm8k, math): pure, linear-time, nothing is ever evaluated.

The completion is read by r1lab.tasks.format.parse_completion, the rule every verifier and the server share. Its
answer is the first of these that is present:

    1. <answer>X</answer>      the parser's answer: the last block after the first </think> (the body of
                               its \boxed{} when it holds exactly one: "The answer is \boxed{5}" is 5)
    2. the last \boxed{X}      balanced braces, at most MAX_ANSWER_CHARS inside (\fbox{} too)
    3. #### X                  the last one: GSM8K's own solutions end this way
    4. "the answer is X"       the last one, X up to the end of its sentence or line
    5. the last number

Rules 2-5 read the reply, the text after the first </think> (answer tags removed), so a number or box inside the
reasoning is never the answer of a completion that ended its thinking; a completion without </think> (an
instruct model that does not use the tags, or one cut off) is read whole. format_ok is the parser's verdict
alone, so an answer found by 2-5 never earns the format reward. A tag, box or marker with nothing usable after
it falls through to the next rule, except <answer></answer>: an empty answer is still the model's answer.
Numbers are ASCII only: '١٨' or '１８' is not 18. A minus sign may be any of common.MINUS_SIGNS ('−18' is -18).

A numeric answer (to_number, for gsm8k) is ONE number: "18", "-18", "$1,234.00", "1234.", "3.5", "7/2", "18%", after
an optional label ("x = 18", "Answer: 18", "The total is 18") and before optional unit words ("18 dollars", "$18
per day", "18 \\text{ eggs}"): a number with a unit is one answer. Anything else is no number, so graded wrong:
several numbers ("17 or 18", "1,2,3,...,18", "2 * 9 = 18"), a word before the number ("not 18", "about 18"), a
hedge among the words ("18 or more", "18 and 17"), commands ("\\write18{}"), unicode digits. Rule 5 is the one
exception: it reads text that has no answer, and takes its last number standing alone (not "\\write18", "x18").
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

from r1lab.tasks.common import ascii_minus
from r1lab.tasks.format import parse_completion

MAX_ANSWER_CHARS = 1000  # a \boxed{} body or answer longer than this is no answer (real MATH answers are < 200)
MAX_NUMBER_CHARS = 50  # longer digit strings are not numbers (and int() refuses > 4300 digits anyway)

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_TOKENS = re.compile(_BOX_START.pattern + r"|[{}]")
_ANSWER_IS = re.compile(r"\banswer is\b\s*:?", re.I)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")  # subtle: not at a comma: "the answer is 18, 17" is two answers
# 1,234 only with groups of three, so "1,2345" is two numbers and "1,8" is no number; no exponents, no unicode
# digits. In rule 5 a number glued to a letter or a backslash ("\write18", "x18") does not stand alone.
_NUMBER = re.compile(r"(?<![A-Za-z_\\])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?", re.ASCII)
_DIGITS = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+(?![\d,]))"
_VALUE = rf"(?:{_DIGITS}/0*[1-9]\d*|{_DIGITS}(?:\.\d+)?|\.\d+)"  # 18, 1,234.50, .5, 7/2 ("1234." by its period)
# A signed value with its currency and percent signs: -18, $-18, -$18, \$18, 18%, 18\%.
_AMOUNT = rf"(?P<sign>[-+]?)\s*(?:\\?\$\s*(?P<sign2>[-+]?)\s*)?(?P<value>{_VALUE})(?:\s*\\?%)?"
_PLAIN_NUMBER = re.compile(rf"\s*{_AMOUNT}\s*\.?\s*", re.ASCII)
_ONE_NUMBER = re.compile(rf"\s*(?:(?P<label>[A-Za-z][A-Za-z ]*?)\s*(?:=|:|\bis\b|\bequals\b)\s*)?{_AMOUNT}"
                         rf"(?P<unit>(?:\s+[A-Za-z]+(?:[-/'][A-Za-z]+)*){{0,4}})\s*\.?\s*", re.ASCII)
_TEXT = re.compile(r"\\(?:text|textrm|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
# Words that make "a number and some words" more than one answer, or none: "18 or more", "not: 18", "18 and 17",
# "about 18"; after the number, words that are no unit either: "18 is wrong".
HEDGES = frozenset("""or and nor not no none never but plus minus except than either neither versus vs maybe
    perhaps possibly probably approximately approx about around roughly nearly almost least most""".split())
NOT_UNITS = HEDGES | frozenset("""is are was were be isnt isn't arent aren't wasnt wasn't wrong incorrect false true
    right correct answer""".split())
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))  # and markdown bold
_BOX_OPEN = re.compile(r"[\s$]*(?:\\[(\[])?[\s$]*\\(?:boxed|fbox)\s*\{\s*")  # what may stand before a whole box
_BOX_CLOSE = re.compile(r"\s*\}[\s$.]*(?:\\[)\]])?[\s$.]*")


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
        answer = clean(parsed.answer)
        if len(_BOX_START.findall(answer)) == 1 and (boxed := last_boxed(answer)):
            answer = clean(boxed)  # "<answer>The answer is $\boxed{5}$</answer>" states 5, as the box would alone
        return Extracted(answer, parsed.format_ok, "answer_tag")
    text = ascii_minus(parsed.content if parsed.closed else parsed.reasoning)
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
    r"""The body of the \boxed{...} that closes last, braces balanced; None if there is none. A box around boxes is
    read whole: "\boxed{\boxed{17} \boxed{18}}" is two answers, not 18.

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
                best = (start, m.start())  # closes after every earlier one: it encloses any box inside it
        else:
            stack.append(-1 if token == "{" else m.end())
    return None if best is None else text[best[0]:best[1]].strip()


def clean(answer: str) -> str:
    r"""An answer without its wrapping: $...$, \(...\), \[...\], **...**, a \boxed{} that is all of it, a trailing
    period; minus signs made ASCII.

    >>> clean(r" $\boxed{7}$. ")
    '7'
    >>> clean(r"\boxed{17} or \boxed{18}")  # two boxes: two answers, kept as they are
    '\\boxed{17} or \\boxed{18}'
    """
    outer = ascii_minus(answer).strip().removesuffix(".").strip()  # one period: "18..." is not "18"
    s = _unwrap(outer)
    for _ in range(3):  # \boxed{\boxed{7}} is 7; a few levels only, so that this stays linear
        boxed = last_boxed(s)
        start = s.rfind(boxed) if boxed else -1
        if start < 0 or not (_BOX_OPEN.fullmatch(s, 0, start) and _BOX_CLOSE.fullmatch(s, start + len(boxed))):
            break  # no box, or something besides the box
        s = _unwrap(boxed)
    return s if s == outer else s.removesuffix(".").strip()  # and one inside a wrapper: "$18.$"


def _unwrap(s: str) -> str:
    for left, right in _WRAPPERS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):len(s) - len(right)].strip()
    return s


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
    r"""The exact value of a text that is only a number, with $, commas in groups of three, %, and a trailing period
    allowed.

    >>> parse_number("$1,234.50")
    Fraction(2469, 2)
    >>> parse_number("18 eggs") is None, parse_number("1,8") is None
    (True, True)
    """
    if not isinstance(text, str) or len(text) > MAX_NUMBER_CHARS:
        return None
    m = _PLAIN_NUMBER.fullmatch(ascii_minus(text))
    return _value(m) if m else None


def _value(m: re.Match) -> Fraction | None:
    if m.group("sign") and m.group("sign2") or len(m.group("value")) > MAX_NUMBER_CHARS:
        return None  # "-$-18"
    value = Fraction(m.group("value").replace(",", ""))
    return -value if "-" in (m.group("sign"), m.group("sign2")) else value


def to_number(answer) -> Fraction | None:
    r"""The number an answer states when it states one number, by the rule in the module docstring; else None.

    >>> to_number("18 dollars a day"), to_number(r"x = \$1,234")
    (Fraction(18, 1), Fraction(1234, 1))
    >>> to_number("17 or 18"), to_number("not 18"), to_number("18 or more")
    (None, None, None)
    """
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    m = _ONE_NUMBER.fullmatch(_TEXT.sub(r" \1 ", ascii_minus(answer)))
    if m is None or any(w in HEDGES for w in (m.group("label") or "").lower().split()) \
            or any(w in NOT_UNITS for w in m.group("unit").lower().split()):
        return None
    return _value(m)
