"""What every task shares: prompt templates, the reward, the generators' rejection loop, data files.

The <think>/<answer> format and its parser live in r1lab.tasks.format.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from r1lab.jsonl import read_jsonl, read_jsonl_numbered, write_jsonl
from r1lab.tasks.format import R1_SYSTEM, THINK_START

MAX_MISSES = 50_000  # generate() gives up after this many rejected draws in a row

# What a model may write for a minus sign: U+2212 MINUS SIGN, the hyphens U+2010/2011, the figure and en dashes,
# the small and fullwidth hyphen-minus. Every verifier reads them as "-" ("−18" is -18, so wrong for 18). The em
# dash and other dashes are punctuation, not signs: a number after one is no number.
MINUS_SIGNS = "\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d"
_ASCII_MINUS = str.maketrans(dict.fromkeys(MINUS_SIGNS, "-"))

# Plain-text templates for base models. "r1" is the R1-Zero paper's template (Table 1); "short" keeps only the
# turn structure, for tiny character-level models where every prompt character costs compute.
TEMPLATES = {
    "r1": R1_SYSTEM + " User: {question} Assistant: " + THINK_START,
    "short": "User: {question}\nAssistant: " + THINK_START,
}


def check_template(template: str) -> None:
    """ValueError for a template render_prompt and render_messages do not have."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")


def render_prompt(question: str, template: str = "r1") -> str:
    """render_prompt("2+2?", "short") == "User: 2+2?\\nAssistant: <think>" """
    check_template(template)
    return TEMPLATES[template].format(question=question)


def render_messages(question: str, template: str = "r1") -> list[dict]:
    """The chat turns of render_prompt's templates: r1, R1's system prompt then the question; short, the question
    alone (which r1lab's chat templates render as the short prompt). render_messages("2+2?", "short")[0]["role"] ==
    "user" """
    check_template(template)
    user = {"role": "user", "content": question}
    return [user] if template == "short" else [{"role": "system", "content": R1_SYSTEM}, user]


def ascii_minus(text: str) -> str:
    """text with every MINUS_SIGNS character made "-". ascii_minus("\u221218") == "-18" """
    return text.translate(_ASCII_MINUS)


@dataclass(frozen=True)
class Score:
    reward: float
    correct: bool
    format_ok: bool
    answer: str | None  # the extracted final answer (None when nothing could be extracted)


def combine(correct: bool, format_ok: bool, accuracy_weight: float = 1.0, format_weight: float = 0.1) -> float:
    """The R1 rule-based reward: accuracy plus format. combine(True, True) == 1.1"""
    return accuracy_weight * float(correct) + format_weight * float(format_ok)


