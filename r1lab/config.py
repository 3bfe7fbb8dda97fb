"""Flat stage configs: one dataclass per stage, loaded from a TOML recipe and `--set key=value` overrides.

    cfg = load_config(PretrainConfig, "recipes/countdown_base.toml", ["lr=1e-3", "steps=200"])

Unknown keys are an error that lists the valid ones; values are converted to the field's type.

A stage config may inherit a small dataclass of knobs that another module owns (PretrainConfig inherits
r1lab.pretrain.corpus.CorpusConfig): it stays flat, and the inherited fields are keys like any other.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    pass


def _convert(name: str, value, typ):
    """Convert a recipe or command-line value to the field's declared type."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin is typing.Union or (origin is not None and type(None) in args):  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _convert(name, value, inner[0])
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {value!r}")
    if typ in (int, float, str):
        given = value
        try:
            if isinstance(value, bool) and typ is not str:
                raise ValueError  # TOML's true is not a number
            if typ is int and isinstance(value, str) and "e" in value.lower():
                value = float(value)  # "1e3": a whole number written in scientific notation
            if typ is int and isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise ValueError
            return typ(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected {typ.__name__}, got {given!r}") from None
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()] if not value.startswith("[") else json.loads(value)
        return origin(_convert(name, v, args[0]) for v in value)
    return value


def _cli_value(key: str, text: str) -> str:
    """A `--set` value: stripped, unless written as a TOML string ("\\ngive up" or 'C:\\x'), which keeps its
    spaces and, in double quotes, its escapes, as in a recipe."""
    text = text.strip()
    if len(text) < 2 or text[0] not in "\"'" or text[-1] != text[0]:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--set {key}: {text} is not a valid TOML string: {e}") from None


