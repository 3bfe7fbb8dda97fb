"""`r1lab rl --recipe NAME [--model MODEL] [--out DIR] [--set key=value ...]`: R1-Zero (r1lab/rl/train.py)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "R1-Zero: GRPO / Dr. GRPO / DAPO on chain-of-thought with rule-based rewards (torchrun for data parallel)"


def add_arguments(p) -> None:
    add_stage_arguments(p)


def run(args) -> int:
    import sys

    from r1lab.commands.stage import load_stage_config
    from r1lab.config import ConfigError
    from r1lab.rl.train import RLConfig, algorithm, main

    try:
        cfg = load_stage_config(RLConfig, args)
        algorithm(cfg)  # an unknown preset or setting fails here, before anything loads
    except (ConfigError, ValueError) as e:
        print(f"r1lab rl: {e}", file=sys.stderr)
        return 2
    main(cfg)
    return 0
