"""Generation: one engine on token ids for RL rollouts, evaluation, serving and chat.

    engine.py    Engine (generate), the request and completion types, and the design notes
    batch.py     EngineBatch: continuous batching over a KV cache, sampling, stop strings, forced tokens, row errors
    decode.py    the lean decoding step for Llama / Qwen2 / Mistral, and SharedPrefix (a group's prompt read once)
    kvcache.py   the growable KV cache and the edits continuous batching makes to it
    sampling.py  temperature / top-k / top-p by inverse-CDF sampling from per-row uniforms
    forcing.py   s1 budget forcing as a forced-token hook
    backend.py   the rollout-backend seam: what RL and evaluation call, r1lab's engine behind it, vLLM beside it
    vllm_backend.py  a colocated vLLM engine as a rollout backend, with the weight sync (vLLM imported only there)
"""
from r1lab.engine.backend import BACKENDS, EngineBackend, RolloutBackend, check_backend, make_backend
from r1lab.engine.batch import EngineBatch
from r1lab.engine.engine import GOLDEN, Completion, Engine, Event, Force, ForceFn, SamplingParams

__all__ = ["BACKENDS", "GOLDEN", "Completion", "Engine", "EngineBackend", "EngineBatch", "Event", "Force", "ForceFn",
           "RolloutBackend", "SamplingParams", "check_backend", "make_backend"]