def config_fields(cls) -> dict[str, dataclasses.Field]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def load_config(cls, recipe: str | Path | None = None, overrides: list[str] | None = None, **kwargs):
    """Build `cls` from a TOML recipe, then `key=value` overrides, then keyword arguments (highest priority)."""
    fields = config_fields(cls)
    values: dict = {}

    def put(key, value, where):
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key {key!r} in {where}; valid keys for {cls.__name__}: {valid}")
        values[key] = _convert(key, value, fields[key][1])

    if recipe is not None:
        path = Path(recipe)
        if not path.exists():
            raise ConfigError(f"recipe not found: {path}")
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path}: not valid TOML: {e}") from None
        for key, value in data.items():
            put(key, value, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        put(key.strip(), _cli_value(key.strip(), value), "--set")
    for key, value in kwargs.items():
        put(key, value, "arguments")
    return cls(**values)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def format_config(cfg) -> str:
    """The resolved config, one `key = value` per line, as printed at the start of a run."""
    return "\n".join(f"{k} = {v!r}" for k, v in config_to_dict(cfg).items())


# --- checks -------------------------------------------------------------------------------------------------------
# A stage declares the allowed range of each numeric field as text, and check_config() enforces it before any work
# starts, with one line naming the key, the value and the range:
#     check_config(cfg, {"lr": "> 0", "steps": ">= 1", "top_p": "(0, 1]"})  ->  ConfigError("lr = -1.0: must be > 0")
# Every float field must also be finite (None stays allowed for optional fields).

def _within(value, rule: str) -> bool:
    rule = rule.strip()
    if rule[0] in "([":
        lo, hi = (float(x) for x in rule[1:-1].split(","))
        return (lo <= value if rule[0] == "[" else lo < value) and (value <= hi if rule[-1] == "]" else value < hi)
    op, bound = rule.split()
    bound = float(bound)
    return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[op]


def check_config(cfg, ranges: dict[str, str], choices: dict[str, tuple] | None = None) -> None:
    """ConfigError for the first field outside its range or its choices, or a float field that is not finite."""
    for name, (field, typ) in config_fields(type(cfg)).items():
        value = getattr(cfg, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} = {value!r}: must be a finite number")
        if name in ranges and value is not None and not _within(value, ranges[name]):
            raise ConfigError(f"{name} = {value!r}: must be {ranges[name]}")
        if choices and name in choices and value not in choices[name]:
            raise ConfigError(f"{name} = {value!r}: must be one of {', '.join(map(str, choices[name]))}")
    unknown = set(ranges) - set(config_fields(type(cfg)))
    if unknown:
        raise ValueError(f"check_config: no fields {sorted(unknown)} in {type(cfg).__name__}")


def check_stage(cfg, ranges: dict[str, str], choices: dict[str, tuple] | None = None,
                knob_keys: tuple[str, ...] = ("task_args",)) -> None:
    """check_config plus what every training stage shares: cfg.task, cfg.template and cfg.dtype name things that
    exist, and each field in knob_keys holds valid generator knobs for the task (ConfigError naming the field)."""
    from r1lab.prompts import PROMPT_TEMPLATES
    from r1lab.runtime import DTYPES
    from r1lab.tasks import get_task, parse_knobs

    check_config(cfg, ranges, {"template": PROMPT_TEMPLATES, "dtype": DTYPES, **(choices or {})})
    check_out_dir(cfg.out_dir)
    try:
        task = get_task(cfg.task)
    except ValueError as e:
        raise ConfigError(f"task = {cfg.task!r}: {e}") from None
    knobbed = [key for key in knob_keys if getattr(cfg, key)]
    if knobbed and not hasattr(task, "generate"):  # a dataset task under a recipe written for a generated one
        clear = " ".join(f"--set {key}=" for key in knobbed)
        raise ConfigError(f"task = {cfg.task!r} is a dataset, which takes no generator knobs, and {', '.join(knobbed)} "
                          f"set them: clear them ({clear}) and give its problems as data = FILE, FOLDER or HUB_ID "
                          f"(e.g. --set data=openai/gsm8k)")
    for key in knob_keys:
        try:
            parse_knobs(task, getattr(cfg, key) or "")
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None


# What may change when a run resumes: how long it runs and how it saves and logs, never what it computes.
RESUME_FREE = ("out_dir", "steps", "epochs", "save_every", "keep_last", "threads", "wandb", "tensorboard",
               "sample_every")


def check_resume(cfg, checkpoint, free: tuple[str, ...] = ()) -> None:
    """ConfigError when the checkpoint a run is about to resume was written under other settings than cfg (apart
    from RESUME_FREE and `free`, what the stage checks itself): one folder would hold two runs, its metrics one
    unmarked mix of them, its next checkpoint a config that did not make its weights. None (a fresh run) and a
    checkpoint without a readable config (another writer) are not checked."""
    from r1lab.model.load import saved_config

    theirs = {} if checkpoint is None else saved_config(checkpoint)
    mine = json.loads(json.dumps(config_to_dict(cfg), default=str))  # tuples -> lists, as they read back
    allowed = RESUME_FREE + tuple(free)
    diff = [k for k in mine if k in theirs and k not in allowed and mine[k] != theirs[k]]
    if diff:
        changes = ", ".join(f"{k} {theirs[k]!r} -> {mine[k]!r}" for k in diff)
        raise ConfigError(f"{Path(checkpoint).parent.parent} holds a run with other settings ({changes}); resume it "
                          f"with its own (only {', '.join(allowed[1:])} may change), or use another --out (a new "
                          f"run from its weights: --set model={Path(checkpoint).parent.parent} and another --out)")


def check_out_dir(out_dir: str) -> None:
    """ConfigError when a run could not write its folder (a file there, or no write access to it or to the folder
    it would be made in), found without making it."""
    import os

    path = Path(out_dir)
    existing = next(p for p in [path, *path.resolve().parents] if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"out_dir = {out_dir!r}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir = {out_dir!r}: {existing} is not writable")
