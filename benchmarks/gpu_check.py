"""GPU check (issue 16): rollouts in r1lab's engine vs vLLM, FSDP2 training MFU, peak memory and vLLM's weight sync,
on randomly initialised Qwen2.5-0.5B / 1.5B shapes (no downloads), printed as ONE table.

    scripts/gpu_check.sh [--json FILE]           # the real run, <= 12.5 minutes on one H200 (its header: the table)
    python benchmarks/gpu_check.py --smoke       # every part in this process: tiny configs, fp32, CPU, ~40 s
    # what the shell script runs, each under `timeout`:
    torchrun --nproc_per_node N benchmarks/gpu_check.py --part train --rows R.jsonl
    python benchmarks/gpu_check.py --part engine,vllm,sync --rows R.jsonl
    python benchmarks/gpu_check.py --table R.jsonl [--json FILE]

The code: gpu_common.py (shared by every part), gpu_rollouts.py (parts a and d), gpu_rl.py (part e); here: part b,
the table, main.

Parts (each time-boxed; a failing part becomes an ERROR row and the next part runs):
  a  engine, vllm  rollout tokens/s of make_backend("engine") and make_backend("vllm") on the 0.5B policy: the same
                   B token-id prompts, B x new tokens, temperature 1 with log-probs (what RL asks for), each in the
                   dtype `r1lab rl` samples in: the engine in fp32 on the fp32 policy (rl/train.py; on an H200 bf16
                   autocast made it 2.1x slower, dev/LOG.md), vLLM in bf16. vLLM's time is generate() through
                   the backend, so it includes the wake-up and sleep that RL pays on a GPU (the note also gives a
                   call without them; the weight push is sync_weights', part d); its build (CUDA graphs and
                   torch.compile unless --vllm-eager) is timed apart. Target: vLLM >= 5x the engine.
  b  train         FSDP2 (r1lab.parallel.shard: fully_shard per decoder layer, bf16 parameters, fp32 reductions) on
                   the 1.5B config over every rank torchrun started: forward + backward + AdamW on random token
                   batches, three ways: each decoder layer under torch.compile (`torch_compile = true`,
                   r1lab.parallel.compile_layers, its compile in the warm-up steps), eager, and compiled with gradient
                   checkpointing. MFU = 6 N tokens/s / (ranks x peak), N the matmul
                   weights (cost.flops.shape_of: the layers and the lm_head; tied embeddings counted once, attention
                   FLOPs not counted), peak from r1lab.cost (H200: 989.5 TFLOP/s dense bf16). Target: >= 40%
                   compiled, without checkpointing (its recompute is not counted, so its MFU has no target; eager is
                   for comparison).
  c                peak GPU memory of each (torch.cuda.max_memory_allocated; the max over ranks for training).
  d  sync          vLLM's weight sync: greedy continuations from vLLM with raw log-probs, compared with the policy's
                   own forward over the same tokens; one AdamW step on the policy (NLL of those continuations);
                   sync_weights; again. Pass: before the step they match, the step moved the log-probs beyond the
                   tolerance, after the sync they match again (tolerance: tests/tolerances.py's rounding rule for the
                   dtype). Before the sync vLLM must still give the old log-probs (a sleeping engine on a GPU wakes
                   with the weights of the last sync: the push is sync_weights' alone).
  e  rl            `r1lab rl` end to end on the device: the shipped countdown base, one step, then steps=2 resuming from
                   its checkpoint (gpu_rl.py). Pass: both exit 0, steps 1 and 2 logged once each, an MFU logged.

--smoke (automatic without a CUDA device): a 2-layer Qwen2 with the real vocabulary, fp32 (--bf16: the GPU's dtypes,
on a CPU with avx512_bf16), a handful of tokens; the targets do not apply, the sync check does. The tokenizer is
r1lab's character tokenizer padded with filler tokens to Qwen's 151,936 ids: vLLM refuses token ids its tokenizer
does not have, and throughput needs only ids.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from gpu_common import (GPU, PARTS, SMOKE, VOCAB, Sizes, build_model, environment, error_row, free_memory, guarded,
                        peak_gib, record, reset_peak)
from gpu_rl import part_rl
from gpu_rollouts import part_rollouts


# ------------------------------------------------------------------------------------------------------------------
# b: FSDP2 training throughput and MFU

def join_world(device) -> bool:
    """The process group torchrun describes, or a world of one (this process) when started without torchrun, with
    r1lab's backends (runtime.process_group_backend); a CPU all_reduce proves the group carries what r1lab's
    runtime.all_sum sends (an NCCL-only group refuses CPU tensors). True when this call joined it, so the caller
    leaves it after; False when the process held one already (an in-process vLLM engine's, whose groups would go
    stale if it were destroyed under them), which is used as it is and left alone."""
    import torch.distributed as dist

    from r1lab.runtime import process_group_backend

    if dist.is_initialized():
        return False
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device.type == "cuda"))
    ones = torch.ones(1, dtype=torch.float64)  # on the CPU
    dist.all_reduce(ones)
    if ones.item() != dist.get_world_size():
        raise RuntimeError(f"a CPU all_reduce over {dist.get_world_size()} ranks gave {ones.item()}")
    return True


TRAIN_ROWS = {"train": (True, False), "train_eager": (False, False), "train_gc": (True, True)}  # (compiled, ckpt)


def train_once(S: Sizes, device, amp, key: str) -> dict:
    """One FSDP2 run on the train model: warm-up steps, then timed steps; the row (on every rank, alike)."""
    from r1lab.cost.account import device_peak_flops
    from r1lab.cost.flops import shape_of
    from r1lab.parallel import ScaleConfig, compile_layers, cross_entropy_sum, enable_checkpointing, shard
    from r1lab.runtime import all_gather_objects, rank_and_world

    rank, world = rank_and_world()
    free_memory(device)  # the previous run's model and optimizer, gone with its frame
    reset_peak(device)
    t0 = time.perf_counter()
    compiled, checkpointing = TRAIN_ROWS[key]
    model = build_model(S.train_model, device)  # fp32 master weights, every rank the same (seed 0)
    if compiled:  # as r1lab.parallel.load_policy does it
        compile_layers(model)
    if checkpointing:  # as r1lab.parallel.load_policy turns it on
        enable_checkpointing(model)
        model.config.use_cache = False
    model = shard(model.train(), ScaleConfig(fsdp=True, grad_checkpointing=checkpointing), amp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True if device.type == "cuda" else None)  # as `r1lab rl`
    B, T = S.train_batch, S.train_seq
    g = torch.Generator(device=device).manual_seed(1 + rank)
    x = torch.randint(3, VOCAB, (B, T + 1), device=device, generator=g)  # (B, T+1) random tokens, this rank's own
    global_tokens = world * B * T

    def step():
        logits = model(input_ids=x[:, :-1], use_cache=False).logits  # (B, T, V), bf16 under the mixed precision
        # the global token count divides, as r1lab's losses do: FSDP's reduction is a sum (shard sets the factor 1)
        loss = cross_entropy_sum(logits, x[:, 1:], compiled=compiled) / global_tokens  # as `r1lab sft`'s
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(S.train_warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    losses = [step() for _ in range(S.train_steps)]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t
    loss = float(sum(losses)) * world / S.train_steps  # this rank's mean cross-entropy (ln V ~ 11.9 at init)
    peaks = [p for p in all_gather_objects(peak_gib(device)) if p is not None]
    tokens_per_s = global_tokens * S.train_steps / dt
    s = shape_of(model.config)
    n = s.body_params + s.head_params
    peak = device_peak_flops(device, "bf16" if amp is not None else "fp32") if rank == 0 else None
    mfu = 6 * n * tokens_per_s / (world * peak) if peak else None
    row = {"key": key, "tokens_per_s": round(tokens_per_s, 1),
           "mfu": None if mfu is None else round(mfu, 4), "peak_gib": max(peaks) if peaks else None,
           "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss, 4),
           "note": f"{world} rank(s) on {device.type}, {B} x {T} tokens/rank/step, {S.train_steps} steps after "
                   f"{S.train_warmup}, loss {loss:.3f}; N = {n / 1e9:.3f}B; "
                   + (f"peak {peak / 1e12:.4g} TFLOP/s" if peak else "no peak FLOP/s for this device")}
    if loss != loss or abs(loss) == float("inf"):
        row["verdict"] = "FAIL"  # a non-finite loss: the throughput means nothing
    return row


def part_train(S: Sizes, device, amp, rows_path, keys=tuple(TRAIN_ROWS)) -> None:
    import torch.distributed as dist

    from r1lab.runtime import rank_and_world

    try:
        joined = join_world(device)
    except Exception as e:  # noqa: BLE001: no process group (NCCL?): both rows say why
        traceback.print_exc()
        if os.environ.get("RANK", "0") == "0":
            for key in keys:
                record(rows_path, error_row(key, e, 0.0))
        return
    main = rank_and_world()[0] == 0
    for key in keys:
        guarded([key], lambda: [train_once(S, device, amp, key)], S.budget_s["train"] / len(TRAIN_ROWS), rows_path,
                main)
    if joined:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------------
# The table

TARGETS = {"ratio": 5.0, "train": 0.40}  # vLLM / engine tokens/s; MFU compiled, without checkpointing
MEASURES = {"engine": "rollout tok/s, r1lab engine", "vllm": "rollout tok/s, vLLM", "ratio": "vLLM / engine",
            "train": "train MFU, FSDP2 + compile", "train_eager": "train MFU, FSDP2 eager",
            "train_gc": "train MFU, compile + grad ckpt", "sync": "vLLM weight sync",
            "rl": "r1lab rl, 2 steps + resume"}
LABELS = {"train": "b", "train_eager": "b", "train_gc": "b", "engine": "a", "vllm": "a", "ratio": "a", "sync": "d",
          "rl": "e"}
ORDER = ("engine", "vllm", "ratio", "train", "train_eager", "train_gc", "sync", "rl")


KEYS = {"engine": ["engine"], "vllm": ["vllm"], "train": list(TRAIN_ROWS), "sync": ["sync"],
        "rl": ["rl"]}  # part -> rows


def finish_rows(rows: list[dict], smoke: bool, parts=PARTS, train_rows=tuple(TRAIN_ROWS)) -> list[dict]:
    """The rows of `parts` in table order with the ratio row added, verdicts set against the targets (none in smoke
    mode), and an ERROR row for every expected one that is missing (its process died or was killed)."""
    by_key = {r["key"]: r for r in rows}
    e, v = by_key.get("engine", {}), by_key.get("vllm", {})
    if e.get("tokens_per_s") and v.get("tokens_per_s"):
        by_key["ratio"] = {"key": "ratio", "ratio": round(v["tokens_per_s"] / e["tokens_per_s"], 3)}
    elif "engine" in by_key and "vllm" in by_key:
        by_key["ratio"] = {"key": "ratio", "verdict": "SKIP" if "SKIP" in (e.get("verdict"), v.get("verdict"))
                           else "ERROR", "note": "needs both rollout rows"}
    keys = {**KEYS, "train": list(train_rows)}
    expected = {k for p in parts for k in keys[p]}
    expected |= {"ratio"} if {"engine", "vllm"} <= set(parts) else set()
    out = []
    for key in [k for k in ORDER if k in expected]:
        r = dict(by_key.get(key) or {"key": key, "verdict": "ERROR",
                                     "note": "no result: its process died or was killed (see the log above)"})
        target = None if smoke else TARGETS.get(key)
        value = r.get("ratio", r.get("mfu"))
        if "verdict" not in r:
            r["verdict"] = "ok" if target is None or value is None else "PASS" if value >= target else "FAIL"
        r["part"], r["measure"], r["target"] = LABELS[key], MEASURES[key], target
        out.append(r)
    return out


def result_text(r: dict) -> str:
    if r["verdict"] in ("ERROR", "SKIP"):
        return "-"
    if r["key"] == "ratio":
        return f"{r['ratio']:.2f}x"
    if r["key"] == "sync":
        return f"{r['after']:.3g} {'<=' if r['after'] <= r['tol'] else '>'} {r['tol']:.3g}"
    if r["key"] == "rl":
        return "runs, resumes" if r["verdict"] == "PASS" else "-"
    if r["key"].startswith("train"):
        mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        return f"{mfu} ({r['tokens_per_s']:,.0f} tok/s)"
    return f"{r['tokens_per_s']:,.0f}"


def target_text(r: dict) -> str:
    t = r["target"]
    if t is None:
        return {"sync": "logp match", "rl": "exit 0"}.get(r["key"], "-")
    return f">= {t:g}x" if r["key"] == "ratio" else f">= {100 * t:.0f}%"


def table(rows: list[dict]) -> str:
    head = ("part", "measure", "result", "target", "verdict", "peak GiB", "time s", "note")
    lines = [(r["part"], r["measure"], result_text(r), target_text(r), r["verdict"],
              "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}",
              "-" if r.get("seconds") is None else f"{r['seconds']:.0f}", r.get("note", "")) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*x).rstrip() for x in [head, *lines])


def report(rows_path, json_path, smoke: bool, parts=PARTS, dtype: str = "", train_rows=tuple(TRAIN_ROWS)) -> int:
    """Print the table of the rows in rows_path (and write it as JSON); 1 when a row is ERROR or FAIL, or on a GPU
    SKIP (vLLM missing: the check is not complete)."""
    lines = Path(rows_path).read_text().splitlines() if Path(rows_path).exists() else []
    rows = finish_rows([json.loads(x) for x in lines if x.strip()], smoke, parts, train_rows)
    env = environment()
    print(f"\ngpu_check{f' (smoke: tiny configs, {dtype or SMOKE.dtype}, CPU; no targets)' if smoke else ''}: "
          + ", ".join(f"{k} {v}" for k, v in env.items() if k != "devices") + f"; {', '.join(env['devices'])}")
    print(table(rows))
    if json_path:
        Path(json_path).write_text(json.dumps({"smoke": smoke, "environment": env, "rows": rows}, indent=1) + "\n")
    return int(any(r["verdict"] in ("ERROR", "FAIL") or (r["verdict"] == "SKIP" and not smoke) for r in rows))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny configs, fp32, CPU (automatic without CUDA)")
    ap.add_argument("--part", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--rows", help="append each part's rows to this JSONL file (default: a temporary one)")
    ap.add_argument("--table", metavar="ROWS", help="only print the table of a rows file")
    ap.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    ap.add_argument("--vllm-eager", action="store_true", help="vLLM without CUDA graphs / torch.compile")
    ap.add_argument("--bf16", action="store_true", help="smoke in bf16 (the GPU's dtypes; a CPU with avx512_bf16)")
    ap.add_argument("--train-rows", default=",".join(TRAIN_ROWS), help=f"part b's rows, of {', '.join(TRAIN_ROWS)}")
    args = ap.parse_args(argv)
    smoke = args.smoke or not torch.cuda.is_available()
    train_rows = [k.strip() for k in args.train_rows.split(",") if k.strip()]
    if unknown := set(train_rows) - set(TRAIN_ROWS):
        ap.error(f"unknown train row(s) {', '.join(sorted(unknown))}; valid: {', '.join(TRAIN_ROWS)}")
    if args.table:
        return report(args.table, args.json, smoke, dtype="bf16" if args.bf16 else "", train_rows=train_rows)
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    if unknown := set(parts) - set(PARTS):
        ap.error(f"unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    S = SMOKE if smoke else GPU
    if args.bf16:
        S = dataclasses.replace(S, dtype="bf16")
    device = torch.device("cpu") if smoke else torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    amp = torch.bfloat16 if S.dtype == "bf16" else None
    if smoke:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 1)))  # before vLLM: it pins the count
    rows_path = args.rows
    if rows_path is None:  # everything in this process: a temporary rows file, the table at the end
        import tempfile

        rows_path = tempfile.mkstemp(prefix="gpu_check-", suffix=".jsonl")[1]
    if "train" in parts:  # first: it leaves no process group behind for vLLM's own
        part_train(S, device, amp, rows_path, train_rows)
    if {"engine", "vllm", "sync"} & set(parts):
        part_rollouts(S, device, amp, parts, rows_path, args.vllm_eager)
    if "rl" in parts:
        part_rl(S, rows_path)
    if args.rows is None:
        return report(rows_path, args.json, smoke, parts, S.dtype, train_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
