"""r1lab.engine.decode.DecodeStep against the model's own forward: Llama (the presets) and Qwen2 (q/k/v biases, grouped
key/value heads), in fp32, bf16 autocast and bf16 weights, over both cache layouts (the split one a CPU takes, and the
grown one with SDPA that runs off a CPU); unsupported architectures fall back to the model's forward.

Tolerances come from tests/tolerances.py: the dtype, the logits' magnitude, the model's depth and widths."""
import pytest
import torch
from conftest import token_logp
from tolerances import logit_scale, logprob_atol, rounding_atol

from r1lab.engine.decode import decode_step_for
from r1lab.engine import Engine, SamplingParams
from r1lab.model.tokenizer import build_tokenizer

PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "x", "4*4="] * 2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _varied(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.15, generator=g) if p.dim() == 2 else p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def _llama(tok):
    from r1lab.model.presets import build_model
    return _varied(build_model("tiny-1m", tok))


def _qwen2(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return _varied(Qwen2ForCausalLM(cfg))


PRECISIONS = ["fp32", "bf16 autocast", "bf16 weights"]


def _engine(model, tok, precision, **kwargs):
    """An Engine in one of PRECISIONS (for "bf16 weights", `model` is already in bf16)."""
    return Engine(model, tok, autocast_dtype=torch.bfloat16 if precision == "bf16 autocast" else None, **kwargs)


def _with_weights(precision, model):
    """`model` cast to bf16 for "bf16 weights", else itself."""
    return model.to(torch.bfloat16) if precision == "bf16 weights" else model


@pytest.mark.parametrize("build", [_llama, _qwen2])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layout", ["split", "grown"])
def test_lean_decode_matches_the_models_forward(tok, build, precision, layout, monkeypatch):
    """On a CPU the lean step takes the split cache layout; "grown" takes the cache layer's `append_split` away, so
    it runs the path it runs off a CPU (SDPA over the grown layout) and `split_attention` would raise."""
    if layout == "grown":
        from r1lab.engine import decode
        from r1lab.engine.kvcache import _growing_layer_class
        monkeypatch.delattr(_growing_layer_class(), "append_split")
        monkeypatch.setattr(decode, "split_attention", None)
    model = _with_weights(precision, build(tok))
    assert decode_step_for(model) is not None
    params = SamplingParams(temperature=1.0, max_new_tokens=40, seed=3, logprobs=True)
    lean = _engine(model, tok, precision).generate(PROMPTS, params)
    _assert_matches_forward(model, lean, lambda: _engine(model, tok, precision, lean_decode=False).generate(
        PROMPTS, params), precision)
    assert len({tuple(o.token_ids) for o in lean}) > 3  # the text varies, so the comparison means something


def _assert_matches_forward(model, lean, stock, precision):
    """fp32: the lean engine's completions are the stock engine's (`stock()`, the model's forward each step), token
    for token, log-probs within float32 rounding. In bf16 (autocast, or bf16 weights) every matmul's inputs and the
    logits are rounded to bf16, which can flip a sampled token and send two runs apart; so each lean completion's
    log-probs are compared with the model's forward over its own tokens in the same precision, within a
    u(bf16)-sized tolerance."""
    if precision == "fp32":
        stock = stock()
        atol = logprob_atol(model.config, *logit_scale(model, stock))
        for a, b in zip(lean, stock):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=atol, rtol=0)
        return
    atol = logprob_atol(model.config, *logit_scale(model, lean), dtype=torch.bfloat16)
    for c in lean:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
            want = token_logp(model, c).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=atol, rtol=0)


