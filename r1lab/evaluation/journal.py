"""The journal of `r1lab distill`'s API form: what makes a run resumable.

    journal = Journal("traces.jsonl.journal", settings, problems=N, samples=K)
    done = journal.open()            # {(problem, sample): Reply} already in it; the file is locked until close()
    journal.append(p, j, reply)      # one line, flushed and fsync'd
    journal.close()

The journal (Journal): a header line with the run's settings, then one line per finished (problem, sample), appended,
flushed and fsync'd as each reply arrives, each carrying the settings' fingerprint. A rerun cuts off a torn last line
(a kill mid-write: that sample is requested again), requests only the missing pairs, and refuses a journal written
with other settings. It holds the replies as the server sent them; records are rebuilt and scored from it once every
pair is in, so rerunning with other selection flags (--keep, --keep-per-problem, --shortest-first, --template)
sends no request.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from r1lab.evaluation.replies import USAGE, Reply, fingerprint
from r1lab.jsonl import dumps_line, read_jsonl_numbered


class JournalError(ValueError):
    """A journal of other settings, damaged, or in use by another run."""


def _reply_of(row: dict) -> tuple[tuple[int, int], Reply]:
    """((problem, sample), Reply) of one journal line; ValueError when it is not one."""
    p, j, usage = row.get("problem"), row.get("sample"), row.get("usage")
    reasoning, content, finish = row.get("reasoning"), row.get("content"), row.get("finish_reason")
    if (type(p) is not int or type(j) is not int or not isinstance(content, str)
            or not isinstance(reasoning, (str, type(None))) or not isinstance(finish, (str, type(None)))
            or not isinstance(usage, dict) or set(usage) != set(USAGE)
            or any(type(v) is not int or v < 0 for v in usage.values())):
        raise ValueError("not a journal line")
    return (p, j), Reply(reasoning, content, finish, usage)


class Journal:
    """The finished (problem, sample) pairs of one run (module docstring). Open it, append, close it."""

    def __init__(self, path: str | Path, settings: dict, problems: int, samples: int):
        self.path, self.settings, self.fingerprint = Path(path), settings, fingerprint(settings)
        self.problems, self.samples = problems, samples
        self.replies: dict[tuple[int, int], Reply] = {}
        self._file = None

    def open(self) -> dict[tuple[int, int], Reply]:
        """Lock the journal (JournalError when another run holds it), cut off a torn last line, check the settings,
        and return the replies in it (also in .replies); a new or empty journal gets the header line."""
        f = open(self.path, "a+b")
        try:
            _lock(f, self.path)
            f.seek(0)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                print(f"{self.path}: a torn last line (a kill mid-write) cut off; that sample is requested again",
                      file=sys.stderr)
                f.truncate(cut)
                os.fsync(f.fileno())
            if cut and data[:cut].count(b"\n") == 1 and self._header_only_of_other_settings(data[:cut]):
                # a run that failed before its first reply (a wrong --teacher-model, say): nothing to keep, and
                # refusing the corrected command over it helped no one
                print(f"{self.path}: held no samples, under other settings; started afresh", file=sys.stderr)
                f.truncate(0)
                cut = 0
            self.replies = self._read() if cut else {}
            if not cut:
                self._write(f, {"journal": "r1lab distill", "fingerprint": self.fingerprint,
                                "settings": self.settings})
        except BaseException:
            f.close()
            raise
        self._file = f
        return dict(self.replies)

    def _header_only_of_other_settings(self, line: bytes) -> bool:
        try:
            row = json.loads(line)
        except ValueError:
            return False
        return isinstance(row, dict) and "settings" in row and row.get("fingerprint") != self.fingerprint

    def _read(self) -> dict[tuple[int, int], Reply]:
        replies: dict[tuple[int, int], Reply] = {}
        for lineno, row in read_jsonl_numbered(self.path, bad="torn"):
            if row.get("fingerprint") != self.fingerprint:
                raise JournalError(self._mismatch(row))
            if "settings" in row:
                continue
            try:
                key, reply = _reply_of(row)
            except ValueError as e:
                raise JournalError(f"{self.path}:{lineno}: {e}") from None
            if not (0 <= key[0] < self.problems and 0 <= key[1] < self.samples):
                raise JournalError(f"{self.path}:{lineno}: problem {key[0]}, sample {key[1]} is out of range")
            replies.setdefault(key, reply)  # a pair twice (never written so): the first reply counts
        return replies

    def _mismatch(self, row: dict) -> str:
        theirs = row.get("settings")
        if isinstance(theirs, dict):
            diff = [f"{k} {theirs.get(k)!r} there, {v!r} now" for k, v in self.settings.items() if theirs.get(k) != v]
            diff += [f"{k} {theirs[k]!r} there" for k in theirs if k not in self.settings]
            what = "; ".join(diff)
        else:
            what = f"fingerprint {row.get('fingerprint')!r} there, {self.fingerprint!r} now"
        return (f"{self.path} holds samples of other settings ({what}): rerun with those settings to resume it, or "
                f"give another --out (or delete the journal) to start afresh")

    @staticmethod
    def _write(f, row: dict) -> None:
        f.write(dumps_line(row).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())

    def append(self, problem: int, sample: int, reply: Reply) -> None:
        self._write(self._file, {"fingerprint": self.fingerprint, "problem": problem, "sample": sample,
                                 **asdict(reply)})
        self.replies.setdefault((problem, sample), reply)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None


def _lock(f, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(f"{path}: another r1lab distill is writing this journal") from None
