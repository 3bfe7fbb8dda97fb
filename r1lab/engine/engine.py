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
- Cache: a transformers DynamicCache passed to the forward (as `cache`, or `past_key_values` in older transformers),
  whose layers keep spare capacity along L so that a decoding step writes one column instead of torch.cat-ing the
  whole cache (a copy of the whole cache every token dominates a small model's step; dev/LOG.md has the timings).
  We edit the per-layer (B, heads, L, head_dim) tensors to drop finished rows, trim all-padding columns and merge
  admitted rows. Full-attention models only (sliding-window layers raise NotImplementedError). The cache lives in
  r1lab/engine/kvcache.py.
  Rows with identical prompts (the G samples of an RL prompt) are prefilled once and their cache rows copied.
- Decoding steps: prefill runs the model's forward (Engine.forward_last); each later step (Engine.decode_step) runs
  r1lab.engine.decode.DecodeStep for Llama, Qwen2 and Mistral models (the same arithmetic without the forward's
  per-step overhead; tested equal), the model's forward for anything else or with lean_decode=False. When groups
  of rows share a prompt (RL's G samples), the lean step's attention reads each group's prompt columns once
  (r1lab.engine.decode.SharedPrefix; float32 only). Otherwise, on a CPU (float32 or bf16 weights, bf16 autocast
  included), its cache layers keep a contiguous float32 body and a short tail (GrowingLayer.append_split) and
  attention runs in float32 as bmm over the two (r1lab.engine.decode.split_attention): SDPA and bmm copied the grown
  buffer's view every step, and under autocast SDPA also cast the whole cache to bf16 every step.
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
  fed one per step like sampled ones, count toward max_new_tokens, and get mask 0. A thinking budget
  (SamplingParams.max_thinking_tokens) is such a hook, built for the request by the engine: the closing text it
  forces is what a caller sees as forced (mask 0) in the completion.
- Failures stay in their row: when a request breaks in per-row code (its forced-token hook raises or returns bad
  ids, its sampling values cannot be made into tensors, its stop check or decoding fails, its prompt's prefill
  raises), that row ends with finish_reason "error" (Completion.error says why; the Event's token_id is -1) and every
  other row goes on with exactly the tokens it would have had. add() raises ValueError for what it can check at once
  (empty or out-of-vocabulary prompt, too long, a seed torch.Generator cannot take). generate() raises on an error.
- Randomness: every request owns a CPU torch.Generator seeded from `seed` (generate(): row i of a call with
  params.seed=s gets s + i * 0x9E3779B97F4A7C15 mod 2**63, so row 0 uses s itself; with seed=None the row seed is
  drawn from torch's global RNG) and draws one uniform per sampled token (inverse-CDF sampling; drawn 256 at a time).
  Guaranteed: the same model, prompts, params and seed give the same completions. A row's draws never depend on other
  rows, the batch size or admission time; its tokens then match across batch compositions up to floating-point
  differences of batched kernels (bit-identical in our CPU fp32 tests, not promised on GPUs or under autocast).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from r1lab.engine.decode import decode_step_for
from r1lab.engine.kvcache import cache_kwarg
from r1lab.prompts import encode
from r1lab.tasks.format import THINK_END, check_thinking_budget

GOLDEN = 0x9E3779B97F4A7C15  # spreads row seeds of one generate() call far apart


def row_seed(seed: int | None, row: int) -> int | None:
    """The seed of row `row` of a generate() call with params.seed = seed, every backend's rule.

    row_seed(5, 0) == 5; row_seed(None, 3) is None"""
    return None if seed is None else (seed + row * GOLDEN) % 2 ** 63


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # 1 = off
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256  # sampled + forced tokens
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False  # fill Completion.logprobs and .sample_logprobs
    # A thinking budget: after this many tokens of thinking without "</think>" (from the completion's start when the
    # prompt ends inside <think>, else from a <think> the completion writes) the engine forces `thinking_end` in
    # place of the next token (r1lab.engine.forcing.thinking_budget). None: off.
    max_thinking_tokens: int | None = None
    thinking_end: str = THINK_END  # what the budget forces; must end with THINK_END

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError(f"need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1: {self}")
        check_thinking_budget(self.max_thinking_tokens, self.thinking_end)


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int]  # everything appended after the prompt, EOS and a completed stop string included
    mask: list[int]  # 1 for sampled tokens, 0 for forced ones
    text: str  # decoded token_ids without special tokens, cut before a stop string
    finish_reason: str  # "stop" | "eos" | "length" | "error"
    logprobs: list[float] | None = None  # log_softmax(raw logits)[token], per token (forced ones too)
    sample_logprobs: list[float] | None = None  # under the sampling distribution; NaN on forced tokens
    error: str | None = None  # why the request broke, with finish_reason "error"


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
    """One token appended to one request; `completion` is set on the request's last token. An error event
    (completion.finish_reason "error") appends no token: token_id is -1."""
    request_id: int
    token_id: int
    sampled: bool
    completion: Completion | None = None


class Engine:
    def __init__(self, model, tokenizer, device=None, autocast_dtype=None, max_batch_size: int = 256,
                 lean_decode: bool = True):
        """lean_decode: run decoding steps with r1lab.engine.decode.DecodeStep where the architecture allows (the same
        logits without the forward's per-step overhead, which dominates small models); False always uses the
        model's forward."""
        self.model, self.tokenizer = model, tokenizer
        self.lean_step = decode_step_for(model) if lean_decode else None  # DecodeStep, or None: the model's forward
        self.cache_kwarg = cache_kwarg(model)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.autocast_dtype = autocast_dtype
        self.max_batch_size = max_batch_size
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.vocab_size = model.get_input_embeddings().num_embeddings  # token ids the model can take
        self._text_ids: dict[str, list[int]] = {}

    def encode(self, prompt: str) -> list[int]:
        return encode(self.tokenizer, prompt)

    def token_ids(self, text: str) -> list[int]:
        """`text`'s token ids without special tokens added (a marker or phrase to force or to look for), cached."""
        if text not in self._text_ids:
            self._text_ids[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._text_ids[text]

    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams,
                 forced: ForceFn | None = None) -> list[Completion]:
        """Complete every prompt; at most max_batch_size rows run at once, refilled as rows finish.

        Text prompts are encoded by r1lab.prompts.encode (the tokenizer's special tokens, one BOS at most); pass
        token ids to control them exactly. `forced` is applied to every row.
        """
        from r1lab.engine.batch import EngineBatch  # it builds on this module's types

        batch = EngineBatch(self)
        rids = []
        for i, p in enumerate(prompts):
            seed = row_seed(params.seed, i)
            rids.append(batch.add(self.encode(p) if isinstance(p, str) else p, params, forced, seed))
        done = {}
        with eval_mode(self.model):  # once here, so that step() need not walk the module tree every token
            while batch:
                for ev in batch.step():
                    if ev.completion is not None and ev.completion.finish_reason == "error":
                        raise RuntimeError(f"prompt {rids.index(ev.request_id)}: {ev.completion.error}")
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
            out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, **{self.cache_kwarg: cache},
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


def check_room(prompt_len: int, params: SamplingParams, limit: int | None, extra: int = 0, why: str = "") -> None:
    """ValueError when a prompt of prompt_len tokens, params.max_new_tokens and `extra` positions (what `why` says
    they are for) pass the model's `limit` positions (None: no limit). Both backends check with it."""
    if limit is not None and prompt_len + params.max_new_tokens + extra > limit:
        raise ValueError(f"prompt ({prompt_len}) + max_new_tokens ({params.max_new_tokens}){why} exceeds the model's "
                         f"{limit} positions")


def eos_token_ids(model, tokenizer) -> set[int]:
    """The ids that end a row: the tokenizer's EOS and the model's generation config's (one id or a list)."""
    eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    eos = eos if isinstance(eos, (list, tuple)) else [eos]
    return {i for i in [tokenizer.eos_token_id, *eos] if i is not None}


def stop_window(params: SamplingParams) -> int:
    """Tokens decoded per stop-string check: enough to hold the longest stop string (a token is at least a byte,
    a character at most 4)."""
    return 4 * max((len(s) for s in params.stop), default=0) + 4


def finish_reason(token_ids: list[int], params: SamplingParams, eos_ids: set[int], tokenizer,
                  window: int) -> str | None:
    """Why a row ends with its last token appended, or None: "eos", "stop" (a stop string in the decoded tail of
    `window` tokens: only the tail can hold one that was not there a token ago) or "length"."""
    if token_ids[-1] in eos_ids:
        return "eos"
    if params.stop:
        tail = tokenizer.decode(token_ids[-window:], skip_special_tokens=True)
        # subtle: special tokens decode to "" here, so a window of them can hide a stop string's start; widen it until
        # the text before the last token could hold the longest stop string (one decode in the usual case)
        if len(tail) < window and window < len(token_ids):
            longest, last = max(map(len, params.stop)), len(tokenizer.decode(token_ids[-1:], skip_special_tokens=True))
            while len(tail) - last < longest - 1 and window < len(token_ids):
                window *= 2
                tail = tokenizer.decode(token_ids[-window:], skip_special_tokens=True)
        if any(s in tail for s in params.stop):
            return "stop"
    if len(token_ids) >= params.max_new_tokens:
        return "length"
    return None


def completion_text(tokenizer, token_ids: list[int], params: SamplingParams, reason: str | None) -> str:
    """A completion's text: its tokens decoded without special tokens, cut before the first stop string when one
    ended it (OpenAI semantics; token_ids keep the tokens that completed it)."""
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    if reason == "stop":
        text = text[:min((i for i in map(text.find, params.stop) if i >= 0), default=len(text))]
    return text


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() inside, the caller's mode restored after (the RL loop generates between training steps)."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()
