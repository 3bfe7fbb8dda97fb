"""Generation: one engine on token ids for RL rollouts, evaluation, serving and chat.

    engine.py    Engine and EngineBatch: continuous batching over a KV cache, sampling, stop strings, forced tokens
    decode.py    the lean decoding step for Llama / Qwen2 / Mistral, and SharedPrefix (a group's prompt read once)
    kvcache.py   the growable KV cache and the edits continuous batching makes to it
    sampling.py  temperature / top-k / top-p by inverse-CDF sampling from per-row uniforms
    backend.py   the rollout-backend seam: what RL and evaluation call, r1lab's engine behind it (others beside it)
"""
from r1lab.engine.engine import GOLDEN, Completion, Engine, EngineBatch, Event, Force, ForceFn, SamplingParams

__all__ = ["GOLDEN", "Completion", "Engine", "EngineBatch", "Event", "Force", "ForceFn", "SamplingParams"]
