"""`r1lab data`: write generated task instances to JSONL.

    r1lab data --task countdown --n 1000 --seed 0 --split train --output data/countdown_train.jsonl
    r1lab data --task countdown --n 200 --seed 0 --split test --output data/countdown_test.jsonl --set max_numbers=5

--set passes a knob to the task's generate(); numeric values become numbers ("5" -> 5, "0.5" -> 0.5), anything else
stays a string. Train and test never overlap whatever the seeds: the generator puts each instance in a split by its
content hash. Tasks that are datasets (gsm8k, math) have no generator: use their files or Hugging Face ids.
Exit code: 0, or 2 for a usage error (unknown task or knob, bad knob value, a task without a generator).
"""
from __future__ import annotations

import argparse
import inspect
import sys

HELP = "generate instances of a synthetic task (train or test split) into a JSONL file"
_NOT_KNOBS = ("n", "seed", "split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name (countdown, arithmetic, logic)")
    parser.add_argument("--n", type=int, required=True, help="how many instances")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", choices=["train", "test"], default="train", help="which split (default train)")
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                        help="a generator knob, repeatable: --set max_numbers=5")


def parse_value(text: str):
    """A knob value from the command line: parse_value("5") == 5, parse_value("0.5") == 0.5, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(args: argparse.Namespace) -> int:
    from r1lab.tasks import get_task
    from r1lab.tasks.common import write_jsonl

    try:
        task = get_task(args.task)
        knobs = _knobs(task, args.knobs)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        rows = task.generate(args.n, args.seed, split=args.split, **knobs)
    except (ValueError, TypeError) as e:  # TypeError: a knob value of the wrong kind, e.g. a string for a number
        print(f"r1lab data: {e}", file=sys.stderr)
        return 2
    write_jsonl(args.output, rows)
    print(f"wrote {len(rows)} {task.NAME} {args.split} instances (seed {args.seed}) to {args.output}")
    return 0


def _knobs(task, pairs: list[str]) -> dict:
    """--set pairs as generate() keyword arguments, checked against its signature."""
    if not hasattr(task, "generate"):
        raise ValueError(f"task {task.NAME!r} is a dataset and has no generator; read its JSONL/Parquet file or "
                         f"Hugging Face id with {task.__name__}.load() instead")
    params = inspect.signature(task.generate).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = {name: p.default for name, p in params.items()
             if name not in _NOT_KNOBS and p.kind is not inspect.Parameter.VAR_KEYWORD}
    knobs = {}
    for pair in pairs:
        name, eq, value = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ValueError(f"--set takes KNOB=VALUE, got {pair!r}")
        if name not in valid and not open_ended:
            listed = ", ".join(f"{k}={v}" for k, v in valid.items()) or "none"
            raise ValueError(f"{task.NAME} has no knob {name!r}; its knobs (with defaults): {listed}")
        knobs[name] = parse_value(value.strip())
        default = valid.get(name)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(knobs[name], str):
            raise ValueError(f"knob {name!r} takes a number (default {default}), got {value.strip()!r}")
    return knobs
