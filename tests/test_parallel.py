"""FSDP2 and LoRA (r1lab/parallel.py) in the rl and sft stages, on the shipped base: 2 gloo processes equal 1, exact
resume from a sharded optimizer state (with another world size too), gradient checkpointing, LoRA's merged weights,
reference and checkpoints.

Tolerances follow tests/tolerances.py: float32 runs differ by rounding at the size of what is compared, over the
batch's tokens, through the model's depth; bf16 runs by bf16's rounding of the inputs on top.
"""
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from conftest import gloo_env, kill_after_first_checkpoint, tiny_model
from tolerances import logprob_atol, rounding_atol

from r1lab.model.load import adapter_base, is_adapter_dir, load_model, resolve_checkpoint
from r1lab.parallel import ScaleConfig, add_lora, enable_checkpointing, inference_weights, merged_weights, reference

pytest.importorskip("peft")

BASE = resolve_checkpoint("countdown-base")
SMALL = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=4",
         "samples_per_prompt=4", "max_new_tokens=96", "train_instances=40", "eval_instances=0", "threads=1",
         "sample_every=0", "dtype=fp32", "lr=1e-3", "kl_coef=0.01", "steps=2", "save_every=1"]
TIMINGS = {"step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s", "flops_per_s", "mfu", "time", "wall_s"}
ROLLOUT_KEYS = ("reward", "acc", "response_len", "generated_tokens", "step_acc", "attempts")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(stage: str, out, settings: list[str], nproc: int = 1, model: str = BASE) -> list[str]:
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]
    return launcher + ["-m", "r1lab.cli", stage, "--model", model, "--out", str(out)] + sum(
        (["--set", s] for s in settings), [])


def run(stage: str, out, settings: list[str], nproc: int = 1, expect_ok: bool = True, **kw):
    proc = subprocess.run(command(stage, out, settings, nproc, **kw), capture_output=True, timeout=600,
                          env=gloo_env() if nproc > 1 else {**os.environ, "OMP_NUM_THREADS": "1"})
    if expect_ok:
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc


def rows(run_dir):
    """The logged rows without their timings."""
    out = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in out]


def grad_atol(g: float, dtype=torch.float32) -> float:
    """A step's gradient norm computed twice: rounding over the batch's tokens (16 x 96) through the depth."""
    config = load_model(BASE)[0].config
    return rounding_atol(g, 16 * 96, 2 * config.num_hidden_layers + 1, dtype)


# ------------------------------------------------------------------------------------------------------------------
# FSDP2

