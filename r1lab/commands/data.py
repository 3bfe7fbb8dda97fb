"""`r1lab data`: write generated task instances to JSONL.

    r1lab data --task countdown --n 1000 --seed 0 --split train --out data/countdown_train.jsonl
    r1lab data --task countdown --n 200 --split test --out data/countdown_test.jsonl --task-arg max_numbers=5

--task-arg passes a knob to the task's generator (r1lab.tasks.parse_knobs: numbers become numbers, unknown knobs are
an error listing the valid ones). Train and test never overlap whatever the seeds: the generator puts each instance
in a split by its content hash. Tasks that are datasets (gsm8k, math) have no generator: use their files or Hugging
Face ids. Exit code: 0, or 2 for a usage error (unknown task or knob, bad knob value, a task without a generator).
"""
from __future__ import annotations

import argparse
import sys

HELP = "generate instances of a synthetic task (train or test split) into a JSONL file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True,
                        help="a task with a generator: countdown, arithmetic, logic, or your own (.py file or module)")
    parser.add_argument("--n", type=int, required=True, help="how many instances")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", choices=["train", "test"], default="train", help="which split (default train)")
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--task-arg", dest="task_args", action="append", default=[], metavar="KNOB=VALUE",
                        help="a generator knob, repeatable: --task-arg max_numbers=5")


def run(args: argparse.Namespace) -> int:
    from r1lab.jsonl import write_jsonl
    from r1lab.tasks import get_task, knob_defaults, parse_knobs

    try:
        task = get_task(args.task)
        knob_defaults(task)  # a dataset task (no generator) fails here, saying so
        knobs = parse_knobs(task, args.task_args)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        rows = task.generate(args.n, args.seed, split=args.split, **knobs)
    except (ValueError, TypeError) as e:  # TypeError: a knob value of the wrong kind, e.g. a string for a number
        print(f"r1lab data: {e}", file=sys.stderr)
        return 2
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} {task.NAME} {args.split} instances (seed {args.seed}) to {args.out}")
    return 0
