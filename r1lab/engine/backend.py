"""The rollout-backend seam: what RL and evaluation call to sample completions, whoever does the sampling.

    backend = make_backend("engine", model, tokenizer, autocast_dtype=None)
    completions = backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=256, seed=0))
    ...  # loss, backward, optimizer.step()
    backend.sync_weights(model)  # the next generate() samples from the updated weights

Requests and results are r1lab's own types (SamplingParams in, one Completion per prompt out, in order), so a
backend that runs elsewhere (vLLM in its own process or on its own GPUs) can sit beside r1lab's engine without its
callers changing. What a backend must give: `token_ids` as sampled (EOS and a completed stop string included),
`mask`, `text` cut before a stop string, `finish_reason`, and with params.logprobs the log-probs of the raw model
distribution (what the training forward computes). Seeds reproduce completions within one backend, not across
backends. Forced-token hooks and continuous batching (EngineBatch) belong to r1lab's engine only.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from r1lab.engine.engine import Completion, Engine, SamplingParams


@runtime_checkable
class RolloutBackend(Protocol):
    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams) -> list[Completion]:
        """One Completion per prompt, in order. Text prompts are encoded by the backend's tokenizer."""
        ...

    def sync_weights(self, model) -> None:
        """Make the next generate() sample from `model`'s current weights; RL calls it after each optimizer step."""
        ...


class EngineBackend:
    """r1lab's own engine (r1lab.engine.Engine) in this process, on the live model.

    The engine reads the model's parameters in place at every step, so sync_weights(model) with the model it
    already holds costs nothing; given another model object (reloaded, or a copy), it rebuilds the engine on it
    with the same settings rather than keep sampling from the old one.
    """

    def __init__(self, model, tokenizer, **engine_kwargs):
        self.tokenizer, self.engine_kwargs = tokenizer, engine_kwargs
        self.engine = Engine(model, tokenizer, **engine_kwargs)

    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams) -> list[Completion]:
        return self.engine.generate(prompts, params)

    def sync_weights(self, model) -> None:
        if model is not self.engine.model:
            self.engine = Engine(model, self.tokenizer, **self.engine_kwargs)


BACKENDS: dict[str, type] = {"engine": EngineBackend}


def make_backend(name: str, model, tokenizer, **kwargs) -> RolloutBackend:
    """The backend registered as `name`, built on `model` and `tokenizer`; kwargs go to its constructor.

    make_backend("engine", model, tok, max_batch_size=64) == EngineBackend(model, tok, max_batch_size=64)
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown rollout backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return BACKENDS[name](model, tokenizer, **kwargs)
