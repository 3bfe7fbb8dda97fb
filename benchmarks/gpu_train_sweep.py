"""Where the GPU check's training MFU goes (part b of benchmarks/gpu_check.py): the same 1.5B Qwen2 step on one GPU,
varied one lever at a time, each timed as forward+backward and optimizer step apart.

    python benchmarks/gpu_train_sweep.py [--smoke] [--variants base,fused,...] [--json FILE]

Variants (each against `base`, which is gpu_check's part b: r1lab.parallel.shard's FSDP2 with bf16 parameters, fp32
master weights, AdamW's default foreach step, 8 x 1024 tokens, the full logits cast to fp32 for the loss):
  base       as above
  fused      AdamW(fused=True)
  batch16    16 x 1024 tokens a step
  noreshard  the layers keep their gathered parameters from forward to backward (set_reshard_after_forward(False))
  nofsdp     no FSDP: the fp32 model under bf16 autocast
  nofsdp_chunkloss  nofsdp, the loss from the last hidden state 1024 positions at a time, without the full (B, T, V)
             fp32 logits (no FSDP: under FSDP2 the root's parameters are gathered only inside its own forward)
  nofsdp_compile  nofsdp, each decoder layer under torch.compile (its elementwise work fused); the compile happens
             in the warm-up steps, untimed
  compile    base with r1lab's own torch_compile (parallel.compile_layers, and the loss compiled as `r1lab sft`'s)
             and fused AdamW: gpu_check's part b row
  compile_batch16  compile with 16 x 1024 tokens a step
  rl_pass, rl_pass_compile  RL's training pass instead (rl.rollouts.response_logp + backward, fp32 model under bf16
             autocast, no FSDP, as `r1lab rl` on one GPU): 8 rows, 2 distinct prompts of 256 tokens, responses of
             1024 - 128 k tokens in row k, eager or with torch_compile (each prompt once, then its responses over the
             prompt's KV cache: one compiled graph per layer). Tokens/s counts prompts once and real response tokens.
MFU = 6 N tokens/s / peak, N the body and head parameters (gpu_check's figure); attention's FLOPs are not counted.
Without CUDA (or with --smoke) it runs gpu_check's smoke sizes on the CPU in fp32, to prove the code paths.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F

from gpu_check import join_world
from gpu_common import GPU, SMOKE, VOCAB, build_model, free_memory, peak_gib, reset_peak

VARIANTS = ("base", "fused", "batch16", "noreshard", "nofsdp", "nofsdp_chunkloss", "nofsdp_compile", "compile",
            "compile_batch16", "rl_pass", "rl_pass_compile")


def chunked_loss(model, ids, targets, total: int, chunk: int = 1024):
    """Sum of cross-entropy / total from the last hidden state, `chunk` positions at a time, each chunk's logits
    recomputed in backward (checkpoint) rather than kept: equal to the full-logits loss."""
    from torch.utils.checkpoint import checkpoint

    h = model.model(input_ids=ids, use_cache=False).last_hidden_state.flatten(0, 1)  # (B*T, D)
    y = targets.flatten()
    head = model.lm_head

    def part(hc, yc):
        return F.cross_entropy(head(hc).float(), yc, reduction="sum")

    return sum(checkpoint(part, h[i:i + chunk], y[i:i + chunk], use_reentrant=False)
               for i in range(0, h.size(0), chunk)) / total


def run_variant(S, device, amp, variant: str) -> dict:
    from r1lab.cost.account import device_peak_flops
    from r1lab.cost.flops import shape_of
    from r1lab.parallel import ScaleConfig, compile_layers, cross_entropy_sum, shard

    if variant.startswith("rl_pass"):
        return rl_pass_variant(S, device, amp, variant)
    free_memory(device)
    reset_peak(device)
    model = build_model(S.train_model, device).train()
    fsdp = not variant.startswith("nofsdp")
    if variant.startswith("compile"):
        compile_layers(model)
    if variant == "nofsdp_compile":
        layers = model.model.layers
        for i in range(len(layers)):
            layers[i] = torch.compile(layers[i])
    if fsdp:
        model = shard(model, ScaleConfig(fsdp=True), amp)
        if variant == "noreshard":
            for m in model.modules():
                if hasattr(m, "reshard"):  # an FSDPModule
                    m.set_reshard_after_forward(False)
    fused = variant == "fused" or variant.startswith("compile")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **({"fused": True} if fused else {}))
    B, T = S.train_batch * (2 if variant.endswith("batch16") else 1), S.train_seq
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randint(3, VOCAB, (B, T + 1), device=device, generator=g)
    autocast = torch.autocast(device.type, dtype=amp, enabled=amp is not None and not fsdp)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        t0 = time.perf_counter()
        with autocast:
            if variant == "nofsdp_chunkloss":
                loss = chunked_loss(model, x[:, :-1], x[:, 1:], B * T)
            else:
                logits = model(input_ids=x[:, :-1], use_cache=False).logits
                loss = cross_entropy_sum(logits, x[:, 1:], compiled=variant.startswith("compile")) / (B * T)
        loss.backward()
        sync()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return loss.detach(), t1 - t0, time.perf_counter() - t1

    for _ in range(S.train_warmup):
        step()
    runs = [step() for _ in range(S.train_steps)]
    fb, op = sum(r[1] for r in runs), sum(r[2] for r in runs)
    tokens_per_s = B * T * S.train_steps / (fb + op)
    s = shape_of(model.config)
    n = s.body_params + s.head_params
    peak = device_peak_flops(device, "bf16" if amp is not None else "fp32")
    row = {"variant": variant, "tokens_per_s": round(tokens_per_s, 1),
           "mfu": round(6 * n * tokens_per_s / peak, 4) if peak else None,
           "fwd_bwd_ms": round(1000 * fb / S.train_steps, 1), "opt_ms": round(1000 * op / S.train_steps, 1),
           "peak_gib": peak_gib(device), "loss": round(float(runs[-1][0]), 4), "tokens_per_step": B * T}
    print("gpu_train_sweep: " + json.dumps(row), flush=True)
    del model, opt
    return row


def rl_pass_variant(S, device, amp, variant: str) -> dict:
    """RL's training pass (response_logp, forward + backward) eager or under torch_compile; see the docstring."""
    from r1lab.parallel import compile_layers
    from r1lab.rl.rollouts import response_logp

    free_memory(device)
    reset_peak(device)
    model = build_model(S.train_model, device).train()
    if variant == "rl_pass_compile":
        compile_layers(model)
    B, P, T = S.train_batch, S.train_seq // 4, S.train_seq
    g = torch.Generator().manual_seed(2)
    prompts = [tuple(torch.randint(3, VOCAB, (P,), generator=g).tolist()) for _ in range(2)]
    rows = [prompts[i % 2] for i in range(B)]
    lengths = [max(1, T - k * T // B) for k in range(B)]  # 1024, 896, ... 128 at full size
    ids = torch.randint(3, VOCAB, (B, T), generator=g).to(device)
    attn = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long().to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(width: int):
        t0 = time.perf_counter()
        logp, _ = response_logp(model, rows, ids[:, :width], attn[:, :width], amp)
        (logp * attn[:, :width]).sum().backward()
        sync()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, sum(min(n, width) for n in lengths) + len(prompts) * P

    # widths vary as RL's do from step to step (each micro-batch runs to its longest row): the compile's static
    # graph, then its dynamic one, come in the warm-up
    widths = [T - (i % 3) * (T // 8) for i in range(S.train_warmup + S.train_steps + 1)]
    for w in widths[:S.train_warmup + 1]:
        step(w)
    runs = [step(w) for w in widths[S.train_warmup + 1:]]
    t, tokens = sum(r[0] for r in runs), sum(r[1] for r in runs)
    row = {"variant": variant, "tokens_per_s": round(tokens / t, 1), "mfu": None,
           "fwd_bwd_ms": round(1000 * t / len(runs), 1), "opt_ms": 0.0, "peak_gib": peak_gib(device),
           "loss": None, "tokens_per_step": round(tokens / len(runs))}
    print("gpu_train_sweep: " + json.dumps(row), flush=True)
    del model
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="gpu_check's smoke sizes on the CPU (automatic without CUDA)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(variants) - set(VARIANTS):
        ap.error(f"unknown variant(s) {', '.join(sorted(unknown))}; valid: {', '.join(VARIANTS)}")
    smoke = args.smoke or not torch.cuda.is_available()
    S = SMOKE if smoke else GPU
    device = torch.device("cpu") if smoke else torch.device("cuda:0")
    amp = None if S.dtype == "fp32" else torch.bfloat16
    joined = join_world(device)
    rows = [run_variant(S, device, amp, v) for v in variants]
    if joined:
        torch.distributed.destroy_process_group()
    print(f"{'variant':<17} {'tok/s':>9} {'MFU':>6} {'fwd+bwd ms':>10} {'opt ms':>7} {'peak GiB':>8}  loss")
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
        print(f"{r['variant']:<17} {r['tokens_per_s']:>9,.0f} {mfu:>6} {r['fwd_bwd_ms']:>10} {r['opt_ms']:>7} "
              f"{r['peak_gib'] if r['peak_gib'] is not None else '-':>8}  "
              f"{r['loss'] if r['loss'] is not None else '-'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
