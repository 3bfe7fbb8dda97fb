"""One rollout engine on token ids, shared by RL rollouts, evaluation and the OpenAI-compatible server.

    engine = Engine(model, tokenizer)
    outs = engine.generate(["User: 2+3\\nAssistant: <think>"] * 8, SamplingParams(temperature=1.0, seed=0))
    outs[0].token_ids, outs[0].logprobs, outs[0].mask, outs[0].text, outs[0].finish_reason

Our own KV-cache sampler on any Hugging Face causal LM (not `model.generate`), built as continuous batching:
`EngineBatch` holds the running rows; `add()` queues a request at any time and `step()` admits queued requests
(prefilled as one left-padded batch, then merged into the running KV cache), runs one decoding step for every
running row and returns one `Event` per appended token. `Engine.generate()` is just add-all + step-until-done, and a
server thread does the same with requests arriving between steps, so every caller uses one code path.

Design notes (B rows, L cache columns, V vocabulary):
- Padding and positions: rows are left-padded; `attn` (B, L) marks real cache columns. Every step appends one column
  for every row, so each row's real tokens are one contiguous run ending at the last column. Position ids count a
  row's real tokens (0 for its first prompt token) and are passed explicitly, so padding never shifts RoPE.
  Admitting rows whose prompt is longer or shorter than L left-pads the shorter side's cache with masked zeros.
- Cache: a transformers DynamicCache passed as `past_key_values`, whose layers keep spare capacity along L so that
  a decoding step writes one column instead of torch.cat-ing the whole cache (a copy of the whole cache every token
  dominates a small model's step; dev/LOG.md has the timings). We edit the per-layer (B, heads, L, head_dim)
  tensors to drop finished rows, trim all-padding columns and merge admitted rows. Full-attention models only
  (sliding-window layers raise NotImplementedError). The cache lives in r1lab/engine/kvcache.py.
  Rows with identical prompts (the G samples of an RL prompt) are prefilled once and their cache rows copied.
- Decoding steps: prefill runs the model's forward (Engine.forward_last); each later step (Engine.decode_step) runs
  r1lab.engine.decode.DecodeStep for Llama, Qwen2 and Mistral models (the same arithmetic without the forward's
  per-step overhead; tested equal), the model's forward for anything else or with lean_decode=False. When groups
  of rows share a prompt (RL's G samples), the lean step's attention reads each group's prompt columns once
  (r1lab.engine.decode.SharedPrefix; float32 only).
- Finished rows stop appending at once and are dropped from the batch (and their cache freed) when a quarter of the
  batch has finished or when queued requests are admitted, so long-tail rows do not keep a full batch busy.
- Log-probs: `Completion.logprobs[i]` is log_softmax(raw logits)[token_i], the unmodified model distribution at
  temperature 1 without top-k/top-p, i.e. exactly what a training forward pass over prompt + completion computes.
  `sample_logprobs` is the log-prob under the distribution actually sampled from (temperature, top-k, top-p; 0.0
  for greedy rows, NaN on forced tokens).
- Stop strings: after each token we decode only the last few tokens of the row (enough to hold the longest stop
  string) and look for any stop string there. On a hit the row ends with finish_reason "stop"; `token_ids` keep every
  token up to and including the one that completed the stop string (RL trains on exactly what was sampled), while
  `text` is cut before the stop string (OpenAI semantics). EOS ends a row with "eos" and stays in `token_ids` (the
  model must learn to emit it); it is not in `text`. "length" when max_new_tokens tokens were appended.
- Forced tokens (budget forcing, s1): a per-request hook `forced(token_ids) -> Force | None` runs after each sampled
  token; it may append tokens after it or replace it (e.g. swap an early "</think>" for "Wait"). Forced tokens are
  fed one per step like sampled ones, count toward max_new_tokens, and get mask 0.
- Randomness: every request owns a CPU torch.Generator seeded from `seed` (generate(): row i of a call with
  params.seed=s gets s + i * 0x9E3779B97F4A7C15 mod 2**63, so row 0 uses s itself; with seed=None the row seed is
  drawn from torch's global RNG) and draws one uniform per sampled token (inverse-CDF sampling; drawn 256 at a time).
  Guaranteed: the same model, prompts, params and seed give the same completions. A row's draws never depend on other
  rows, the batch size or admission time; its tokens then match across batch compositions up to floating-point
  differences of batched kernels (bit-identical in our CPU fp32 tests, not promised on GPUs or under autocast).
"""
from __future__ import annotations

import contextlib
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from r1lab.engine.decode import SharedPrefix, decode_step_for, has_hooks
from r1lab.engine.kvcache import cat_caches, map_cache, new_cache
from r1lab.engine.sampling import sample

