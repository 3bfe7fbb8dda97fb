"""Verifiable tasks. A task is one module holding everything about it, so a format change is one edit:

    NAME: str                                   registry name
    FIELDS: tuple[str, ...]                     the fields an example must have (as in the public datasets)
    question(example) -> str                    the problem statement alone
    prompt(example, template="r1") -> str       plain-text prompt for base models (see common.TEMPLATES)
    messages(example) -> list[dict]             chat form (system + user) for instruct models / chat templates
    score(completion, example, accuracy_weight=1.0, format_weight=0.1) -> common.Score     never raises
    answer_key(completion, example) -> str|None a hashable key of the extracted answer, for majority vote (cons@k)
    difficulty(example) -> str                  a bucket name for evaluation breakdowns
    generate(n, seed, split="train", **knobs)   synthetic tasks: solvable instances, train/test never overlap
    load(source, split="test", limit=None)      JSONL / Parquet path, or a Hugging Face dataset id when online

`completion` is the model's text after the prompt. The plain prompt ends with "<think>", so a completion
normally reads "reasoning</think> <answer>...</answer>"; a leading "<think>" is accepted too.
"""
from __future__ import annotations

import importlib

TASK_MODULES = {
    "countdown": "r1lab.tasks.countdown",
    "arithmetic": "r1lab.tasks.arithmetic",
    "gsm8k": "r1lab.tasks.gsm8k",
    "math": "r1lab.tasks.math",
    "logic": "r1lab.tasks.logic",
}


def get_task(name: str):
    """The task module registered under `name`; a clear error lists the valid names."""
    if name not in TASK_MODULES:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name])


def task_names() -> list[str]:
    return list(TASK_MODULES)
