"""r1lab rl --recipe FILE [--set key=value ...]"""
from __future__ import annotations

HELP = "R1-Zero: GRPO / Dr. GRPO / DAPO on chain-of-thought with rule-based rewards (torchrun for data parallel)"


def add_arguments(p) -> None:
    p.add_argument("--recipe", help="a TOML recipe: a path, or a shipped recipe name (r1lab/recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe key (repeatable)")
    p.add_argument("--out", help="shorthand for --set out_dir=DIR")
    p.add_argument("--model", help="shorthand for --set model=PATH (a checkpoint, a shipped base or a hub id)")


def run(args) -> int:
    import sys

    from r1lab.config import ConfigError, load_config
    from r1lab.recipes import resolve_recipe
    from r1lab.rl.train import RLConfig, algorithm, main

    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else []) + (
        [f"model={args.model}"] if args.model else [])
    try:
        cfg = load_config(RLConfig, resolve_recipe(args.recipe), overrides)
        algorithm(cfg)  # unknown preset or setting: fail before loading anything
    except (ConfigError, ValueError) as e:
        print(f"r1lab rl: {e}", file=sys.stderr)
        return 2
    main(cfg)
    return 0