def test_shared_prefix_attention_equals_sdpa():
    """SharedPrefix.attend against SDPA over the full rows: uneven groups, left padding, grouped key heads."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from r1lab.engine.decode import SharedPrefix

    g = torch.Generator().manual_seed(0)
    B, H, KV, d, C, S = 7, 4, 2, 8, 6, 5
    groups = [1, 0, 1, 2, 1, 0, 2]  # three prompts: rows 1 and 5 share one, rows 0, 2, 4 another, 3 and 6 the third
    prefix_k, prefix_v = torch.randn(3, KV, C, d, generator=g), torch.randn(3, KV, C, d, generator=g)
    keys = torch.cat([prefix_k[groups], torch.randn(B, KV, S, d, generator=g)], 2)  # (B, KV, C + S, d)
    values = torch.cat([prefix_v[groups], torch.randn(B, KV, S, d, generator=g)], 2)
    attn = torch.ones(B, C + S, dtype=torch.long)
    attn[[0, 2, 4], :2] = 0  # that group's prompt is two columns shorter (left padding)
    attn[5, -2:] = 0  # a finished row: its last columns are masked
    cache = SimpleNamespace(layers=[SimpleNamespace(keys=keys, values=values)])
    shared = SharedPrefix(cache, attn, groups, C)
    q = torch.randn(B, H, 1, d, generator=g)
    bias = torch.zeros(B, C + S).masked_fill(attn == 0, -torch.inf)[:, None, None]
    got = shared.attend(0, q * d ** -0.5, keys, values, bias[..., C:])
    want = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn.bool()[:, None, None], enable_gqa=True)
    # two chained reductions (scores over d, the weighted sum over C + S columns); a score error ds moves each weight
    # by a relative 2 * ds, so the output's magnitude is max|v| * (1 + 2 * max|score|)
    scores = q @ keys.repeat_interleave(H // KV, 1).transpose(-1, -2) * d ** -0.5  # (B, H, 1, C + S)
    atol = rounding_atol(values.abs().max().item() * (1 + 2 * scores.abs().max().item()), n=max(d, C + S), depth=2)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)


def test_split_attention_equals_sdpa():
    """split_attention (a contiguous body and a short tail) against SDPA over the whole rows: left padding, a finished
    row's masked last columns, grouped key heads."""
    import torch.nn.functional as F

    from r1lab.engine.decode import split_attention

    g = torch.Generator().manual_seed(1)
    B, H, KV, d, Lb, t = 5, 4, 2, 8, 9, 3
    keys, values = torch.randn(B, KV, Lb + t, d, generator=g), torch.randn(B, KV, Lb + t, d, generator=g)
    attn = torch.ones(B, Lb + t, dtype=torch.long)
    attn[[0, 3], :4] = 0  # left padding
    attn[2, -2:] = 0  # a finished row
    q = torch.randn(B, H, 1, d, generator=g)
    bias = torch.zeros(B, Lb + t).masked_fill(attn == 0, -torch.inf)[:, None, None]
    got = split_attention(q * d ** -0.5, keys[:, :, :Lb].contiguous(), values[:, :, :Lb].contiguous(),
                          keys[:, :, Lb:], values[:, :, Lb:], bias)
    want = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn.bool()[:, None, None], enable_gqa=True)
    scores = q @ keys.repeat_interleave(H // KV, 1).transpose(-1, -2) * d ** -0.5  # as in the shared-prefix test
    atol = rounding_atol(values.abs().max().item() * (1 + 2 * scores.abs().max().item()), n=max(d, Lb + t), depth=2)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)


@pytest.mark.parametrize("build", [_llama, _qwen2])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_split_cache_folds_and_surgery_match_the_forward(tok, build, precision, monkeypatch):
    """The lean step's split cache layout with a 3-column tail, so it folds every few tokens, while rows finish at
    different steps (compaction) and queued rows are admitted into the running batch (max_batch_size 3): the tokens
    and log-probs are the model's own forward's, and the split path ran, in float32 (in bf16 too, where keys or
    values arrive in bf16 and the stock forward runs SDPA in bf16)."""
    from r1lab.engine import decode
    from r1lab.engine.kvcache import _growing_layer_class

    model = _with_weights(precision, build(tok))
    monkeypatch.setattr(_growing_layer_class(), "TAIL", 3)
    calls, split = [], decode.split_attention

    def spy(q, body_k, body_v, tail_k, tail_v, bias):
        calls.append((q.shape[0], body_k.shape[2], {t.dtype for t in (q, body_k, body_v, tail_k, tail_v)}))
        return split(q, body_k, body_v, tail_k, tail_v, bias)

    monkeypatch.setattr(decode, "split_attention", spy)
    requests = [(tok(p)["input_ids"], SamplingParams(temperature=1.0, max_new_tokens=6 + 5 * i, logprobs=True), i)
                for i, p in enumerate(PROMPTS[:7])]

    lean = _run_batch(_engine(model, tok, precision, max_batch_size=3), requests)
    assert len({b for _, b, _ in calls}) > 5 and len({n for n, _, _ in calls}) > 1  # folds, and rows came and went
    assert set().union(*(d for _, _, d in calls)) == {torch.float32}
    _assert_matches_forward(model, lean, lambda: _run_batch(
        _engine(model, tok, precision, max_batch_size=3, lean_decode=False), requests), precision)


