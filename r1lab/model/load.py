"""From a user's model argument to a loaded model: ONE resolver for every command and stage.

A model argument is any of:
    countdown-base                  a base shipped inside the package (r1lab/assets/NAME), no download
    runs/rl                         a run directory: its latest finished checkpoint (RUN/checkpoints/latest)
    runs/rl/checkpoints/step_000025 a checkpoint, or any local Hugging Face model directory
    Qwen/Qwen2.5-0.5B               a hub id (needs the model in the local Hugging Face cache, or network access)

    path = resolve_checkpoint("runs/rl")            # "runs/rl/checkpoints/step_000025"
    resolve_checkpoint("Qwen/Qwen2.5-3B")           # "Qwen/Qwen2.5-3B" when cached or on the hub, else CheckpointError
    model, tokenizer, path = load_checkpoint("runs/rl", device=torch.device("cpu"))
"""
from __future__ import annotations

import json
import os
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
    that does not exist. Anything else that is not a local directory is taken as a hub id and returned unchanged,
    once check_hub_model finds it in the local Hugging Face cache or on the hub (else a one-line CheckpointError).
    """
    from r1lab.checkpoint import latest_checkpoint

    text = str(arg)
    if not text:
        raise CheckpointError("empty model argument")
    if (ASSETS / text / "config.json").exists() and not Path(text).exists():
        return str(ASSETS / text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").exists() or is_adapter_dir(path):
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
    parent = path.parent
    try:
        check_hub_model(text)
    except CheckpointError as e:
        if parent != Path(".") and parent.is_dir():  # "runs/nope" with a runs/ here: most likely a mistyped run
            raise CheckpointError(f"{text}: no such directory ({parent}/ is here, without {path.name}); as a Hugging "
                                  f"Face hub id: {str(e).removeprefix(text + ': ')}") from None
        raise
    return text


HUB_TIMEOUT_S = 5.0  # how long the availability check waits for the hub before calling the model unreachable


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import):
    HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) set to 1 / true / yes / on, read now."""
    return any(os.environ.get(k, "").upper() in ("1", "ON", "TRUE", "YES") for k in ("HF_HUB_OFFLINE",
                                                                                    "TRANSFORMERS_OFFLINE"))


def check_hub_model(repo_id: str, timeout: float = HUB_TIMEOUT_S) -> None:
    """Nothing when the hub model `repo_id` can be loaded: its config.json is in the local Hugging Face cache (no
    network touched), or the hub answers for it within `timeout` seconds. Otherwise a one-line CheckpointError saying
    why and how to get the model; with HF_HUB_OFFLINE=1 the hub is never asked.

        check_hub_model("Qwen/Qwen2.5-3B")   # offline and not cached: CheckpointError("Qwen/Qwen2.5-3B: not
                                             # available offline: ...; download it with `hf download ...`")
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    cache = hub_cache_dir()
    try:
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
    except HFValidationError as e:
        raise CheckpointError(f"{repo_id}: not a local path, and not a Hugging Face hub id "
                              f"({_first_line(e)})") from None
    if isinstance(cached, str):  # a path; None or a "known missing" sentinel otherwise
        return
    get = (f"download it with `hf download {repo_id}` (`huggingface-cli download` before huggingface_hub 1.0), "
           f"or give a local model directory: --model PATH or --set model=PATH")
    shipped = f"; shipped bases: {', '.join(shipped_models())}" if "/" not in repo_id and shipped_models() else ""
    if hub_offline():
        raise CheckpointError(f"{repo_id}: not available offline: not in the Hugging Face cache ({cache}) and "
                              f"HF_HUB_OFFLINE is set; {get}{shipped}")
    unreachable, reason = _ask_hub(repo_id, timeout)
    if reason is not None:
        raise CheckpointError(f"{repo_id}: not available{' offline' if unreachable else ''}: not in the Hugging Face "
                              f"cache ({cache}) and {reason}; {get}{shipped}")


def _ask_hub(repo_id: str, timeout: float) -> tuple[bool, str | None]:
    """(unreachable, why not): (False, None) when the hub serves repo_id's config.json (one HEAD request, `timeout`
    seconds at most); else whether the hub could not be reached at all, and what went wrong in words."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)
    except GatedRepoError:
        return False, "it is gated on the hub: accept its terms on huggingface.co and log in (`hf auth login`)"
    except RepositoryNotFoundError:
        return False, "the hub has no such model (or a private one: log in with `hf auth login`)"
    except EntryNotFoundError:
        return False, "its hub repository has no config.json (not a transformers model)"
    except HfHubHTTPError as e:
        return False, f"the hub answered with an error ({_first_line(e)})"
    except Exception as e:
        # subtle: the transport's errors differ by huggingface_hub release (requests, httpx, httpx2) and share no
        # base class but Exception; whichever it is, the hub did not answer, and that is what the caller must know
        return True, f"the hub could not be reached ({_first_line(e)})"
    return False, None


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"


def is_adapter_dir(path) -> bool:
    """A LoRA checkpoint (r1lab.parallel): peft's adapter files, the base named inside."""
    return (Path(path) / "adapter_config.json").exists()


