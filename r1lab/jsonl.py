"""JSON Lines and atomic writes: the one reader and writer for problem files, cached pools, metrics and samples.

    rows = read_jsonl("data/train.jsonl")                   # a bad line raises JsonlError naming FILE:LINE
    rows = read_jsonl("runs/rl/metrics.jsonl", bad="torn")  # a torn last line (a kill mid-write) is dropped
    rows = read_jsonl("runs/rl/samples.jsonl", bad="skip")  # every bad line is skipped with a warning
    write_jsonl("data/train.jsonl", rows)                   # atomic: a temporary file, then a rename
    write_text_atomic(Path("eval.json"), text)               # the same for any text file

A line is bad when it is not UTF-8, not JSON, or not a JSON object. Blank lines are ignored.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

MODES = ("raise", "torn", "skip")


class JsonlError(ValueError):
    """A bad line; the message starts with FILE:LINE."""


def parse_line(raw: bytes) -> tuple[dict | None, str | None]:
    """(the JSON object of one line, None), or (None, what is wrong with the line)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    except (ValueError, RecursionError) as e:  # integers past Python's digit limit, nesting past the recursion limit
        return None, f"invalid JSON ({str(e).splitlines()[0][:80] or type(e).__name__})"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    return row, None


def read_jsonl(path: str | Path, bad: str = "raise") -> list[dict]:
    """The objects of a JSONL file, in order (read_jsonl_numbered: with their line numbers)."""
    return [row for _, row in read_jsonl_numbered(path, bad)]


def read_jsonl_numbered(path: str | Path, bad: str = "raise") -> list[tuple[int, dict]]:
    """(line number, object) for every good line of a JSONL file, in order.

    bad="raise": a bad line raises JsonlError("FILE:LINE: what is wrong").
    bad="torn": the same, except that a bad LAST line is dropped (what a process killed mid-append leaves behind).
    bad="skip": every bad line is reported on stderr and skipped.
    """
    if bad not in MODES:
        raise ValueError(f"bad must be one of {MODES}, got {bad!r}")
    lines = Path(path).read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        row, problem = parse_line(raw)
        if problem is None:
            rows.append((lineno, row))
        elif bad == "skip":
            print(f"{path}:{lineno}: {problem}; skipped", file=sys.stderr)
        elif bad == "torn" and lineno == len(lines):
            print(f"{path}:{lineno}: {problem}; a torn last line, dropped", file=sys.stderr)
        else:
            raise JsonlError(f"{path}:{lineno}: {problem}")
    return rows


def dumps_line(row: dict) -> str:
    """One JSON line, non-ASCII kept as is; a string holding a lone surrogate (which UTF-8 cannot encode) makes
    the line fall back to ASCII escapes, so the file stays valid UTF-8."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row)
    return text + "\n"


def check_writable(path: str | Path) -> None:
    """ValueError, before any work, when a file cannot be written at `path` (a directory there, a folder that
    cannot be made or is not writable); the folder is made if missing. Commands call it on every output first."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{path}: a directory; give a file name")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{path}: cannot create its folder ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{path}: its folder is not writable")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a flushed temporary sibling and a rename: readers see the old or the new
    file, never half of one, and a failure leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # a read-only folder: the error worth seeing is the write's, above
            tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, rows) -> None:
    """Write `rows` to `path` atomically (write_text_atomic), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(dumps_line(row) for row in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line (a torn last line from a kill is what read_jsonl(bad="torn") tolerates)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(dumps_line(row))
