"""Continuous batching (EngineBatch) and the per-request state behind it (_Request); engine.py's docstring gives
the design: padding and positions, the KV cache edits, shared prompts, finishing, log-probs, stop strings, forced
tokens, randomness, and how a failing row ends alone.
"""
from __future__ import annotations

import math
import operator
from collections import deque

import torch
import torch.nn.functional as F

from r1lab.engine.decode import SharedPrefix, has_hooks
from r1lab.engine.engine import (Completion, Engine, Event, ForceFn, SamplingParams, check_room, completion_text,
                                 eval_mode, finish_reason, stop_window)
from r1lab.engine.forcing import request_budget
from r1lab.engine.kvcache import cat_caches, map_cache, new_cache
from r1lab.engine.sampling import sample

UNIFORM_BLOCK = 256  # uniforms a row draws from its generator at once


class _Request:
    def __init__(self, rid, prompt_ids, params, forced, seed):
        self.rid, self.prompt_ids, self.params, self.forced = rid, list(prompt_ids), params, forced
        self.gen = torch.Generator().manual_seed(seed) if params.temperature > 0 else None
        self.pending: deque[int] = deque()  # forced tokens still to be fed
        self.token_ids, self.mask, self.logprobs, self.sample_logprobs = [], [], [], []
        self.finish_reason: str | None = None
        self.group: tuple[int, int] | None = None  # (prefill, prompt): rows whose prompt cache columns are copies
        self.stop_window = stop_window(params)  # tokens decoded per stop check
        self._uniforms, self._drawn = [], 0

    def uniform(self) -> float:
        """The row's next uniform draw. Drawn from its generator UNIFORM_BLOCK at a time: a generator call has a
        fixed cost that, paid per token per row, is a sizeable share of a tiny model's decoding step."""
        if self._drawn == len(self._uniforms):
            self._uniforms, self._drawn = torch.rand(UNIFORM_BLOCK, generator=self.gen).tolist(), 0
        self._drawn += 1
        return self._uniforms[self._drawn - 1]


