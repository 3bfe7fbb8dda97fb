"""Flags shared by the training stages (`r1lab pretrain`, `r1lab rl`): a recipe, overrides, shorthands."""
from __future__ import annotations


def add_stage_arguments(p) -> None:
    p.add_argument("--recipe", help="a TOML recipe: a path, or a shipped recipe name (r1lab/recipes/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe key (repeatable)")
    p.add_argument("--model", help="shorthand for --set model=MODEL (a shipped base, a run or checkpoint directory, a "
                                    "hub id; pretrain also takes a preset name)")
    p.add_argument("--out", help="shorthand for --set out_dir=DIR: the run directory")
    p.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (when wandb is installed)")
    p.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (when installed)")


def load_stage_config(cls, args):
    """The stage's config from --recipe, --set and the shorthands; raises ConfigError on bad input."""
    from r1lab.config import load_config
    from r1lab.recipes import resolve_recipe

    overrides = list(args.overrides)
    overrides += [f"model={args.model}"] if args.model else []
    overrides += [f"out_dir={args.out}"] if args.out else []
    overrides += ["wandb=true"] if args.wandb else []
    overrides += ["tensorboard=true"] if args.tensorboard else []
    return load_config(cls, resolve_recipe(args.recipe), overrides)
