"""Tolerances from the dtype and the size of what is compared, never from one machine's result.

The rule. Two computations of the same function in one dtype differ only by rounding. One rounding has relative
error at most u = eps / 2 (the unit roundoff: 6.0e-8 in float32, 3.9e-3 in bfloat16). A sum of n terms accumulated
in any order (blocked, SIMD, split over threads: what changes between CPUs and kernels) has an error that grows like
u * sqrt(n) relative to its magnitude for terms of random sign (Higham & Mary 2019, "A new approach to
probabilistic rounding error analysis"; the worst case is n * u, never seen in practice). Chained reductions whose
errors are independent add in quadrature: sqrt(depth). Each of the two computations may be off by that much from
exact arithmetic, so their difference is bounded by twice it:

    atol = 2 * sqrt(depth) * (u(dtype) + u(float32) * sqrt(n)) * magnitude

u(dtype) is the rounding of the inputs (bf16 under autocast, whose matmuls accumulate in float32); for float32 it
is negligible next to the accumulation term. No machine's observed difference enters: on the machine this was
written on (AVX-512, AVX2 and plain kernels alike), the float32 log-prob differences between the lean decoding step
and the model's forward were about a tenth of the bound, while real bugs still fail the tests that use it (checked
by breaking the code on purpose: a RoPE rotation, the padding mask or the RMSNorm epsilon left out, the attention
scale 0.1% off, a cache column dropped).

Worked example: tiny-1m (4 layers, hidden 128, intermediate 352) with logits up to 7.5 in float32:
logprob_atol(config, 7.5) == 4 * sqrt(9) * 6.0e-8 * (1 + sqrt(352)) * 7.5 ~= 1.1e-4.
"""
from __future__ import annotations

import math

import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """u: the largest relative error of one rounding. unit_roundoff(torch.float32) == 2 ** -24."""
    return torch.finfo(dtype).eps / 2


def rounding_atol(magnitude: float, n: int, depth: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """The largest difference expected between two computations of one result of size `magnitude`, made of `depth`
    chained reductions of at most `n` terms each, rounded to `dtype` (accumulated in float32 or wider)."""
    return 2 * math.sqrt(depth) * (unit_roundoff(dtype) + unit_roundoff(torch.float32) * math.sqrt(n)) * magnitude


def logprob_atol(config, max_logit: float, context: int = 0, dtype: torch.dtype = torch.float32) -> float:
    """Two computations of log_softmax(logits)[token] through a pre-norm decoder (Llama, Qwen2): how far apart.

    - Each layer adds an attention and an MLP output to the residual stream, and the lm_head is one more reduction:
      depth 2 * layers + 1. The RMSNorms rescale the stream, so each contributes a relative error of its own.
    - n: the longest reduction, over hidden_size, intermediate_size or the `context` positions attended to.
    - magnitude: the logits' (the lm_head's output is what carries the error).
    - log_softmax: d logp_t = d z_t - sum_j p_j d z_j, so a log-prob moves at most twice the largest logit error.
    """
    depth = 2 * config.num_hidden_layers + 1
    n = max(config.hidden_size, config.intermediate_size, context)
    return 2 * rounding_atol(max_logit, n, depth, dtype)


def float64_rtol(n_ops: int) -> float:
    """Relative tolerance for a float64 formula of n_ops operations computed in another order: n_ops * eps (the
    worst case n * u, twice over). float64_rtol(4) ~= 8.9e-16."""
    return n_ops * torch.finfo(torch.float64).eps


def rounded_to_digits(decimals: int) -> float:
    """abs tolerance against a figure printed with `decimals` decimals: half a unit of its last digit."""
    return 0.5 * 10 ** -decimals


def logit_scale(model, completions) -> tuple[float, int]:
    """(the largest |logit| of `model` over every prompt + completion, the longest such sequence): the magnitude
    and the attention length that logprob_atol needs, from one float32 forward per completion."""
    biggest, longest = 0.0, 0
    with torch.no_grad():
        for c in completions:
            ids = c.prompt_ids + c.token_ids
            biggest = max(biggest, model(torch.tensor([ids])).logits.abs().max().item())
            longest = max(longest, len(ids))
    return biggest, longest
