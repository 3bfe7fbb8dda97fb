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
    torch._dynamo.utils.counters.clear()
    parallel._COMPILED.clear()
    fail = torch._dynamo.config.fail_on_recompile_limit_hit
    torch._dynamo.config.fail_on_recompile_limit_hit = True  # a layer sent back to eager is an error, not a warning
    yield torch._dynamo.utils.counters
    torch._dynamo.config.fail_on_recompile_limit_hit = fail
    torch._dynamo.reset()
    parallel._COMPILED.clear()


def two_models():
    """tiny-1m's widths with 2 layers (each layer's graphs compile apart under a KV cache: fewer layers, less time),
    weights as conftest.tiny_model's; and a copy of it with compile_layers."""
    from transformers import LlamaForCausalLM

    from r1lab.model.presets import preset_config

    tok = build_tokenizer()
    config = preset_config("tiny-1m", len(tok), 1024, tok.eos_token_id, tok.pad_token_id)
    config.num_hidden_layers = 2
    torch.manual_seed(0)
    eager = LlamaForCausalLM(config).train()
    with torch.no_grad():
        for p in eager.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=torch.Generator().manual_seed(p.numel()))
    compiled = copy.deepcopy(eager)
    parallel.compile_layers(compiled)
    return tok, eager, compiled


def assert_same_grads(eager, compiled, tokens: int):
    """Within float32 rounding of the largest gradient: a small gradient (a query weight's, through a saturated
    softmax) is a difference of terms as large as the gradient flowing through it, and carries their rounding."""
    c = eager.config
    magnitude = max(float(p.grad.abs().max()) for p in eager.parameters())
    atol = rounding_atol(magnitude, max(c.hidden_size, c.intermediate_size, tokens),
                         depth=2 * (2 * c.num_hidden_layers + 1))
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert (a.grad - b.grad).abs().max() <= atol, name


def test_compiled_layers_train_as_eager_ones_and_every_layer_compiles(fresh_dynamo):
    """RL's training pass (SFT's, without a KV cache: test_sft_with_torch_compile_learns_as_eager_sft)."""
    counters = fresh_dynamo
    tok, eager, compiled = two_models()
    L = eager.config.num_hidden_layers
    assert parallel.is_compiled(compiled) and not parallel.is_compiled(eager)
    x = torch.randint(3, len(tok), (4, 40), generator=torch.Generator().manual_seed(1))

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
    assert counters["stats"]["unique_graphs"] == 2 * L  # no layer ran eagerly (that would raise, see the fixture)

    # without gradients (the engine, evaluation, the old and reference log-probs): eager, nothing more compiles
    with torch.no_grad():
        a, b = eager(input_ids=x[:, :17]).logits, compiled(input_ids=x[:, :17]).logits
    assert torch.equal(a, b)
    assert counters["stats"]["unique_graphs"] == 2 * L


def test_the_compiled_loss_is_the_eager_one_and_sharded_layers_are_still_found(fresh_dynamo):
    g = torch.Generator().manual_seed(3)
    logits = (4 * torch.randn(3, 7, 50, generator=g)).to(torch.bfloat16)
    labels = torch.randint(0, 50, (3, 7), generator=g)
    labels[0, :2] = -100  # prompt positions: not counted
    values, grads = [], []
    for compiled in (False, True):
        x = logits.clone().requires_grad_(True)
        loss = parallel.cross_entropy_sum(x, labels, compiled=compiled)
        loss.backward()
        values.append(float(loss))
        grads.append(x.grad.float())
    # float32 sums of 19 terms of ~|4 * 2.6|; the gradient (softmax - onehot) rounded to bf16
    assert abs(values[0] - values[1]) <= rounding_atol(19 * 12, 19 * 50, depth=2)
    assert (grads[0] - grads[1]).abs().max() <= 2 * 2 ** -8
    assert grads[0][0, :2].abs().max() == 0 == grads[1][0, :2].abs().max()
    # fully_shard gives each layer a subclass of its own (FSDPLlamaDecoderLayer): still a decoder layer
    _, _, compiled = two_models()
    layer = compiled.model.layers[0]
    layer.__class__ = type("FSDP" + type(layer).__name__, (type(layer),), {})
    assert len(parallel.decoder_layers(compiled)) == compiled.config.num_hidden_layers
    assert parallel.is_compiled(compiled)
    assert not parallel.is_compiled(torch.nn.Linear(2, 2))  # a model without decoder layers to find


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


def eager_and_compiled_losses(main, config_cls, settings: list[str], out) -> tuple[list, list]:
    """The step losses of a stage's run (3 steps, fp32) without and with torch_compile."""
    from r1lab.config import load_config

    losses = []
    for name, extra in (("eager", []), ("compiled", ["torch_compile=true"])):
        main(load_config(config_cls, None, settings + ["steps=3", "dtype=fp32", f"out_dir={out / name}"] + extra))
        losses.append([r["loss"] for r in map(json.loads, open(out / name / "metrics.jsonl")) if "loss" in r])
    return losses[0], losses[1]


def test_sft_with_torch_compile_learns_as_eager_sft(tmp_path, fresh_dynamo):
    from test_sft import TINY, traces, write

    from r1lab.sft.train import SFTConfig
    from r1lab.sft.train import main as sft_main

    data = write(tmp_path / "traces.jsonl", traces(16, seed=2, task_name="arithmetic"))
    eager, compiled = eager_and_compiled_losses(sft_main, SFTConfig, TINY + ["eval_instances=0", f"data={data}"],
                                                tmp_path)
    # no KV cache in SFT's pass: one graph serves every layer, and one more is the loss's (the same shapes each step)
    assert fresh_dynamo["stats"]["unique_graphs"] == 2
    # the same data and steps in float32: the first loss within rounding, later ones after Adam amplifies it
    assert math.isclose(eager[0], compiled[0], rel_tol=1e-5) and math.isclose(eager[2], compiled[2], rel_tol=1e-4)
    assert compiled[2] < compiled[0]


def test_pretrain_with_torch_compile_learns_as_eager_pretraining(tmp_path, fresh_dynamo):
    from test_pretrain import TINY

    from r1lab.pretrain.train import PretrainConfig
    from r1lab.pretrain.train import main as pretrain_main

    eager, compiled = eager_and_compiled_losses(pretrain_main, PretrainConfig, TINY, tmp_path)
    assert fresh_dynamo["stats"]["unique_graphs"] == 2  # every layer's graph, and the loss's
    assert math.isclose(eager[0], compiled[0], rel_tol=1e-5) and math.isclose(eager[2], compiled[2], rel_tol=1e-4)