def adapter_base(path) -> str:
    """The base model an adapter directory was trained on (its adapter_config.json's base_model_name_or_path)."""
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def trained_template(path) -> str | None:
    """The chat turns (task.messages' template, "r1" or "short") of the prompts a checkpoint r1lab wrote was trained
    on: its r1lab_config.json's `template` ("short" for the shipped bases and the recipes), or for a chat template
    the turns it renders ("chat" -> "short", "chat-r1" -> "r1"). None for a hub id or any directory r1lab did not write.

    >>> trained_template(ASSETS / "countdown-base"), trained_template("Qwen/Qwen2.5-0.5B")
    ('short', None)
    """
    from r1lab.prompts import CHAT_TEMPLATES
    from r1lab.tasks.common import TEMPLATES

    template = saved_config(path).get("template")
    template = CHAT_TEMPLATES.get(template, template)
    return template if template in TEMPLATES else None


def saved_config(path) -> dict:
    """The r1lab_config.json of a checkpoint r1lab wrote (the config of the run that wrote it); {} for a hub id,
    another directory or an unreadable file."""
    try:
        config = json.loads((Path(path) / "r1lab_config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def trained_task_args(path, task: str) -> str | None:
    """The generator knobs ("k=v,k=v") of the problems a checkpoint r1lab wrote was trained on when its task is
    `task`: an RL run's held-out knobs (eval_task_args) where it has them, else its training knobs. None for another
    task, no knobs, a hub id or a directory r1lab did not write.

    >>> trained_task_args(ASSETS / "countdown-base", "countdown"), trained_task_args("Qwen/Qwen2.5-0.5B", "countdown")
    ('min_numbers=3,max_numbers=4,max_number=12,max_target=100', None)
    """
    config = saved_config(path)
    if config.get("task") != task:
        return None
    knobs = config.get("eval_task_args") or config.get("task_args")
    return knobs if isinstance(knobs, str) and knobs.strip() else None


def load_model(path_or_id: str, dtype=None):
    """(model, tokenizer) from a resolved model directory or hub id; the tokenizer pads on the left. The weights are in
    `dtype`, else as transformers loads them: the dtype the checkpoint stores (transformers 5; 4.x loaded float32).

    subtle: hub models are stored in bf16, and AdamW on bf16 weights rounds small updates away (at lr 5e-7 a step
    moves a weight of 0.02 by ~1e-8, against bf16's spacing of ~1e-4 there). So whatever trains every weight asks for
    torch.float32 (autocast or FSDP's mixed precision runs the compute in bf16); inference, and LoRA's frozen base
    (peft keeps its adapters in float32), keep the stored dtype: half the memory.

    A LoRA checkpoint (adapter_config.json, no config.json: r1lab.parallel) loads its base and the adapter, merged
    into the base's weights (a plain model). Raises CheckpointError, one line naming the directory, when transformers
    cannot read it (a truncated, empty or garbage model.safetensors, a broken config, a hub id that is neither cached
    nor reachable).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if is_adapter_dir(path_or_id) and not (Path(path_or_id) / "config.json").exists():
        return _load_adapter(Path(path_or_id), dtype)
    folder = Path(path_or_id)
    if folder.is_dir() and not any((folder / name).exists() for name in TOKENIZER_FILES):
        # subtle: transformers 5 then builds an empty tokenizer (every text encodes to []), which fails far away
        raise CheckpointError(f"{path_or_id} holds no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...): save it "
                              f"with the model, tokenizer.save_pretrained({str(path_or_id)!r})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, **({"dtype": dtype} if dtype is not None else {}))
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        first = _error_line(e)
        if isinstance(e, SafetensorError):
            first = f"its model.safetensors is not a readable safetensors file ({first})"
        raise CheckpointError(f"cannot load a model from {path_or_id}: {first}") from None
    return model, _left_padded(tokenizer)


# What a saved tokenizer writes: fast (tokenizer.json), or a slow one's vocabulary (BPE, SentencePiece, WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "merges.txt")


def _error_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _left_padded(tokenizer):
    """The tokenizer padding on the left (the engine's layout), with EOS as its pad token when it has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _load_adapter(path: Path, dtype):
    """A peft adapter directory merged into its base (itself loaded by load_model: an adapter on an adapter works),
    with the adapter's tokenizer."""
    from transformers import AutoTokenizer

    try:
        from peft import PeftModel
    except ImportError:
        raise CheckpointError(f"{path} holds a LoRA adapter, and loading it needs peft: pip install "
                              f"'r1lab[lora]'") from None
    base = adapter_base(path)
    try:
        model, _ = load_model(resolve_checkpoint(base), dtype)
    except CheckpointError as e:
        raise CheckpointError(f"{path} is a LoRA adapter whose base (base_model_name_or_path in its "
                              f"adapter_config.json) cannot be loaded: {e}") from None
    try:
        model = PeftModel.from_pretrained(model, str(path))
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot load the LoRA adapter in {path} onto {base}: {_error_line(e)}") from None
    return model.merge_and_unload(), _left_padded(AutoTokenizer.from_pretrained(str(path)))


def load_checkpoint(arg: str | Path, device=None, dtype=None):
    """(model, tokenizer, resolved path) for any model argument, on `device` (default: runtime.device()).

    Raises CheckpointError with one line naming what failed (a missing path, a run without checkpoints, a model
    directory transformers cannot read).
    """
    from r1lab import runtime

    path = resolve_checkpoint(arg)
    model, tokenizer = load_model(path, dtype)
    return model.to(device if device is not None else runtime.device()), tokenizer, path
