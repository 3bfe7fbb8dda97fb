"""FLOPs of a decoder-only transformer, counted from its shape and the tokens actually processed.

One FLOP is one multiply or one add, so a multiply-add is 2 (the convention of 6·N·D and of
`torch.utils.flop_counter`). Per token, in a forward pass:

    matmuls    2·N                 N = weights used in matmuls: the attention and MLP projections of every layer
                                   plus the lm_head (vocab × hidden), whether or not it is tied to the embedding.
                                   The embedding lookup, norms, biases, RoPE and softmax are not counted.
    attention  2·L·t·(d_qk + d_v)  QK^T and AV for a token at position t (1-based) that attends to t positions;
                                   d_qk = d_v = heads·head_dim for Llama/Qwen2 (GQA shares K and V, not the work)

Over a sequence of T tokens a causal model attends to (T+1)/2 positions on average: `causal=True`. Eager
attention (and `flop_counter`, which sees only its matmuls) computes the full T×T square and masks it:
`causal=False` counts that, and matches flop_counter exactly. Training is 3× forward (the backward is two matmuls
per forward matmul: gradient by input and by weight). Generation with a KV cache runs each position once: the
prompt as one prefill, then one position per new token, with logits only where a token is sampled.

Shapes: `n_tokens` tokens processed in sequences of `context_len` tokens (a batch of B×T has n_tokens = B·T).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What the FLOPs depend on. shape_of(LlamaConfig(...)) reads it from a Hugging Face config."""

    n_layers: int
    body_params: int  # matmul weights of all layers (attention + MLP projections)
    head_params: int  # lm_head: vocab_size × hidden_size
    qk_dim: int  # query heads × query/key head dim
    v_dim: int  # query heads × value head dim


def shape_of(config) -> Shape:
    """The Shape of a Llama / Qwen2-style config (num_hidden_layers, hidden_size, intermediate_size,
    num_attention_heads, num_key_value_heads, vocab_size, optional head_dim). A Shape passes through unchanged.

        shape_of(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=100)).body_params == 73728
    """
    if isinstance(config, Shape):
        return config
    if any(getattr(config, k, None) for k in ("num_local_experts", "num_experts", "n_routed_experts")):
        raise NotImplementedError("mixture-of-experts configs are not modelled here; "
                                  "use cost.training_flops(active_params, tokens)")
    h = config.hidden_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    attn = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2  # q and o; k and v (smaller under GQA)
    mlp = 3 * h * config.intermediate_size  # gate, up, down
    return Shape(
        n_layers=config.num_hidden_layers,
        body_params=config.num_hidden_layers * (attn + mlp),
        head_params=config.vocab_size * h,
        qk_dim=heads * head_dim,
        v_dim=heads * head_dim,
    )


def attention_flops(shape: Shape, positions: float) -> float:
    """Forward QK^T and AV FLOPs summed over tokens that attend to `positions` positions in total.

    attention_flops(Shape(1, 0, 0, 8, 8), positions=10) == 320   # 2·1·10·(8+8)
    """
    return 2 * shape.n_layers * positions * (shape.qk_dim + shape.v_dim)


def _positions(context_len: int, causal: bool) -> float:
    """Positions a token attends to, averaged over a sequence of context_len tokens."""
    return (context_len + 1) / 2 if causal else context_len


def forward_flops(config, n_tokens: int, context_len: int, causal: bool = True) -> float:
    """Forward FLOPs for n_tokens tokens in sequences of context_len tokens (logits at every position).

    forward_flops(Shape(1, 10, 5, 8, 8), n_tokens=4, context_len=1) == 4 * (2*15 + 2*1*1*16)   # == 248
    """
    _check(n_tokens=n_tokens, context_len=context_len)
    s = shape_of(config)
    matmuls = 2 * (s.body_params + s.head_params) * n_tokens
    return matmuls + attention_flops(s, n_tokens * _positions(context_len, causal))


def train_flops(config, n_tokens: int, context_len: int, causal: bool = True) -> float:
    """Forward + backward FLOPs for n_tokens tokens: 3× forward."""
    return 3 * forward_flops(config, n_tokens, context_len, causal)


def frozen_train_flops(config, n_tokens: int, context_len: int, causal: bool = True) -> float:
    """Forward + backward FLOPs when the weights are frozen (LoRA's base): the weight matmuls' backward computes the
    input's gradient only (2× their forward in all), attention, which has no weights, still both (3×). An adapter's
    own FLOPs (r / hidden of the base's) are left out.

    frozen_train_flops(Shape(1, 10, 5, 8, 8), n_tokens=4, context_len=1) == 2*4*2*15 + 3*4*2*1*1*16   # == 624
    """
    attention = attention_flops(shape_of(config), n_tokens * _positions(context_len, causal))
    return 2 * forward_flops(config, n_tokens, context_len, causal) + attention  # the third attention pass


def generate_flops(config, prompt_len: int, new_tokens: int, n_sequences: int = 1, causal: bool = True) -> float:
    """FLOPs to sample new_tokens after a prompt of prompt_len, with a KV cache, for n_sequences sequences.

    The prefill runs the prompt (causal, or the full square with causal=False as eager attention does); then each
    sampled token but the last is fed back once and attends to everything before it and itself.
    subtle: P + new − 1 positions run through the layers, but logits are needed only at the last prompt position
    and at each fed-back token: new positions (Hugging Face `generate` computes no others).
    """
    _check(prompt_len=prompt_len, new_tokens=new_tokens, n_sequences=n_sequences)
    if new_tokens == 0:
        return 0.0
    s = shape_of(config)
    fed = new_tokens - 1  # sampled tokens that run through the model
    prefill = prompt_len * _positions(prompt_len, causal)
    # the i-th fed-back token (i = 1..fed) sits at position prompt_len + i and attends to that many positions
    decode = fed * prompt_len + fed * (fed + 1) / 2
    matmuls = 2 * s.body_params * (prompt_len + fed) + 2 * s.head_params * new_tokens
    return n_sequences * (matmuls + attention_flops(s, prefill + decode))


def _check(**values) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