def example_id(example: dict, keys: tuple[str, ...]) -> str:
    """A stable content hash of an example's fields, used for dedup and for train/test splits."""
    payload = json.dumps({k: example[k] for k in keys}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def split_of(example: dict, keys: tuple[str, ...], test_fraction: float = 0.1) -> str:
    """'train' or 'test', decided by the content hash alone, so splits never overlap whatever the seed."""
    h = int(example_id(example, keys), 16) / 16**16
    return "test" if h < test_fraction else "train"


def generate_distinct(n: int, split: str, keys: tuple[str, ...], draw, build, what: str = "{split} instances",
                      max_misses: int = MAX_MISSES) -> list[dict]:
    """The rejection loop of every synthetic generator: n rows whose identities are distinct and hash into `split`.

    draw() -> (identity, candidate): a random candidate and the fields that define it (`keys` name them);
    build(candidate) -> row | None: called only for a new identity of `split`; None rejects it (say, unsolvable).
    A rejected draw is a miss; after `max_misses` misses in a row it gives up with a ValueError saying how many
    rows it found (`what` names them). subtle: build runs only for identities that passed, and may draw from the
    generator's RNG itself, so this order of calls is what keeps a generator's output for a seed unchanged.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rows, seen, misses = [], set(), 0
    while len(rows) < n:
        identity, candidate = draw()
        eid = example_id(identity, keys)
        row = build(candidate) if split_of(identity, keys) == split and eid not in seen else None
        if row is None:
            misses += 1
            if misses > max_misses:
                raise ValueError(f"found only {len(rows)} of {n} distinct {what.format(split=split)}; widen the knobs")
            continue
        misses = 0
        seen.add(eid)
        rows.append(row)
    return rows


class SkipRow(ValueError):
    """Raised by a loader's fix(row) for a row the dataset itself leaves without a reference answer (a few MATH
    solutions end in an empty \\boxed{}): load_rows drops it and says how many it dropped."""


def load_rows(source: str | Path, fields: tuple[str, ...], split: str = "test", limit: int | None = None,
              hub_config: str | None = None, fix=None) -> list[dict]:
    """Rows of a JSONL, JSON-array or Parquet file, or of a folder holding `{split}.jsonl` / `{split}*.parquet`
    (the Hugging Face layout; _split_files), each checked to have `fields`. Anything else that reads as a hub id
    ("org/name") is loaded from the Hugging Face hub (load_hub; `hub_config` names its configuration).

    fix(row) normalises a row in place (a task's types) and raises ValueError for a row it cannot use, or SkipRow
    for one to drop with a warning (an error if it drops every row). Every error names where the row came from:
    FILE:LINE for JSONL, FILE row N (1-based) for JSON arrays, Parquet and hub datasets."""
    path = Path(source)
    if path.is_dir():
        located = [item for p in _split_files(path, split, hub_config) for item in _read_file(p)]
    elif path.is_file():
        located = _read_file(path)
    elif _looks_local(str(source)):
        raise FileNotFoundError(f"{source}: no such file or folder")
    else:
        located = [(f"{source} row {k}", row) for k, row in enumerate(load_hub(str(source), split, limit, hub_config), 1)]
    located = located[:limit] if limit is not None else located
    kept, skipped = [], []
    for where, row in located:
        missing = [f for f in fields if f not in row]
        if missing:
            raise ValueError(f"{where}: lacks field(s) {missing}; this task needs {list(fields)}")
        if fix is not None:
            try:
                fix(row)
            except SkipRow as e:
                skipped.append(f"{where}: {e}")
                continue
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
        kept.append(row)
    if skipped and not kept:
        raise ValueError(f"{source}: no usable row; {skipped[0]}")
    if skipped:
        print(f"warning: {source}: skipped {len(skipped)} of {len(located)} rows that have no reference answer, "
              f"first {skipped[0]}", file=sys.stderr)
    return kept


def _split_files(folder: Path, split: str, config: str | None) -> list[Path]:
    """The files of `split` in a folder: {split}.jsonl, or {split}*.parquet anywhere below. A snapshot of a hub
    dataset with several configurations (openai/gsm8k: main/ and socratic/) holds each problem once per
    configuration: the one named `config` is read, and without one the folder is refused."""
    found = sorted(folder.glob(f"{split}.jsonl")) + sorted(folder.glob(f"**/{split}*.parquet"))
    if not found:
        raise FileNotFoundError(f"{folder}: no {split}.jsonl or {split}*.parquet in this folder")
    groups = sorted({p.parent for p in found})
    if len(groups) == 1:
        return found
    if config is not None and folder / config in groups:
        return [p for p in found if p.parent == folder / config]
    raise ValueError(f"{folder}: {split} files in {len(groups)} folders ({', '.join(str(g) for g in groups)}), "
                     "each a configuration of one dataset; give one of them")


def _looks_local(source: str) -> bool:
    """Whether a missing `source` was meant as a file or folder rather than a hub id ("name" or "org/name")."""
    return (source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
            or Path(source).suffix in (".jsonl", ".json", ".parquet"))


def _read_file(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for each row of a JSONL or Parquet file, or of a .json file holding one JSON array of objects;
    where is FILE:LINE or FILE row N."""
    if path.suffix == ".json" and path.read_bytes().lstrip()[:1] == b"[":
        try:
            rows = json.loads(path.read_bytes())
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{path}: not a JSON array of objects nor JSONL ({str(e)[:80]})") from None
        for k, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise ValueError(f"{path} row {k}: expected a JSON object, got {type(row).__name__}")
        return [(f"{path} row {k}", row) for k, row in enumerate(rows, 1)]
    if path.suffix != ".parquet":
        return [(f"{path}:{lineno}", row) for lineno, row in read_jsonl_numbered(path)]
    try:
        import pyarrow.parquet as pq
    except ImportError:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow or pandas (pip install pyarrow)") from None
        rows = pd.read_parquet(path).to_dict("records")  # subtle: lists come back as numpy arrays
    else:
        rows = pq.read_table(path).to_pylist()
    return [(f"{path} row {k}", row) for k, row in enumerate(rows, 1)]


class DatasetUnavailable(ValueError):
    """A hub dataset that cannot be loaded (offline, unknown, gated): one line for the command to print."""


def check_hub_dataset(name: str, timeout: float = 5.0) -> None:
    """Nothing when hub dataset `name` is in the Hugging Face cache or the hub answers for it within `timeout`
    seconds; else DatasetUnavailable saying how to get it. Without it an unreachable hub cost ~30 s of the datasets
    library's retries and then a traceback."""
    from huggingface_hub import HfApi

    from r1lab.model.load import hub_cache_dir, hub_offline

    if (hub_cache_dir() / f"datasets--{name.replace('/', '--')}").is_dir():
        return  # datasets reads its cached copy (and refreshes it when it can)
    get = (f"download it with `hf download --repo-type dataset {name}`, or give its rows as a local file or folder "
           f"(--data PATH, --set data=PATH: JSONL, a JSON array or Parquet)")
    if hub_offline():
        raise DatasetUnavailable(f"{name}: not available offline: not in the Hugging Face cache and HF_HUB_OFFLINE "
                                 f"is set; {get}")
    try:
        HfApi().dataset_info(name, timeout=timeout)
    except Exception as e:  # unreachable, unknown, gated, private: the transport's errors share no base class
        reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:120]}"
        raise DatasetUnavailable(f"{name}: not in the Hugging Face cache, and the hub did not serve it ({reason}); "
                                 f"{get}") from None


