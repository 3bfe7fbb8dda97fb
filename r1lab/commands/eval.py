"""`r1lab eval`: evaluate a model on a task the way the R1 paper does, with the task's own verifier.

    r1lab eval --model runs/rl --task countdown --samples 8                 500 test instances (seed 1) of countdown
    r1lab eval --model countdown-base --task countdown --n 200 --task-arg max_numbers=5 --out eval.json
    r1lab eval --model Qwen/Qwen2.5-0.5B --task gsm8k --data data/gsm8k_test.jsonl --template r1 --max-new-tokens 1024
    r1lab eval --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --task math --data math500.jsonl --template chat \
        --samples 16 --max-new-tokens 32768                      through the model's own chat template
    r1lab eval --model runs/rl --task countdown --backend vllm             sampled by vLLM (pip install 'r1lab[vllm]')

--model is a shipped base name, a run directory (its latest checkpoint), a model directory or a hub id.
Synthetic tasks generate --n instances (default 500) of the test split with --seed (default 1) and --task-arg knobs;
dataset tasks (gsm8k, math) need --data, of which --n then keeps the first N rows.
Reported: pass@1 as the mean over K samples (temperature 0.6, top-p 0.95 by default), unbiased pass@k for
k = 1, 2, 4, ..., K, cons@K (majority vote over the task's answer keys), greedy accuracy (a separate temperature-0
pass; --no-greedy skips it), format and truncation rates, response lengths (right vs wrong), reasoning behaviour
(markers, arithmetic-step accuracy, countdown attempts) and a breakdown by the task's difficulty buckets, plus the
FLOPs account. --out writes every figure with the settings as JSON (--json prints it instead of the table);
--completions-out writes one JSON line per completion.
Exit code: 0, or 2 for a usage error (unknown task or knob, no data, a model that does not load, an unwritable output).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "evaluate a model on a task: pass@k, cons@k, greedy, format, lengths, behaviour, by difficulty"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from r1lab.commands.options import add_backend_argument, add_problem_arguments, add_sampling_arguments

    add_problem_arguments(p, split="test")
    add_sampling_arguments(p)
    add_backend_argument(p)
    p.add_argument("--samples", type=int, default=4, help="K samples per problem (default 4)")
    p.add_argument("--top-k", type=int, default=0, help="top-k sampling (default 0: off)")
    p.add_argument("--no-greedy", dest="greedy", action="store_false", help="skip the temperature-0 pass")
    p.add_argument("--markers", help="comma-separated self-verification / backtracking markers, matched "
                                     "case-insensitively; end one with a comma by writing it last or doubled "
                                     "(default: check,back,,wait,verify,let me re)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="fp32 (default) or bf16 (the weights cast to bf16: half their memory, and faster on a CPU "
                        "with native bf16 matmuls such as avx512_bf16); a checkpoint stored in bf16 runs in bf16 "
                        "either way (the results record what ran)")
    p.add_argument("--out", metavar="FILE.json", help="write every figure and the settings as JSON")
    p.add_argument("--json", action="store_true", help="print every figure as one JSON object instead of the table")
    p.add_argument("--completions-out", metavar="FILE.jsonl", help="write one JSON line per completion")


def run(args: argparse.Namespace) -> int:
    import torch

    from r1lab import runtime
    from r1lab.cost.account import RunAccount, compute_dtype, format_account
    from r1lab.commands.options import check_thinking_arguments, load_task_problems_model
    from r1lab.jsonl import write_jsonl, write_text_atomic
    from r1lab.evaluation.behaviour import DEFAULT_MARKERS
    from r1lab.evaluation.evaluate import finite, format_table, parse_markers, run_eval
    from r1lab.tasks import parse_knobs

    runtime.set_threads(args.threads)
    try:
        markers = parse_markers(args.markers) if args.markers is not None else DEFAULT_MARKERS
        if args.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {args.samples}")
        if not markers:
            raise ValueError(f"--markers must name at least one marker, got {args.markers!r}")
        check_thinking_arguments(args)  # before the model loads
        # --dtype bf16: the weights load in bf16 (buffers such as RoPE's frequencies stay float32, as from_pretrained
        # keeps them): half their memory, and no autocast casting every weight at every decoding step (on an H200,
        # autocast generated at half fp32's speed; dev/LOG.md session 26)
        task, examples, source, model, tokenizer, path = load_task_problems_model(
            args, (args.out, args.completions_out), dtype=torch.bfloat16 if args.dtype == "bf16" else None)
    except (ValueError, TypeError, OSError) as e:
        print(f"r1lab eval: {e}", file=sys.stderr)
        return 2
    account = RunAccount(model.config, device=model.device.type, dtype=compute_dtype(model))
    settings = {
        "model": args.model, "model_path": path, "task": task.NAME, "data": source, "split": args.split,
        "n": len(examples), "seed": args.seed, "knobs": parse_knobs(task, args.task_args) if not args.data else {},
        "samples": args.samples, "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens, "template": args.template, "sampling_seed": args.sampling_seed,
        "greedy": args.greedy, "markers": list(markers), "batch_size": args.batch_size, "dtype": account.dtype,
        "device": str(model.device), "backend": args.backend, "max_thinking_tokens": args.max_thinking_tokens,
        "thinking_end": args.thinking_end,
    }
    print(f"r1lab eval: {path} on {len(examples)} {task.NAME} problems x {args.samples} samples", flush=True,
          file=sys.stderr if args.json else sys.stdout)
    t0 = time.perf_counter()
    summary, samples = run_eval(model, tokenizer, task, examples, template=args.template, samples=args.samples,
                                temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_new_tokens=args.max_new_tokens, seed=args.sampling_seed, greedy=args.greedy,
                                markers=markers, batch_size=args.batch_size, account=account,
                                backend=args.backend, max_thinking_tokens=args.max_thinking_tokens,
                                thinking_end=args.thinking_end)
    wall = time.perf_counter() - t0
    result = finite({"settings": settings, **summary, "wall_s": wall, "account": account.summary(wall)})
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
        print(format_account(result["account"]))
    if args.out:
        write_text_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
    if args.completions_out:
        keep = ("problem", "greedy", "prompt", "completion", "reward", "correct", "format_ok", "answer", "key",
                "difficulty", "tokens", "finish_reason", "thinking_cut")
        write_jsonl(args.completions_out, ({k: getattr(s, k) for k in keep} for s in samples))
    return 0
