r"""MATH and MATH-500: competition problems with LaTeX answers (Hendrycks et al. 2021; fields `problem`, `answer`).

Rows that carry only the worked `solution` get their answer from its last \boxed{}. The model's answer is found
by tasks.extract (tags, \boxed{}, ####, "the answer is", last number) and compared with the library math-verify,
not a hand-written normaliser: both sides are parsed as \boxed{...} and checked for mathematical equality
("\frac{1}{2}" == "0.5", "x = 5" == "5", "[1,2)" == "[1, 2)").

Time and memory bound: the whole check (parse both sides + verify) runs in a worker process under a hard bound
(r1lab.tasks.verify_timeout: killed after VERIFY_TIMEOUT_S, RLIMIT_AS of WORKER_MEMORY_BYTES), with math-verify's
own signal-based timeouts off; a timeout grades as incorrect. An in-process alarm is no bound here: a single huge
integer power is one C call, and `(10^{10^{10}})!` ran 20 s and took 8.7 GB under a 2 s alarm. Cheap guards
first, so that hostile answers rarely cost the full bound:
- before parsing: answers over MAX_ANSWER_CHARS, nested deeper than MAX_NESTING (the LaTeX parser's time doubles
  with every two levels of braces) or listing more than MAX_ITEMS items are wrong, and so are those from which
  the parser itself would build a huge number (it computes binomials, root indices and e^x, and compares the ends
  of intervals: `_big_before_parse`);
- after parsing, before anything is evaluated: a side whose numbers could grow past MAX_BITS bits (towers, huge
  powers and factorials: `_bits`) or that holds an unevaluated sum, product, integral or limit is never compared.

Hedged answers: math-verify reads only a part of some answers ("17 \lor 18", "17 \to 18", "17 = 18" and
"18 \text{ or more}" as 18, "\neq 18" as 18, "17 \quad 18" as 35), and by default falls back to any part of an
answer it cannot parse whole ("1,2,3,...,\frac{1}{2}" as 1/2): we parse with extraction_mode="first_match", so an
answer is read whole or not at all. An answer is also wrong when it uses a LaTeX command outside SAFE_COMMANDS, a
non-ASCII character outside SAFE_UNICODE, "|", "&", "\\", a subscript after a number or a group, an unbalanced
brace, two numbers side by side, a hedge word (extract.NOT_UNITS: "or", "not", "approx"...; "or" and "and" are
fine when the reference is a list such as "1, 2"), or a second "=" in an item (or an "=" after a number), unless
the reference does the same (`_hedged`). Minus signs are made ASCII first (common.MINUS_SIGNS).
"""
from __future__ import annotations

import logging
import re
from fractions import Fraction
from functools import lru_cache
from math import ceil, comb, inf, log2

# Imported here, not lazily: a worker forked from the template must not spend its time bound on importing sympy.
import sympy
from math_verify import parse, verify
from sympy.core.function import UndefinedFunction
from sympy.matrices import MatrixBase

from r1lab.tasks.common import Score, SkipRow, ascii_minus, combine, load_rows, render_messages, render_prompt
from r1lab.tasks.extract import MAX_ANSWER_CHARS, NOT_UNITS, extract_answer, last_boxed, parse_number
from r1lab.tasks.verify_timeout import call_bounded

NAME = "math"
FIELDS = ("problem", "answer")
VERIFY_TIMEOUT_S = 2.0  # per check: parse the gold and the answer, then compare (typical: 1-100 ms)
MAX_NESTING = 6  # brackets deeper than this are not a competition answer (6 levels of braces parse in ~0.2 s)
MAX_BITS = 10_000  # the largest number a side may build: 2^{2024} or 1000! are fine, 2^{10^{4}} or 10^{4}! not
MAX_ITEMS = 50  # commas and semicolons: a list of 200 numbers takes the parser ~0.8 s
MAX_TERMS = 300  # terms of an expanded power of a sum: (x+1)^{200} is fine, (x+y+z)^{99} (5,050) takes seconds

# LaTeX commands that keep every part of an answer in what math-verify compares. Any other command in an answer
# (\lor, \neq, \neg, \to, \cup, \approx, \quad, \phantom, \write...) is allowed only where the reference uses it.
SAFE_COMMANDS = frozenset("""
    frac dfrac tfrac cfrac sqrt binom dbinom tbinom pi infty cdot times div pm mp le leq ge geq lt gt leqslant
    geqslant left right big Big bigl bigr Bigl Bigr text textbf textit textrm textnormal mbox mathrm mathbf mathit
    mathbb mathcal operatorname displaystyle textstyle rm bf overline degree prime in
    emptyset varnothing lfloor rfloor lceil rceil langle rangle begin end sin cos tan cot sec csc arcsin arccos
    arctan sinh cosh tanh log ln lg exp alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota
    kappa lambda mu nu xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi Sigma
    Upsilon Phi Psi Omega""".split()) | set("{}$%,;:! ")
