"""Flags that the commands which sample from a model on a task's problems share (`r1lab eval`, `r1lab sample`), so
that each one means the same thing in both (README: one vocabulary on the command line)."""
from __future__ import annotations

import argparse


def add_problem_arguments(p: argparse.ArgumentParser, split: str) -> None:
    """--model, --task, and which problems: --data, or generated --n/--seed/--split/--task-arg."""
    p.add_argument("--model", required=True, help="shipped base name (e.g. countdown-base), run dir, model dir or hub id")
    p.add_argument("--task", required=True, help="task name (countdown, arithmetic, gsm8k, math, logic)")
    p.add_argument("--data", help="JSONL / Parquet file, folder or hub id of problems (required for gsm8k, math)")
    p.add_argument("--split", default=split, help=f"split to generate or load (default {split})")
    p.add_argument("--n", type=int, help="problems: generated (default 500) or the first N of --data")
    p.add_argument("--seed", type=int, default=1, help="generator seed for synthetic problems (default 1)")
    p.add_argument("--task-arg", dest="task_args", action="append", default=[], metavar="KNOB=VALUE",
                   help="a generator knob, repeatable: --task-arg max_numbers=5")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """How completions are sampled (the R1 paper's defaults) and how the engine runs."""
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6, as R1)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95, as R1)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per completion (default 512)")
    p.add_argument("--template", default="short", choices=["short", "r1"], help="prompt template (default short)")
    p.add_argument("--sampling-seed", type=int, default=0, help="seed of the sampled completions (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="rows the engine runs at once (default 256)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
