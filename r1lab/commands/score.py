"""`r1lab score`: grade a JSONL file of existing completions with a task's own verifier.

    r1lab score --task gsm8k samples.jsonl                  writes samples.scored.jsonl, prints a summary
    r1lab score --task math samples.jsonl --output graded.jsonl --json

Each line holds the task's fields plus `completion` (a string). Every good line is written to the output (default:
the input's name with .jsonl replaced by .scored.jsonl, next to it) with `reward`, `correct` and `format_ok` added,
in input order. A bad line (not UTF-8, invalid JSON, a missing or malformed field) is reported on stderr as
FILE:LINE: problem, left out of the output and counted under `errors`; the other lines are still scored.
Exit code: 0 when every line was scored, 1 when any line was bad, 2 for a usage error (unknown task, no such file).

A field is malformed when the task's check(example) says so; a task without check() gets its fields compared
with one instance from its own generate() (so a countdown `nums` must be a list of int, like generated ones).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HELP = "score a JSONL file of completions with a task's verifier: adds reward/correct/format_ok, prints a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL, one object per line: the task's fields plus `completion`")
    parser.add_argument("--task", required=True, help="task name (countdown, arithmetic, gsm8k, math, logic)")
    parser.add_argument("--output", help="where to write the scored lines (default: FILE.scored.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("--accuracy-weight", type=float, default=1.0, help="reward for a correct answer")
    parser.add_argument("--format-weight", type=float, default=0.1, help="reward for the <think>/<answer> format")


def default_output(path: str | Path) -> Path:
    """default_output("runs/a.jsonl") == Path("runs/a.scored.jsonl")"""
    path = Path(path)
    stem = path.name[:-len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + ".scored.jsonl")


def run(args: argparse.Namespace) -> int:
    from r1lab.tasks import get_task

    try:
        task = get_task(args.task)
    except ValueError as e:
        print(f"r1lab score: {e}", file=sys.stderr)
        return 2
    source = Path(args.file)
    if not source.is_file():
        print(f"r1lab score: {source}: no such file", file=sys.stderr)
        return 2
    output = Path(args.output) if args.output else default_output(source)
    start = time.perf_counter()
    summary = score_file(task, source, output, args.accuracy_weight, args.format_weight)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 1 if summary["errors"] else 0


def score_file(task, source: Path, output: Path, accuracy_weight: float, format_weight: float) -> dict:
    """Score every line of `source` into `output` (written whole, then moved into place); bad lines go to stderr."""
    checker = _checker(task)
    n = correct = format_ok = errors = 0
    reward = 0.0
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")  # so --output may be the input file itself
    with open(source, "rb") as lines, open(tmp, "w", encoding="utf-8") as out:
        for lineno, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            example, problem = _read_line(raw, checker)
            if problem:
                print(f"{source}:{lineno}: {problem}", file=sys.stderr)
                errors += 1
                continue
            s = task.score(example["completion"], example, accuracy_weight=accuracy_weight,
                           format_weight=format_weight)
            out.write(json.dumps({**example, "reward": s.reward, "correct": s.correct, "format_ok": s.format_ok},
                                 ensure_ascii=False) + "\n")
            n, correct, format_ok, reward = n + 1, correct + s.correct, format_ok + s.format_ok, reward + s.reward
    os.replace(tmp, output)
    mean = (lambda total: round(total / n, 4) if n else None)
    return {"task": task.NAME, "file": str(source), "output": str(output), "count": n, "accuracy": mean(correct),
            "format_rate": mean(format_ok), "mean_reward": mean(reward), "errors": errors}


def _read_line(raw: bytes, checker) -> tuple[dict | None, str | None]:
    """(example, None) for a gradable line, else (None, what is wrong with it)."""
    try:
        example = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(example, dict):
        return None, f"expected a JSON object, got {type(example).__name__}"
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


def _print_summary(s: dict) -> None:
    if not s["count"]:
        print(f"{s['file']}: no line could be scored ({s['errors']} errors)")
        return
    print(f"{s['task']}: scored {s['count']} lines of {s['file']} -> {s['output']} in {s['seconds']} s")
    print(f"accuracy {s['accuracy']:.4f}  format {s['format_rate']:.4f}  mean reward {s['mean_reward']:.4f}  "
          f"errors {s['errors']}")