class EngineBatch:
    """Continuous batching: add() requests at any time, step() until empty. One thread only.

        batch = EngineBatch(engine)
        rid = batch.add(prompt_ids, SamplingParams(max_new_tokens=64))
        while batch:
            for event in batch.step(): ...   # event.completion is set on a request's last token

    A server streams event.token_id per request; when it streams text it should hold back a suffix that could still
    grow into a stop string, since the final Completion.text is cut before the stop string.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.waiting: deque[_Request] = deque()
        self.rows: list[_Request] = []  # running rows, aligned with the tensors below; finished ones until compacted
        self.cache = None  # DynamicCache with (B, heads, L, head_dim) per layer
        self.attn = self.pos = self.feed = None  # (B, L) real cache columns, (B,) next position id, (B,) next input
        self._next_rid = 0
        self._prefills = 0  # prefill calls so far: a row's group is (its prefill, its prompt)
        self._shared = None  # the SharedPrefix of the current layout, False for none; None: not yet planned
        # a hook registered on the model (e.g. to edit logits) must run: the lean step would bypass it
        self.lean = engine.lean_step is not None and not has_hooks(engine.model)

    def __len__(self):
        return len(self.waiting) + sum(r.finish_reason is None for r in self.rows)

    def add(self, prompt_ids: list[int], params: SamplingParams, forced: ForceFn | None = None,
            seed: int | None = None) -> int:
        """Queue one request; returns its id. seed overrides params.seed; with neither, torch's global RNG decides."""
        if not prompt_ids:
            raise ValueError("empty prompt: a row needs at least one token")
        if min(prompt_ids) < 0 or max(prompt_ids) >= self.engine.vocab_size:
            raise ValueError(f"prompt token ids must be in [0, {self.engine.vocab_size})")
        check_room(len(prompt_ids), params, self.engine.max_positions)
        if params.max_thinking_tokens is not None:
            if forced is not None:
                raise ValueError("a request takes a thinking budget (max_thinking_tokens) or a forced-token hook, "
                                 "not both")
            forced = request_budget(self.engine.tokenizer, prompt_ids, params, self.engine.token_ids)
        seed = params.seed if seed is None else seed
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()).item())
        if not -2 ** 63 <= seed < 2 ** 64:
            raise ValueError(f"seed must be in [-2**63, 2**64) for torch.Generator: {seed}")
        rid, self._next_rid = self._next_rid, self._next_rid + 1
        self.waiting.append(_Request(rid, prompt_ids, params, forced, seed))
        return rid

    def cancel(self, request_id: int) -> bool:
        """Drop a queued or running request (a server's client went away): it yields no more events, and its row
        leaves the batch at the next compaction. False when the request is unknown or already finished."""
        for r in self.waiting:
            if r.rid == request_id:
                self.waiting.remove(r)
                return True
        for r in self.rows:
            if r.rid == request_id and r.finish_reason is None:
                r.finish_reason = "cancelled"  # stops appending at once, like a finished row
                return True
        return False

    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Admit queued requests if worthwhile, then one decoding step for every running row."""
        with eval_mode(self.engine.model):
            events = self._admit()
            if self.rows and any(r.finish_reason is None for r in self.rows):
                alive = torch.tensor([r.finish_reason is None for r in self.rows], device=self.attn.device)
                self.attn = torch.cat([self.attn, alive.long()[:, None]], 1)  # finished rows: a masked column
                shared = self._shared_prefix() if self.lean else None
                logits = self.engine.decode_step(self.feed, self.attn, self.pos, self.cache, self.lean, shared)
                self.pos = self.pos + 1
                feed, evs = self._advance(self.rows, logits)
                self.feed = torch.tensor(feed, device=self.feed.device)
                events += evs
        return events

    # -- admission, compaction and the cache surgery they need ----------------------------------------------------

    def _admit(self) -> list[Event]:
        n_live = sum(r.finish_reason is None for r in self.rows)
        n_done = len(self.rows) - n_live
        free = self.engine.max_batch_size - n_live
        admit = bool(self.waiting) and free > 0 and (
            n_live == 0 or len(self.waiting) <= free or free >= max(1, self.engine.max_batch_size // 4))
        if n_done and (admit or n_done >= max(1, len(self.rows) // 4) or n_live == 0):
            self._compact()
        if not admit:
            return []
        new = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        return self._prefill(new)

    def _prefill(self, new: list[_Request]) -> list[Event]:
        """Prefill the admitted requests and merge them into the batch. When the prefill raises (a prompt the model
        cannot take, out of memory on a long one), each request is tried alone, so only the one that breaks fails."""
        try:
            cache, attn, pos, feed, events = self._prefill_rows(new)
        except Exception as e:
            if len(new) == 1:
                return [self._fail(new[0], e)]
            return [ev for r in new for ev in self._prefill([r])]
        self._merge(new, cache, attn, pos, feed)
        return events

    def _shared_prefix(self):
        """A SharedPrefix for this layout when groups of rows share their prompts' cache columns, else None.

        Columns [0, C) are prompt (or padding) in every live row, C being the fewest columns before any live row's
        own tokens (attn already holds this step's column, the fed token's); rows of one group were prefilled
        together from one prompt, so those columns are identical copies."""
        if self._shared is None:
            self._shared = False
            live = [r for r in self.rows if r.finish_reason is None]
            columns = self.attn.shape[1] - max(len(r.token_ids) for r in live)
            groups = {key: i for i, key in enumerate(dict.fromkeys(r.group for r in self.rows))}
            # with few shared rows it costs more than it saves; float32 only (SharedPrefix says why)
            # (the weights' dtype: a split cache holds float32 whatever the weights, GrowingLayer.append_split)
            fp32 = (self.engine.autocast_dtype is None
                    and self.engine.model.get_input_embeddings().weight.dtype == torch.float32)
            if columns > 0 and len(groups) <= len(self.rows) // 2 and fp32:
                self._shared = SharedPrefix(self.cache, self.attn, [groups[r.group] for r in self.rows], columns)
        # once the rows' own tokens far outnumber the prompt, SDPA's fused kernel reads them faster than attend()'s
        # bmm, and reading the prompt once no longer pays for it (crossover measured in dev/LOG.md)
        if not self._shared or self.attn.shape[1] > 8 * self._shared.columns:
            return None
        return self._shared

    def _compact(self):
        """Drop finished rows, then cache columns that are padding in every remaining row."""
        self._shared = None
        keep = [i for i, r in enumerate(self.rows) if r.finish_reason is None]
        if not keep:
            self.rows, self.cache, self.attn, self.pos, self.feed = [], None, None, None, None
            return
        idx = torch.tensor(keep, device=self.attn.device)
        self.rows = [self.rows[i] for i in keep]
        self.attn, self.pos, self.feed = self.attn[idx], self.pos[idx], self.feed[idx]
        first = int(self.attn.any(0).long().argmax())  # first column that some row uses
        self.attn = self.attn[:, first:]
        map_cache(self.cache, lambda t: t.index_select(0, idx)[:, :, first:])

    def _prefill_rows(self, new: list[_Request]):
        """The admitted rows' own cache, attn (b, P), positions, first inputs and events; the batch is untouched."""
        # Identical prompts (the G samples of one RL prompt) are prefilled once and their cache rows copied.
        unique = list(dict.fromkeys(tuple(r.prompt_ids) for r in new))
        where = {p: i for i, p in enumerate(unique)}
        self._prefills, self._shared = self._prefills + 1, None
        for r in new:
            r.group = (self._prefills, where[tuple(r.prompt_ids)])
        copy = torch.tensor([r.group[1] for r in new], device=self.engine.device)  # (b,) -> unique
        P = max(len(p) for p in unique)
        dev, pad = self.engine.device, self.engine.pad_id
        ids = torch.tensor([[pad] * (P - len(p)) + list(p) for p in unique], device=dev)  # (u, P) left-padded
        attn = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in unique], device=dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)  # (u, P) position ids count real tokens only
        cache = new_cache(self.engine.model)
        logits = self.engine.forward_last(ids, attn, pos, cache)  # (u, V)
        if len(unique) < len(new):
            map_cache(cache, lambda t: t.index_select(0, copy))
        attn, logits = attn[copy], logits[copy]  # (b, P), (b, V)
        feed, events = self._advance(new, logits)  # subtle: last, since it draws the rows' uniforms (no retry after)
        return cache, attn, attn.sum(-1), torch.tensor(feed, device=dev), events

    def _merge(self, new: list[_Request], cache, attn, pos, feed) -> None:
        """Append prefilled rows to the batch, left-padding whichever side has fewer cache columns."""
        if not self.rows:
            self.rows, self.cache, self.attn, self.pos, self.feed = new, cache, attn, pos, feed
            return
        L, P = self.attn.shape[1], attn.shape[1]
        if P < L:
            attn = F.pad(attn, (L - P, 0))
            map_cache(cache, lambda t: F.pad(t, (0, 0, L - P, 0)))
        elif P > L:
            self.attn = F.pad(self.attn, (P - L, 0))
            map_cache(self.cache, lambda t: F.pad(t, (0, 0, P - L, 0)))
        cat_caches(self.cache, cache)
        self.rows = self.rows + new
        self.attn, self.pos, self.feed = torch.cat([self.attn, attn]), torch.cat([self.pos, pos]), torch.cat(
            [self.feed, feed])

    # -- choosing the next token of each row ----------------------------------------------------------------------

    def _advance(self, rows: list[_Request], logits) -> tuple[list[int], list[Event]]:
        """Sample or force one token per live row given its logits (B,V); returns next inputs and events. A row whose
        request breaks here ends with an error event (see _fail); the other rows go on."""
        events: list[Event] = []
        temperature, top_k, top_p = (x.to(logits.device) for x in self._knobs(rows, events))
        uniform = torch.tensor([r.uniform() if self._samples(r) else 0.5 for r in rows])
        truncated = [i for i, r in enumerate(rows)
                     if r.finish_reason is None and (r.params.top_k > 0 or r.params.top_p < 1.0)]
        tokens, logp, sample_logp = sample(logits, temperature, top_k, top_p, uniform.to(logits.device), truncated)
        tokens, logp, sample_logp = tokens.tolist(), logp.tolist(), sample_logp.tolist()
        feed = [self.engine.pad_id] * len(rows)  # finished rows: padding, masked out by attn
        for i, r in enumerate(rows):
            if r.finish_reason is not None:
                continue
            try:
                events.append(self._append(r, tokens[i], logp[i], sample_logp[i], logits[i]))
                feed[i] = r.token_ids[-1]
            except Exception as e:  # its hook, stop check or decoding broke: this request alone ends
                events.append(self._fail(r, e))
        return feed, events

    def _knobs(self, rows: list[_Request], events: list[Event]):
        """Per-row temperature, top_k, top_p tensors (B,) on the CPU. A live row whose values cannot be used (not
        finite, too big for a tensor) ends with an error event and, like finished rows, gets neutral values."""
        def build(rows):
            live = [r.finish_reason is None for r in rows]
            t = torch.tensor([r.params.temperature if a else 1.0 for r, a in zip(rows, live)], dtype=torch.float32)
            p = torch.tensor([r.params.top_p if a else 1.0 for r, a in zip(rows, live)], dtype=torch.float32)
            k = torch.tensor([r.params.top_k if a else 0 for r, a in zip(rows, live)], dtype=torch.long)
            if not (t.isfinite().all() and p.isfinite().all() and (p > 0).all()):  # p: 1e-50 is 0 in float32
                raise ValueError("temperature and top_p must be finite, top_p > 0 in float32")
            return t, k, p
        try:
            return build(rows)
        except Exception:
            for r in rows:
                if r.finish_reason is None:
                    try:
                        build([r])
                    except Exception as e:
                        events.append(self._fail(r, e))
            return build(rows)

    def _append(self, r: _Request, token: int, logp: float, sample_logp: float, logits) -> Event:
        """Append the sampled token, or a forced one, to live row r; logits (V,) are the row's."""
        sampled = True
        if r.pending:
            token, sampled = r.pending.popleft(), False
        elif r.forced is not None:
            force = r.forced(r.token_ids + [token])
            if force is not None:
                ids = [operator.index(t) for t in force.ids]  # ints only: the ids are fed to the model
                if not all(0 <= t < self.engine.vocab_size for t in ids):
                    raise ValueError(f"forced token ids must be in [0, {self.engine.vocab_size}): {ids}")
                if force.replace:
                    token, sampled = ids[0], False
                    r.pending.extend(ids[1:])
                else:
                    r.pending.extend(ids)
        if r.params.logprobs:
            r.logprobs.append(logp if sampled else torch.log_softmax(logits.float(), -1)[token].item())
            r.sample_logprobs.append(sample_logp if sampled else math.nan)
        r.token_ids.append(token)
        r.mask.append(int(sampled))
        r.finish_reason = self._finished(r, token)
        return Event(r.rid, token, sampled, self._completion(r) if r.finish_reason else None)

    @staticmethod
    def _fail(r: _Request, error: Exception) -> Event:
        """End row r with finish_reason "error": its request broke in per-row code; the batch goes on without it."""
        r.finish_reason = "error"
        r.pending.clear()
        lp = r.params.logprobs
        done = Completion(r.prompt_ids, r.token_ids, r.mask, "", "error", r.logprobs if lp else None,
                          r.sample_logprobs if lp else None, error=f"{type(error).__name__}: {error}")
        return Event(r.rid, -1, False, done)

    @staticmethod
    def _samples(r: _Request) -> bool:
        return r.finish_reason is None and r.gen is not None and not r.pending

    def _finished(self, r: _Request, token: int) -> str | None:
        return finish_reason(r.token_ids, r.params, self.engine.eos_ids, self.engine.tokenizer, r.stop_window)

    def _completion(self, r: _Request) -> Completion:
        text = completion_text(self.engine.tokenizer, r.token_ids, r.params, r.finish_reason)
        lp = r.params.logprobs
        return Completion(r.prompt_ids, r.token_ids, r.mask, text, r.finish_reason,
                          r.logprobs if lp else None, r.sample_logprobs if lp else None)
