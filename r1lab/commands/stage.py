"""What the training stages (`r1lab pretrain`, `r1lab rl`) share on the command line: a recipe, overrides,
shorthands, and how a config is loaded, checked and run."""
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


def load_stage_config(cls, args, command: str):
    """The stage's config from --recipe, --set and the shorthands; raises ConfigError on bad input."""
    from r1lab.recipes import load_recipe_config, resolve_recipe

    overrides = list(args.overrides)
    overrides += [f"model={args.model}"] if args.model else []
    overrides += [f"out_dir={args.out}"] if args.out else []
    overrides += ["wandb=true"] if args.wandb else []
    overrides += ["tensorboard=true"] if args.tensorboard else []
    return load_recipe_config(cls, command, resolve_recipe(args.recipe), overrides)


def run_stage(args, command: str, cls, main, check=None, input_errors: tuple = ()) -> int:
    """Load the config, check it before anything heavy loads (check(cfg) raises ValueError on a bad setting), then
    run main(cfg). A bad recipe, key, value or setting, a model or hub dataset that cannot be loaded, and what main
    finds wrong with its input once the model is loaded (ConfigError, or the stage's own `input_errors`), are one
    line on stderr and exit status 2."""
    import sys

    from r1lab.config import ConfigError
    from r1lab.model.load import CheckpointError
    from r1lab.tasks.common import DatasetUnavailable

    try:
        cfg = load_stage_config(cls, args, command)
        if check is not None:
            check(cfg)
    except (ConfigError, ValueError) as e:
        print(f"r1lab {command}: {e}", file=sys.stderr)
        return 2
    try:
        main(cfg)
    except (CheckpointError, ConfigError, DatasetUnavailable, *input_errors) as e:
        print(f"r1lab {command}: {e}", file=sys.stderr)
        return 2
    return 0
