"""GSM8K: grade-school word problems with a numeric answer (Cobbe et al. 2021; fields `question`, `answer`).

The dataset's `answer` is a worked solution ending in "#### N"; the ground truth is N with commas removed (a bare
number is accepted too). The model's answer is found by tasks.extract (tags, \\boxed{}, ####, "the answer is",
last number) and compared to N exactly as Fractions, so "$1,234.00", "1234" and "1234." all match 1234. The answer
must be ONE number (tasks.extract.to_number): "18 dollars" is 18, but "17 or 18", "not 18", "1,2,...,18" and
"\\write18{}" are wrong, and "−18" (U+2212) is -18. No sympy, no math-verify: pure string work bounded by
MAX_COMPLETION_CHARS, so no timeout is needed.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from r1lab.tasks.common import Score, combine, load_rows, render_messages, render_prompt
from r1lab.tasks.extract import MAX_ANSWER_CHARS, extract_answer, parse_number, to_number

NAME = "gsm8k"
FIELDS = ("question", "answer")
HF_CONFIG = "main"  # openai/gsm8k has configs "main" and "socratic"


def gold(example) -> Fraction | None:
    """The ground-truth number as a Fraction, None when the example has none.
    gold({"answer": "2 + 2 = <<2+2=4>>4\\n#### 4"}) == Fraction(4)"""
    solution = example.get("answer") if isinstance(example, dict) else None
    if not isinstance(solution, str):
        return None
    return parse_number(solution.rsplit("####", 1)[-1].strip())


def check(example) -> str | None:
    """Why an example cannot be graded (naming the field), or None when it can."""
    if not isinstance(example, dict):
        return "expected a JSON object"
    for field in FIELDS:
        if field not in example:
            return f"missing field {field!r}"
        if not isinstance(example[field], str):
            return f"field {field!r} must be a string, got {type(example[field]).__name__}"
    if gold(example) is None:
        return "field 'answer' must end in '#### N' with N a number"
    return None


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> Score:
    """Correct iff the extracted answer is the ground-truth number. Never raises; a malformed example is never
    correct."""
    answer, format_ok, _ = extract_answer(completion)
    truth = gold(example)
    correct = truth is not None and to_number(answer) == truth
    return Score(combine(correct, format_ok, accuracy_weight, format_weight), correct, format_ok,
                 None if answer is None else answer[:MAX_ANSWER_CHARS])


def answer_key(completion, example) -> str | None:
    """The extracted number in lowest terms ("18", "7/2"), so equal numbers share a key; None without one."""
    value = to_number(extract_answer(completion).answer)
    return None if value is None else str(value)


def question(example: dict) -> str:
    return example["question"]


def prompt(example: dict, template: str = "r1") -> str:
    return render_prompt(question(example), template)


def messages(example: dict, template: str = "r1") -> list[dict]:
    return render_messages(question(example), template)


def difficulty(example: dict) -> str:
    """Steps of the reference solution (its lines before "####"): "1 steps" ... "8+ steps"."""
    solution = example.get("answer") if isinstance(example, dict) else None
    if not isinstance(solution, str):
        return "unknown"
    steps = sum(1 for line in solution.split("####")[0].splitlines() if line.strip())
    return f"{steps} steps" if steps < 8 else "8+ steps"


def load(source, split: str = "test", limit: int | None = None) -> list[dict]:
    """GSM8K rows from a JSONL or Parquet file (split is then ignored), a folder of them, or a Hugging Face id
    (openai/gsm8k, config "main"; needs the `datasets` library and network access)."""
    config = HF_CONFIG if str(source).rstrip("/").endswith("gsm8k") or Path(source).is_dir() else None
    return load_rows(source, FIELDS, split, limit, hub_config=config, fix=_fix)


def _fix(row: dict) -> None:
    if problem := check(row):
        raise ValueError(problem)
