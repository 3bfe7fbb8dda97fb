"""From a user's model argument to a loaded model: ONE resolver for every command and stage.

A model argument is any of:
    countdown-base                  a base shipped inside the package (r1lab/assets/NAME), no download
    runs/rl                         a run directory: its latest finished checkpoint (RUN/checkpoints/latest)
    runs/rl/checkpoints/step_000025 a checkpoint, or any local Hugging Face model directory
    Qwen/Qwen2.5-0.5B               a hub id (needs the model in the local Hugging Face cache, or network access)

    path = resolve_checkpoint("runs/rl")            # "runs/rl/checkpoints/step_000025"
    model, tokenizer, path = load_checkpoint("runs/rl", device=torch.device("cpu"))
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


class CheckpointError(ValueError):
    """A model argument that names nothing loadable; the message says what was found instead."""


def shipped_models() -> list[str]:
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").exists()) if ASSETS.exists() else []


def _looks_local(arg: str) -> bool:
    """Whether a missing `arg` was meant as a local path rather than a hub id ("org/name" or "name")."""
    return arg.startswith((".", "/", "~")) or arg.count("/") > 1 or arg.endswith("/") or "\\" in arg


def resolve_checkpoint(arg: str | Path) -> str:
    """The directory (or hub id) a model argument stands for; see the module docstring for the forms.

    A run directory resolves to its newest finished checkpoint; one without any is an error, as is a local path
    that does not exist. Anything else that is not a local directory is taken as a hub id and returned unchanged.
    """
    from r1lab.checkpoint import latest_checkpoint

    text = str(arg)
    if not text:
        raise CheckpointError("empty model argument")
    if (ASSETS / text / "config.json").exists() and not Path(text).exists():
        return str(ASSETS / text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").exists() or (path / "adapter_config.json").exists():
            return str(path)
        latest = latest_checkpoint(path)
        if latest is not None:
            return str(latest)
        if (path / "checkpoints").is_dir() or (path / "metrics.jsonl").exists():
            raise CheckpointError(f"{text}: a run directory without a finished checkpoint")
        raise CheckpointError(f"{text}: a directory without config.json and not a run directory")
    if path.exists():
        raise CheckpointError(f"{text}: a file, not a model directory")
    if _looks_local(text):
        raise CheckpointError(f"{text}: no such file or directory")
    return text


def load_model(path_or_id: str, dtype=None, merge_adapter: bool = True):
    """(model, tokenizer) from a resolved model directory or hub id; the tokenizer pads on the left.

    A LoRA checkpoint (adapter_config.json, no config.json: r1lab.parallel) loads its base and the adapter, merged
    into the base's weights unless merge_adapter is False (then the peft model). Raises CheckpointError, one line
    naming the directory, when transformers cannot read it (a truncated, empty or garbage model.safetensors, a broken
    config, a hub id that is neither cached nor reachable).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path_or_id)
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        return _load_adapter(path, dtype, merge_adapter)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if isinstance(e, SafetensorError):
            first = f"its model.safetensors is not a readable safetensors file ({first})"
        raise CheckpointError(f"cannot load a model from {path_or_id}: {first}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def _load_adapter(path: Path, dtype, merge: bool):
    """A peft adapter directory on its base: merged (a plain model) or the peft model; the adapter's tokenizer."""
    from transformers import AutoTokenizer

    from r1lab.parallel import adapter_base

    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(f"{path} holds a LoRA adapter, and loading it needs peft: pip install "
                              f"'r1lab[lora]'") from None
    base = adapter_base(path)
    model, _ = load_model(resolve_checkpoint(base), dtype)
    try:
        model = PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"cannot load the LoRA adapter in {path} onto {base}: {first}") from None
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return (model.merge_and_unload() if merge else model), tokenizer


def load_checkpoint(arg: str | Path, device=None, dtype=None):
    """(model, tokenizer, resolved path) for any model argument, on `device` (default: runtime.device()).

    Raises CheckpointError with one line naming what failed (a missing path, a run without checkpoints, a model
    directory transformers cannot read).
    """
    from r1lab import runtime

    path = resolve_checkpoint(arg)
    model, tokenizer = load_model(path, dtype)
    return model.to(device if device is not None else runtime.device()), tokenizer, path
