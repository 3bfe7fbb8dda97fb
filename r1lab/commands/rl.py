"""`r1lab rl --recipe NAME [--model MODEL] [--out DIR] [--set key=value ...]`: R1-Zero (r1lab/rl/train.py)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "R1-Zero: GRPO / Dr. GRPO / DAPO on chain-of-thought with rule-based rewards (torchrun for data parallel)"


def add_arguments(p) -> None:
    add_stage_arguments(p)


def run(args) -> int:
    from r1lab.commands.stage import run_stage
    from r1lab.rl.config import RLConfig, check
    from r1lab.rl.train import main

    return run_stage(args, "rl", RLConfig, main, check=check)
