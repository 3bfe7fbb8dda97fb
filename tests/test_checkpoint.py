"""What r1lab writes into a checkpoint loads under every transformers the project allows (pyproject: >= 4.51)."""
import json

import pytest

from r1lab.checkpoint import save_checkpoint
from r1lab.model.load import ASSETS
from r1lab.model.presets import build_model
from r1lab.model.tokenizer import build_tokenizer

# Tokenizer classes a transformers 4.x AutoTokenizer can name for a tokenizer.json fast tokenizer (4.51 and 4.57
# checked by hand). transformers 5 writes "TokenizersBackend", which 4.x lacks: "does not exist or is not currently
# imported".
TRANSFORMERS4_CLASSES = {"PreTrainedTokenizerFast"}
TEXT = "User: Using the numbers [3, 5, 7], create an equation that equals 22.\nAssistant: <think>3*5=15 vs 22 miss\n"


def test_a_saved_tokenizer_names_a_class_transformers_4_has(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    path = save_checkpoint(tmp_path, 1, build_model("tiny-1m", tok), tok, {})
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] in TRANSFORMERS4_CLASSES
    reloaded = AutoTokenizer.from_pretrained(path)  # and the transformers installed here reads it back the same
    assert reloaded(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    assert reloaded.chat_template == tok.chat_template and reloaded.eos_token_id == tok.eos_token_id


@pytest.mark.parametrize("base", ["countdown-base"])
def test_the_shipped_base_names_a_class_transformers_4_has(base):
    from transformers import AutoTokenizer

    config = json.loads((ASSETS / base / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in TRANSFORMERS4_CLASSES
    assert AutoTokenizer.from_pretrained(ASSETS / base)(TEXT)["input_ids"] == build_tokenizer()(TEXT)["input_ids"]
