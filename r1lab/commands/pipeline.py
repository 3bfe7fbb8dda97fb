"""`r1lab pipeline`: the R1 recipe as one resumable run (r1lab/pipeline.py has the stages).

    r1lab pipeline --recipe r1_countdown --out runs/r1                  R1-Zero teacher -> cold start -> GRPO ->
                                                                         rejection sampling -> SFT -> eval + report
    r1lab pipeline --recipe r1_countdown --set teacher=runs/rl          a local teacher instead of the zero stage
    r1lab pipeline --recipe r1_countdown --set teacher_url=http://host:8000/v1 --set teacher_model=deepseek-reasoner
    r1lab pipeline --recipe r1_countdown --set rl2_steps=10             and RL again after the SFT

Rerunning the same command resumes from the last finished stage. Exit code: 0; 2 for a bad recipe or setting; a
failing stage's own exit code.
"""
from __future__ import annotations

import argparse

HELP = "the R1 recipe in one resumable run: cold start, GRPO, rejection sampling, SFT (and RL again), then eval"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", help="a TOML recipe: a path, or a shipped recipe name (r1_countdown, "
                                    "r1_countdown_demo, r1_countdown_quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe key (repeatable); lists as JSON: --set 'rl_set=[\"steps=10\"]'")
    p.add_argument("--out", help="shorthand for --set out_dir=DIR: the run directory")
    p.add_argument("--model", help="shorthand for --set base=MODEL: the base every SFT starts from")


def run(args: argparse.Namespace) -> int:
    import sys

    from r1lab.config import ConfigError
    from r1lab.pipeline import PipelineConfig, check
    from r1lab.pipeline import run as run_pipeline
    from r1lab.recipes import load_recipe_config, resolve_recipe

    overrides = list(args.overrides)
    overrides += [f"out_dir={args.out}"] if args.out else []
    overrides += [f"base={args.model}"] if args.model else []
    try:
        cfg = load_recipe_config(PipelineConfig, "pipeline", resolve_recipe(args.recipe), overrides)
        check(cfg)
        return run_pipeline(cfg)
    except (ConfigError, ValueError) as e:
        print(f"r1lab pipeline: {e}", file=sys.stderr)
        return 2