def load_hub(name: str, split: str, limit: int | None = None, config: str | None = None) -> list[dict]:
    """The first `limit` rows (all when None) of a Hugging Face dataset's split; clear errors when the `datasets`
    library is missing and when the hub cannot serve it (offline, an unknown id, config or split)."""
    check_hub_dataset(name)
    try:
        import datasets
    except ImportError:
        raise DatasetUnavailable(f"{name!r} is neither a file nor a folder; loading it as a Hugging Face dataset "
                                 "needs `pip install datasets` (or pass a JSONL/Parquet path)") from None
    try:
        dataset = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # offline, unknown id, unknown split: all say the same to the user
        raise DatasetUnavailable(f"could not load {name!r} (config {config}, split {split!r}) from the Hugging Face "
                                 f"hub: {type(e).__name__}: {str(e)[:300]}") from e
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return [dict(dataset[i]) for i in range(n)]


def cached_generate(task, n: int, seed: int, split: str, cache_dir, **knobs) -> list[dict]:
    """task.generate(n, seed, split, **knobs), cached as JSONL in cache_dir (some solvers make generation slow).

    The cache is written atomically; a cache that does not hold n rows (a torn line from an older, non-atomic
    writer) is generated again."""
    key = "-".join(f"{k}{v}" for k, v in sorted(knobs.items()))
    path = Path(cache_dir) / f"{task.NAME}-{split}-n{n}-s{seed}{'-' + key if key else ''}.jsonl"
    if path.exists():
        rows = read_jsonl(path, bad="torn")
        if len(rows) == n:
            return rows
    rows = task.generate(n, seed=seed, split=split, **knobs)
    write_jsonl(path, rows)
    return rows
