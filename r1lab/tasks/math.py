r"""MATH and MATH-500: competition problems with LaTeX answers (Hendrycks et al. 2021; fields `problem`, `answer`).

Rows that carry only the worked `solution` get their answer from its last \boxed{}. The model's answer is found
by tasks.extract (tags, \boxed{}, ####, "the answer is", last number) and compared with the library math-verify,
not a hand-written normaliser: both sides are parsed as \boxed{...} and checked for mathematical equality
("\frac{1}{2}" == "0.5", "x = 5" == "5", "[1,2)" == "[1, 2)").

Time bound: math-verify's own timeouts use signal.alarm, which fails off the main thread, so we call it with them
disabled and bound the whole check (parse both sides + verify) by VERIFY_TIMEOUT_S ourselves, in-process on the
main thread and in a worker process elsewhere (r1lab.tasks.verify_timeout). A timeout grades as incorrect. Cheap guards
first: answers over MAX_ANSWER_CHARS or nested deeper than MAX_NESTING never reach the parser (at 50 levels of
braces the LaTeX parser alone takes seconds).
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache

# Imported here, not lazily: the first call must not spend its time bound on importing sympy.
from math_verify import parse, verify

from r1lab.tasks.common import Score, combine, load_rows, render_messages, render_prompt
from r1lab.tasks.extract import MAX_ANSWER_CHARS, extract_answer, last_boxed, parse_number
from r1lab.tasks.verify_timeout import call_bounded

NAME = "math"
FIELDS = ("problem", "answer")
VERIFY_TIMEOUT_S = 2.0  # per check: parse the gold and the answer, then compare (typical: 0.2-20 ms)
MAX_NESTING = 20  # brackets deeper than this are not a competition answer

# We enforce the time bound, so math-verify's warning that its own timeout is off is noise.
for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(lambda record: "Timeout is disabled" not in str(record.msg))

_KEY_DROP = re.compile(r"\s+|\\[!,;: ]|\\(?:left|right)(?=[()\[\]|.]|\\[{}|])")


def gold(example) -> str | None:
    """The reference answer: `answer`, else the last \\boxed{} of `solution`; None when there is neither."""
    if not isinstance(example, dict):
        return None
    answer = example.get("answer")
    if isinstance(answer, str) and answer.strip():
        return answer.strip()
    solution = example.get("solution")
    return last_boxed(solution) if isinstance(solution, str) else None


@lru_cache(maxsize=8192)  # GRPO groups repeat answers; sympy results are immutable, so sharing them is safe
def _parse(latex: str) -> list:
    return parse("\\boxed{" + latex + "}", parsing_timeout=None, raise_on_error=False)


def _verify(truth: str, answer: str) -> bool:
    """math-verify with its own timeouts off. Runs under call_bounded, here or in a worker process."""
    return bool(verify(_parse(truth), _parse(answer), timeout_seconds=None, raise_on_error=False))


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
    if len(answer) > MAX_ANSWER_CHARS or _nesting(answer) > MAX_NESTING:
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
    r"""The extracted answer, lightly normalised for majority vote: a number in lowest terms ("0.5" -> "1/2"),
    else the LaTeX without spaces, \left/\right or \dfrac ("\dfrac{1}{2}" and "\frac {1}{2}" share a key; "0.5"
    and "\frac{1}{2}" do not: keys are strings, not math-verify classes)."""
    answer = extract_answer(completion).answer
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return None
    value = parse_number(answer)
    if value is not None:
        return str(value)
    return _KEY_DROP.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


def question(example: dict) -> str:
    return example["problem"]


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example), template)


def messages(example: dict) -> list[dict]:
    return render_messages(question(example))


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
    rows = load_rows(source, ("problem",), split, limit)
    for i, row in enumerate(rows):
        if "answer" not in row and gold(row) is not None:
            row["answer"] = gold(row)
        problem = check(row)
        if problem:
            raise ValueError(f"{source}: row {i}: {problem}")
    return rows