GOLDEN = 0x9E3779B97F4A7C15  # spreads row seeds of one generate() call far apart
UNIFORM_BLOCK = 256  # uniforms a row draws from its generator at once


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256  # sampled + forced tokens
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False  # fill Completion.logprobs and .sample_logprobs

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1: {self}")


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]  # everything appended after the prompt, EOS and a completed stop string included
    mask: list[int]  # 1 for sampled tokens, 0 for forced ones
    text: str  # decoded token_ids without special tokens, cut before a stop string
    finish_reason: str  # "stop" | "eos" | "length"
    logprobs: list[float] | None = None  # log_softmax(raw logits)[token], per token (forced ones too)
    sample_logprobs: list[float] | None = None  # under the sampling distribution; NaN on forced tokens


@dataclass
class Force:
    """What a forced-token hook returns: `ids` to feed next; `replace=True` drops the token just sampled first."""
    ids: list[int]
    replace: bool = False

    def __post_init__(self):
        if not self.ids:
            raise ValueError("Force needs at least one token id")


ForceFn = Callable[[list[int]], "Force | None"]  # called with the row's token_ids, the just-sampled one last


@dataclass
class Event:
    """One token appended to one request; `completion` is set on the request's last token."""
    request_id: int
    token_id: int
    sampled: bool
    completion: Completion | None = None


class _Request:
    def __init__(self, rid, prompt_ids, params, forced, seed):
        self.rid, self.prompt_ids, self.params, self.forced = rid, list(prompt_ids), params, forced
        self.gen = torch.Generator().manual_seed(seed) if params.temperature > 0 else None
        self.pending: deque[int] = deque()  # forced tokens still to be fed
        self.token_ids, self.mask, self.logprobs, self.sample_logprobs = [], [], [], []
        self.finish_reason: str | None = None
        self.group: tuple[int, int] | None = None  # (prefill, prompt): rows whose prompt cache columns are copies
        self.stop_window = 4 * max((len(s) for s in params.stop), default=0) + 4  # tokens decoded per stop check
        self._uniforms, self._drawn = [], 0

    def uniform(self) -> float:
        """The row's next uniform draw. Drawn from its generator UNIFORM_BLOCK at a time: a generator call has a
        fixed cost that, paid per token per row, is a sizeable share of a tiny model's decoding step."""
        if self._drawn == len(self._uniforms):
            self._uniforms, self._drawn = torch.rand(UNIFORM_BLOCK, generator=self.gen).tolist(), 0
        self._drawn += 1
        return self._uniforms[self._drawn - 1]


