"""`r1lab report`: plots and one self-contained HTML page for one or more run directories.

    r1lab report runs/rl --out reports/rl                         reports/rl/report.html and one PNG per plot
    r1lab report runs/grpo runs/dapo --out reports/compare        both runs overlaid on the same axes

Each run directory contributes what it has: metrics.jsonl (plotted), the latest checkpoint's r1lab_config.json,
account.json (the cost account) and samples.jsonl (the last few completions, HTML-escaped). Missing parts are
skipped. Exit code: 0, or 2 when a run directory does not exist.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "plot runs' metrics (overlaid) and write a self-contained report.html with config, cost and samples"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (as written by pretrain / rl)")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write report.html and the PNGs")
    p.add_argument("--completions", type=int, default=6, help="sampled completions shown per run (default 6)")
    p.add_argument("--title", default="r1lab report", help="the page title")


def run(args: argparse.Namespace) -> int:
    from r1lab.report import write_report

    missing = [d for d in args.runs if not Path(d).is_dir()]
    if missing:
        print(f"r1lab report: no such run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    for d in args.runs:
        if not (Path(d) / "metrics.jsonl").is_file():
            print(f"r1lab report: {d}: no metrics.jsonl; reporting what else it holds", file=sys.stderr)
    path = write_report(args.runs, args.out, samples_per_run=args.completions, title=args.title)
    print(f"r1lab report: wrote {path}")
    return 0
