"""`r1lab pretrain --recipe NAME [--out DIR] [--set key=value ...]`: a base model from scratch (r1lab/pretrain/)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "pretrain a small base model from scratch on a synthetic corpus of search traces"


def add_arguments(p) -> None:
    add_stage_arguments(p)


def run(args) -> int:
    from r1lab.commands.stage import run_stage
    from r1lab.pretrain.train import PretrainConfig, check, main

    return run_stage(args, "pretrain", PretrainConfig, main, check=check)
