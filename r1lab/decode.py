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
    """step(ids (B,), attn (B, L) with the new column included, pos (B,), cache) -> logits (B, V).

    The engine checks has_hooks() when a batch starts and uses the model's forward while any hook is registered.
    """

    def __init__(self, model):
        self.model = model
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads

    @torch.inference_mode()
    def __call__(self, ids, attn, pos, cache):
        inner = self.model.model
        B = ids.shape[0]
        x = F.embedding(ids, inner.embed_tokens.weight)[:, None]  # (B, 1, D)
        cos, sin = inner.rotary_emb(x, pos[:, None])  # (B, 1, head_dim) each
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, 1, head_dim): broadcast over heads
        mask = attn.bool()[:, None, None, :]  # (B, 1, 1, L)
        gqa = self.kv_heads != self.heads
        for layer, kv in zip(inner.layers, cache.layers):
            a = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm)
            q = F.linear(h, a.q_proj.weight, a.q_proj.bias).view(B, 1, self.heads, self.head_dim).transpose(1, 2)
            k = F.linear(h, a.k_proj.weight, a.k_proj.bias).view(B, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = F.linear(h, a.v_proj.weight, a.v_proj.bias).view(B, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = kv.update(k, v)  # (B, kv_heads, L, head_dim)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=a.scaling, enable_gqa=gqa)
            x = x + F.linear(o.transpose(1, 2).reshape(B, 1, -1), a.o_proj.weight, a.o_proj.bias)
            m = layer.mlp
            h = _rms_norm(x, layer.post_attention_layernorm)
            x = x + F.linear(m.act_fn(F.linear(h, m.gate_proj.weight, m.gate_proj.bias)) *
                             F.linear(h, m.up_proj.weight, m.up_proj.bias), m.down_proj.weight, m.down_proj.bias)
        x = _rms_norm(x, inner.norm)
        head = self.model.lm_head
        return F.linear(x[:, 0], head.weight, head.bias)
