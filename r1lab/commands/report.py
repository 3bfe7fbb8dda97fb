"""`r1lab report`: plots and one self-contained HTML page for one or more run directories.

    r1lab report runs/rl --out reports/rl                         reports/rl/report.html and one PNG per plot
    r1lab report runs/grpo runs/dapo --out reports/compare        both runs overlaid on the same axes
    r1lab report runs/demo/rl --out runs/demo/report --eval base=runs/demo/eval_base.json \
        --eval "after RL"=runs/demo/eval_rl.json                   the before/after table first in the page

Each run directory contributes what it has: metrics.jsonl (plotted), the latest checkpoint's r1lab_config.json,
account.json (the cost account) and samples.jsonl (the last few completions, HTML-escaped). Missing parts are
skipped. --eval LABEL=FILE (repeatable; a bare FILE is labelled by its name, eval_base.json -> "base") puts
`r1lab eval --out` results side by side at the top of the page, in the order given. Exit code: 0, or 2 when a run
directory or an --eval file does not exist; an --eval file that is not an eval result is skipped with a warning.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "plot runs' metrics (overlaid) and write a self-contained report.html with config, cost and samples"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (as written by pretrain / sft / rl)")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write report.html and the PNGs")
    p.add_argument("--completions", type=int, default=6, help="sampled completions shown per run (default 6)")
    p.add_argument("--title", default="r1lab report", help="the page title")
    p.add_argument("--eval", dest="evals", action="append", default=[], metavar="LABEL=FILE",
                   help="an `r1lab eval --out` JSON shown at the top of the page, repeatable in column order: "
                        "--eval base=out/eval_base.json --eval 'after RL'=out/eval_rl.json")


def run(args: argparse.Namespace) -> int:
    from r1lab.evaluation.table import parse_eval_spec, read_evaluation
    from r1lab.report import write_report

    missing = [d for d in args.runs if not Path(d).is_dir()]
    if missing:
        print(f"r1lab report: no such run directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    specs = [parse_eval_spec(spec) for spec in args.evals]
    missing = [str(path) for _, path in specs if not path.is_file()]
    if missing:
        print(f"r1lab report: no such eval file: {', '.join(missing)}", file=sys.stderr)
        return 2
    evaluations = []
    for label, path in specs:
        try:
            evaluations.append((label, read_evaluation(path)))
        except ValueError as e:
            print(f"r1lab report: skipping --eval {label}: {e}", file=sys.stderr)
    for d in args.runs:
        if not (Path(d) / "metrics.jsonl").is_file():
            print(f"r1lab report: {d}: no metrics.jsonl; reporting what else it holds", file=sys.stderr)
    path = write_report(args.runs, args.out, samples_per_run=args.completions, title=args.title,
                        evaluations=evaluations)
    print(f"r1lab report: wrote {path}")
    return 0
