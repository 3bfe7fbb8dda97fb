"""`r1lab sample`: rejection sampling, as in the R1 pipeline: K samples per problem, keep the verified-correct ones.

    r1lab sample --model runs/rl --task countdown --n 1000 --split train --samples 8 --out traces.jsonl
    r1lab sample --model countdown-base --task countdown --samples 16 --keep-per-problem 2 --shortest-first \\
        --out traces.jsonl --pass-rates rates.jsonl

Samples come from the same backend and verifier as `r1lab eval` (run_eval without its greedy pass); the selection
is r1lab.evaluation.traces. Each --out line: the problem's fields, `prompt`, `completion` (what the verifier scored;
`r1lab sft --data` trains on prompt/completion), `correct`, `pass_rate` and `tokens`, plus `thinking_cut` under a
thinking budget (--max-thinking-tokens: the completion holds the forced --thinking-end; `r1lab eval`'s budget, so a
trace is sampled as the model is evaluated). --pass-rates writes one line per problem: its fields, `pass_rate` and
`samples`.
Exit code: 0, or 2 for a usage error (unknown task or knob, no data, a model that does not load, an unwritable output).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "rejection sampling: K samples per problem, keep the verified-correct ones as SFT traces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from r1lab.commands.options import (add_backend_argument, add_problem_arguments, add_sampling_arguments,
                                        add_selection_arguments)

    add_problem_arguments(p, split="train")  # traces train a model: the train split by default
    add_sampling_arguments(p)
    add_backend_argument(p)
    add_selection_arguments(p)


def run(args: argparse.Namespace, fields: dict | None = None, name: str = "sample") -> int:
    """`fields` are added to every kept record; `r1lab distill --teacher` runs this as `name` "distill" with
    {"teacher": ...} (README: a local teacher is rejection sampling from a teacher checkpoint)."""
    from r1lab import runtime
    from r1lab.commands.options import check_selection_arguments, load_task_problems_model
    from r1lab.cost.account import RunAccount, compute_dtype, format_account
    from r1lab.evaluation.evaluate import run_eval
    from r1lab.evaluation.traces import pass_rates, select
    from r1lab.jsonl import write_jsonl, write_text_atomic

    runtime.set_threads(args.threads)
    try:
        check_selection_arguments(args)
        task, examples, source, model, tokenizer, path = load_task_problems_model(
            args, (args.out, args.pass_rates, args.account))
    except (ValueError, TypeError, OSError) as e:
        print(f"r1lab {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    budget = (f", thinking budget {args.max_thinking_tokens} tokens (then {args.thinking_end!r})"
              if args.max_thinking_tokens is not None else "")
    print(f"r1lab {name}: {path} on {len(examples)} {task.NAME} problems ({source}) x {args.samples} samples{budget}",
          flush=True)
    t0 = time.perf_counter()
    account = RunAccount(model.config, device=model.device.type, dtype=compute_dtype(model))  # the weights' dtype
    _, samples = run_eval(model, tokenizer, task, examples, template=args.template, samples=args.samples,
                          temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                          seed=args.sampling_seed, greedy=False, batch_size=args.batch_size, account=account,
                          backend=args.backend, max_thinking_tokens=args.max_thinking_tokens,
                          thinking_end=args.thinking_end)
    wall = time.perf_counter() - t0
    budgeted = args.max_thinking_tokens is not None
    extra = fields or {}
    records = select(samples, examples, keep=args.keep, per_problem=args.keep_per_problem,
                     shortest_first=args.shortest_first,
                     extra=lambda s: {**extra, "thinking_cut": s.thinking_cut} if budgeted else extra)
    write_jsonl(args.out, records)
    rates = pass_rates(samples, examples)
    if args.pass_rates:
        write_jsonl(args.pass_rates, rates)
    solved = sum(r["pass_rate"] > 0 for r in rates)
    print(f"r1lab {name}: kept {len(records)} of {len(samples)} completions -> {args.out}; {solved}/{len(rates)} "
          f"problems solved at least once, mean pass rate {sum(r['pass_rate'] for r in rates) / len(rates):.4f}, "
          f"{wall:.1f} s")
    summary = account.summary(wall)
    print(format_account(summary))
    if args.account:
        write_text_atomic(Path(args.account), json.dumps(summary, indent=2) + "\n")
    return 0
