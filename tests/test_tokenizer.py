"""The character-level tokenizer as saved: what AutoTokenizer reads back is the tokenizer r1lab built."""
import json

from r1lab.model.tokenizer import build_tokenizer


def test_padding_side_left_is_saved_and_reloaded(tmp_path):
    """padding_side was set after construction, which save_pretrained does not write: AutoTokenizer reloaded it
    padding on the right, and a batch of prompts padded that way generates after its pad tokens."""
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    assert tok.padding_side == "left"
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["padding_side"] == "left"
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded.padding_side == "left"
    batch = reloaded(["12+3", "1"], padding=True)["input_ids"]
    assert batch[1] == [tok.pad_token_id] * 3 + tok("1")["input_ids"]  # pads before the shorter prompt
