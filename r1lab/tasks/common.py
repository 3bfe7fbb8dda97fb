"""What every task shares: prompt templates, the <think>/<answer> format check, the reward, data files.

Model output is hostile input: nothing here evaluates it, every regex is linear-time, and long strings are cut
before parsing (MAX_COMPLETION_CHARS).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

MAX_COMPLETION_CHARS = 20_000  # longer completions are cut to this before any parsing

R1_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)

# Plain-text templates for base models. "r1" is the R1-Zero paper's template (Table 1); "short" keeps only the
# turn structure, for tiny character-level models where every prompt character costs compute.
TEMPLATES = {
    "r1": R1_SYSTEM + " User: {question} Assistant: <think>",
    "short": "User: {question}\nAssistant: <think>",
}


def render_prompt(question: str, template: str = "r1") -> str:
    """render_prompt("2+2?", "short") == "User: 2+2?\\nAssistant: <think>" """
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
    return TEMPLATES[template].format(question=question)


def render_messages(question: str) -> list[dict]:
    return [{"role": "system", "content": R1_SYSTEM}, {"role": "user", "content": question}]


@dataclass(frozen=True)
class Score:
    reward: float
    correct: bool
    format_ok: bool
    answer: str | None  # the extracted final answer (None when nothing could be extracted)


def combine(correct: bool, format_ok: bool, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> float:
    """The R1 rule-based reward: accuracy plus format. combine(True, True) == 1.1"""
    return accuracy_weight * float(correct) + format_weight * float(format_ok)


# subtle: both the regex and the tag scan must stay linear in len(text). The regex runs only once the tag counts
# are right (one </think>, one <answer>) and on lstrip()ed text: a leading `\s*` that backtracks over 20k spaces
# made one call take 1.6 s, and re.findall over "<answer>" repeated without "</answer>" was quadratic too.
_FORMAT_RE = re.compile(r"(?:<think>)?(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*\Z", re.S)


def clip(completion) -> str:
    """Untrusted input to a bounded str: non-str becomes "", long strings are cut."""
    if not isinstance(completion, str):
        return ""
    return completion[:MAX_COMPLETION_CHARS]


def split_format(completion: str) -> tuple[str | None, str | None, bool]:
    """(think, answer, format_ok) for "reasoning</think> <answer>X</answer>".

    format_ok needs exactly one </think>, then exactly one <answer>...</answer> block, nothing after it.
    When the format is broken, the answer is still taken from the last <answer> block if there is one.

    >>> split_format("3+4=7</think> <answer>7</answer>")
    ('3+4=7', '7', True)
    """
    text = clip(completion)
    if text.count("</think>") == 1 and text.count("<answer>") == 1 and text.count("<think>") <= 1:
        m = _FORMAT_RE.match(text.lstrip())
        if m:
            return m.group("think"), m.group("answer").strip(), True
    think = text.split("</think>", 1)[0] if "</think>" in text else None
    return think, _last_answer(text), False


def _last_answer(text: str) -> str | None:
    """The last of the non-overlapping <answer>...</answer> blocks, read left to right (what re.findall gives)."""
    answer, pos = None, 0
    while (start := text.find("<answer>", pos)) >= 0:
        end = text.find("</answer>", start + len("<answer>"))
        if end < 0:  # no later <answer> can close either
            break
        answer, pos = text[start + len("<answer>"):end].strip(), end + len("</answer>")
    return answer


def example_id(example: dict, keys: tuple[str, ...]) -> str:
    """A stable content hash of an example's fields, used for dedup and for train/test splits."""
    payload = json.dumps({k: example[k] for k in keys}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def split_of(example: dict, keys: tuple[str, ...], test_fraction: float = 0.1) -> str:
    """'train' or 'test', decided by the content hash alone, so splits never overlap whatever the seed."""
    h = int(example_id(example, keys), 16) / 16**16
    return "test" if h < test_fraction else "train"


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | Path, rows) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def load_rows(source: str | Path, fields: tuple[str, ...], split: str = "test", limit: int | None = None) -> list[dict]:
    """Rows of a JSONL or Parquet file, or of a folder holding `{split}.jsonl` / `{split}*.parquet` (the Hugging
    Face layout), each checked to have `fields`. A Hugging Face dataset id works when `datasets` is installed."""
    path = Path(source)
    if path.is_dir():
        found = sorted(path.glob(f"{split}.jsonl")) + sorted(path.glob(f"**/{split}*.parquet"))
        if not found:
            raise FileNotFoundError(f"{source}: no {split}.jsonl or {split}*.parquet in this folder")
        rows = [row for p in found for row in _read_file(p)]
    elif path.is_file():
        rows = _read_file(path)
    else:
        rows = _read_hub(str(source), split)
    rows = rows[:limit] if limit is not None else rows
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"{source}: row {i} lacks field(s) {missing}; this task needs {list(fields)}")
    return rows


def _read_file(path: Path) -> list[dict]:
    if path.suffix != ".parquet":
        return read_jsonl(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow or pandas (pip install pyarrow)") from None
        return pd.read_parquet(path).to_dict("records")  # subtle: lists come back as numpy arrays
    return pq.read_table(path).to_pylist()


def _read_hub(name: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(f"{name}: no such file or folder (install `datasets` to load a Hugging Face "
                                "dataset id)") from None
    return [dict(row) for row in datasets.load_dataset(name, split=split)]


def cached_generate(task, n: int, seed: int, split: str, cache_dir, **knobs) -> list[dict]:
    """task.generate(n, seed, split, **knobs), cached as JSONL in cache_dir (some solvers make generation slow)."""
    key = "-".join(f"{k}{v}" for k, v in sorted(knobs.items()))
    path = Path(cache_dir) / f"{task.NAME}-{split}-n{n}-s{seed}{'-' + key if key else ''}.jsonl"
    if path.exists():
        return read_jsonl(path)
    rows = task.generate(n, seed=seed, split=split, **knobs)
    write_jsonl(path, rows)
    return rows
