"""`r1lab pretrain --recipe NAME [--out DIR] [--set key=value ...]`: a base model from scratch (r1lab/pretrain/)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "pretrain a small base model from scratch on a synthetic corpus of search traces"


def add_arguments(p) -> None:
    add_stage_arguments(p)


def run(args) -> int:
    import sys

    from r1lab.commands.stage import load_stage_config
    from r1lab.config import ConfigError
    from r1lab.pretrain.train import PretrainConfig, main

    try:
        cfg = load_stage_config(PretrainConfig, args)
    except ConfigError as e:
        print(f"r1lab pretrain: {e}", file=sys.stderr)
        return 2
    main(cfg)
    return 0
