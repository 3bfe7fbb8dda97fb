"""`r1lab eval`: evaluate a checkpoint on a task the way the R1 paper does, with the task's own verifier.

    r1lab eval runs/rl --task countdown --samples 8                      500 test instances (seed 1) of countdown
    r1lab eval countdown-base --task countdown --n 200 --set max_numbers=5 --json eval.json --samples-out s.jsonl
    r1lab eval Qwen/Qwen2.5-0.5B --task gsm8k --data data/gsm8k_test.jsonl --template r1 --max-new-tokens 1024

CHECKPOINT is a model directory, a run directory (its latest checkpoint), a shipped base name or a hub id.
Synthetic tasks generate --n instances (default 500) of the test split with --seed (default 1) and --set knobs;
dataset tasks (gsm8k, math) need --data, of which --n then keeps the first N rows.
Reported: pass@1 as the mean over K samples (temperature 0.6, top-p 0.95 by default), unbiased pass@k for
k = 1, 2, 4, ..., K, cons@K (majority vote over the task's answer keys), greedy accuracy (a separate temperature-0
pass; --no-greedy skips it), format and truncation rates, response lengths (right vs wrong), reasoning behaviour
(markers, arithmetic-step accuracy, countdown attempts) and a breakdown by the task's difficulty buckets, plus the
FLOPs account. --json writes every figure with the settings; --samples-out writes one JSON line per completion.
Exit code: 0, or 2 for a usage error (unknown task or knob, no data, a checkpoint that does not load).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HELP = "evaluate a checkpoint on a task: pass@k, cons@k, greedy, format, lengths, behaviour, by difficulty"
DEFAULT_N = 500


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="model dir, run dir, shipped base name (e.g. countdown-base) or hub id")
    p.add_argument("--task", required=True, help="task name (countdown, arithmetic, gsm8k, math, logic)")
    p.add_argument("--data", help="JSONL / Parquet file, folder or hub id of problems (required for gsm8k, math)")
    p.add_argument("--split", default="test", help="split to generate or load (default test)")
    p.add_argument("--n", type=int, help=f"problems: generated (default {DEFAULT_N}) or the first N of --data")
    p.add_argument("--seed", type=int, default=1, help="generator seed for synthetic problems (default 1)")
    p.add_argument("--set", dest="knobs", action="append", default=[], metavar="KNOB=VALUE",
                   help="a generator knob, repeatable: --set max_numbers=5")
    p.add_argument("--samples", type=int, default=4, help="K samples per problem (default 4)")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6, as R1)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95, as R1)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (default 0: off)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per completion (default 512)")
    p.add_argument("--template", default="short", choices=["short", "r1"], help="prompt template (default short)")
    p.add_argument("--sampling-seed", type=int, default=0, help="seed of the sampled completions (default 0)")
    p.add_argument("--no-greedy", dest="greedy", action="store_false", help="skip the temperature-0 pass")
    p.add_argument("--markers", help="comma-separated self-verification / backtracking markers, matched "
                                     "case-insensitively; end one with a comma by writing it last or doubled "
                                     "(default: check,back,,wait,verify,let me re)")
    p.add_argument("--batch-size", type=int, default=256, help="rows the engine runs at once (default 256)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="fp32 (default; faster than bf16 autocast for generation on CPUs) or bf16 autocast")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write every figure and the settings as JSON")
    p.add_argument("--samples-out", metavar="OUT.jsonl", help="write one JSON line per completion")


def run(args: argparse.Namespace) -> int:
    import torch

    from r1lab.evaluation.behaviour import DEFAULT_MARKERS
    from r1lab.cost.account import RunAccount, format_account
    from r1lab.evaluation.evaluate import parse_markers, run_eval
    from r1lab.model.load import load_checkpoint
    from r1lab.tasks import get_task

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        task = get_task(args.task)
        examples, source = load_problems(task, args)
        markers = parse_markers(args.markers) if args.markers is not None else DEFAULT_MARKERS
        if args.samples < 1 or not markers:
            raise ValueError("--samples must be at least 1 and --markers must name at least one marker")
        model, tokenizer, path = load_checkpoint(args.checkpoint)
    except (ValueError, TypeError, OSError) as e:
        print(f"r1lab eval: {e}", file=sys.stderr)
        return 2
    device = model.device
    amp = torch.bfloat16 if args.dtype == "bf16" else None
    account = RunAccount(model.config, device=device.type, dtype=args.dtype)
    settings = {
        "checkpoint": args.checkpoint, "checkpoint_path": path, "task": task.NAME, "data": source,
        "split": args.split, "n": len(examples), "seed": args.seed, "knobs": dict(_knob_pairs(args)),
        "samples": args.samples, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens, "template": args.template, "sampling_seed": args.sampling_seed,
        "greedy": args.greedy, "markers": list(markers), "batch_size": args.batch_size, "dtype": args.dtype,
        "device": str(device),
    }
    print(f"r1lab eval: {path} on {len(examples)} {task.NAME} problems x {args.samples} samples", flush=True)
    t0 = time.perf_counter()
    summary, samples = run_eval(model, tokenizer, task, examples, template=args.template, samples=args.samples,
                                temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_new_tokens=args.max_new_tokens, seed=args.sampling_seed, greedy=args.greedy,
                                markers=markers, autocast_dtype=amp, batch_size=args.batch_size, account=account)
    wall = time.perf_counter() - t0
    result = {"settings": settings, **summary, "wall_s": wall, "account": account.summary(wall)}
    print(format_table(result))
    print(format_account(result["account"]))
    if args.json_out:
        _write(args.json_out, json.dumps(finite(result), indent=2) + "\n")
    if args.samples_out:
        keep = ("problem", "greedy", "prompt", "completion", "reward", "correct", "format_ok", "answer", "key",
                "difficulty", "tokens", "finish_reason")
        _write(args.samples_out, "".join(json.dumps({k: getattr(s, k) for k in keep}, ensure_ascii=False) + "\n"
                                         for s in samples))
    return 0


def load_problems(task, args) -> tuple[list[dict], str]:
    """(problems, a description of where they came from) for --data, or generated for a synthetic task."""
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.data:
        if args.knobs:
            raise ValueError("--set knobs apply to generated problems, not to --data")
        rows = task.load(args.data, split=args.split, limit=args.n)
        if not rows:
            raise ValueError(f"{args.data}: no problems")
        return rows, args.data
    if not hasattr(task, "generate"):
        raise ValueError(f"task {task.NAME!r} is a dataset: pass its problems with --data FILE")
    from r1lab.commands.data import _knobs  # the same knob checks as `r1lab data`

    n = args.n or DEFAULT_N
    return task.generate(n, args.seed, split=args.split, **_knobs(task, args.knobs)), \
        f"generated: {task.NAME} {args.split} n={n} seed={args.seed}"


def _knob_pairs(args):
    from r1lab.commands.data import parse_value

    return [(k.strip(), parse_value(v.strip())) for k, _, v in (pair.partition("=") for pair in args.knobs)]


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def finite(x):
    """NaN and infinities as None, so the JSON is standard: finite({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}"""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _f(x, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(r: dict) -> str:
    """The console report: headline figures, then one row per difficulty bucket."""
    s, K, rl, b = r["settings"], r["samples"], r["response_len"], r["behaviour"]
    lines = [f"{s['task']}: {r['problems']} problems x {K} samples, temperature {s['temperature']}, top-p "
             f"{s['top_p']}, max {s['max_new_tokens']} new tokens, template {s['template']}",
             f"  {'pass@1 (mean of %d)' % K:<24}{_f(r['pass1'])}"]
    lines += [f"  {'pass@' + k:<24}{_f(v)}" for k, v in r["pass_at_k"].items() if k != "1"]
    lines += [f"  {'cons@%d' % K:<24}{_f(r['cons_at_k'])}",
              f"  {'greedy':<24}{_f(r['greedy_acc'])}",
              f"  {'format rate':<24}{_f(r['format_rate'])}",
              f"  {'truncated':<24}{_f(r['truncated_rate'])}",
              f"  {'response tokens':<24}mean {_f(rl['mean'], 1)}  median {_f(rl['median'], 1)}  | right "
              f"{_f(rl['mean_correct'], 1)} / {_f(rl['median_correct'], 1)}  | wrong {_f(rl['mean_wrong'], 1)} / "
              f"{_f(rl['median_wrong'], 1)}",
              f"  {'markers':<24}{_f(b['marker_rate'])}  ({', '.join(repr(m) for m in b['markers'])})",
              f"  {'arithmetic steps':<24}{_f(b['step_acc'])} correct, {_f(b['steps_per_response'], 2)} per response",
              f"  {'attempts / response':<24}{_f(b['attempts'], 2)}",
              f"  {'difficulty':<24}{'problems':>9}{'pass@1':>9}{'format':>9}{'cons@%d' % K:>9}{'greedy':>9}"]
    for name, d in r["by_difficulty"].items():
        lines.append(f"  {name[:23]:<24}{d['problems']:>9}{_f(d['pass1']):>9}{_f(d['format_rate']):>9}"
                     f"{_f(d['cons_at_k']):>9}{_f(d['greedy_acc']):>9}")
    return "\n".join(lines)
