"""SFT data: records checked line by line, tokenized with a loss mask, packed into sequences without cross-talk.

A record is one JSON object per line, either
    {"prompt": "User: 2+3?\\nAssistant: <think>", "completion": "2+3=5</think> <answer>5</answer>"}
(r1lab's plain format: the prompt as the task renders it; EOS is appended after the completion), or
    {"messages": [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}]}
(chat, rendered by the tokenizer's chat template; the loss falls on assistant turns only).

Shapes: a tokenized record is (x, y), its inputs and next-token targets, each of L = len(tokens) - 1 ids, with
y = -100 where the target is a prompt (or non-assistant) token. Packing concatenates records into sequences of
T = seq_len; each record keeps its own position ids (0..L-1) and a block-diagonal causal mask stops attention across
records, so a packed batch computes exactly what the records would alone (tests/test_sft.py checks it).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from r1lab.jsonl import JsonlError, read_jsonl_numbered
from r1lab.prompts import encode

IGNORE = -100
ROLES = ("system", "user", "assistant", "tool")


class SFTDataError(ValueError):
    """A bad record; the message starts with FILE:LINE."""


def record_problem(row: dict) -> str | None:
    """What is wrong with a parsed record, or None. record_problem({"prompt": "a"}) names the missing completion."""
    if "messages" in row and ("prompt" in row or "completion" in row):
        return "a record holds both 'messages' and 'prompt'/'completion': which one to learn is ambiguous"
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty list"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                return f"messages[{i}] must be an object with string 'role' and 'content'"
            if m["role"] not in ROLES:
                return f"messages[{i}]: unknown role {m['role']!r} (valid: {', '.join(ROLES)})"
        if not any(m["role"] == "assistant" for m in msgs):
            return "'messages' has no assistant turn to learn from"
        return None
    if "prompt" not in row or "completion" not in row:
        return "a record needs 'prompt' and 'completion', or 'messages'"
    for key in ("prompt", "completion"):
        if not isinstance(row[key], str):
            return f"'{key}' must be a string, got {type(row[key]).__name__}"
    if not row["completion"]:
        return "'completion' is empty"
    return None


def load_records(path: str | Path) -> list[tuple[str, dict]]:
    """[(where, record)] with where = "FILE:LINE", every line checked first: SFTDataError naming the first bad one."""
    path = Path(path)
    if not path.is_file():
        raise SFTDataError(f"data: no such file {path}")
    try:
        numbered = read_jsonl_numbered(path)
    except JsonlError as e:  # not UTF-8, not JSON, not an object: already "FILE:LINE: what"
        raise SFTDataError(str(e)) from None
    out = []
    for lineno, row in numbered:
        if problem := record_problem(row):
            raise SFTDataError(f"{path}:{lineno}: {problem}")
        out.append((f"{path}:{lineno}", row))
    if not out:
        raise SFTDataError(f"{path}: no records")
    return out


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_record(row: dict, tokenizer, where: str = "record") -> tuple[list[int], list[int]]:
    """(tokens, labelled): the record's token ids and a 0/1 flag per token, 1 where the loss falls."""
    if "messages" not in row:
        # subtle: the prompt with the tokenizer's own special tokens (a Llama / R1-Distill BOS), exactly as the engine
        # encodes it for eval, sampling and RL; the completion continues it, so without any
        p = encode(tokenizer, row["prompt"])
        c = _ids(tokenizer, row["completion"])
        c += [tokenizer.eos_token_id] if c[-1:] != [tokenizer.eos_token_id] else []  # one EOS, if it holds its own
        return p + c, [0] * len(p) + [1] * len(c)
    msgs = row["messages"]
    # Each assistant turn k is labelled from the end of the rendered prefix messages[:k] + generation prompt to the
    # end of messages[:k+1]. subtle: this needs the template to render prefixes as token prefixes; checked.
    full = _ids(tokenizer, tokenizer.apply_chat_template(msgs, tokenize=False))
    labelled = [0] * len(full)
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = _ids(tokenizer, tokenizer.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=True))
        end = _ids(tokenizer, tokenizer.apply_chat_template(msgs[:k + 1], tokenize=False))
        if full[:len(end)] != end or end[:len(start)] != start:
            raise SFTDataError(f"{where}: the chat template does not render turn {k} as a prefix of the conversation")
        labelled[len(start):len(end)] = [1] * (len(end) - len(start))
    return full, labelled


