"""Tiny Llama presets (about 1M to 20M parameters), built from scratch (r1lab.model.load loads saved ones).

Presets are standard `LlamaConfig`s, so every checkpoint is an ordinary Hugging Face model that
`AutoModelForCausalLM.from_pretrained` loads and vLLM serves.
"""
from __future__ import annotations

# name -> (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size)
PRESETS = {
    "tiny-1m": (128, 4, 4, 352),
    "tiny-3m": (192, 6, 6, 512),
    "tiny-5m": (256, 6, 8, 704),
    "tiny-10m": (320, 8, 8, 864),
    "tiny-20m": (448, 8, 8, 1216),
}


def preset_config(name: str, vocab_size: int, max_positions: int = 1024, eos_token_id: int = 1, pad_token_id: int = 0):
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    hidden, layers, heads, inter = PRESETS[name]
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=heads, intermediate_size=inter, max_position_embeddings=max_positions,
        rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, attention_bias=False, mlp_bias=False,
    )


def build_model(name: str, tokenizer, max_positions: int = 1024, seed: int = 0):
    """A freshly initialised preset model for `tokenizer`."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = preset_config(name, len(tokenizer), max_positions, tokenizer.eos_token_id, tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    return model


def count_parameters(model, exclude_embeddings: bool = False) -> int:
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or (exclude_embeddings and "embed" in name):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
