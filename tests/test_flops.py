"""The FLOPs model (r1lab/flops.py) by hand and against torch.utils.flop_counter on a tiny Llama.

flop_counter sees matmuls (aten.mm, aten.bmm) and the CUDA SDPA kernels, not the CPU SDPA kernel, so the parity
tests use eager attention, which computes the full T×T square: causal=False must match it exactly, and the default
causal count must fall short of it by exactly the masked triangle, the T·(T−1)/2 pairs of a token with a later one.
FLOP counts are integers below 2**53, exact in float64: every comparison here is exact, no tolerance.
"""
import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from r1lab.cost import flops as F

B, T = 2, 64  # sequences, tokens per sequence


@pytest.fixture(scope="module")
def model():
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=100, max_position_embeddings=128,
                                   attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def counted(fn) -> tuple[int, dict]:
    """(total FLOPs, FLOPs by op) that fn ran, less the rotary embedding's: transformers 5.17 builds RoPE's angle
    table with a matmul (2·(head_dim/2)·T a call), which the FLOP model leaves out and later releases do not run."""
    with FlopCounterMode(display=False) as fc:
        fn()
    counts = fc.get_flop_counts()
    by_op = {str(k): v for k, v in counts["Global"].items()}
    for module, ops in counts.items():
        if module.endswith("rotary_emb"):
            for op, flops in ops.items():
                by_op[str(op)] -= flops
    return sum(by_op.values()), by_op


def test_shape_by_hand(model):
    s = F.shape_of(model.config)
    # per layer: q 64·64 + k 64·32 + v 64·32 + o 64·64 (GQA: 2 kv heads of 16) + MLP 3·64·128
    assert s.body_params == 2 * (4096 + 2048 + 2048 + 4096 + 24576) == 73728
    assert s.head_params == 100 * 64
    assert s.qk_dim == s.v_dim == 64
    # the model's own count: matmul weights are all parameters but the embedding and the norms
    n_norm = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    n_embed = model.model.embed_tokens.weight.numel()
    assert s.body_params + s.head_params == sum(p.numel() for p in model.parameters()) - n_embed - n_norm


def test_hand_computed():
    s = F.Shape(n_layers=1, body_params=10, head_params=5, qk_dim=8, v_dim=8)
    assert F.attention_flops(s, positions=10) == 320
    assert F.forward_flops(s, n_tokens=4, context_len=1) == 248
    # full square: every token attends to all T; causal: (T+1)/2 on average
    assert F.forward_flops(s, 3, 3, causal=False) - 3 * 30 == 2 * 1 * 9 * 16
    assert F.forward_flops(s, 3, 3, causal=True) - 3 * 30 == 2 * 1 * 6 * 16  # 1 + 2 + 3 positions
    assert F.train_flops(s, 4, 1) == 3 * 248
    assert F.frozen_train_flops(s, 4, 1) == 2 * 4 * 30 + 3 * 4 * 32 == 624


def test_forward_matches_flop_counter(model):
    x = torch.randint(0, 100, (B, T))
    total, by_op = counted(lambda: model(x))
    s = F.shape_of(model.config)
    assert by_op["aten.mm"] == 2 * (s.body_params + s.head_params) * B * T  # matmuls, exactly
    assert by_op["aten.bmm"] == F.attention_flops(s, B * T * T)  # eager's full square, exactly
    assert F.forward_flops(model.config, B * T, T, causal=False) == total
    assert total - F.forward_flops(model.config, B * T, T) == F.attention_flops(s, B * T * (T - 1) / 2)


def test_train_matches_flop_counter(model):
    x = torch.randint(0, 100, (B, T))
    total, _ = counted(lambda: model(x, labels=x).loss.backward())
    assert F.train_flops(model.config, B * T, T, causal=False) == total
    masked = F.attention_flops(F.shape_of(model.config), B * T * (T - 1) / 2)
    assert total - F.train_flops(model.config, B * T, T) == 3 * masked  # forward + two backward matmuls each


def test_frozen_train_matches_flop_counter(model):
    """LoRA's case: frozen weights, gradients through the activations. The weight matmuls' backward has no weight
    gradient (2x their forward); attention has no weights and keeps both backward matmuls (3x): counting the whole
    pass as 2x forward missed one attention forward."""
    x = torch.randint(0, 100, (B, T))
    model.requires_grad_(False)
    try:
        embeds = model.model.embed_tokens(x).detach().requires_grad_(True)
        total, _ = counted(lambda: model(inputs_embeds=embeds, labels=x).loss.backward())
    finally:
        model.requires_grad_(True)
    assert F.frozen_train_flops(model.config, B * T, T, causal=False) == total
    s = F.shape_of(model.config)
    assert total - 2 * F.forward_flops(model.config, B * T, T, causal=False) == F.attention_flops(s, B * T * T)


def test_generate_matches_flop_counter(model):
    P, N = 16, 8
    x = torch.randint(1, 100, (1, P))
    total, _ = counted(lambda: model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N,
                                              min_new_tokens=N, do_sample=False, pad_token_id=0))
    assert F.generate_flops(model.config, P, N, causal=False) == total
    # only the prefill computes a square; each decoding step attends to exactly the positions before it
    assert total - F.generate_flops(model.config, P, N) == F.attention_flops(F.shape_of(model.config), P * (P - 1) / 2)


def test_generate_properties():
    s = F.Shape(n_layers=2, body_params=1000, head_params=300, qk_dim=16, v_dim=16)
    # one new token is a prefill with logits only at the last position
    assert F.generate_flops(s, 10, 1) == F.forward_flops(s, 10, 10) - 2 * 300 * 9
    # a KV cache visits each position once: prefill + decode == one causal pass over the whole sequence
    assert F.generate_flops(s, 10, 6) == F.forward_flops(s, 15, 15) - 2 * 300 * (15 - 6)
    assert F.generate_flops(s, 10, 6, n_sequences=4) == 4 * F.generate_flops(s, 10, 6)
    assert F.generate_flops(s, 10, 0) == 0


def test_bad_input():
    s = F.Shape(1, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="n_tokens"):
        F.forward_flops(s, -1, 4)
    with pytest.raises(ValueError, match="new_tokens"):
        F.generate_flops(s, 4, -2)
    moe = transformers.MixtralConfig(num_local_experts=4)
    with pytest.raises(NotImplementedError, match="mixture-of-experts"):
        F.shape_of(moe)
