"""The `r1lab` command. Each subcommand lives in its own module, which exposes

    HELP: str                      one line for `r1lab --help`
    add_arguments(parser) -> None  its flags
    run(args) -> int               the exit code

Command modules keep heavy imports (torch, transformers) inside `run`, so `r1lab --help` stays fast.
Add a stage by adding one line to COMMANDS.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> module; the order is the order `r1lab --help` shows.
COMMANDS = {
    "demo": "r1lab.commands.demo",
    "data": "r1lab.commands.data",
    "score": "r1lab.commands.score",
    "pretrain": "r1lab.commands.pretrain",
    "sft": "r1lab.commands.sft",
    "rl": "r1lab.commands.rl",
    "cost": "r1lab.commands.cost",
    "eval": "r1lab.commands.eval",
    "sample": "r1lab.commands.sample",
    "distill": "r1lab.commands.distill",
    "report": "r1lab.commands.report",
    "serve": "r1lab.commands.serve",
    "chat": "r1lab.commands.chat",
    "pipeline": "r1lab.commands.pipeline",
}

# optional packages -> the extra that installs them (pyproject.toml)
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "matplotlib": "report", "accelerate": "dist", "peft": "lora",
          "trl": "bench"}


def build_parser() -> argparse.ArgumentParser:
    from r1lab import __version__

    parser = argparse.ArgumentParser(prog="r1lab", description="Train reasoning models the way DeepSeek trained R1.")
    parser.add_argument("--version", action="version", version=f"r1lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


ONEDNN_CACHE = 64  # entries of oneDNN's primitive cache (its default: 1024)


def steady_cpu_memory() -> None:
    """Keep a long bf16 run on a CPU from growing as its shapes change (every RL step and micro-batch has its own
    lengths): oneDNN builds a matmul primitive per shape and caches 1024 of them, each holding its buffers. Set before
    any torch op runs; a user's own ONEDNN_PRIMITIVE_CACHE_CAPACITY wins.

    400 forward+backward passes of varying lengths through a 256-1024-256 MLP under bf16 autocast (AMD EPYC,
    avx512_bf16): peak RSS 1.34 GB with the default cache, 0.99 GB with 64 entries, 0.50 GB in fp32 (dev/LOG.md,
    session 24). glibc's heap holds the rest as fragments; a fixed mmap threshold returned them (0.77 GB) but cost
    10x the page faults and 20% of the demo's RL time, so it is not set.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    steady_cpu_memory()
    try:
        return int(args._run(args) or 0)
    except ModuleNotFoundError as e:  # an optional package: one line naming the extra, not a traceback
        package = (e.name or "").partition(".")[0]
        if package not in EXTRAS:
            raise
        print(f"r1lab {args.command}: needs {package}, which is not installed: pip install 'r1lab[{EXTRAS[package]}]' "
              f"(or {package} itself)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