def test_fsdp_on_two_gloo_processes_matches_one_plain_process(tmp_path):
    """The same rollouts (each row keeps its seed; the rollout copy gathers the shards exactly) and the same
    gradient norm and KL up to float32 rounding, against the plain path (no FSDP, one process). The checkpoint is a
    full Hugging Face directory written by rank 0, and the optimizer state one shard per rank."""
    run("rl", tmp_path / "plain", SMALL)
    run("rl", tmp_path / "fsdp", SMALL + ["fsdp=true"], nproc=2)
    plain, fsdp = rows(tmp_path / "plain"), rows(tmp_path / "fsdp")
    assert [[r[k] for k in ROLLOUT_KEYS] for r in fsdp] == [[r[k] for k in ROLLOUT_KEYS] for r in plain]
    for a, b in zip(plain, fsdp):
        for key in ("grad_norm", "kl", "entropy"):
            assert abs(a[key] - b[key]) <= grad_atol(max(abs(a[key]), 1e-3)), (key, a[key], b[key])
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_000002"
    full, _ = load_model(str(ckpt))
    base, _ = load_model(BASE)
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in base.state_dict().items()}
    assert sorted(p.name for p in (ckpt / "optim").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # AdamW moves each weight by about lr per step, each way: the trained weights are the plain run's to 2 steps x lr
    plain_w = load_model(str(tmp_path / "plain" / "checkpoints" / "step_000002"))[0].state_dict()
    for name, w in full.state_dict().items():
        assert (w - plain_w[name]).abs().max() <= 2 * 2 * 1e-3 + 1e-6, name


def test_fsdp_resumes_from_its_sharded_optimizer_state_on_any_world_size(tmp_path):
    """Killed after step 1 and resumed: on 2 ranks exactly the unbroken run's step 2; on 1 rank (the shards read
    back into one) the same up to float32 rounding. A resume without fsdp is refused with one line."""
    straight = tmp_path / "straight"
    run("rl", straight, SMALL + ["fsdp=true"], nproc=2)
    want = rows(straight)

    def cut_after_step_1(name):
        d = tmp_path / name
        shutil.copytree(straight, d)
        shutil.rmtree(d / "checkpoints" / "step_000002")
        (d / "checkpoints" / "latest").write_text("step_000001")
        lines = (d / "metrics.jsonl").read_text().splitlines(keepends=True)
        (d / "metrics.jsonl").write_text(lines[0])
        return d

    two = cut_after_step_1("two")
    run("rl", two, SMALL + ["fsdp=true"], nproc=2)
    assert rows(two) == want
    one = cut_after_step_1("one")
    run("rl", one, SMALL + ["fsdp=true"])
    got = rows(one)
    assert [[r[k] for k in ROLLOUT_KEYS] for r in got] == [[r[k] for k in ROLLOUT_KEYS] for r in want]
    assert abs(got[1]["grad_norm"] - want[1]["grad_norm"]) <= grad_atol(want[1]["grad_norm"])
    refused = run("rl", cut_after_step_1("plain"), SMALL, expect_ok=False)
    # the run's settings are checked first (r1lab.config.check_resume); parallel.restore_optimizer's own check stays
    # for checkpoints without a readable config
    assert refused.returncode != 0 and b"holds a run with other settings (fsdp True -> False)" in refused.stderr


def test_fsdp_bf16_mixed_precision_matches_autocast(tmp_path):
    """bf16 parameters and compute with fp32 reductions (2 ranks) against bf16 autocast over fp32 weights (1 rank,
    no FSDP): the first step's rollouts are the same (sampled in fp32 from the same weights) and its gradient norm
    agrees to bf16's rounding of the inputs."""
    settings = [s for s in SMALL if s != "dtype=fp32"] + ["dtype=bf16", "steps=1"]
    run("rl", tmp_path / "autocast", settings)
    run("rl", tmp_path / "fsdp", settings + ["fsdp=true"], nproc=2)
    a, b = rows(tmp_path / "autocast")[0], rows(tmp_path / "fsdp")[0]
    assert [a[k] for k in ROLLOUT_KEYS] == [b[k] for k in ROLLOUT_KEYS]
    assert abs(a["grad_norm"] - b["grad_norm"]) <= grad_atol(a["grad_norm"], torch.bfloat16)


def test_gradient_checkpointing_gives_the_same_logp_and_gradient():
    """The checkpointed path (one plain pass per row; the shared-prompt cache would be filled twice by the replay)
    equals the cached path: log-probs and gradients to float32 rounding."""
    from r1lab.rl.rollouts import pack, response_logp

    torch.manual_seed(0)
    model, tok = load_model(BASE)
    prompts = [tok("Using 3, 5, 7 make 8.")["input_ids"]] * 2 + [tok("Using 2, 4 make 6.")["input_ids"]]
    completions = [type("C", (), {"prompt_ids": p, "token_ids": torch.randint(5, 60, (n,)).tolist(),
                                  "mask": [1] * n})() for p, n in zip(prompts, (7, 12, 9))]
    prompts_, ids, attn, _ = pack(completions, tok.pad_token_id)
    results = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            enable_checkpointing(model)
        model.train()
        logp, _ = response_logp(model, prompts_, ids, attn, None)
        (logp * attn).sum().backward()
        results.append((logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))  # padding: 0
    (logp0, g0), (logp1, g1) = results
    max_logit = 30.0  # the base's logits stay well under this
    assert ((logp0 - logp1) * attn).abs().max() <= logprob_atol(model.config, max_logit, context=ids.shape[1] + 20)
    for name in g0:
        scale = float(g0[name].abs().max())
        assert (g0[name] - g1[name]).abs().max() <= rounding_atol(scale, 28 * 200, 2 * 6 + 1) + 1e-7, name


# ------------------------------------------------------------------------------------------------------------------
# LoRA

def test_merged_weights_by_hand():
    W, A, B = torch.ones(2, 3), torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[1.0], [3.0]])
    out = merged_weights({"base_model.model.l.base_layer.weight": W, "base_model.model.l.lora_A.default.weight": A,
                          "base_model.model.l.lora_B.default.weight": B, "base_model.model.n.weight": W[0]},
                         {"base_model.model.l": 2.0}, {})
    assert set(out) == {"l.weight", "n.weight"}
    assert torch.equal(out["l.weight"], torch.tensor([[3.0, 1.0, 5.0], [7.0, 1.0, 13.0]]))


