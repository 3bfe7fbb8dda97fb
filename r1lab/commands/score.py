"""`r1lab score`: grade a JSONL file of existing completions with a task's own verifier.

    r1lab score samples.jsonl --task gsm8k                     writes samples.scored.jsonl, prints a summary
    r1lab score samples.jsonl --task math --out graded.jsonl --json

Each line holds the task's fields plus `completion`; r1lab.evaluation.scoring says what is written and how bad lines
are reported (FILE:LINE on stderr, skipped, the rest still scored).
Exit code: 0 when every line was scored, 1 when any line was bad, 2 for a usage error (unknown task, no such file).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HELP = "score a JSONL file of completions with a task's verifier: adds reward/correct/format_ok, prints a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL, one object per line: the task's fields plus `completion`")
    parser.add_argument("--task", required=True,
                        help="task: countdown, arithmetic, gsm8k, math, logic, or your own (.py file or module path)")
    parser.add_argument("--out", help="where to write the scored lines (default: FILE.scored.jsonl)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.add_argument("--accuracy-weight", type=float, default=1.0, help="reward for a correct answer")
    parser.add_argument("--format-weight", type=float, default=0.1, help="reward for the <think>/<answer> format")


def run(args: argparse.Namespace) -> int:
    from r1lab.evaluation.scoring import default_output, score_file
    from r1lab.tasks import get_task

    source = Path(args.file)
    try:
        task = get_task(args.task)
        if not all(math.isfinite(w) for w in (args.accuracy_weight, args.format_weight)):
            raise ValueError("--accuracy-weight and --format-weight must be finite numbers")
        if source.is_dir():
            raise ValueError(f"{source}: a directory; score takes one JSONL file")
        if not source.is_file():
            raise ValueError(f"{source}: no such file")
    except ValueError as e:
        print(f"r1lab score: {e}", file=sys.stderr)
        return 2
    output = Path(args.out) if args.out else default_output(source)
    start = time.perf_counter()
    summary = score_file(task, source, output, args.accuracy_weight, args.format_weight)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 1 if summary["errors"] else 0


def _print_summary(s: dict) -> None:
    if not s["count"]:
        print(f"{s['file']}: no line could be scored ({s['errors']} errors)")
        return
    print(f"{s['task']}: scored {s['count']} lines of {s['file']} -> {s['output']} in {s['seconds']} s")
    print(f"accuracy {s['accuracy']:.4f}  format {s['format_rate']:.4f}  mean reward {s['mean_reward']:.4f}  "
          f"errors {s['errors']}")