SAFE_UNICODE = frozenset("π√∞−×·÷°≤≥±")

# We enforce the time bound, so math-verify's warning that its own timeout is off is noise.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda record: "Timeout is disabled" not in str(record.msg))

_KEY_DROP = re.compile(r"\s+|\\[!,;: ]|\\(?:left|right)(?=[()\[\]|.]|\\[{}|])")
_COMMAND = re.compile(r"\\([A-Za-z]+|.)", re.S)
_DEGREES = re.compile(r"\^\s*(?:\\circ|\{\s*\\circ\s*\})")
_SUBSCRIPT = re.compile(r"_(?:\{[^{}]*\}|\\?\w)")
# Two numbers side by side, which math-verify adds up ("17 18", "17\quad 18", "17{18}", "{17}{18}" are 35).
_SIDE_BY_SIDE = re.compile(r"\d(?:\s|~|\\[,;:! ]|\\q?quad(?![A-Za-z])|\\hspace\{[^{}]*\})+\d|\d\{(?!,\})\s*\d"
                           r"|(?:^|[^\w}\]^_])\{[^{}]*\}\s*\{")
_PARSE_TIME = re.compile(r"\\(?:sqrt\s*\[|[dt]?binom\s*\{|(?:gcd|lcm|operatorname\s*\{\s*(?:gcd|lcm)\s*\})\s*[({])")
_BIG_ARGUMENT = re.compile(r"[\^!]|\d{5}|\\")  # a power, a factorial, a command, 10,000 or more
_CARET = re.compile(r"\^\s*")
# A number written as a fraction, for the vote key: \frac{1}{2}, \dfrac12, -\tfrac{3}{4}, \frac{-1}{2}.
_FRACTION = re.compile(r"\s*(?P<sign>-)?\s*\\[dt]?frac\s*(?:\{\s*(?P<num>-?\d{1,50})\s*\}|(?P<num1>\d))"
                       r"\s*(?:\{\s*(?P<den>\d{1,50})\s*\}|(?P<den1>\d))\s*", re.ASCII)
_BIG_EXPONENT = re.compile(r"!|\d{6}")  # a factorial, 100,000 or more
_DIGIT_SUBSCRIPT = re.compile(r"[\d})\]]\s*_")  # "17_18" reads as 18; "1011_2" (a base) only as in the reference
_LIST_SEPARATOR = re.compile(r"[,;]|\\text\s*\{\s*(?:or|and)\s*\}|\b(?:or|and)\b")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]+")  # words, not command names
_PLAIN_FUNCTIONS = (sympy.sin, sympy.cos, sympy.tan, sympy.cot, sympy.sec, sympy.csc, sympy.asin, sympy.acos,
                    sympy.atan, sympy.acot, sympy.log, sympy.Abs, sympy.sign, sympy.floor, sympy.ceiling, sympy.re,
                    sympy.im, sympy.arg, sympy.conjugate, sympy.Min, sympy.Max)
_FACTORIAL_LIKE = (sympy.factorial, sympy.factorial2, sympy.subfactorial, sympy.gamma, sympy.RisingFactorial,
                   sympy.FallingFactorial)
_UNEVALUATED = (sympy.Sum, sympy.Product, sympy.Integral, sympy.Limit, sympy.Derivative)
# A box without braces, as a few MATH solutions end ("$\boxed 2$", train/algebra/24014): the token after it
_BARE_BOX = re.compile(r"\\(?:boxed|fbox)\s+([^\s${}\\]+)")
_BRACED_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def gold(example) -> str | None:
    """The reference answer: `answer`, else the last \\boxed{} of `solution` (or a last bare "\\boxed 2"); None when
    there is neither."""
    if not isinstance(example, dict):
        return None
    answer = example.get("answer")
    if isinstance(answer, str) and answer.strip():
        return answer.strip()
    solution = example.get("solution")
    if not isinstance(solution, str):
        return None
    bare = None
    for bare in _BARE_BOX.finditer(solution):
        pass
    braced = None
    for braced in _BRACED_BOX.finditer(solution):
        pass
    if bare is not None and (braced is None or bare.start() > braced.start()):
        return bare.group(1).removesuffix(".") or None  # "the answer is $\boxed 9$" after an earlier \boxed{4}
    return last_boxed(solution)


