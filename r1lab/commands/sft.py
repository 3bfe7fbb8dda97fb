"""`r1lab sft --data FILE.jsonl [--recipe R] [--model MODEL] [--out DIR] [--set key=value ...]`: supervised
fine-tuning (r1lab/sft/train.py)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "supervised fine-tuning on prompt/completion or chat records (cold start, distillation; torchrun for DP)"


def add_arguments(p) -> None:
    add_stage_arguments(p)
    p.add_argument("--data", help="shorthand for --set data=FILE: a JSONL file of prompt/completion or messages records")


def run(args) -> int:
    from r1lab.commands.stage import run_stage
    from r1lab.sft.data import SFTDataError
    from r1lab.sft.train import SFTConfig, check, main

    if args.data:
        args.overrides = list(args.overrides) + [f"data={args.data}"]
    return run_stage(args, "sft", SFTConfig, main, check=check, input_errors=(SFTDataError,))
