"""A lean training forward for Llama-family models: the logits of responses over a shared prompt, from the weights.

response_logp (r1lab.rl.rollouts) runs each distinct prompt once and the responses that continue it on top of the
prompt's keys and values. Through the model's own forward that takes a DynamicCache, a copy of each prompt's cache
per row (and that copy's backward), 4-D masks built from 2-D ones and attention dispatch; on a tiny model those cost
as much as the matmuls. This does the same arithmetic with F.linear on the model's weights (autograd reaches them as
usual, autocast applies as usual) and attention in plain matmuls: when the rows come in equal groups, in order (a
rollout batch: G samples per prompt), a group's queries meet their prompt's keys in one matmul, each response its
own tokens in another, one softmax over both. Its logits equal the model's forward to float rounding
(tests/test_lean.py).

Models: those r1lab.engine.decode.lean_supported accepts; attention dropout must be off when training (the presets
have none). response_logp takes the model's forward for anything else, and under gradient checkpointing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.engine.decode import _rms_norm, _rotate_half, has_hooks, lean_supported


def usable(model) -> bool:
    """Whether lean_logits computes exactly what `model`'s forward would, in its current mode."""
    if not lean_supported(model) or has_hooks(model):
        return False
    return not (model.training and getattr(model.config, "attention_dropout", 0.0))


def group_size(rows, U: int) -> int | None:
    """G when rows is [0]*G + [1]*G + ... + [U-1]*G (a rollout batch, in order), else None."""
    B = rows.shape[0]
    G = B // U
    if B != U * G or not torch.equal(rows, torch.arange(U, device=rows.device).repeat_interleave(G)):
        return None
    return G


def _rope(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


def _mlp(x, layer):
    """x + the layer's gated MLP of its normed x."""
    m = layer.mlp
    h = _rms_norm(x, layer.post_attention_layernorm)
    return x + F.linear(m.act_fn(F.linear(h, m.gate_proj.weight, m.gate_proj.bias)) *
                        F.linear(h, m.up_proj.weight, m.up_proj.bias), m.down_proj.weight, m.down_proj.bias)


def lean_logits(model, p_ids, p_attn, rows, ids):
    """(B, T, V) logits predicting response tokens 0..T-1.

    p_ids, p_attn: (U, Lp) the distinct prompts, left-padded; rows: (B,) each row's prompt; ids: (B, T) responses,
    right-padded (a padded token only ever attends to tokens before it, so no mask is needed for it).
    """
    inner, cfg = model.model, model.config
    U, Lp = p_ids.shape
    B, T = ids.shape
    H = cfg.num_attention_heads
    KV = getattr(cfg, "num_key_value_heads", None) or H
    d = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    dev = ids.device
    G = group_size(rows, U)
    grouped = G is not None

    p_pos = (p_attn.cumsum(-1) - 1).clamp(min=0)
    r_pos = p_attn.sum(-1)[rows, None] + torch.arange(T, device=dev)
    emb = inner.embed_tokens  # padding_idx included: nn.Embedding gives its row no gradient
    xp, xr = F.embedding(p_ids, emb.weight, emb.padding_idx), F.embedding(ids, emb.weight, emb.padding_idx)
    cos_p, sin_p = (t[:, None] for t in inner.rotary_emb(xp, p_pos))  # (U, 1, Lp, d)
    cos_r, sin_r = (t[:, None] for t in inner.rotary_emb(xr, r_pos))  # (B, 1, T, d)

    real = p_attn.bool()  # (U, Lp)
    causal_p = torch.ones(Lp, Lp, dtype=torch.bool, device=dev).tril()
    # a left pad attends to itself only: its row stays finite (all -inf would give NaN) and no real token reads it
    allow = (causal_p & real[:, None, :]) | torch.eye(Lp, dtype=torch.bool, device=dev)
    bias_pp = torch.zeros(U, 1, Lp, Lp, device=dev).masked_fill_(~allow[:, None], float("-inf"))
    bias_rp = torch.zeros(U, Lp, device=dev).masked_fill_(~real, float("-inf"))  # response -> prompt: real columns
    bias_rr = torch.zeros(T, T, device=dev).masked_fill_(~torch.ones(T, T, dtype=torch.bool, device=dev).tril(),
                                                         float("-inf"))

    def heads(h, proj, n, L, rows_):  # (N, L, D) -> (N, n, L, d)
        return F.linear(h, proj.weight, proj.bias).view(rows_, L, n, d).transpose(1, 2)

    for layer in inner.layers:
        a = layer.self_attn
        hp, hr = _rms_norm(xp, layer.input_layernorm), _rms_norm(xr, layer.input_layernorm)
        qp, kp, vp = heads(hp, a.q_proj, H, Lp, U), heads(hp, a.k_proj, KV, Lp, U), heads(hp, a.v_proj, KV, Lp, U)
        qr, kr, vr = heads(hr, a.q_proj, H, T, B), heads(hr, a.k_proj, KV, T, B), heads(hr, a.v_proj, KV, T, B)
        qp, kp = _rope(qp, cos_p, sin_p), _rope(kp, cos_p, sin_p)
        qr, kr = _rope(qr, cos_r, sin_r), _rope(kr, cos_r, sin_r)
        if KV != H:
            kp, vp, kr, vr = (t.repeat_interleave(H // KV, dim=1) for t in (kp, vp, kr, vr))
        # the prompts: causal attention over their real tokens
        op = torch.softmax(qp @ kp.transpose(-1, -2) * a.scaling + bias_pp, -1) @ vp.to(qp.dtype)  # (U, H, Lp, d)
        # the responses: their prompt's columns, then their own tokens, one softmax
        qr = qr * a.scaling
        s_self = qr @ kr.transpose(-1, -2) + bias_rr  # (B, H, T, T)
        if grouped:  # a group's G * T queries against its prompt in one matmul
            qg = qr.view(U, G, H, T, d).transpose(1, 2).reshape(U, H, G * T, d)
            s_p = (qg @ kp.transpose(-1, -2)).view(U, H, G, T, Lp).transpose(1, 2).reshape(B, H, T, Lp)
        else:
            s_p = qr @ kp.index_select(0, rows).transpose(-1, -2)
        s_p = s_p + bias_rp[rows, None, None, :]
        p = torch.softmax(torch.cat([s_p, s_self.to(s_p.dtype)], -1), -1)
        p_p, p_self = p[..., :Lp], p[..., Lp:]
        o_r = p_self @ vr.to(p_self.dtype)
        if grouped:
            pg = p_p.reshape(U, G, H, T, Lp).transpose(1, 2).reshape(U, H, G * T, Lp)
            o_r = o_r + (pg @ vp.to(pg.dtype)).view(U, H, G, T, d).transpose(1, 2).reshape(B, H, T, d)
        else:
            o_r = o_r + p_p @ vp.index_select(0, rows).to(p_p.dtype)
        xp = xp + F.linear(op.transpose(1, 2).reshape(U, Lp, H * d), a.o_proj.weight, a.o_proj.bias)
        xr = xr + F.linear(o_r.transpose(1, 2).reshape(B, T, H * d), a.o_proj.weight, a.o_proj.bias)
        xp, xr = _mlp(xp, layer), _mlp(xr, layer)
    head = model.lm_head
    # the prompt's last position predicts response token 0; response position t predicts token t + 1
    last = _rms_norm(xp[:, -1:], inner.norm).index_select(0, rows)  # (B, 1, D)
    x = torch.cat([last, _rms_norm(xr[:, :-1], inner.norm)], 1)  # (B, T, D)
    return F.linear(x, head.weight, head.bias)
