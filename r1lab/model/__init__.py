"""The base model: a character-level tokenizer, tiny Llama presets, the synthetic corpus and pretraining."""
