"""The tokenizer, the presets and checkpoints: real Hugging Face objects, loadable by transformers."""
import json

import pytest
import torch
from tolerances import logprob_atol

from r1lab.checkpoint import latest_checkpoint, save_checkpoint
from r1lab.model.load import load_model
from r1lab.model.presets import PRESETS, build_model, count_parameters, preset_config
from r1lab.model.tokenizer import TAGS, build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def test_every_character_and_digit_is_one_token(tok):
    text = "3*45=135, 135-7=128 vs 128 hit"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text)
    assert tok.decode(ids) == text
    for d in "0123456789":
        assert len(tok(d)["input_ids"]) == 1


def test_tags_are_single_tokens_kept_by_decode(tok):
    text = "<think>1+1=2</think> <answer>2</answer>"
    ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:1] == ["<think>"]
    assert len(ids) == 4 + len("1+1=2") + 1 + 1
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == text
    for tag in TAGS:
        assert len(tok(tag)["input_ids"]) == 1


def test_unknown_characters_map_to_unk(tok):
    ids = tok("é")["input_ids"]
    assert ids == [tok.unk_token_id]


def test_chat_template_matches_the_short_plain_template(tok):
    from r1lab.tasks.common import render_prompt

    chat = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert chat == render_prompt("2+2?", "short")
    history = tok.apply_chat_template([{"role": "user", "content": "q"},
                                       {"role": "assistant", "content": "4", "reasoning_content": "2+2=4"}],
                                      tokenize=False)
    assert "<think>2+2=4</think> <answer>4</answer><|endoftext|>" in history


def test_presets_span_1m_to_20m(tok):
    sizes = {}
    for name in PRESETS:
        cfg = preset_config(name, len(tok))
        with torch.device("meta"):
            from transformers import LlamaForCausalLM

            sizes[name] = count_parameters(LlamaForCausalLM(cfg))
    assert 0.5e6 < min(sizes.values()) < 1.5e6
    assert 15e6 < max(sizes.values()) < 25e6
    with pytest.raises(ValueError, match="valid presets"):
        preset_config("huge", 100)


def test_checkpoint_is_a_hugging_face_dir(tmp_path, tok):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_model("tiny-1m", tok)
    path = save_checkpoint(tmp_path, 3, model, tok, {"lr": 0.1}, {"step": 3})
    assert latest_checkpoint(tmp_path) == path
    assert (path / "model.safetensors").exists() and (path / "generation_config.json").exists()
    assert json.loads((path / "r1lab_config.json").read_text()) == {"lr": 0.1}
    loaded = AutoModelForCausalLM.from_pretrained(path)
    tok2 = AutoTokenizer.from_pretrained(path)
    x = torch.tensor([tok2("12+3=15")["input_ids"]])
    # safetensors stores float32 exactly: the weights come back bit for bit
    weights, reloaded = model.state_dict(), loaded.state_dict()
    assert weights.keys() == reloaded.keys() and all(torch.equal(weights[k], reloaded[k]) for k in weights)
    with torch.no_grad():  # the same weights may still run through another attention kernel: rounding only
        want = model(x).logits
        got = loaded(x).logits
    # logprob_atol bounds 2x the logits' own error (log-softmax's factor), so it covers the logits alone
    atol = logprob_atol(model.config, want.abs().max().item(), context=x.shape[1])
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
    m2, t2 = load_model(str(path))
    assert t2.padding_side == "left" and t2.eos_token == "<|endoftext|>"


def test_checkpoint_rotation_and_stale_tmp_cleanup(tmp_path, tok):
    model = build_model("tiny-1m", tok)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp-step_000001-999").mkdir()  # a writer killed mid-save
    (tmp_path / "checkpoints" / ".latest.tmp-998").write_text("step_0")  # killed while pointing `latest`
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, tok, {}, None, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_000002", "step_000003"]
    assert latest_checkpoint(tmp_path).name == "step_000003"
