"""A lean decoding step for Llama-family models: one new token per row, straight from the model's own weights.

The engine prefills with the model's `forward` and, for the architectures below, runs each later step with
`DecodeStep` instead. A stock `forward` spends most of a tiny model's step outside its matmuls (building a 4-D mask
from the 2-D one, dispatching through attention interfaces, kwargs plumbing); this does the same arithmetic with
`F.linear` and one `scaled_dot_product_attention` per layer, reading the weights in place (so a training step is
seen at once) and writing keys and values through the engine's cache layers. Its logits match the model's forward
to float rounding (tests/test_decode.py compares them; tests/test_engine.py compares greedy output against
`transformers` `generate`).

Supported: LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM without sliding windows: pre-norm decoder
layers with q/k/v/o projections (biases allowed), no q/k norms, rotary embeddings from the model's own rotary
module (so every RoPE scaling type it knows), a gated MLP, plain nn.Linear projections (not LoRA-wrapped) and no
forward hooks. Anything else uses the model's forward.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

SUPPORTED = {"LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"}


def decode_step_for(model):
    """A DecodeStep for `model`, or None when the model is not one this module knows exactly."""
    if type(model).__name__ not in SUPPORTED:
        return None
    cfg = model.config
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return None
    inner = model.model
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if hasattr(attn, "q_norm") or not hasattr(mlp, "gate_proj"):
            return None
        # LoRA and other adapters replace nn.Linear with their own modules: F.linear on .weight would skip them
        linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
        if any(type(m) is not torch.nn.Linear for m in linears):
            return None
    if type(model.lm_head) is not torch.nn.Linear:
        return None
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "attn_logit_softcapping", None):
        return None
    return DecodeStep(model)


def _rms_norm(x, norm):
    """transformers' LlamaRMSNorm, exactly: normalise in float32, scale in the input dtype."""
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def has_hooks(model) -> bool:
    """Whether any forward hook could change what the model computes (DecodeStep would bypass it)."""
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class DecodeStep:
    """step(ids (B,), attn (B, L) with the new column included, pos (B,), cache, shared=None) -> logits (B, V).

    The engine checks has_hooks() when a batch starts and uses the model's forward while any hook is registered.
    With `shared` (a SharedPrefix of this cache), attention reads each group's prompt once instead of once per row.
    """

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads

    @torch.inference_mode()
    def __call__(self, ids, attn, pos, cache, shared: SharedPrefix | None = None):
        inner = self.model.model
        B = ids.shape[0]
        x = F.embedding(ids, inner.embed_tokens.weight)[:, None]  # (B, 1, D)
        cos, sin = inner.rotary_emb(x, pos[:, None])  # (B, 1, head_dim) each
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, 1, head_dim): broadcast over heads
        gqa = self.kv_heads != self.heads
        # the split cache layout and its bmm attention on a CPU, in float32 whatever the weights or autocast: the split
        # cache holds float32 (bf16 keys and values are exact in it; under autocast RoPE's float32 cos/sin already
        # promote the keys), since bmm in bf16 rounds the scores before the softmax (outside tests/test_decode.py's
        # bf16 tolerance) and SDPA on the grown cache copied it, and cast it to bf16 under autocast, every step
        split = shared is None and x.device.type == "cpu" and hasattr(cache.layers[0], "append_split")
        fp32 = torch.autocast("cpu", enabled=False) if torch.is_autocast_enabled("cpu") else contextlib.nullcontext()
        if split or shared is not None:  # the additive mask, (B, 1, 1, L); both paths attend in float32
            bias = torch.zeros(attn.shape, device=x.device).masked_fill_(attn == 0, -math.inf)
            bias = bias[:, None, None]
        else:  # SDPA's boolean mask, (B, 1, 1, L)
            mask = attn.bool()[:, None, None, :]
        if shared is not None:  # of the columns after the shared prefix, (B, 1, 1, L - C)
            suffix_bias = bias[..., shared.columns:]
        for i, (layer, kv) in enumerate(zip(inner.layers, cache.layers)):
            a = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm)
            q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(B, 1, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(B, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(B, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            if split:
                with fp32:
                    o = split_attention(q.float() * a.scaling, *kv.append_split(k, v), bias).to(q.dtype)
            elif shared is None:
                keys, values = kv.update(k, v)  # (B, kv_heads, L, head_dim)
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=a.scaling, enable_gqa=gqa)
            else:
                keys, values = kv.update(k, v)
                o = shared.attend(i, q * a.scaling, keys, values, suffix_bias)
            x = x + F.linear(o.transpose(1, 2).reshape(B, 1, -1), a.o_proj.weight, a.o_proj.bias)
            m = layer.mlp
            h = _rms_norm(x, layer.post_attention_layernorm)
            x = x + F.linear(m.act_fn(F.linear(h, m.gate_proj.weight, m.gate_proj.bias)) *
                             F.linear(h, m.up_proj.weight, m.up_proj.bias), m.down_proj.weight, m.down_proj.bias)
        x = _rms_norm(x, inner.norm)
        head = self.model.lm_head
        return F.linear(x[:, 0], head.weight, head.bias)


def split_attention(q, body_k, body_v, tail_k, tail_v, bias):
    """One query per row against a cache held as a contiguous body and a short tail (GrowingLayer.append_split).

    q (B, H, 1, d) already scaled; body (B, KV, Lb, d), tail (B, KV, t, d); bias (B, 1, 1, Lb + t) additive ->
    (B, H, 1, d). The same attention as SDPA with that mask, to float rounding: the scores of both parts, one softmax
    over all columns, then the two weighted sums added. On a CPU, bmm over the contiguous body reads it in place
    where SDPA or bmm over a longer buffer's view copy it (3x at batch 256, dev/LOG.md, session 29)."""
    B, H, _, d = q.shape
    KV, Lb, t = body_k.shape[1], body_k.shape[2], tail_k.shape[2]
    rep = H // KV
    q = q.reshape(B * KV, rep, d)  # the query heads that share a key head act as query positions (GQA)
    scores = torch.cat([torch.bmm(q, body_k.view(B * KV, Lb, d).transpose(1, 2)),
                        torch.bmm(q, tail_k.reshape(B * KV, t, d).transpose(1, 2))], -1)  # (B * KV, rep, Lb + t)
    p = scores.view(B, KV, rep, Lb + t).add_(bias).softmax(-1).view(B * KV, rep, Lb + t)
    o = torch.bmm(p[..., :Lb], body_v.view(B * KV, Lb, d))
    o.baddbmm_(p[..., Lb:], tail_v.reshape(B * KV, t, d))
    return o.view(B, H, 1, d)


class SharedPrefix:
    """Attention that reads each prompt's keys and values once per group of rows instead of once per row.

    The G samples of one RL prompt are prefilled once and their cache rows copied (r1lab.engine), so cache columns
    [0, C) hold the same prompt keys and values in every row of a group. A decoding step is bound by reading the
    cache (64 rows x 6 layers of a 5M model is ~150 MB a step, far beyond the CPU caches), so reading the prefix
    once per group instead of once per row cuts most of its traffic while the suffixes (the sampled tokens) are
    still small: the G queries of a group attend to the group's prefix in one matmul, each row to its own suffix,
    and one softmax spans both (so the result is the same attention, to float rounding; tests/test_decode.py).

    For float32 weights without autocast only (EngineBatch._shared_prefix): it attends in the cache's dtype, and
    bf16 decoding takes the split path (split_attention, in float32) instead.

    groups: one group index per cache row (0..U-1; a group's rows hold identical columns [0, C), masked or not).
    columns: C. attn: (B, >= C) the real-column mask. The prefix copy is taken once, when the batch's layout
    changes; the engine rebuilds it after rows are admitted or dropped.
    """

    def __init__(self, cache, attn, groups: list[int], columns: int):
        members: list[list[int]] = [[] for _ in range(max(groups) + 1)]
        for row, g in enumerate(groups):
            members[g].append(row)
        self.columns, self.size = columns, max(len(m) for m in members)  # C, the largest group (G)
        dev = attn.device
        # slot g * G + j holds row members[g][j]; empty slots repeat the group's first row and are never read back
        self.slot_rows = torch.tensor([m[j] if j < len(m) else m[0] for m in members for j in range(self.size)],
                                      device=dev)
        row_slot = [0] * len(groups)
        for g, m in enumerate(members):
            for j, row in enumerate(m):
                row_slot[row] = g * self.size + j
        self.row_slot = torch.tensor(row_slot, device=dev)
        self.in_order = row_slot == list(range(len(groups))) and len(row_slot) == len(members) * self.size
        leaders = torch.tensor([m[0] for m in members], device=dev)
        # contiguous copies: attend() reads them as 3-D views every step
        self.kv = [(layer.keys.index_select(0, leaders)[:, :, :columns].contiguous(),
                    layer.values.index_select(0, leaders)[:, :, :columns].contiguous()) for layer in cache.layers]
        bias = torch.zeros(len(members), columns, device=dev).masked_fill_(attn[leaders, :columns] == 0, -math.inf)
        self.bias = bias[:, None, None, None]  # (U, 1, 1, 1, C)

    def attend(self, layer: int, q, keys, values, suffix_bias):
        """q (B, H, 1, d) already scaled; keys/values (B, KV, L, d); suffix_bias (B, 1, 1, L - C) -> (B, H, 1, d)."""
        kp, vp = self.kv[layer]  # (U, KV, C, d)
        B, H, _, d = q.shape
        U, KV, C, _ = kp.shape
        G, rep, S = self.size, H // KV, keys.shape[2] - C
        # 3-D views for bmm, no copies: the query heads that share a key head act as query positions (GQA)
        q = q.reshape(B, KV, rep, d)
        ks, vs = keys[:, :, C:].reshape(B * KV, S, d), values[:, :, C:].reshape(B * KV, S, d)
        qg = q if self.in_order else q[self.slot_rows]  # (U * G, KV, rep, d), group by group
        qg = qg.view(U, G, KV, rep * d).transpose(1, 2).reshape(U * KV, G * rep, d)
        sp = torch.bmm(qg, kp.reshape(U * KV, C, d).transpose(1, 2)).view(U, KV, G, rep, C).add_(self.bias)
        scores = torch.empty(B, KV, rep, C + S, dtype=q.dtype, device=q.device)
        prefix = sp.transpose(1, 2).reshape(U * G, KV, rep, C)
        scores[..., :C] = prefix if self.in_order else prefix[self.row_slot]
        scores[..., C:] = torch.bmm(q.view(B * KV, rep, d), ks.transpose(1, 2)).view(B, KV, rep, S).add_(suffix_bias)
        p = scores.softmax(-1)
        pp = p[..., :C] if self.in_order else p[..., :C][self.slot_rows]
        pp = pp.reshape(U, G, KV, rep * C).transpose(1, 2).reshape(U * KV, G * rep, C)
        op = torch.bmm(pp, vp.reshape(U * KV, C, d)).view(U, KV, G, rep, d).transpose(1, 2).reshape(U * G, KV * rep, d)
        o = torch.bmm(p.view(B * KV, rep, C + S)[..., C:], vs).view(B, H, d)
        o += op if self.in_order else op[self.row_slot]
        return o.view(B, H, 1, d)
