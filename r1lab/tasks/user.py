"""A task of the user's own: a Python file (`my_task.py`) or an importable module (`mypkg.tasks.sorting`) that
follows the protocol in r1lab/tasks/__init__.py, given wherever a task is named (`--task`, `task = ...`).

Only the verifier and the problems are required; the rest has a default:

    NAME, FIELDS, question(example), score(completion, example, accuracy_weight, format_weight) -> Score,
    and generate(n, seed, split, **knobs) or load(source, split, limit)          required
    prompt / messages      the R1 or short template around question(example)   (common.render_prompt / _messages)
    answer_key             score's extracted answer, stripped, for majority vote
    difficulty             "all"

examples/tasks/sort_numbers.py is a complete one. A file is loaded once per process (keyed by its resolved
path), so every rank of a torchrun job and every stage of one process see the same module.

subtle: a built-in task's score never raises (it is written against hostile completions). A user's might, on a
completion nobody foresaw; the wrapper stops the run with the task's name and the completion's start, since a
reward that silently became 0 would train the model on a bug. A score that returns something other than a Score
is stopped the same way, at its first call.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from r1lab.tasks.common import Score, render_messages, render_prompt

REQUIRED = ("NAME", "FIELDS", "question", "score")
_LOADED: dict[str, object] = {}  # resolved path or module name -> the checked module


def looks_like_user_task(name: str) -> bool:
    """Whether a task name that is not built in means a file (ends in .py) or a module path (a.b)."""
    return name.endswith(".py") or ("." in name and all(part.isidentifier() for part in name.split(".")))


def load_user_task(name: str):
    """The checked task module for a file path or dotted module name; ValueError naming what is wrong."""
    key = str(Path(name).expanduser().resolve()) if name.endswith(".py") else name
    if key not in _LOADED:
        module = _import_file(name, Path(key)) if name.endswith(".py") else _import_module(name)
        _LOADED[key] = complete(module, name)
    return _LOADED[key]


def _import_file(name: str, path: Path):
    if not path.is_file():
        raise ValueError(f"task file {name!r} does not exist")
    # A unique module name per file, registered in sys.modules: dataclasses and pickling look modules up there.
    module_name = f"r1lab_user_task_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ValueError(f"task file {name!r} failed to import: {type(e).__name__}: {e}") from e
    return module


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):  # the task's own module is missing, not one it imports
            raise ValueError(f"task module {name!r} not found (is its package on PYTHONPATH?)") from None
        raise


def complete(module, name: str):
    """The module checked against the protocol, with the optional functions filled in and score guarded."""
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if not (hasattr(module, "generate") or hasattr(module, "load")):
        missing.append("generate or load")
    if missing:
        raise ValueError(f"task {name!r} lacks {', '.join(missing)}; a task defines NAME, FIELDS, question(example), "
                         "score(completion, example, ...) -> r1lab.tasks.common.Score, and generate(n, seed, split, "
                         "**knobs) or load(source, split, limit) (see examples/tasks/sort_numbers.py)")
    if not isinstance(module.NAME, str) or not module.NAME:
        raise ValueError(f"task {name!r}: NAME must be a non-empty string, got {module.NAME!r}")
    if isinstance(module.FIELDS, str) or not all(isinstance(f, str) for f in module.FIELDS):
        raise ValueError(f"task {name!r}: FIELDS must be a tuple of field names, got {module.FIELDS!r}")
    for attr in ("question", "score", "generate", "load", "prompt", "messages", "answer_key", "difficulty"):
        if hasattr(module, attr) and not callable(getattr(module, attr)):
            raise ValueError(f"task {name!r}: {attr} must be a function")
    module.FIELDS = tuple(module.FIELDS)
    if not hasattr(module, "prompt"):
        module.prompt = lambda example, template="r1": render_prompt(module.question(example), template)
    if not hasattr(module, "messages"):
        module.messages = lambda example, template="r1": render_messages(module.question(example), template)
    if not getattr(module.score, "_r1lab_guarded", False):
        module.score = _guarded(module.score, module.NAME)
    if not hasattr(module, "answer_key"):
        module.answer_key = lambda completion, example: _stripped(module.score(completion, example).answer)
    if not hasattr(module, "difficulty"):
        module.difficulty = lambda example: "all"
    return module


def _stripped(answer):
    return None if answer is None else " ".join(str(answer).split()) or None


def _guarded(score, task_name: str):
    @functools.wraps(score)
    def guarded(completion, example, *args, **kwargs):
        try:
            result = score(completion, example, *args, **kwargs)
        except Exception as e:
            raise RuntimeError(f"task {task_name!r}: score raised {type(e).__name__}: {e} on the completion "
                               f"{str(completion)[:120]!r}; a task's score must never raise (grade bad output as "
                               "wrong)") from e
        if not isinstance(result, Score):
            raise TypeError(f"task {task_name!r}: score must return r1lab.tasks.common.Score(reward, correct, "
                            f"format_ok, answer), got {type(result).__name__}")
        return result
    guarded._r1lab_guarded = True
    return guarded
