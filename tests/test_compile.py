"""torch_compile: each decoder layer compiled for the training passes only. The compiled model trains as the eager one
does (loss, log-probs and gradients within float32 rounding), every layer runs compiled (none falls back to eager at
dynamo's recompile limit), the no-grad passes (engine, evaluation, old and reference log-probs) stay eager, and a
real `r1lab sft` run with it learns what the eager run learns. Inductor builds CPU kernels here, as on a laptop."""
import copy
import json
import math

import pytest
import torch
from tolerances import logprob_atol, rounding_atol

from r1lab import parallel
from r1lab.config import ConfigError
from r1lab.model.tokenizer import build_tokenizer
from r1lab.rl.rollouts import response_logp


@pytest.fixture
def fresh_dynamo():
    import torch._dynamo

    torch._dynamo.reset()
    parallel._COMPILED.clear()
    fail = torch._dynamo.config.fail_on_recompile_limit_hit
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # a layer sent back to eager is an error, not a warning
    yield torch._dynamo.utils.counters
    torch._dynamo.config.fail_on_recompile_limit_hit = fail
    torch._dynamo.reset()
    parallel._COMPILED.clear()


def two_models():
    from conftest import tiny_model

    tok = build_tokenizer()
    eager = tiny_model(tok).train()
    compiled = copy.deepcopy(eager)
    parallel.compile_layers(compiled)
    return tok, eager, compiled


def grad_atol(p, model, tokens: int) -> float:
    c = model.config
    return rounding_atol(float(p.grad.abs().max()), max(c.hidden_size, c.intermediate_size, tokens),
                         depth=2 * (2 * c.num_hidden_layers + 1))


def assert_same_grads(eager, compiled, tokens: int):
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert (a.grad - b.grad).abs().max() <= grad_atol(a, eager, tokens), name


def test_compiled_layers_train_as_eager_ones_and_every_layer_compiles(fresh_dynamo):
    counters = fresh_dynamo
    tok, eager, compiled = two_models()
    L = eager.config.num_hidden_layers
    assert parallel.is_compiled(compiled) and not parallel.is_compiled(eager)
    x = torch.randint(3, len(tok), (4, 40), generator=torch.Generator().manual_seed(1))

    # SFT's and pretraining's pass: no KV cache, so one graph serves every layer
    losses = [m(input_ids=x, labels=x, use_cache=False).loss for m in (eager, compiled)]
    for loss in losses:
        loss.backward()
    assert abs(float(losses[0].detach()) - float(losses[1].detach())) <= rounding_atol(float(losses[0]), 4 * 40 * len(tok), 2 * L + 1)
    assert_same_grads(eager, compiled, 4 * 40)
    assert counters["stats"]["unique_graphs"] == 1

    # RL's pass: each prompt once, then its responses over the prompt's KV cache; one graph per layer and pass
    prompts = [tuple(range(5, 15))] * 2 + [tuple(range(7, 20))] * 2
    ids = torch.randint(3, len(tok), (4, 30), generator=torch.Generator().manual_seed(2))
    attn = torch.ones_like(ids)
    attn[0, 20:] = 0
    logps = []
    for m in (eager, compiled):
        m.zero_grad()
        logp, _ = response_logp(m, prompts, ids, attn, None)
        (logp * attn).sum().backward()
        logps.append(logp.detach())
    max_logit = float(eager(input_ids=ids).logits.abs().max())
    assert (logps[0] - logps[1]).abs().max() <= logprob_atol(eager.config, max_logit, context=13 + 30)
    assert_same_grads(eager, compiled, 4 * 43)
    assert counters["stats"]["unique_graphs"] == 1 + 2 * L  # no layer ran eagerly (that would raise, see the fixture)

    # without gradients (the engine, evaluation, the old and reference log-probs): eager, nothing more compiles
    with torch.no_grad():
        a, b = eager(input_ids=x[:, :17]).logits, compiled(input_ids=x[:, :17]).logits
    assert torch.equal(a, b)
    assert counters["stats"]["unique_graphs"] == 1 + 2 * L


def test_a_copy_runs_its_own_layers(fresh_dynamo):
    # the RL reference model is a deepcopy of the compiled policy: its layers must read their own weights
    tok, _, compiled = two_models()
    ref = copy.deepcopy(compiled)
    assert all(layer.forward.__self__ is layer for layer in ref.model.layers)
    with torch.no_grad():
        for p in ref.parameters():
            p.mul_(0.5)
    x = torch.randint(3, len(tok), (2, 12))
    with torch.no_grad():
        assert not torch.equal(ref(input_ids=x).logits, compiled(input_ids=x).logits)


def test_load_policy_compiles_when_asked_and_says_when_it_cannot(monkeypatch, tmp_path_factory):
    from conftest import tiny_checkpoint

    path = str(tiny_checkpoint(tmp_path_factory, "compile"))
    model, _ = parallel.load_policy(path, parallel.ScaleConfig(torch_compile=True), base=path)
    assert parallel.is_compiled(model)
    assert not parallel.is_compiled(parallel.load_policy(path, parallel.ScaleConfig(), base=path)[0])
    monkeypatch.setattr(parallel.shutil, "which", lambda name: None)
    monkeypatch.setattr(parallel.torch.cuda, "is_available", lambda: False)
    parallel.check_scale(parallel.ScaleConfig())
    with pytest.raises(ConfigError, match="torch_compile = true on the CPU needs a C\\+\\+ compiler"):
        parallel.check_scale(parallel.ScaleConfig(torch_compile=True))


def test_sft_with_torch_compile_learns_as_eager_sft(tmp_path, fresh_dynamo):
    from test_sft import TINY, traces, write

    from r1lab.config import load_config
    from r1lab.sft.train import SFTConfig
    from r1lab.sft.train import main as sft_main

    data = write(tmp_path / "traces.jsonl", traces(16, seed=2, task_name="arithmetic"))
    rows = {}
    for name, extra in (("eager", []), ("compiled", ["torch_compile=true"])):
        out = tmp_path / name
        sft_main(load_config(SFTConfig, None, TINY + ["steps=3", "eval_instances=0", "dtype=fp32", f"data={data}",
                                                     f"out_dir={out}"] + extra))
        rows[name] = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert fresh_dynamo["stats"]["unique_graphs"] >= 1  # it compiled
    # the same data and steps in float32: the first loss within rounding, the later ones after Adam's amplification of it
    (e0, c0), (e2, c2) = [(rows["eager"][i]["loss"], rows["compiled"][i]["loss"]) for i in (0, 2)]
    assert math.isclose(e0, c0, rel_tol=1e-5) and math.isclose(e2, c2, rel_tol=1e-4)
    assert c2 < c0