def _run_batch(engine, requests):
    """Completions of (prompt_ids, params, seed) requests, all in one EngineBatch."""
    from r1lab.engine import EngineBatch

    batch, done = EngineBatch(engine), {}
    rids = [batch.add(ids, params, seed=seed) for ids, params, seed in requests]
    while batch:
        done.update({e.request_id: e.completion for e in batch.step() if e.completion})
    return [done[r] for r in rids]


@pytest.mark.parametrize("build", [_llama, _qwen2])
def test_rows_sharing_prompts_read_them_once_and_match_the_forward(tok, build, monkeypatch):
    """G samples of each prompt take the shared-prefix path, also after finished rows leave and groups are uneven;
    the tokens and log-probs are those of the model's own forward."""
    from r1lab.engine.decode import SharedPrefix

    model = build(tok)
    built, attended, init, attend = [], [], SharedPrefix.__init__, SharedPrefix.attend

    def spy_init(self, cache, attn, groups, columns):
        built.append(groups)
        init(self, cache, attn, groups, columns)

    def spy_attend(self, layer, q, *args):
        attended.append(q.shape[0])
        return attend(self, layer, q, *args)

    monkeypatch.setattr(SharedPrefix, "__init__", spy_init)
    monkeypatch.setattr(SharedPrefix, "attend", spy_attend)
    ids = [tok(p)["input_ids"] for p in PROMPTS[:3]]

    # 4 samples of each prompt, finishing at different steps
    requests = [(ids[i % 3], SamplingParams(temperature=1.0, max_new_tokens=8 + 4 * i, logprobs=True), i)
                for i in range(12)]
    lean = _run_batch(Engine(model, tok), requests)
    assert len(built) >= 3 and len(built[0]) == 12  # planned at the start and again after rows left
    assert 12 in attended and min(attended) < 12  # used by the full batch and after rows left
    assert any(len(set(map(groups.count, groups))) > 1 for groups in built)  # uneven groups at some point
    monkeypatch.undo()
    stock = _run_batch(Engine(model, tok, lean_decode=False), requests)
    atol = logprob_atol(model.config, *logit_scale(model, stock))  # (max |logit|, longest sequence)
    for a, b in zip(lean, stock):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=atol, rtol=0)


def test_lean_decode_sees_weight_updates(tok):
    model = _llama(tok)
    engine = Engine(model, tok)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    before = engine.generate(PROMPTS[:3], params)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # tied to the embedding: a very different model
    after = engine.generate(PROMPTS[:3], params)
    stock = Engine(model, tok, lean_decode=False).generate(PROMPTS[:3], params)
    assert [o.token_ids for o in after] == [o.token_ids for o in stock]
    assert [o.token_ids for o in after] != [o.token_ids for o in before]


def test_other_architectures_use_the_models_forward(tok):
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                                       eos_token_id=tok.eos_token_id)).eval()
    assert decode_step_for(model) is None
    engine = Engine(model, tok)
    assert engine.lean_step is None
    out = engine.generate(["hi"], SamplingParams(temperature=0, max_new_tokens=5))[0]
    assert len(out.token_ids) == 5 or out.finish_reason == "eos"


def test_hooks_and_wrapped_projections_use_the_models_forward(tok):
    model = _llama(tok)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    engine = Engine(model, tok)
    free = engine.generate(PROMPTS[:4], params)
    banned = free[0].token_ids[3]
    handle = model.lm_head.register_forward_hook(lambda m, i, out: out.index_fill(-1, torch.tensor([banned]), -1e4))
    try:
        hooked = engine.generate(PROMPTS[:4], params)
        assert all(banned not in o.token_ids for o in hooked)  # the hook ran on every decoding step
    finally:
        handle.remove()
    layer = model.model.layers[0].self_attn

    class Wrapped(torch.nn.Module):  # what an adapter (LoRA) does to a projection
        def __init__(self, inner):
            super().__init__()
            self.inner, self.weight, self.bias = inner, inner.weight, inner.bias

        def forward(self, x):
            return self.inner(x)

    layer.q_proj = Wrapped(layer.q_proj)
    assert decode_step_for(model) is None
