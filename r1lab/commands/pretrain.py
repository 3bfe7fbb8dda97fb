"""r1lab pretrain --recipe FILE [--set key=value ...]"""
from __future__ import annotations

HELP = "pretrain a small base model from scratch on a synthetic corpus of search traces"


def add_arguments(p) -> None:
    p.add_argument("--recipe", help="a TOML recipe (see r1lab/recipes/); omitted keys take their defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe key (repeatable)")
    p.add_argument("--out", help="shorthand for --set out_dir=DIR")


def run(args) -> int:
    import sys

    from r1lab.config import ConfigError, load_config
    from r1lab.model.pretrain import PretrainConfig, main
    from r1lab.recipes import resolve_recipe

    overrides = list(args.overrides) + ([f"out_dir={args.out}"] if args.out else [])
    try:
        cfg = load_config(PretrainConfig, resolve_recipe(args.recipe), overrides)
    except ConfigError as e:
        print(f"r1lab pretrain: {e}", file=sys.stderr)
        return 2
    main(cfg)
    return 0
