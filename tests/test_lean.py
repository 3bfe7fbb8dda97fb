"""r1lab.rl.lean against the model's own forward: Llama (the presets) and Qwen2 (q/k/v biases, grouped key/value
heads), rows in groups (the grouped attention) and not (the gathered one), log-probs and gradients; bf16 autocast;
the models and modes it leaves to the model's forward.

Tolerances come from tests/tolerances.py: the dtype, the logits' magnitude, the model's depth and widths."""
import copy
from types import SimpleNamespace

import pytest
import torch
from tolerances import grad_magnitudes, logit_scale, logprob_atol, rounding_atol

from r1lab.model.tokenizer import build_tokenizer
from r1lab.rl import algos, lean
from r1lab.rl.rollouts import pack, response_logp

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _varied(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.15, generator=g) if p.dim() == 2 else p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _llama(tok):
    from r1lab.model.presets import build_model
    return _varied(build_model("tiny-1m", tok))


def _qwen2(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _varied(Qwen2ForCausalLM(cfg))


def _completions(tok, layout: str):
    """Random prompts of unequal lengths (left padding) and responses of unequal lengths (right padding) that also
    sample the pad token (its embedding row gets no gradient from the model's forward), some tokens masked.
    "groups": 3 prompts x 4 rows in order; "mixed": uneven groups, out of order."""
    g = torch.Generator().manual_seed(1)
    V = len(tok)
    prompts = [tuple(torch.randint(2, V, (n,), generator=g).tolist()) for n in (9, 14, 5)]
    order = [0] * 4 + [1] * 4 + [2] * 4 if layout == "groups" else [1, 0, 2, 1, 0, 1, 2]
    out = []
    for k in order:
        n = int(torch.randint(3, 17, (1,), generator=g))
        ids = torch.randint(0, V, (n,), generator=g)
        ids[n // 2] = tok.pad_token_id
        mask = [0.0 if i == 1 else 1.0 for i in range(n)]  # a forced token: not trained on
        out.append(SimpleNamespace(prompt_ids=list(prompts[k]), token_ids=ids.tolist(), mask=mask))
    return out


@pytest.mark.parametrize("build", [_llama, _qwen2])
@pytest.mark.parametrize("layout", ["groups", "mixed"])
def test_lean_logp_and_gradients_equal_the_models_forward(tok, build, layout):
    """response_logp through r1lab.rl.lean equals one plain forward of prompt + response per row, log-probs and
    entropies and the gradients of a masked sum, in training mode."""
    model = build(tok).train()
    completions = _completions(tok, layout)
    prompts, ids, attn, mask = pack(completions, tok.pad_token_id)
    distinct = list(dict.fromkeys(prompts))
    rows = torch.tensor([distinct.index(p) for p in prompts])
    assert lean.usable(model)
    assert (lean.group_size(rows, len(distinct)) is not None) == (layout == "groups")
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    logp, ent = response_logp(m1, prompts, ids, attn, None, with_entropy=True)
    (logp * mask).sum().backward()
    mags = grad_magnitudes(list(m2.parameters()))
    for i, c in enumerate(completions):  # one row at a time, no padding anywhere; one backward per row
        seq = torch.tensor([c.prompt_ids + c.token_ids])
        logits = m2(input_ids=seq).logits[:, len(c.prompt_ids) - 1:-1]
        full = algos.logprobs_from_logits(logits, seq[:, len(c.prompt_ids):])[0]
        (full * torch.tensor(c.mask)).sum().backward()
        max_logit, context = logit_scale(model, [c])
        atol = logprob_atol(model.config, max_logit, context)
        n = len(c.token_ids)
        torch.testing.assert_close(logp[i, :n], full.detach(), atol=atol, rtol=0)
        torch.testing.assert_close(ent[i, :n], algos.entropy_from_logits(logits.detach())[0], atol=atol, rtol=0)
    context = max(len(c.prompt_ids + c.token_ids) for c in completions)
    n = max(model.config.intermediate_size, context)
    depth = 2 * model.config.num_hidden_layers + 1
    for (name, p1), p2, mag in zip(m1.named_parameters(), m2.parameters(), mags):
        assert p1.grad is not None, name
        assert float((p1.grad - p2.grad).norm()) <= rounding_atol(float(mag.norm()), n, depth), name


@pytest.mark.parametrize("build", [_llama, _qwen2])
def test_lean_under_bf16_autocast_matches_the_models_forward_to_bf16_rounding(tok, build, monkeypatch):
    model = build(tok).train()
    prompts, ids, attn, mask = pack(_completions(tok, "groups"), tok.pad_token_id)
    with torch.no_grad():
        fast = response_logp(model, prompts, ids, attn, torch.bfloat16)[0]
        monkeypatch.setattr(lean, "usable", lambda m: False)
        stock = response_logp(model, prompts, ids, attn, torch.bfloat16)[0]
    max_logit, context = logit_scale(model, _completions(tok, "groups"))
    atol = logprob_atol(model.config, max_logit, context, dtype=torch.bfloat16)
    torch.testing.assert_close(fast * mask, stock * mask, atol=atol, rtol=0)


def test_lean_leaves_hooks_dropout_and_adapters_to_the_models_forward(tok):
    model = _llama(tok).train()
    assert lean.usable(model)
    handle = model.model.layers[0].mlp.register_forward_hook(lambda m, i, o: o * 2)
    assert not lean.usable(model)
    prompts, ids, attn, _ = pack(_completions(tok, "groups"), tok.pad_token_id)
    with torch.no_grad():
        hooked = response_logp(model, prompts, ids, attn, None)[0]
    handle.remove()
    with torch.no_grad():
        plain = response_logp(model, prompts, ids, attn, None)[0]
    assert float((hooked - plain).abs().max()) > 1e-2  # the hook ran: the model's forward was used
    model.config.attention_dropout = 0.1
    assert not lean.usable(model) and lean.usable(model.eval())
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(_llama(tok), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert not lean.usable(wrapped) and not lean.usable(wrapped.base_model.model)