class Engine:
    def __init__(self, model, tokenizer, device=None, autocast_dtype=None, max_batch_size: int = 256,
                 lean_decode: bool = True):
        """lean_decode: run decoding steps with r1lab.engine.decode.DecodeStep where the architecture allows (the same
        logits without the forward's per-step overhead, which dominates small models); False always uses the
        model's forward."""
        self.model, self.tokenizer = model, tokenizer
        self.lean_step = decode_step_for(model) if lean_decode else None  # DecodeStep, or None: the model's forward
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.autocast_dtype = autocast_dtype
        self.max_batch_size = max_batch_size
        eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        self.eos_ids = {i for i in [tokenizer.eos_token_id, *eos] if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams,
                 forced: ForceFn | None = None) -> list[Completion]:
        """Complete every prompt; at most max_batch_size rows run at once, refilled as rows finish.

        Text prompts are encoded with tokenizer(prompt) (its default special tokens); pass token ids (e.g. from
        apply_chat_template) to control them exactly. `forced` is applied to every row.
        """
        batch = EngineBatch(self)
        rids = []
        for i, p in enumerate(prompts):
            seed = None if params.seed is None else (params.seed + i * GOLDEN) % 2 ** 63
            rids.append(batch.add(self.encode(p) if isinstance(p, str) else p, params, forced, seed))
        done = {}
        with _eval_mode(self.model):  # once here, so that step() need not walk the module tree every token
            while batch:
                for ev in batch.step():
                    if ev.completion is not None:
                        done[ev.request_id] = ev.completion
        return [done[r] for r in rids]

    def _amp(self):
        return (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                else contextlib.nullcontext())

    def forward_last(self, ids, attn, pos, cache):
        """The model's forward over q new tokens per row, appending them to `cache`; logits (B, V) at the last one.

        ids/pos (B, q) token and position ids, attn (B, L+q) the real cache columns with the new ones included. Used
        for prefill (q = the prompt length) and, when the lean step cannot be used, for decoding (q = 1)."""
        with self._amp():
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                             use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def decode_step(self, ids, attn, pos, cache, lean: bool, shared=None):
        """One decoding step: feed one token per row, append it to `cache`, return the next logits (B, V).

        ids/pos (B,), attn (B, L+1) with the new column included. lean: use self.lean_step (DecodeStep), with
        `shared` (the batch's SharedPrefix) if it has one; else the model's forward (forward_last)."""
        if not lean:
            return self.forward_last(ids[:, None], attn, pos[:, None], cache)
        with self._amp():
            return self.lean_step(ids, attn, pos, cache, shared)


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
        limit = self.engine.max_positions
        if limit is not None and len(prompt_ids) + params.max_new_tokens > limit:
            raise ValueError(f"prompt ({len(prompt_ids)}) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                             f"model's {limit} positions")
        seed = params.seed if seed is None else seed
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()).item())
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
        with _eval_mode(self.engine.model):
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
            fp32 = self.engine.autocast_dtype is None and self.cache.layers[0].keys.dtype == torch.float32
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

    def _prefill(self, new: list[_Request]) -> list[Event]:
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
        feed, events = self._advance(new, logits)
        feed, pos = torch.tensor(feed, device=dev), attn.sum(-1)
        if not self.rows:
            self.rows, self.cache, self.attn, self.pos, self.feed = new, cache, attn, pos, feed
            return events
        L = self.attn.shape[1]
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
        return events

    # -- choosing the next token of each row ----------------------------------------------------------------------

    def _advance(self, rows: list[_Request], logits) -> tuple[list[int], list[Event]]:
        """Sample or force one token per live row given its logits (B,V); returns next inputs and events."""
        dev = logits.device
        temperature = torch.tensor([r.params.temperature for r in rows], device=dev, dtype=torch.float32)
        top_k = torch.tensor([r.params.top_k for r in rows], device=dev)
        top_p = torch.tensor([r.params.top_p for r in rows], device=dev, dtype=torch.float32)
        uniform = torch.tensor([r.uniform() if self._samples(r) else 0.5 for r in rows])
        truncated = [i for i, r in enumerate(rows) if r.params.top_k > 0 or r.params.top_p < 1.0]
        tokens, logp, sample_logp = sample(logits, temperature, top_k, top_p, uniform.to(dev), truncated)
        tokens, logp, sample_logp = tokens.tolist(), logp.tolist(), sample_logp.tolist()
        feed, events = [], []
        for i, r in enumerate(rows):
            if r.finish_reason is not None:
                feed.append(self.engine.pad_id)
                continue
            token, sampled = tokens[i], True
            if r.pending:
                token, sampled = r.pending.popleft(), False
            elif r.forced is not None:
                force = r.forced(r.token_ids + [token])
                if force is not None and force.replace:
                    token, sampled = force.ids[0], False
                    r.pending.extend(force.ids[1:])
                elif force is not None:
                    r.pending.extend(force.ids)
            if r.params.logprobs:
                r.logprobs.append(logp[i] if sampled else torch.log_softmax(logits[i].float(), -1)[token].item())
                r.sample_logprobs.append(sample_logp[i] if sampled else math.nan)
            r.token_ids.append(token)
            r.mask.append(int(sampled))
            r.finish_reason = self._finished(r, token)
            events.append(Event(r.rid, token, sampled, self._completion(r) if r.finish_reason else None))
            feed.append(token)
        return feed, events

    @staticmethod
    def _samples(r: _Request) -> bool:
        return r.finish_reason is None and r.gen is not None and not r.pending

    def _finished(self, r: _Request, token: int) -> str | None:
        if token in self.engine.eos_ids:
            return "eos"
        if r.params.stop:  # only the tail can hold a stop string that was not there one token ago
            tail = self.engine.tokenizer.decode(r.token_ids[-r.stop_window:], skip_special_tokens=True)
            if any(s in tail for s in r.params.stop):
                return "stop"
        if len(r.token_ids) >= r.params.max_new_tokens:
            return "length"
        return None

    def _completion(self, r: _Request) -> Completion:
        text = self.engine.tokenizer.decode(r.token_ids, skip_special_tokens=True)
        if r.finish_reason == "stop":
            text = text[:min((i for i in map(text.find, r.params.stop) if i >= 0), default=len(text))]
        lp = r.params.logprobs
        return Completion(r.prompt_ids, r.token_ids, r.mask, text, r.finish_reason,
                          r.logprobs if lp else None, r.sample_logprobs if lp else None)


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() inside, the caller's mode restored after (the RL loop generates between training steps)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
