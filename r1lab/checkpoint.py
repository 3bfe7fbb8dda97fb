"""Atomic Hugging Face checkpoints with exact-resume state.

Layout of a run directory:

    RUN/checkpoints/step_000200/   a Hugging Face model dir (safetensors, config, tokenizer, generation config,
                                   r1lab_config.json) plus trainer_state.pt (optimizer, RNG, counters)
    RUN/checkpoints/latest         the name of the newest complete checkpoint
    RUN/metrics.jsonl              one JSON object per step

subtle: a checkpoint is written to a temporary sibling directory, flushed, then renamed; `latest` is replaced
with os.replace. A crash or kill -9 at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from r1lab.jsonl import write_text_atomic


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_model_dir(path: Path, model, tokenizer, config: dict | None = None, dtype=None, state_dict=None) -> None:
    """A Hugging Face model directory at `path` (not atomic by itself; see save_checkpoint). state_dict: the weights
    to write instead of the model's own (gathered from FSDP shards, or LoRA merged: r1lab/parallel.py)."""
    path.mkdir(parents=True, exist_ok=True)
    state = state_dict
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in (state_dict or model.state_dict()).items()}
    model.save_pretrained(path, safe_serialization=True, state_dict=state)
    save_tokenizer(path, tokenizer)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)
    if config is not None:
        (path / "r1lab_config.json").write_text(json.dumps(config, indent=2, default=str))


PORTABLE_TOKENIZER_CLASSES = {"TokenizersBackend": "PreTrainedTokenizerFast"}  # transformers 5 name -> 4.x and 5.x


def save_tokenizer(path: Path, tokenizer) -> None:
    """tokenizer.save_pretrained(path), loadable by every transformers the project allows (>= 4.51).

    subtle: transformers 5 writes "tokenizer_class": "TokenizersBackend" for a plain fast tokenizer, a class 4.x
    lacks (AutoTokenizer fails there); "PreTrainedTokenizerFast" names the same tokenizer in 4.x and 5.x, so it is
    written instead. A model's own class (Qwen2Tokenizer, ...) is left as it is."""
    tokenizer.save_pretrained(path)
    config_file = Path(path) / "tokenizer_config.json"
    if not config_file.exists():
        return
    config = json.loads(config_file.read_text())
    if config.get("tokenizer_class") in PORTABLE_TOKENIZER_CLASSES:
        config["tokenizer_class"] = PORTABLE_TOKENIZER_CLASSES[config["tokenizer_class"]]
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def rng_state() -> dict:
    """Every generator a run draws from: Python's, numpy's, torch's CPU one and, on a GPU, the current device's."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # a GPU run's state; a CPU run resumes without it
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(run_dir, step: int, model, tokenizer, config: dict, trainer_state: dict | None = None,
                    keep_last: int = 2) -> Path:
    """Write RUN/checkpoints/step_NNNNNN atomically, point `latest` at it, and prune old ones."""
    tmp = begin_checkpoint(run_dir, step)
    save_model_dir(tmp, model, tokenizer, config)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer_state.pt")
    return commit_checkpoint(run_dir, step, tmp, keep_last)


def begin_checkpoint(run_dir, step: int) -> Path:
    """An empty temporary directory beside the checkpoint of `step`, for its files (named without a pid, so that the
    ranks of a sharded save can all write into it; one writer per run directory at a time)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def commit_checkpoint(run_dir, step: int, tmp: Path, keep_last: int) -> Path:
    """Flush every file under `tmp`, rename it to step_NNNNNN, point `latest` at it, prune old checkpoints."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{step:06d}"
    for f in sorted(tmp.rglob("*"), key=lambda f: -len(f.parts)):  # files first, each folder after its contents
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        else:
            _fsync_dir(f)
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step after a resume
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_text_atomic(root / "latest", final.name)
    kept = list_checkpoints(run_dir)
    for old in kept[:-keep_last] if keep_last > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # leftovers of killed writers
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(".latest.tmp-*"):  # write_text_atomic's, killed between its write and its rename
        stale.unlink(missing_ok=True)
    return final


def list_checkpoints(run_dir) -> list[Path]:
    """RUN/checkpoints/step_* directories, oldest first (finished ones: a writer's temporary is named .tmp-*)."""
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if p.is_dir())


def latest_checkpoint(run_dir) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_trainer_state(ckpt: Path) -> dict:
    """The trainer state on the CPU: every rank reads rank 0's file, whose optimizer state was saved from cuda:0, and
    optimizer.load_state_dict moves each tensor to its parameter's device (so no rank piles it onto cuda:0, and a GPU
    run resumes on a machine without one)."""
    return torch.load(Path(ckpt) / "trainer_state.pt", weights_only=False, map_location="cpu")


def restore_trainer_state(ckpt: Path, optimizer=None) -> dict:
    """Load a checkpoint's trainer state into the global RNGs and, when given, `optimizer` (rl and sft restore theirs
    by parallel.restore_optimizer, which reads a sharded one too); returns the state for the rest."""
    state = load_trainer_state(ckpt)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state