@lru_cache(maxsize=8192)  # GRPO groups repeat answers; sympy results are immutable, so sharing them is safe
def _parse(latex: str) -> list:
    return parse("\\boxed{" + latex + "}", parsing_timeout=None, raise_on_error=False, extraction_mode="first_match")


def _verify(truth: str, answer: str) -> bool:
    """math-verify with its own timeouts off, unless a side could build a number past MAX_BITS. Runs under
    call_bounded, in a worker process."""
    sides = _parse(truth), _parse(answer)
    if any(_bits(x) > MAX_BITS for side in sides for x in side if not isinstance(x, str)):
        return False
    return bool(verify(*sides, timeout_seconds=None, raise_on_error=False))


# Run once in the verifier template (r1lab.tasks.verify_timeout): the workers forked from it start with the LaTeX
# parser's and sympy's caches warm. One of each kind of answer: numbers, fractions, radicals, tuples, intervals,
# polynomials, matrices, sets, text, equations.
_verify.warm_calls = (
    ("\\frac{1}{2}", "0.5"), ("2\\sqrt{3}", "\\sqrt{12}"), ("(3, -1)", "\\left(3,-1\\right)"), ("[1,2)", "[1, 2)"),
    ("x^2+2x+1", "(x+1)^2"), ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("1, 2", "\\{1, 2\\}"), ("\\text{(C)}", "C"), ("5", "x = 5"), ("\\pi/2", "\\frac{\\pi}{2}"), ("10\\%", "10"),
    ("(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty,1)\\cup(2,\\infty)"), ("-18", "-18.0"), ("3^{10}", "59049"),
)


def _bits(expr, depth: int = 0) -> float:
    r"""An upper bound on the bits of the largest number that evaluating `expr` could build (inf: no bound),
    read from the unevaluated tree, never computed. _bits(10**(10**10)) is 4 * 2**40: 10^{10^{10}} is too big."""
    if isinstance(expr, MatrixBase):
        return max((_bits(x, depth + 1) for x in expr), default=1.0)
    if not isinstance(expr, sympy.Basic) or depth > 100:
        return 1.0 if not isinstance(expr, sympy.Basic) else inf
    if expr.is_Integer or expr.is_Rational:
        return float(max(1, abs(expr.p).bit_length(), expr.q.bit_length()))
    if expr.is_Float:
        _, mantissa, exponent, _ = expr._mpf_
        return float(max(1, int(mantissa).bit_length()) + abs(exponent))
    if not expr.args:
        return 2.0  # a symbol, pi, E, I, oo
    if isinstance(expr, _UNEVALUATED):
        return inf
    if expr.is_Pow or isinstance(expr, sympy.exp):
        base, power = (expr.base, expr.exp) if expr.is_Pow else (sympy.E, expr.args[0])
        if power.free_symbols or base in (0, 1, -1, sympy.I):  # nothing is raised to a number it could compute
            return max(_bits(base, depth + 1), _bits(power, depth + 1))
        n = _magnitude(power, depth)
        if base.is_Add and base.free_symbols and n > 1 and comb(int(min(n, MAX_TERMS)) + len(base.args) - 1,
                                                                len(base.args) - 1) > MAX_TERMS:
            return inf  # expanding it would write out too many terms
        return _bits(base, depth + 1) * max(n, 1.0)
    if isinstance(expr, sympy.binomial):
        return max(_magnitude(expr.args[0], depth), _bits(expr.args[1], depth + 1))
    inner = [_bits(arg, depth + 1) for arg in expr.args]
    if expr.is_Mul:
        return sum(inner)
    if expr.is_Add:
        return max(inner) + log2(len(inner))
    if isinstance(expr, sympy.Function) and not isinstance(expr, _PLAIN_FUNCTIONS) \
            and not isinstance(expr.func, UndefinedFunction):  # factorial, gamma, fibonacci...: n log n bits
        n = max(_magnitude(arg, depth) for arg in expr.args)
        return n * log2(max(n, 2.0))
    return max(inner)  # sets, tuples, relations, elementary functions of their arguments


def _magnitude(expr, depth: int) -> float:
    """An upper bound on |expr|, for a number that is an exponent or an argument."""
    if expr.is_Integer or expr.is_Rational:
        return float(ceil(abs(expr.p) / expr.q)) if abs(expr.p).bit_length() < 1000 else inf
    bits = _bits(expr, depth + 1)
    return 2.0 ** bits if bits < 1000 else inf


