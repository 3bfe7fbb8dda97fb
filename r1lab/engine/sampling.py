"""Sampling one token per row from a batch of logits: temperature, top-k and top-p per row, one uniform per row.

Used by r1lab.engine for every decoding step. Inverse-CDF sampling (one uniform draw per row and token, from the
row's own generator) keeps a row's tokens independent of which other rows share its batch.
"""
from __future__ import annotations

import math

import torch


def inverse_cdf(probs, uniform):
    """Index j per row with P(j) = probs[j] / sum(probs), from one uniform in [0, 1) per row; also that P(j)."""
    cdf = probs.cumsum(-1)  # (B,V)
    total = cdf[:, -1:]
    j = torch.searchsorted(cdf, (uniform[:, None] * total).contiguous(), right=True)
    # subtle: u * total can round up to total; never step past the last token that has any probability
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1, keepdim=True)
    j = torch.minimum(j, last)
    return j.squeeze(-1), (probs.gather(-1, j) / total).squeeze(-1)


def sample(logits, temperature, top_k, top_p, uniform, truncated: list[int]):
    """Sample one token per row. logits (B,V); per-row temperature (B,), top_k (B,) long, top_p (B,), uniform (B,);
    `truncated`: the rows that use top-k or top-p.

    Returns (tokens (B,), logprobs (B,) under the raw distribution, sample_logprobs (B,) under the sampled one).
    Inverse-CDF sampling with one uniform per row, over vocabulary order for plain rows and over the sorted,
    truncated distribution for `truncated` rows (sorting costs little here but a lot at V = 150k on a big batch),
    so a row's token depends only on its own logits, params and uniform.
    """
    logits = logits.float()
    raw_logp = torch.log_softmax(logits, -1)  # (B,V)
    z = logits / temperature.clamp(min=1e-6)[:, None]
    tokens, p = inverse_cdf(torch.softmax(z, -1), uniform)
    if truncated:
        rows = torch.tensor(truncated, device=z.device)
        zs, order = z[rows].sort(dim=-1, descending=True, stable=True)  # (b,V); stable: ties go to the lowest id
        ranks = torch.arange(z.shape[-1], device=z.device)[None]
        k = top_k[rows, None]
        ps = torch.softmax(zs.masked_fill((k > 0) & (ranks >= k), -math.inf), -1)
        # top-p: keep the smallest prefix whose mass reaches top_p (the first token always survives)
        ps = ps.masked_fill(ps.cumsum(-1) - ps >= top_p[rows, None], 0.0)
        j, p_rows = inverse_cdf(ps, uniform[rows])
        tokens[rows], p[rows] = order.gather(-1, j[:, None]).squeeze(-1), p_rows
    greedy = temperature == 0
    tokens = torch.where(greedy, logits.argmax(-1), tokens)
    sample_logp = torch.where(greedy, 0.0, p.log())
    return tokens, raw_logp.gather(-1, tokens[:, None]).squeeze(-1), sample_logp
