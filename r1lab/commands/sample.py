"""`r1lab sample`: rejection sampling, as in the R1 pipeline: K samples per problem, keep the verified-correct ones.

    r1lab sample --model runs/rl --task countdown --n 1000 --split train --samples 8 --out traces.jsonl
    r1lab sample --model countdown-base --task countdown --samples 16 --keep-per-problem 2 --shortest-first \\
        --out traces.jsonl --pass-rates rates.jsonl

Samples come from the same backend and verifier as `r1lab eval` (run_eval without its greedy pass); the selection
is r1lab.evaluation.traces. Each --out line: the problem's fields, `prompt`, `completion` (what the verifier scored;
`r1lab sft --data` trains on prompt/completion), `correct`, `pass_rate` and `tokens`. --pass-rates writes one line
per problem: its fields, `pass_rate` and `samples`.
Exit code: 0, or 2 for a usage error (unknown task or knob, no data, a model that does not load, an unwritable output).
"""
from __future__ import annotations

import argparse
import sys
import time

HELP = "rejection sampling: K samples per problem, keep the verified-correct ones as SFT traces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from r1lab.commands.options import add_problem_arguments, add_sampling_arguments

    add_problem_arguments(p, split="train")  # traces train a model: the train split by default
    add_sampling_arguments(p)
    p.add_argument("--samples", type=int, required=True, help="K samples per problem")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the kept records")
    p.add_argument("--keep-per-problem", type=int, metavar="M", help="at most M records per problem (default: all)")
    p.add_argument("--shortest-first", action="store_true", help="keep the shortest correct completions first")
    p.add_argument("--keep", default="correct", choices=["correct", "all"],
                   help="correct (default) or all: wrong ones too, with correct false")
    p.add_argument("--pass-rates", metavar="FILE.jsonl", help="write one line per problem: its fields + pass_rate")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from r1lab import runtime
    from r1lab.evaluation.evaluate import run_eval
    from r1lab.evaluation.traces import pass_rates, select
    from r1lab.jsonl import check_writable, write_jsonl
    from r1lab.model.load import load_checkpoint
    from r1lab.tasks import get_task
    from r1lab.tasks.problems import load_problems

    runtime.set_threads(args.threads)
    try:
        if args.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {args.samples}")
        if args.keep_per_problem is not None and args.keep_per_problem < 1:
            raise ValueError(f"--keep-per-problem must be at least 1, got {args.keep_per_problem}")
        if args.max_new_tokens < 1 or args.batch_size < 1:
            raise ValueError("--max-new-tokens and --batch-size must be at least 1")
        if args.pass_rates and Path(args.pass_rates).resolve() == Path(args.out).resolve():
            raise ValueError("--out and --pass-rates name the same file")
        task = get_task(args.task)
        examples, source = load_problems(task, args.data, args.n, args.seed, args.split, args.task_args)
        for out in filter(None, (args.out, args.pass_rates)):
            check_writable(out)
        model, tokenizer, path = load_checkpoint(args.model)
    except (ValueError, TypeError, OSError) as e:
        print(f"r1lab sample: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    print(f"r1lab sample: {path} on {len(examples)} {task.NAME} problems ({source}) x {args.samples} samples",
          flush=True)
    t0 = time.perf_counter()
    _, samples = run_eval(model, tokenizer, task, examples, template=args.template, samples=args.samples,
                          temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          seed=args.sampling_seed, greedy=False, batch_size=args.batch_size)
    records = select(samples, examples, keep=args.keep, per_problem=args.keep_per_problem,
                     shortest_first=args.shortest_first)
    write_jsonl(args.out, records)
    rates = pass_rates(samples, examples)
    if args.pass_rates:
        write_jsonl(args.pass_rates, rates)
    solved = sum(r["pass_rate"] > 0 for r in rates)
    print(f"r1lab sample: kept {len(records)} of {len(samples)} completions -> {args.out}; {solved}/{len(rates)} "
          f"problems solved at least once, mean pass rate {sum(r['pass_rate'] for r in rates) / len(rates):.4f}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