def _big_before_parse(answer: str, truth: str) -> bool:
    r"""Whether the LaTeX parser itself could build a huge number from `answer`, before _bits can look at the tree:
    it computes binomials, root indices, gcd and lcm, e^x, and compares the ends of intervals and tuples. So an
    argument of those must be small, powers may not stack higher than in the reference (10^{10^{10}} is two high:
    wrong unless the reference stacks two), and an exponent may not hold a factorial or a number of 100,000 or
    more, nor may an integer base and exponent reach MAX_BITS.
    _big_before_parse(r"(10^{10^{10}}, 1)", "1") is True"""
    for m in _PARSE_TIME.finditer(answer):
        end = m.end() - 1  # at the argument's opening bracket
        # a binomial's two arguments, a root's index alone (its radicand is a plain expression, _bits-checked
        # after the parse: \sqrt[3]{x^2} is fine)
        for _ in range(1 if m.group().startswith("\\sqrt") else 2):
            close = _closing(answer, end)
            if close < 0 or _BIG_ARGUMENT.search(answer, end, close):
                return True
            end = close + 1
            while end < len(answer) and answer[end].isspace():
                end += 1
            if end >= len(answer) or answer[end] not in "{[(":
                break
    if _tower_height(answer) > max(1, _tower_height(truth)):
        return True
    for m in _CARET.finditer(answer):
        i = m.end()
        if i < len(answer) and answer[i] == "{":
            close = _closing(answer, i)
            if close < 0:
                return True
            exponent = answer[i + 1:close]
        else:
            exponent = answer[i:i + 1]
        if _BIG_EXPONENT.search(exponent):
            return True
        base = m.start()
        while base > 0 and answer[base - 1].isdigit():
            base -= 1
        digits = answer[base:m.start()]
        if digits and exponent.isdigit() and len(exponent) < 7 and log2(max(int(digits), 1)) * int(exponent) > MAX_BITS:
            return True  # 10^{2024} has 6,724 bits: fine; 10^{4000} is not
    return False


def _tower_height(text: str) -> int:
    """How many powers are stacked in `text`: 1 for x^2 or 10^{100}, 2 for e^{-x^2} or 10^{10^{10}}."""
    stack, exponents, height, caret = [], 0, 0, False  # stack: per open brace, whether it opens an exponent
    for ch in text:
        if ch == "^":
            height, caret = max(height, exponents + 1), True
        elif ch == "{":
            stack.append(caret)
            exponents += caret
            caret = False
        elif ch == "}":
            exponents -= stack.pop() if stack else 0
        elif not ch.isspace():
            caret = False
    return height


