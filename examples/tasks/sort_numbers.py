"""Sort a list of numbers: a complete r1lab task of your own, in one file.

    r1lab data --task examples/tasks/sort_numbers.py --n 5 --out sort.jsonl --task-arg max_count=4
    r1lab eval --model runs/rl --task examples/tasks/sort_numbers.py --n 50
    r1lab rl --recipe countdown_rl --set task=examples/tasks/sort_numbers.py --set task_args=max_count=4

A task names its problems' fields, states the question, and grades a completion. r1lab fills in the rest when it
is absent: the R1 / short prompt templates around question(), a majority-vote key (the graded answer, blanks
collapsed) and one difficulty bucket. This file adds a generator (synthetic problems with a train/test split that
never overlaps), a vote key that reads "1, 3" and "1,3" as one answer, and a difficulty by list length. A dataset
task defines load(source, split, limit) instead, e.g. `return load_rows(source, FIELDS, split, limit)` (from
r1lab.tasks.common) for a JSONL / Parquet file, a folder of them or a Hugging Face id.

What defines a problem (its identity, for the split) is what fixes its answer: here the numbers in sorted order.

The rules of a verifier (r1lab's own tasks keep them): model output is hostile input, so read it with
parse_completion, never evaluate it, bound the work by the input's length, and grade anything malformed as wrong
rather than raising.
"""
from __future__ import annotations

import random
import re

from r1lab.tasks.common import Score, combine, generate_distinct
from r1lab.tasks.format import parse_completion

NAME = "sort_numbers"
FIELDS = ("numbers",)
# at most 50 numbers of 6 digits, apart by commas or blanks, perhaps in one pair of brackets
_LIST = re.compile(r"\s*\[?\s*(-?\d{1,6}(?:(?:\s*,\s*|\s+)-?\d{1,6}){0,49})\s*\]?\s*", re.ASCII)
_APART = re.compile(r"\s*,\s*|\s+")


def question(example: dict) -> str:
    return (f"Sort {', '.join(map(str, example['numbers']))} from smallest to largest. Answer with the sorted "
            "numbers, separated by commas.")


def parse_list(answer) -> list[int] | None:
    """The integers an answer lists, or None. parse_list(" 1, 3,7 ") == parse_list("[1 3 7]") == [1, 3, 7];
    parse_list("1 and 3") is None"""
    m = _LIST.fullmatch(answer) if isinstance(answer, str) and len(answer) <= 400 else None
    return None if m is None else [int(x) for x in _APART.split(m.group(1))]


def score(completion, example, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> Score:
    """Correct iff the <answer> block lists the numbers in ascending order. Never raises."""
    parsed = parse_completion(completion)
    numbers = example.get("numbers") if isinstance(example, dict) else None
    correct = isinstance(numbers, list) and parse_list(parsed.answer) == sorted(numbers)
    return Score(combine(correct, parsed.format_ok, accuracy_weight, format_weight), correct, parsed.format_ok,
                 parsed.answer)


def answer_key(completion, example) -> str | None:
    """The listed numbers as "1,3,7" (majority vote counts "1, 3, 7" and "1,3,7" as one answer); None without."""
    numbers = parse_list(parse_completion(completion).answer)
    return None if numbers is None else ",".join(map(str, numbers))


def difficulty(example: dict) -> str:
    return f"{len(example['numbers'])} numbers"


def generate(n: int, seed: int = 0, split: str = "train", min_count: int = 3, max_count: int = 6,
             max_value: int = 99) -> list[dict]:
    """n lists of min_count..max_count numbers in 0..max_value, no two with the same numbers; the split is decided
    by the numbers in sorted order (r1lab.tasks.common.generate_distinct), so train and test never share a problem
    whatever the seed, nor one list and its reordering (the same answer)."""
    if not 1 <= min_count <= max_count <= 50 or not 0 < max_value < 10**6:
        raise ValueError("need 1 <= min_count <= max_count <= 50 and 0 < max_value < 10**6")
    rng = random.Random(seed)

    def draw():
        numbers = [rng.randint(0, max_value) for _ in range(rng.randint(min_count, max_count))]
        return {"numbers": sorted(numbers)}, numbers

    return generate_distinct(n, split, FIELDS, draw, lambda numbers: {"numbers": numbers}, "lists")