@pytest.fixture(scope="module")
def lora_model():
    """The shipped base with rank-4 adapters whose B is not zero, so that they change the outputs."""
    from r1lab.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = add_lora(tiny_model(tok), ScaleConfig(lora_r=4, lora_alpha=8), "tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=g)
    return model.eval(), tok


def test_inference_weights_equal_peft_merge(lora_model):
    import copy

    model, tok = lora_model
    mine = inference_weights(model)
    theirs = copy.deepcopy(model).merge_and_unload().state_dict()
    assert set(mine) == set(theirs)
    for name, w in theirs.items():
        assert torch.allclose(mine[name], w, rtol=0, atol=4 * torch.finfo(torch.float32).eps * float(w.abs().max())), name
    assert any(not torch.equal(mine[n], model.get_base_model().state_dict()[n.replace(".weight", ".base_layer.weight")])
               for n in mine if "q_proj" in n)  # the adapters really change the weights


def test_reference_is_the_base_with_adapters_disabled(lora_model):
    model, tok = lora_model
    ids = torch.tensor([tok("Using 3, 5, 7 make 8.")["input_ids"]])
    with torch.no_grad():
        base_logits = model.get_base_model()(input_ids=ids).logits  # peft's layers with adapters off ...
        with reference(model):
            ref_logits = model(input_ids=ids).logits
        policy_logits = model(input_ids=ids).logits
    plain = tiny_model(tok)  # ... equal the model before the adapters were added
    with torch.no_grad():
        assert torch.equal(ref_logits, plain(input_ids=ids).logits)
    assert not torch.allclose(policy_logits, ref_logits)
    assert torch.equal(model(input_ids=ids).logits, policy_logits) and base_logits.shape == policy_logits.shape


def test_lora_rl_trains_only_the_adapters_saves_them_and_resumes_exactly(tmp_path):
    """Checkpoints hold the adapter (and with lora_save_merged, the merged model, equal to base + adapter); the
    base's weights stay as they were; r1lab's loader reads the run; a run killed after its first checkpoint and
    resumed logs the unbroken run's numbers exactly (one thread)."""
    from safetensors.torch import load_file

    settings = SMALL + ["lora_r=4", "lora_alpha=8", "lora_save_merged=true", "lr=1e-2"]
    straight = tmp_path / "straight"
    run("rl", straight, settings)
    ckpt = straight / "checkpoints" / "step_000002"
    assert is_adapter_dir(ckpt) and not (ckpt / "config.json").exists() and (ckpt / "merged" / "config.json").exists()
    adapter = load_file(ckpt / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)  # they trained
    merged, _ = load_model(str(ckpt / "merged"))  # a plain model
    from_adapter, _ = load_model(resolve_checkpoint(str(straight)))  # base + adapter, merged on load
    base = load_model(BASE)[0].state_dict()
    assert set(merged.state_dict()) == set(from_adapter.state_dict()) == set(base)
    for name, w in merged.state_dict().items():
        assert torch.allclose(w, from_adapter.state_dict()[name], rtol=0, atol=1e-6), name
    assert any(not torch.equal(w, base[name]) for name, w in merged.state_dict().items())
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(command("rl", killed, settings), killed)
    run("rl", killed, settings)
    assert rows(killed) == rows(straight)
    assert rows(straight)[1]["kl"] > 0  # the reference (adapters off) differs from the trained policy
    # a LoRA run from a LoRA run: new adapters on top of the merged first ones; its checkpoint loads through both
    second = tmp_path / "second"
    run("rl", second, settings + ["steps=1"], model=str(straight))
    ckpt2 = second / "checkpoints" / "step_000001"
    assert adapter_base(ckpt2) == str(ckpt)
    twice, _ = load_model(str(ckpt2))
    assert set(twice.state_dict()) == set(base)
    run("rl", second, settings, model=str(straight))  # resumed: its adapter back onto the merged first run
    assert [r["step"] for r in rows(second) if "reward" in r] == [1, 2]


def test_lora_training_flops_skip_the_frozen_weight_gradients():
    """The account of a LoRA step: forward + the activations' backward, not 3x forward: 2x the weight matmuls, and
    attention (no weights) 3x, one attention forward above 2x forward (tests/test_flops.py checks it on a model)."""
    from r1lab.cost import flops as F
    from r1lab.cost.account import RunAccount

    config = load_model(BASE)[0].config
    full, frozen = RunAccount(config, device="cpu", dtype="fp32"), RunAccount(config, device="cpu", dtype="fp32")
    full.add_tokens("train", 1000, 128)
    frozen.add_tokens("train_frozen", 1000, 128)
    attention = F.attention_flops(F.shape_of(config), 1000 * (128 + 1) / 2)  # causal: (T+1)/2 positions a token
    assert frozen.flops_by_kind["train_frozen"] == pytest.approx(full.flops_by_kind["train"] * 2 / 3 + attention,
                                                                 rel=1e-12)


def test_lora_with_fsdp_on_two_processes_matches_one(tmp_path):
    settings = SMALL + ["lora_r=4", "lora_alpha=8", "lr=1e-2"]
    run("rl", tmp_path / "one", settings)
    run("rl", tmp_path / "two", settings + ["fsdp=true", "lora_save_merged=true"], nproc=2)
    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [[r[k] for k in ROLLOUT_KEYS] for r in two] == [[r[k] for k in ROLLOUT_KEYS] for r in one]
    for a, b in zip(one, two):
        assert abs(a["grad_norm"] - b["grad_norm"]) <= grad_atol(a["grad_norm"]), (a["grad_norm"], b["grad_norm"])
    ckpt = tmp_path / "two" / "checkpoints" / "step_000002"
    assert is_adapter_dir(ckpt)
    # FSDP's gathered state holds the tied output embedding as a second tensor: merged/ holds it once, as the base's
    # files do (subtle: only on two ranks; in a world of one the gathered tensors still share storage), and it loads
    # tied again
    from safetensors import safe_open

    from r1lab.parallel import tied_keys

    keys = []
    for path in (f"{BASE}/model.safetensors", ckpt / "merged" / "model.safetensors"):
        with safe_open(str(path), "pt") as f:
            keys.append(set(f.keys()))
    assert keys[0] == keys[1] and tied_keys(load_model(BASE)[0]) == {"lm_head.weight"}
    merged, _ = load_model(str(ckpt / "merged"))
    assert merged.lm_head.weight is merged.model.embed_tokens.weight


def test_lora_sft_and_fsdp_sft(tmp_path):
    """sft with adapters (one process) and with FSDP (two): the loss falls like the plain run's, the adapter run's
    checkpoint is an adapter that `r1lab eval` reads, and FSDP's equals the plain run's step by step to rounding."""
    from test_sft import traces, write

    data = write(tmp_path / "traces.jsonl", traces(24, seed=3, task_name="arithmetic"))
    settings = [f"data={data}", "seq_len=128", "device_batch_size=4", "steps=4", "lr=3e-3", "warmup_steps=0",
                "eval_instances=0", "threads=1", "dtype=fp32", "task=arithmetic", "task_args="]
    run("sft", tmp_path / "plain", settings)
    run("sft", tmp_path / "fsdp", settings + ["device_batch_size=2", "fsdp=true"], nproc=2)
    run("sft", tmp_path / "lora", settings + ["lora_r=8", "lora_alpha=16"])
    plain, fsdp, lora = rows(tmp_path / "plain"), rows(tmp_path / "fsdp"), rows(tmp_path / "lora")
    # the first step is computed from the same weights: its loss and gradient agree to rounding (later steps differ by
    # AdamW's amplification of that rounding, see test_fsdp_on_two_gloo_processes_matches_one_plain_process)
    n, depth = 4 * 128, 2 * 6 + 1
    assert abs(plain[0]["loss"] - fsdp[0]["loss"]) <= rounding_atol(plain[0]["loss"], n, depth)
    assert abs(plain[0]["grad_norm"] - fsdp[0]["grad_norm"]) <= rounding_atol(plain[0]["grad_norm"], n, depth)
    assert fsdp[-1]["loss"] < fsdp[0]["loss"] and lora[-1]["loss"] < lora[0]["loss"]
    from safetensors import safe_open

    names = []
    for name in ("plain", "fsdp"):  # rank 0's gathered state holds the tied embedding once, as the plain save does
        with safe_open(str(tmp_path / name / "checkpoints" / "step_000004" / "model.safetensors"), "pt") as f:
            names.append(set(f.keys()))
    assert names[0] == names[1] and "lm_head.weight" not in names[1]
    assert is_adapter_dir(tmp_path / "lora" / "checkpoints" / "step_000004")
    proc = subprocess.run([sys.executable, "-m", "r1lab.cli", "eval", "--model", str(tmp_path / "lora"), "--task",
                           "arithmetic", "--n", "4", "--samples", "1", "--max-new-tokens", "32", "--no-greedy",
                           "--threads", "1"], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"pass@1" in proc.stdout


@pytest.mark.parametrize("settings, message", [
    (["lora_r=4", "lora_targets=nope_proj"], "lora_targets = 'nope_proj': Target modules {'nope_proj'} not found"),
    (["lora_save_merged=true"], "lora_save_merged = true needs LoRA (lora_r > 0)"),
    (["lora_r=4", "lora_dropout=1"], "lora_dropout = 1.0: must be [0, 1)"),
    (["lora_r=-1"], "lora_r = -1: must be >= 0"),
])
def test_bad_scale_settings_exit_2_and_write_nothing(tmp_path, capsys, settings, message):
    from r1lab.cli import main

    out = tmp_path / "run"
    assert main(["rl", "--model", BASE, "--out", str(out), "--set", "steps=1"] +
                sum((["--set", s] for s in settings), [])) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_lora_checkpoint_of_a_relative_base_loads_from_another_directory(tmp_path, monkeypatch):
    """adapter_config.json names a local base by its absolute path (a hub id stays as it is)."""
    from test_sft import traces, write

    from r1lab.config import load_config
    from r1lab.sft.train import SFTConfig
    from r1lab.sft.train import main as sft_main

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    shutil.copytree(BASE, work / "base")
    elsewhere.mkdir()
    data = write(tmp_path / "traces.jsonl", traces(8, seed=3, task_name="arithmetic"))
    monkeypatch.chdir(work)
    sft_main(load_config(SFTConfig, None, [f"data={data}", "model=base", "out_dir=run", "seq_len=128", "steps=1",
                                           "device_batch_size=2", "eval_instances=0", "threads=1", "dtype=fp32",
                                           "task=arithmetic", "task_args=", "lora_r=4", "lora_alpha=8"]))
    ckpt = work / "run" / "checkpoints" / "step_000001"
    assert adapter_base(ckpt) == str(work / "base")
    monkeypatch.chdir(elsewhere)
    model, _ = load_model(str(ckpt))
    assert set(model.state_dict()) == set(load_model(BASE)[0].state_dict())
    from r1lab.model.tokenizer import build_tokenizer

    hub = add_lora(tiny_model(build_tokenizer()), ScaleConfig(lora_r=4), "someone/some-model")
    assert hub.peft_config["default"].base_model_name_or_path == "someone/some-model"
