"""A thinking budget for a sampler that cannot force tokens (vLLM): sample each row in runs, force between them.

r1lab's engine forces the budget's closing text from inside its decoding loop (r1lab.engine.forcing). A sampler
that only takes whole requests gets the same completions this way, as s1 drove vLLM for its budget forcing:
  1. each live row is one request for a run of at most `room` tokens: the tokens the budget still allows, plus the
     one it would replace (ThinkingBudget.room); while the thinking has not started, up to the think-start marker
     (a stop string, so the run ends where the count starts);
  2. the run's tokens go through the request's budget hook and the engine's own finishing rule one at a time, as
     the engine appends them: where the hook fires, the token it replaces and any sampled after it are dropped and
     the closing text is appended as forced tokens (mask 0), each of which can end the row (length, a stop string);
  3. rows that have not ended are sampled again, from their prompt and every token so far.
So a row's tokens, mask, text and finish reason are the engine's own under greedy decoding (tests/test_runs.py
checks it against the engine's hook, with the engine as the sampler). Sampled rows draw each run from their own
seed: run 0 uses the row's seed itself (so a row sampled in one run, one the budget never reaches, gets the tokens
it would get without a budget), run k > 0 that seed plus k * RUN_SEED_STEP. Each run prefills its row's prompt and
tokens so far again: a sampler with a prefix cache (vLLM's) reads them from it. Forced tokens' log-probs (for RL's
truncated importance sampling) are read as the next run's prompt log-probs; a row that ends on a forced token gets
one more run of one token for them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from r1lab.engine.engine import Completion, SamplingParams, completion_text, finish_reason, stop_window
from r1lab.engine.forcing import request_budget
from r1lab.tasks.format import THINK_START

RUN_SEED_STEP = 0x2545F4914F6CDD1D  # spreads the seeds of one row's runs apart (mod 2**63)


@dataclass
class Run:
    """One request to the sampler: continue `prompt_ids` by at most `max_tokens` tokens."""
    prompt_ids: list[int]
    max_tokens: int
    stop: list[str]  # the caller's stop strings, and the think-start marker while the thinking has not started
    seed: int | None
    tail: int  # log-probs wanted for this many trailing prompt tokens (the forced ones); 0: none


@dataclass
class RunOut:
    token_ids: list[int]  # as sampled, the tokens that completed a stop string or EOS included
    logprobs: list[float] | None  # per token, with logprobs asked
    tail_logprobs: list[float] | None  # the log-probs of the last `tail` prompt tokens, with tail > 0


SampleFn = Callable[[list[Run]], list[RunOut]]


class _Row:
    def __init__(self, prompt_ids: list[int], params: SamplingParams, seed: int | None, budget):
        self.prompt_ids, self.params, self.seed, self.budget = prompt_ids, params, seed, budget
        self.token_ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float] = []
        self.reason: str | None = None
        self.runs = 0
        self.unscored = 0  # forced tokens at the end whose log-probs the next run's prompt log-probs give

    def run(self) -> Run:
        room = self.budget.room()
        left = self.params.max_new_tokens - len(self.token_ids)
        stop = list(self.params.stop)
        if self.budget.start is None:  # the thinking has not started (it can only end after it starts)
            stop.append(THINK_START)
        seed = None if self.seed is None else (self.seed + self.runs * RUN_SEED_STEP) % 2 ** 63
        self.runs += 1
        tail = self.unscored if self.params.logprobs else 0
        return Run(self.prompt_ids + self.token_ids, max(1, min(left, room or left)), stop, seed, tail)


def generate_in_runs(sample: SampleFn, prompts: list[list[int]], params: SamplingParams, seeds: list[int | None],
                     tokenizer, eos_ids: set[int]) -> list[Completion]:
    """Completions of `prompts` under params.max_thinking_tokens, sampled in runs by `sample` (see the module).

    seeds: each row's seed (the engine's row-seed rule is the caller's). Completion.sample_logprobs is None, as the
    vLLM backend's; logprobs (params.logprobs) hold every token's, forced ones included."""
    if params.max_thinking_tokens is None:
        raise ValueError("generate_in_runs is for requests with a thinking budget (max_thinking_tokens)")
    window = stop_window(params)
    rows = [_Row(list(p), params, s, request_budget(tokenizer, p, params)) for p, s in zip(prompts, seeds)]
    live = rows
    while live:
        runs = [r.run() for r in live]
        for r, run, out in zip(live, runs, sample(runs)):
            if run.tail:
                if out.tail_logprobs is None or len(out.tail_logprobs) != run.tail:
                    raise RuntimeError(f"the sampler returned no log-probs for the {run.tail} forced tokens")
                r.logprobs[-run.tail:] = out.tail_logprobs
                r.unscored = 0
            if r.reason is None:
                _append_run(r, out, window, eos_ids, tokenizer)
        live = [r for r in rows if r.reason is None or (params.logprobs and r.unscored)]
    return [Completion(r.prompt_ids, r.token_ids, r.mask, completion_text(tokenizer, r.token_ids, params, r.reason),
                       r.reason, r.logprobs if params.logprobs else None) for r in rows]


def _append_run(r: _Row, out: RunOut, window: int, eos_ids: set[int], tokenizer) -> None:
    """Append a run's tokens to row r as the engine would, forcing where the budget's hook fires."""
    if not out.token_ids:
        raise RuntimeError("the sampler returned a run without tokens")
    for i, token in enumerate(out.token_ids):
        force = r.budget(r.token_ids + [token])
        if force is None:
            r.token_ids.append(token)
            r.mask.append(1)
            r.logprobs.append(out.logprobs[i] if out.logprobs is not None else float("nan"))
            r.reason = finish_reason(r.token_ids, r.params, eos_ids, tokenizer, window)
            if r.reason is not None:
                return
            continue
        for forced in force.ids:  # in place of this token; the ones sampled after it are dropped
            r.token_ids.append(forced)
            r.mask.append(0)
            r.logprobs.append(float("nan"))
            r.unscored += 1
            r.reason = finish_reason(r.token_ids, r.params, eos_ids, tokenizer, window)
            if r.reason is not None:
                break
        return
