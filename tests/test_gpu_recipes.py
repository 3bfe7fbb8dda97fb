"""The GPU recipes (TinyZero, SimpleRL-Zoo, Dr. GRPO): they load and pass rl's checks but for the model, whose hub id
is a one-line error offline; `r1lab cost --recipe` on hand-computed cases; `python -m r1lab`. No GPU and no network:
these recipes have never run here."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import hub_snapshot
from r1lab.cli import main
from r1lab.config import ConfigError, load_config
from r1lab.cost import flops as F
from r1lab.cost.published import GPUS
from r1lab.cost.recipes import (HUB_MODELS, PUBLISHED, RLWork, estimate_tokens, evaluations, matmul_params,
                                recompute_flops, rl_flops)
from r1lab.model.load import CheckpointError, resolve_checkpoint
from r1lab.recipes import resolve_recipe
from r1lab.rl.config import RLConfig, check

GPU_RECIPES = ["tinyzero_countdown_qwen3b", "simplerl_gsm8k_qwen05b", "simplerl_math_qwen15b",
               "drgrpo_math_qwen_math15b"]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
# vLLM lives in its own virtual environment (README: Scaling up); without it, rl's check stops at the backend first
ENGINE = [] if HAS_VLLM else ["rollout_backend=engine"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty Hugging Face cache and HF_HUB_OFFLINE=1: no hub model is available."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_a_gpu_recipe_passes_rl_checks_but_for_its_model(name):
    cfg = load_config(RLConfig, resolve_recipe(name))
    assert (cfg.rollout_backend, cfg.fsdp, cfg.dtype, cfg.grad_checkpointing) == ("vllm", True, "bf16", True)
    assert cfg.model in HUB_MODELS and name in PUBLISHED
    check(load_config(RLConfig, resolve_recipe(name), ["model=countdown-base", *ENGINE]))
    if not HAS_VLLM:
        with pytest.raises(ConfigError, match="needs vllm"):
            check(load_config(RLConfig, resolve_recipe(name), ["model=countdown-base"]))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_a_gpu_recipes_hub_model_offline_is_one_line(name, offline):
    cfg = load_config(RLConfig, resolve_recipe(name), ENGINE)
    with pytest.raises(CheckpointError, match="not available offline") as e:
        check(cfg)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{cfg.model}: ")
    assert f"hf download {cfg.model}" in message and "--set model=PATH" in message


def test_r1lab_rl_exits_2_offline_before_anything_is_built(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-hub"), "OMP_NUM_THREADS": "1"}
    sets = [a for s in ENGINE for a in ("--set", s)]
    proc = subprocess.run([sys.executable, "-m", "r1lab", "rl", "--recipe", "tinyzero_countdown_qwen3b", *sets,
                           "--out", str(run)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r1lab rl: Qwen/Qwen2.5-3B: not available offline"), lines
    assert proc.stdout == "" and not run.exists()


def test_python_m_r1lab_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "r1lab", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and proc.stdout.startswith("usage: r1lab") and " rl " in proc.stdout


# --- the hub check ------------------------------------------------------------------------------------------------

def _no_network(*args, **kwargs):
    raise AssertionError("the hub was asked")


@pytest.mark.parametrize("where", ["HF_HUB_CACHE", "HF_HOME"])
def test_a_model_in_the_hugging_face_cache_resolves_without_network(tmp_path, monkeypatch, where):
    import huggingface_hub

    cache = tmp_path / "hub"
    hub_snapshot(cache, "acme/tiny-model", {"config.json": json.dumps({"model_type": "llama"})})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(where, str(cache if where == "HF_HUB_CACHE" else tmp_path))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _no_network)
    assert resolve_checkpoint("acme/tiny-model") == "acme/tiny-model"
    with pytest.raises(CheckpointError, match="not available offline"):  # an uncached one asks the hub: refused here
        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _unreachable)
        resolve_checkpoint("acme/other-model")


def _unreachable(*args, **kwargs):
    raise OSError("[Errno -2] Name or service not known")


def test_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", _unreachable)
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint("acme/nothing")
    assert str(e.value).startswith("acme/nothing: not available offline: not in the Hugging Face cache")
    assert "the hub could not be reached (OSError: [Errno -2] Name or service not known)" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arg, message", [
    ("countdown-bas", "shipped bases: countdown-base"),  # a typo of a shipped base reads as a hub id: say which exist
    ("not a hub id!", "not a local path, and not a Hugging Face hub id"),
])
def test_hub_id_mistakes_say_what_exists(arg, message, offline):
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(arg)


# --- r1lab cost --recipe: the math on hand-computed cases ----------------------------------------------------------

S = F.Shape(n_layers=1, body_params=10, head_params=5, qk_dim=8, v_dim=8)


def test_rl_flops_by_hand():
    # P = 3 prompt and R = 2 response tokens, T = 5. Sampling one sequence (flops.generate_flops): the prefill's
    # 3 tokens attend to 3 * (3+1)/2 = 6 positions, the one fed-back token to 4: 2*10*(3+1) + 2*5*2 = 100 matmul
    # FLOPs, 2*1*(6+4)*16 = 320 attention FLOPs, 420 in all. A step's forward over 2 sequences of 5 tokens:
    # 2*15*10 + 2*1*(10 * 3)*16 = 1260, its training pass 3 * 1260 = 3780.
    base = RLWork(steps=1, prompts_per_step=1, samples_per_prompt=2, prompt_tokens=3, response_tokens=2)
    assert rl_flops(S, base) == {"generate": 840, "train": 3780}
    assert recompute_flops(S, base) == 1260  # gradient checkpointing: one more forward, not model FLOPs
    every = RLWork(steps=2, prompts_per_step=1, samples_per_prompt=2, prompt_tokens=3, response_tokens=2, mu=2,
                   reference=True, old_logp=True, eval_sequences=3)
    assert rl_flops(S, every) == {"generate": 4 * 420, "train": 2 * 2 * 3780, "reference": 2 * 1260,
                                  "old_logp": 2 * 1260, "eval": 3 * 420}
    assert recompute_flops(S, every) == 2 * 2 * 1260 and every.sequences == 4 and every.tokens == 20
    lora = RLWork(steps=1, prompts_per_step=1, samples_per_prompt=2, prompt_tokens=3, response_tokens=2, lora=True)
    # the frozen base gets no weight gradients: 2x its matmuls' 300 FLOPs, and attention's 960 three times
    assert rl_flops(S, lora)["train"] == 2 * 300 + 3 * 960


def test_evaluations_and_token_estimates():
    assert [evaluations(25, 0), evaluations(25, 5), evaluations(1, 5), evaluations(10, 1)] == [2, 6, 2, 11]
    assert estimate_tokens(729) == 182 and estimate_tokens(2, chars_per_token=1) == 2


def test_hub_model_shapes_match_their_cards():
    # Qwen2.5-0.5B by hand: 24 layers x (q, o: 896*14*64*2 + k, v: 896*2*64*2 + MLP 3*896*4864) + lm_head 151936*896
    assert matmul_params(HUB_MODELS["Qwen/Qwen2.5-0.5B"][0]) == 24 * (1_605_632 + 229_376 + 13_074_432) + 136_134_656
    for name, (config, card) in HUB_MODELS.items():
        assert matmul_params(config) == pytest.approx(card, rel=0.015), name  # cards add norms, biases; tied once


def _cost(*argv, capsys) -> dict:
    assert main(["cost", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cost_recipe_end_to_end_by_hand(tmp_path, capsys):
    # a local model: hidden 4, 2 heads of 2, 1 KV head, MLP 8, 1 layer, vocabulary 10. Matmul weights: q, o 4*2*2*2
    # = 32, k, v 4*1*2*2 = 16, MLP 3*4*8 = 96: 144 in the layer, 40 in the lm_head; d_qk = d_v = 4.
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "num_key_value_heads": 1,
                                                   "vocab_size": 10}))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{model}"\npreset = "dr_grpo"\nsteps = 2\nprompts_per_step = 1\n'
                      f'samples_per_prompt = 2\neval_instances = 0\n')
    out = _cost("--recipe", str(recipe), "--prompt-tokens", "3", "--response-tokens", "2", "--mfu", "0.5",
                "--price", "2", capsys=capsys)
    # sampling (P 3, R 2): matmuls 2*144*(3+1) + 2*40*2 = 1312, attention 2*1*(6+4)*(4+4) = 160: 1472 a sequence, 4
    # sequences. Training, a step: 3 * (2*184*10 + 2*1*(10*3)*8) = 3 * 4160 = 12480, two steps. No KL: no reference.
    assert out["flops_by_kind"] == {"generate": 4 * 1472, "train": 2 * 12480}
    assert out["flops"] == 30848 and out["matmul_params"] == 184 and out["tokens"] == 20
    assert out["gpu_hours"] == pytest.approx(30848 / (989.5e12 * 0.5) / 3600)
    assert out["dollars"] == pytest.approx(2 * out["gpu_hours"])
    assert out["published"] is None and out["vs_published"] is None and out["recompute_flops"] == 0


def test_cost_recipe_takes_set_and_model_as_the_stage_does(tmp_path, capsys):
    # the README lists cost under --recipe / --set; before, `--set` and `--model` were "unrecognized arguments"
    base = _cost("--recipe", "countdown_rl", capsys=capsys)
    out = _cost("--recipe", "countdown_rl", "--set", f"steps={2 * base['steps']}", "--model", "countdown-base",
                capsys=capsys)
    assert out["steps"] == 2 * base["steps"] and out["sequences"] == 2 * base["sequences"]
    assert main(["cost", "--recipe", "countdown_rl", "--set", "stepz=3"]) == 2
    assert "unknown key 'stepz'" in capsys.readouterr().err


def test_cost_recipe_compares_with_the_source(capsys):
    out = _cost("--recipe", "tinyzero_countdown_qwen3b", capsys=capsys)
    assert (out["gpu"], out["mfu"], out["price_per_hour"]) == ("H100", 0.3, GPUS["H100"].price)
    assert out["response_tokens"] == 512 and out["sequences"] == 600 * 64 * 5  # max_new_tokens / 2
    assert set(out["flops_by_kind"]) == {"generate", "train", "reference", "eval"}
    assert out["recompute_flops"] == pytest.approx(out["flops_by_kind"]["reference"])  # one forward each, mu = 1
    assert out["gpu_hours"] == pytest.approx(out["flops"] / (989.5e12 * 0.3) / 3600)
    assert out["published"]["dollars"] == 30 and out["vs_published"] == pytest.approx(out["dollars"] / 30)
    assert main(["cost", "--recipe", "drgrpo_math_qwen_math15b"]) == 0
    text = capsys.readouterr().out
    assert "MATH-500 pass@1 74.2" in text and "no published GPU-hours for this model" in text


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "tinyzero_countdown_qwen3b", "--tokens", "1T"], "--recipe takes"),
    (["--recipe", "tinyzero_countdown_qwen3b", "--known", "deepseek-r1"], "--recipe takes"),
    (["--prompt-tokens", "100"], "--prompt-tokens goes with --recipe"),
    (["--set", "steps=3"], "--set goes with --recipe"),
    (["--recipe", "no_such_recipe"], "no recipe 'no_such_recipe'"),
])
def test_cost_recipe_bad_input_exits_2(argv, message, capsys):
    assert main(["cost", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cost_recipe_of_an_unknown_hub_model_exits_2(tmp_path, offline, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "acme/unknown-7b"\n')
    assert main(["cost", "--recipe", str(recipe)]) == 2
    assert "acme/unknown-7b: no shape known" in capsys.readouterr().err
