"""The one model resolver (r1lab.model.load) and the commands that load through it: every form of a model argument,
clear errors, and the device every command puts the model on."""
import argparse
import json

import pytest
import torch

from conftest import hub_snapshot, tiny_checkpoint
from r1lab import runtime
from r1lab.checkpoint import save_checkpoint
from r1lab.model.load import ASSETS, CheckpointError, load_checkpoint, resolve_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory, "load")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with two checkpoints, as rl and pretrain write them."""
    from r1lab.model.load import load_model

    model, tok = load_model(str(ASSETS / "countdown-base"))
    run = tmp_path_factory.mktemp("run")
    for step in (1, 2):
        save_checkpoint(run, step, model, tok, {"step": step})
    return run


def test_every_form_of_a_model_argument(ckpt, run_dir, tmp_path, monkeypatch):
    assert resolve_checkpoint("countdown-base") == str(ASSETS / "countdown-base")
    assert resolve_checkpoint(str(ckpt)) == str(ckpt)
    assert resolve_checkpoint(str(run_dir)) == str(run_dir / "checkpoints" / "step_000002")  # its newest
    # a hub id passes through once it is known to be loadable: here, in the local Hugging Face cache (offline tests;
    # tests/test_gpu_recipes.py has the uncached cases)
    hub_snapshot(tmp_path / "hub", "Qwen/Qwen2.5-0.5B", {"config.json": "{}"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing" / "model", "no such file or directory"),
    (lambda p: p / "nothing-here/", "no such file or directory"),
    (lambda p: (p / "run" / "checkpoints").mkdir(parents=True) or p / "run", "without a finished checkpoint"),
    (lambda p: (p / "plain").mkdir() or p / "plain", "without config.json"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "a file, not a model directory"),
])
def test_bad_model_arguments_say_what_they_found(tmp_path, make, message):
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(str(make(tmp_path)))


def test_a_mistyped_run_beside_its_folder_is_called_a_missing_directory(tmp_path, monkeypatch):
    """"runs/nope" reads like a hub id (org/name); with a runs/ folder here the error leads with the directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"^org/nope: not available offline"):
        resolve_checkpoint("org/nope")
    (tmp_path / "runs").mkdir()
    with pytest.raises(CheckpointError, match=r"^runs/nope: no such directory \(runs/ is here, without nope\); as a "
                                              r"Hugging Face hub id: not available offline"):
        resolve_checkpoint("runs/nope")


def test_a_checkpoint_stored_in_bf16_trains_float32_master_weights(tmp_path, ckpt):
    """As hub models are stored. transformers 5 loads them in bf16, where AdamW's small updates round away: a policy
    that trains every weight loads in float32; inference and LoRA's frozen base keep bf16, LoRA's adapters float32."""
    import shutil

    from r1lab.model.load import load_model
    from r1lab.parallel import ScaleConfig, load_policy
    from r1lab.pretrain.train import PretrainConfig, build_or_resume

    model, tok = load_model(str(ckpt))
    stored = tmp_path / "bf16"
    model.to(torch.bfloat16).save_pretrained(stored)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ckpt / name, stored / name)
    assert json.loads((stored / "config.json").read_text())["dtype"] == "bfloat16"

    def dtypes(m, trainable=None):
        return {p.dtype for p in m.parameters() if trainable is None or p.requires_grad == trainable}

    assert dtypes(load_model(str(stored))[0]) == {torch.bfloat16}  # inference: as stored
    assert dtypes(load_policy(str(stored), ScaleConfig(), base=str(stored))[0]) == {torch.float32}  # rl, sft
    assert dtypes(build_or_resume(PretrainConfig(model=str(stored)), None)[0]) == {torch.float32}  # pretrain
    lora = load_policy(str(stored), ScaleConfig(lora_r=4), base=str(stored))[0]
    assert dtypes(lora, trainable=True) == {torch.float32} and dtypes(lora, trainable=False) == {torch.bfloat16}


def test_an_unloadable_model_directory_is_one_line(tmp_path, ckpt):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"cannot load a model from .*broken") as e:
        load_checkpoint(str(broken))
    assert "\n" not in str(e.value)


def test_a_model_saved_without_its_tokenizer_is_one_line(tmp_path, ckpt):
    # before: transformers 5 built an empty tokenizer and eval / rl failed later on "empty prompt", rl after making
    # its run folder
    import shutil

    bare = tmp_path / "no_tokenizer"
    shutil.copytree(ckpt, bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            f.unlink()
    with pytest.raises(CheckpointError, match=r"no_tokenizer holds no tokenizer .*tokenizer\.save_pretrained"):
        load_checkpoint(str(bare))


def test_serve_and_chat_put_the_model_on_the_runtime_device(ckpt, monkeypatch):
    """Both commands load through load_checkpoint, which moves the model to runtime.device() (cuda:LOCAL_RANK on a
    GPU machine). Here the device is swapped for `meta`, which no model lands on by accident."""
    from r1lab.commands import chat, serve

    monkeypatch.setattr(runtime, "device", lambda: torch.device("meta"))
    args = argparse.Namespace(model=str(ckpt), threads=None, max_batch_size=4)
    engine, path = serve.load_engine(args)
    assert path == str(ckpt) and engine.device.type == "meta"
    assert {p.device.type for p in engine.model.parameters()} == {"meta"}
    assert chat.load_engine(args).device.type == "meta"


@pytest.mark.parametrize("written, template", [
    ('{"template": "r1", "steps": 3}', "r1"),
    ('{"template": "chat-r1"}', "r1"),  # the chat turns a chat template renders
    ('{"template": "chat"}', "short"),
    ('{"template": "chatml"}', None),  # not a template r1lab renders
    ('{"steps": 3}', None),
    ('["template", "short"]', None),
    ('{"template": "sh', None),  # cut short by a crash
])
def test_trained_template_is_what_r1lab_wrote_or_none(tmp_path, run_dir, written, template):
    import doctest

    import r1lab.model.load as load

    assert doctest.testmod(load).failed == 0  # the shipped base: short; a hub id: None
    assert load.trained_template(resolve_checkpoint(str(run_dir))) is None  # saved with a config holding no template
    (tmp_path / "r1lab_config.json").write_text(written)
    assert load.trained_template(tmp_path) == template
