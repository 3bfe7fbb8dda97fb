"""Grading a JSONL file of existing completions with a task's own verifier (what `r1lab score` runs).

Each line holds the task's fields plus `completion` (a string). Every good line is written to the output with
`reward`, `correct` and `format_ok` added, in input order. A bad line (not UTF-8, invalid JSON, a missing or
malformed field) is reported on stderr as FILE:LINE: problem, left out of the output and counted under `errors`; the
other lines are still scored. The output is written to a temporary sibling and renamed, so a failure leaves no
partial output and no temporary file.

A field is malformed when the task's check(example) says so; a task without check() gets its fields compared
with one instance from its own generate() (so a countdown `nums` must be a list of int, like generated ones).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from r1lab.jsonl import dumps_line, parse_line


def default_output(path: str | Path) -> Path:
    """default_output("runs/a.jsonl") == Path("runs/a.scored.jsonl")"""
    path = Path(path)
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + ".scored.jsonl")


def score_file(task, source: Path, output: Path, accuracy_weight: float, format_weight: float) -> dict:
    """Score every line of `source` into `output` (written whole, then moved into place); bad lines go to stderr."""
    checker = _checker(task)
    totals = {"count": 0, "correct": 0, "format_ok": 0, "reward": 0.0, "errors": 0}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")  # so --out may be the input file itself
    try:
        _score_lines(task, source, tmp, checker, accuracy_weight, format_weight, totals)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    n = totals["count"]
    mean = (lambda total: round(total / n, 4) if n else None)
    return {"task": task.NAME, "file": str(source), "output": str(output), "count": n,
            "accuracy": mean(totals["correct"]), "format_rate": mean(totals["format_ok"]),
            "mean_reward": mean(totals["reward"]), "errors": totals["errors"]}


def _score_lines(task, source: Path, tmp: Path, checker, accuracy_weight, format_weight, totals: dict) -> None:
    with open(source, "rb") as lines, open(tmp, "w", encoding="utf-8") as out:
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            example, problem = _read_line(raw, checker)
            if problem:
                print(f"{source}:{lineno}: {problem}", file=sys.stderr)
                totals["errors"] += 1
                continue
            s = task.score(example["completion"], example, accuracy_weight=accuracy_weight,
                           format_weight=format_weight)
            out.write(dumps_line({**example, "reward": s.reward, "correct": s.correct, "format_ok": s.format_ok}))
            for key, value in (("count", 1), ("correct", s.correct), ("format_ok", s.format_ok), ("reward", s.reward)):
                totals[key] += value


def _read_line(raw: bytes, checker) -> tuple[dict | None, str | None]:
    """(example, None) for a gradable line, else (None, what is wrong with it)."""
    example, problem = parse_line(raw)
    if problem:
        return None, problem
    if "completion" not in example:
        return None, "missing field 'completion'"
    if not isinstance(example["completion"], str):
        return None, f"field 'completion' must be a string, got {type(example['completion']).__name__}"
    return (None, problem) if (problem := checker(example)) else (example, None)


def _checker(task):
    """example -> problem or None: the task's own check(), else its FIELDS typed like one generated instance."""
    if hasattr(task, "check"):
        return task.check
    prototype = task.generate(1, seed=0)[0] if hasattr(task, "generate") else {}

    def check(example: dict) -> str | None:
        for field in task.FIELDS:
            if field not in example:
                return f"missing field {field!r}"
            if field in prototype and not _same_shape(example[field], prototype[field]):
                got = json.dumps(example[field], ensure_ascii=False)
                got = got if len(got) <= 60 else got[:57] + "..."
                return f"field {field!r} must be {_describe(prototype[field])}, got {got}"
        return None

    return check


def _same_shape(value, like) -> bool:
    """Whether a JSON value has the type of `like`: bool is not int, int passes for float, lists element-wise."""
    if isinstance(like, list):
        return isinstance(value, list) and (not like or all(_same_shape(v, like[0]) for v in value))
    if isinstance(like, bool) or not isinstance(like, (int, float)):
        return isinstance(value, type(like))
    if isinstance(like, int):
        return type(value) is int
    return type(value) in (int, float)


def _describe(like) -> str:
    """_describe([3, 4]) == "a list of int" """
    if isinstance(like, list):
        return "a list of " + (_describe(like[0]).split(" ", 1)[1] if like else "values")
    return {bool: "a bool", int: "an int", float: "a number", str: "a string", dict: "an object"}.get(
        type(like), f"a {type(like).__name__}")
