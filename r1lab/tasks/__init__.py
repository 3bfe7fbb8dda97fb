"""Verifiable tasks. A task is one module holding everything about it, so a format change is one edit:

    NAME: str                                   registry name
    FIELDS: tuple[str, ...]                     the fields an example must have (as in the public datasets)
    question(example) -> str                    the problem statement alone
    prompt(example, template="r1") -> str       plain-text prompt for base models (see common.TEMPLATES)
    messages(example, template="r1") -> list  chat form for chat templates: r1 system + user, short the user turn
    score(completion, example, accuracy_weight=1.0, format_weight=0.1) -> common.Score     never raises
    answer_key(completion, example) -> str|None a hashable key of the extracted answer, for majority vote (cons@k)
    difficulty(example) -> str                  a bucket name for evaluation breakdowns
    generate(n, seed, split="train", **knobs)   synthetic tasks: solvable instances, train/test never overlap
    load(source, split="test", limit=None)      JSONL / Parquet path, or a Hugging Face dataset id when online

`completion` is the model's text after the prompt. The plain prompt ends with "<think>", so a completion
normally reads "reasoning</think> <answer>...</answer>"; a leading "<think>" is accepted too. Every task reads it
with r1lab.tasks.format.parse_completion, the one rule the server and the chat use as well.
"""
from __future__ import annotations

import importlib
import inspect
from math import isfinite  # subtle: not `import math`; the submodule r1lab.tasks.math would shadow it

TASK_MODULES = {
    "countdown": "r1lab.tasks.countdown",
    "arithmetic": "r1lab.tasks.arithmetic",
    "gsm8k": "r1lab.tasks.gsm8k",
    "math": "r1lab.tasks.math",
    "logic": "r1lab.tasks.logic",
}


def get_task(name: str):
    """The task module registered under `name`, or the user's own task: a .py file or an importable module that
    follows the protocol above (r1lab.tasks.user fills in prompt, messages, answer_key and difficulty when absent).
    A clear error lists the valid names."""
    if name in TASK_MODULES:
        return importlib.import_module(TASK_MODULES[name])
    from r1lab.tasks.user import load_user_task, looks_like_user_task

    if not looks_like_user_task(name):
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_MODULES)}, or your own task as a .py "
                         "file or a module path (see examples/tasks/sort_numbers.py)")
    return load_user_task(name)


def task_names() -> list[str]:
    return list(TASK_MODULES)


# --- generator knobs --------------------------------------------------------------------------------------------
# One parser for every place a user names a task's generator knobs: a config's task_args ("k=v,k=v"), and the
# command line's repeated --task-arg k=v.

_NOT_KNOBS = ("n", "seed", "split")


def parse_value(text: str):
    """A knob value as typed: parse_value("5") == 5, parse_value("0.5") == 0.5, else the string stripped."""
    text = text.strip()
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not isfinite(value):
            break  # "nan", "inf": no knob takes them; keep the string so the type check names it
        return value
    return text


def knob_defaults(task) -> dict:
    """{knob: default} of a synthetic task's generate(); an error for a dataset task (no generator)."""
    if not hasattr(task, "generate"):
        raise ValueError(f"task {task.NAME!r} is a dataset and has no generator: pass its problems as a JSONL / "
                         "Parquet file or a Hugging Face dataset id instead")
    params = inspect.signature(task.generate).parameters
    return {name: p.default for name, p in params.items()
            if name not in _NOT_KNOBS and p.kind is not inspect.Parameter.VAR_KEYWORD}


def parse_knobs(task, items: str | list[str]) -> dict:
    """Generator keyword arguments from "k=v,k=v" or ["k=v", ...], checked against task.generate's signature.

    parse_knobs(countdown, "max_numbers=3,max_number=12") == {"max_numbers": 3, "max_number": 12}
    An unknown knob, a missing "=", text for a numeric knob or a fraction for a whole-number one is a ValueError
    that names the knob and lists the valid ones with their defaults; "2.0" for a whole-number knob is 2.
    """
    pairs = [s for s in items.split(",")] if isinstance(items, str) else list(items)
    valid = knob_defaults(task) if pairs and any(p.strip() for p in pairs) else {}
    knobs = {}
    for pair in filter(None, (p.strip() for p in pairs)):
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name:
            raise ValueError(f"task knobs are KNOB=VALUE, got {pair!r}")
        if name not in valid:
            listed = ", ".join(f"{k}={v}" for k, v in valid.items()) or "none"
            raise ValueError(f"{task.NAME} has no knob {name!r}; its knobs (with defaults): {listed}")
        value, default = parse_value(text), valid[name]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            raise ValueError(f"knob {name!r} takes a number (default {default}), got {text.strip()!r}")
        if type(default) is int and type(value) is float:  # max_depth=2.5 made logic nest without end
            if not value.is_integer():
                raise ValueError(f"knob {name!r} takes a whole number (default {default}), got {text.strip()!r}")
            value = int(value)
        knobs[name] = value
    return knobs
