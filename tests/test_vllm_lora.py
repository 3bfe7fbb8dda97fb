"""A LoRA policy (peft) as vLLM's rollout source: the backend pushes the merged weights (r1lab.parallel's
inference_weights), so vLLM's greedy tokens and raw log-probs are those of peft's own merge (merge_and_unload on a
copy), before and after an optimizer step on the adapters. Skipped where vllm or peft is not importable; run with the
venv of tests/test_vllm.py (plus pip install --no-deps peft accelerate):

    /work/vllm-venv/bin/python -m pytest tests/test_vllm_lora.py
"""
import copy

import pytest
import torch
from conftest import tiny_model, token_logp
from tolerances import logit_scale, logprob_atol

vllm = pytest.importorskip("vllm")
pytest.importorskip("peft")

from r1lab.engine import SamplingParams, make_backend  # noqa: E402
from r1lab.model.tokenizer import build_tokenizer  # noqa: E402
from r1lab.parallel import ScaleConfig, add_lora  # noqa: E402

torch.set_num_threads(1)  # before any vLLM engine is built (it pins the count)
PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "4*4="]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, logprobs=True)


def lora_policy():
    """tiny_model with rank-4 adapters on every linear layer, A and B drawn at random (peft starts B at 0, which
    would make the adapter a no-op and the test blind to it)."""
    tok = build_tokenizer()
    model = add_lora(tiny_model(tok, max_positions=256), ScaleConfig(lora_r=4), "tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.normal_(0, 0.05, generator=g)
    return model.train(), tok


def check_against(reference, completions):
    """Each completion is `reference`'s greedy text (every token its argmax, up to a tie within rounding) and each
    log-prob is `reference`'s up to rounding: fp32 on both sides (tests/tolerances.py; observed 7e-6 against 9e-5)."""
    atol = logprob_atol(reference.config, *logit_scale(reference, completions))
    with torch.no_grad():
        for c in completions:
            logp = token_logp(reference, c)
            chosen = logp[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
            assert (chosen >= logp.max(-1).values - atol).all(), "not the reference's greedy tokens"
            assert (chosen - torch.tensor(c.logprobs)).abs().max().item() <= atol


def greedy_everywhere(model, completions) -> bool:
    """Whether every token of every completion is `model`'s exact argmax."""
    with torch.no_grad():
        return all(torch.equal(token_logp(model, c).argmax(-1), torch.tensor(c.token_ids)) for c in completions)


def merged(model):
    """peft's own merge, on a copy: the plain model the LoRA policy computes."""
    return copy.deepcopy(model).merge_and_unload().eval()


def test_a_lora_policy_pushes_its_merged_weights_before_and_after_an_update():
    model, tok = lora_policy()
    backend = make_backend("vllm", model, tok, max_batch_size=8)

    before = backend.generate(PROMPTS, GREEDY)
    check_against(merged(model), before)
    with model.disable_adapter():  # the adapters change the text: a push of the base weights would fail above
        assert not greedy_everywhere(model, before)

    # one Adam step on the adapters (the only weights that train) making these completions less likely
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    logp = [token_logp(model, c).gather(1, torch.tensor([c.token_ids]).T).mean() for c in before]
    torch.stack(logp).mean().backward()
    opt.step()
    backend.sync_weights(model)
    after = backend.generate(PROMPTS, GREEDY)
    assert all(a.token_ids != b.token_ids for a, b in zip(after, before))  # the update changed every greedy text
    check_against(merged(model), after)
