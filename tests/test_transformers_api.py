"""r1lab against the transformers API it calls: the cache keyword (renamed from `past_key_values` to `cache`; the old
name warns, then goes) and checkpointing (gradient_checkpointing_* -> activation_checkpointing_*). The
engine's forward path and response_logp run here with every deprecation warning made an error."""
import logging
import warnings

import pytest
import torch

from r1lab.engine import Engine, SamplingParams
from r1lab.engine.kvcache import cache_kwarg, returned_cache
from r1lab.model.presets import build_model
from r1lab.model.tokenizer import build_tokenizer
from r1lab.parallel import checkpointing, enable_checkpointing
from r1lab.rl.rollouts import pack, response_logp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


class OldForward(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=None, **kwargs):
        return input_ids


class NewForward(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=None, **kwargs):
        return input_ids


def test_cache_keyword_follows_the_forward_signature(tok):
    assert cache_kwarg(OldForward()) == "past_key_values"
    assert cache_kwarg(NewForward()) == "cache"
    import inspect

    from transformers import LlamaForCausalLM

    expected = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
    assert cache_kwarg(build_model("tiny-1m", tok)) == expected


def test_a_peft_wrapper_takes_its_base_models_keyword(tok):
    peft = pytest.importorskip("peft")
    model = build_model("tiny-1m", tok)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert cache_kwarg(wrapped) == cache_kwarg(model)


def test_returned_cache_reads_either_name():
    new, old = type("Out", (), {"cache": "c"})(), type("Out", (), {"past_key_values": "p"})()
    assert returned_cache(new) == "c" and returned_cache(old) == "p"


@pytest.fixture
def no_deprecations():
    """Every warning raised as an error, and transformers' own deprecation log lines collected (it logs some)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    from transformers.utils import logging as hf_logging

    logger, handler = hf_logging.get_logger("transformers"), Collect(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            yield lines
    finally:
        logger.removeHandler(handler)
    assert not [ln for ln in lines if "deprecat" in ln.lower()], lines


def test_engine_forward_path_uses_no_deprecated_name(tok, no_deprecations):
    model = build_model("tiny-1m", tok).eval()
    engine = Engine(model, tok, lean_decode=False)  # the model's forward for every step, cache passed each time
    out = engine.generate([tok("2+2=")["input_ids"]] * 2, SamplingParams(max_new_tokens=6, temperature=0.0))
    assert all(len(c.token_ids) == 6 or c.finish_reason == "stop" for c in out)


@pytest.mark.parametrize("on", [False, True])
def test_response_logp_uses_no_deprecated_name(tok, no_deprecations, on):
    model = build_model("tiny-1m", tok)
    if on:
        enable_checkpointing(model)
    model.train()
    assert checkpointing(model) == on
    p = tok("Using 3, 5 make 8.")["input_ids"]
    completions = [type("C", (), {"prompt_ids": p, "token_ids": [7, 8, 9, 10][:n], "mask": [1] * n})() for n in (4, 2)]
    prompts, ids, attn, _ = pack(completions, tok.pad_token_id)
    logp, _ = response_logp(model, prompts, ids, attn, None)
    (logp * attn).sum().backward()
    assert torch.isfinite(logp).all() and model.lm_head.weight.grad is not None