def shift(tokens: list[int], labelled: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """(x, y): inputs and next-token targets, y = IGNORE where the target is unlabelled; at most max_len long.
    shift([5, 6, 7], [0, 1, 1], 8) == ([5, 6], [6, 7]); shift([5, 6, 7], [0, 0, 1], 8) == ([5, 6], [-100, 7])"""
    x = tokens[:-1][:max_len]
    y = [t if f else IGNORE for t, f in zip(tokens[1:], labelled[1:])][:max_len]
    return x, y


def pack(lengths: list[int], seq_len: int, seed: int) -> list[list[int]]:
    """Record indices grouped into sequences of at most seq_len tokens: records in a seeded shuffled order, each put
    into the first open sequence with room (first fit). pack([3, 3, 2], 5, 0) -> e.g. [[1, 2], [0]]

    O(n log n): a tree holds the most room under each node over n sequences, those not opened yet with all seq_len
    of it, so the leftmost sequence with room is first fit's choice, a new one when no open one has room (a scan of
    the open sequences took an hour for R1's 800K records)."""
    if any(n > seq_len for n in lengths):
        raise ValueError(f"a record of {max(lengths)} tokens is longer than seq_len = {seq_len}: cut records first")
    order = list(range(len(lengths)))
    random.Random(f"{seed}/pack").shuffle(order)
    size = 1
    while size < len(lengths):
        size *= 2
    most = [0] * size + [seq_len] * len(lengths) + [-1] * (size - len(lengths))  # leaves at size + j
    for node in range(size - 1, 0, -1):
        most[node] = max(most[2 * node], most[2 * node + 1])
    packs: list[list[int]] = []
    for i in order:
        node = 1
        while node < size:  # down to the leftmost leaf with room
            node = 2 * node if most[2 * node] >= lengths[i] else 2 * node + 1
        j = node - size
        if j == len(packs):
            packs.append([])
        packs[j].append(i)
        most[node] -= lengths[i]
        while node > 1:
            node //= 2
            most[node] = max(most[2 * node], most[2 * node + 1])
    return packs


def collate(groups: list[list[int]], examples: list[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> dict:
    """Tensors of (B, T) for B groups of records: input_ids, labels, position_ids (restarting at 0 per record) and
    segment (the record's place in its row; padding is -1)."""
    B = len(groups)
    ids = torch.full((B, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((B, seq_len), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, seq_len), dtype=torch.long)
    seg = torch.full((B, seq_len), -1, dtype=torch.long)
    for b, group in enumerate(groups):
        t = 0
        for s, i in enumerate(group):
            x, y = examples[i]
            ids[b, t:t + len(x)] = torch.tensor(x)
            labels[b, t:t + len(y)] = torch.tensor(y)
            pos[b, t:t + len(x)] = torch.arange(len(x))
            seg[b, t:t + len(x)] = s
            t += len(x)
    return {"input_ids": ids, "labels": labels, "position_ids": pos, "segment": seg}


def block_causal_mask(segment: torch.Tensor, attn_implementation: str, dtype=torch.float32) -> torch.Tensor:
    """(B, 1, T, T): query i attends key j iff j <= i and both lie in the same record. Boolean (True = attend) for
    sdpa; additive (0 / most negative) for eager, which adds the mask to the scores. Padding (segment -1) attends
    to earlier padding only, which keeps its softmax finite; its targets are ignored."""
    T = segment.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal  # (B, T, T)
    allowed = allowed[:, None]
    if attn_implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill(~allowed, torch.finfo(dtype).min)