def _closing(text: str, start: int) -> int:
    """The index of the bracket closing the one at `start`, -1 when it does not close within MAX_ANSWER_CHARS."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    opener, depth = text[start], 0
    for i in range(start, min(len(text), start + MAX_ANSWER_CHARS)):
        if text[i] == opener:
            depth += 1
        elif text[i] == pairs[opener]:
            depth -= 1
            if depth == 0:
                return i
    return -1


def _hedged(answer: str, truth: str) -> bool:
    r"""Whether `answer` uses a construct that math-verify reads only in part while `truth` does not (see the module
    docstring). _hedged("17 \lor 18", "18") is True"""
    answer = _DEGREES.sub("", answer)  # 30^\circ: a unit, not an operator
    commands = set(_COMMAND.findall(truth))
    if any(name not in SAFE_COMMANDS and name not in commands for name in _COMMAND.findall(answer)):
        return True
    if any(ord(ch) > 127 and ch not in SAFE_UNICODE and ch not in truth for ch in set(answer)):
        return True
    if any(ch in answer and ch not in truth for ch in "|&") or answer.count("{") != answer.count("}"):
        return True
    if any(p.search(answer) and not p.search(truth) for p in (_SIDE_BY_SIDE, _DIGIT_SUBSCRIPT)):
        return True
    words = {w.lower() for w in _WORD.findall(truth)}
    for word in _WORD.findall(answer):  # "18 \text{ or more}", "\text{not } 18": read as 18 (math-verify drops text)
        word = word.lower()
        if word in NOT_UNITS and word not in words and not (word in ("or", "and") and _is_list(truth)):
            return True
    if "=" in truth:
        return False
    for part in _LIST_SEPARATOR.split(answer):  # "x = -2 \text{ or } x = 1" names two values, one "=" each
        sides = part.split("=")
        if len(sides) > 2 or len(sides) == 2 and any(ch.isdigit() for ch in _SUBSCRIPT.sub("", sides[0])):
            return True
    return False


def _is_list(truth: str) -> bool:
    """Whether the reference lists several answers ("1, 2"; not a tuple or an interval), which "1 or 2" may name."""
    return "," in truth and truth.lstrip()[:1] not in ("(", "[", "\\")


def _nesting(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]":
            depth = max(0, depth - 1)
    return deepest


def is_equivalent(truth: str, answer) -> bool:
    r"""Whether `answer` equals `truth` mathematically, by math-verify within VERIFY_TIMEOUT_S; never raises.
    is_equivalent(r"\frac{1}{2}", "0.5") is True"""
    if not isinstance(truth, str) or not isinstance(answer, str) or not answer.strip():
        return False
    truth, answer = truth.strip(), ascii_minus(answer).strip()
    if answer == truth:  # math-verify compares the strings first as well; before the guards, which may refuse it
        return True
    if len(answer) > MAX_ANSWER_CHARS or _nesting(answer) > MAX_NESTING or _hedged(answer, truth) \
            or answer.count(",") + answer.count(";") > MAX_ITEMS \
            or _big_before_parse(answer, truth):
        return False
    return call_bounded(_verify, (truth, answer), VERIFY_TIMEOUT_S, default=False)


def check(example) -> str | None:
    """Why an example cannot be graded (naming the field), or None when it can."""
    if not isinstance(example, dict):
        return "expected a JSON object"
    if not isinstance(example.get("problem"), str):
        return "missing field 'problem'" if "problem" not in example else "field 'problem' must be a string"
    if "answer" in example and not isinstance(example["answer"], str):
        return f"field 'answer' must be a string, got {type(example['answer']).__name__}"
    if gold(example) is None:
        return "missing field 'answer' (or a 'solution' with a \\boxed{} answer)"
    return None


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> Score:
    """Correct iff math-verify finds the extracted answer equal to the reference in time. Never raises."""
    answer, format_ok, _ = extract_answer(completion)
    truth = gold(example)
    correct = truth is not None and is_equivalent(truth, answer)
    return Score(combine(correct, format_ok, accuracy_weight, format_weight), correct, format_ok,
                 None if answer is None else answer[:MAX_ANSWER_CHARS])


def answer_key(completion, example) -> str | None:
    r"""The extracted answer, lightly normalised for majority vote: a number in lowest terms, a fraction of two
    integers included ("0.5", "\frac12" and "\dfrac{1}{2}" -> "1/2"), else the LaTeX without spaces, \left/\right
    or \dfrac ("\frac{x}{2}" and "\frac {x}{2}" share a key; "\frac{x}{2}" and "0.5x" do not: keys are strings,
    not math-verify classes)."""
    answer = extract_answer(completion).answer
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    value = parse_number(answer)
    if value is None and (m := _FRACTION.fullmatch(answer)) and int(m["den"] or m["den1"]):
        value = Fraction(int(m["num"] or m["num1"]), int(m["den"] or m["den1"])) * (-1 if m["sign"] else 1)
    if value is not None:
        return str(value)
    return _KEY_DROP.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def question(example: dict) -> str:
    return example["problem"]


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example), template)


def messages(example: dict, template: str = "r1") -> list[dict]:
    return render_messages(question(example), template)


def difficulty(example: dict) -> str:
    """"Level 5 / Algebra" from `level` and `subject` (MATH-500) or `type` (MATH), what of them is present."""
    if not isinstance(example, dict):
        return "unknown"
    parts = []
    level = example.get("level")
    if isinstance(level, (int, str)) and str(level).strip():
        level = str(level).strip()
        parts.append(level if level.lower().startswith("level") else f"Level {level}")
    subject = example.get("subject") or example.get("type")
    if isinstance(subject, str) and subject.strip():
        parts.append(subject.strip())
    return " / ".join(parts) or "unknown"


def load(source, split: str = "test", limit: int | None = None) -> list[dict]:
    """MATH rows from a JSONL or Parquet file, a folder of them, or a Hugging Face id such as
    HuggingFaceH4/MATH-500 (needs `datasets` and network access). Rows without `answer` get it from `solution`."""
    return load_rows(source, ("problem",), split, limit, fix=_fix)


def _fix(row: dict) -> None:
    if "answer" not in row and gold(row) is not None:
        row["answer"] = gold(row)
    if "answer" not in row and isinstance(row.get("solution"), str):
        raise SkipRow("its solution has no \\boxed{} answer")  # MATH train has a few with an empty \boxed{}
    if problem := check(row):
        raise ValueError(problem)
