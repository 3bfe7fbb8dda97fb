"""Pretraining on a tiny config: it learns, and a run killed with -9 resumes to the same numbers; the shipped
recipes load, and the corpus knobs have one home."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_after_first_checkpoint
from tolerances import float64_rtol

from r1lab.config import ConfigError, load_config
from r1lab.pretrain.corpus import CorpusConfig
from r1lab.pretrain.train import PretrainConfig, lr_at, main, make_batch

RECIPES = Path(__file__).resolve().parent.parent / "r1lab" / "recipes"

TINY = ["model=tiny-1m", "seq_len=96", "device_batch_size=4", "grad_accum=2", "train_instances=64",
        "eval_instances=0", "lr=3e-3", "warmup_steps=2", "threads=1", "task_args=max_number=12,max_target=30"]


def losses(run_dir):
    # subtle: compared exactly. A resumed run repeats the same float32 operations on the same machine with the same
    # thread count (threads=1), so any difference at all is a resume bug, not rounding.
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


def test_lr_schedule_warmup_then_cosine():
    cfg = PretrainConfig(lr=1.0, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    rel = float64_rtol(8)  # float64 and a libm cos (faithful, not always correctly rounded): a few ulps at most
    assert lr_at(0, cfg) == pytest.approx(0.1, rel=rel, abs=0)
    assert lr_at(9, cfg) == pytest.approx(1.0, rel=rel, abs=0)
    assert lr_at(60, cfg) == pytest.approx(0.55, rel=rel, abs=0)
    assert lr_at(110, cfg) == pytest.approx(0.1, rel=rel, abs=0)


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*_base*.toml")))
def test_shipped_recipes_load(recipe):
    cfg = load_config(PretrainConfig, RECIPES / f"{recipe}.toml")
    assert cfg.task in ("countdown", "arithmetic") and cfg.steps > 0


def test_corpus_knobs_have_one_home():
    corpus = {f.name: f.default for f in dataclasses.fields(CorpusConfig)}
    pretrain = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    assert corpus.items() <= pretrain.items()  # inherited, same defaults, nothing renamed on the way
    cfg = load_config(PretrainConfig, None, ["verify_prob=0.5", "guess_prob=0.1"])
    assert isinstance(cfg, CorpusConfig) and (cfg.verify_prob, cfg.guess_prob) == (0.5, 0.1)
    with pytest.raises(ConfigError, match="unknown key 'arith_verify_prob'.*verify_prob"):
        load_config(PretrainConfig, None, ["arith_verify_prob=0.5"])  # one verify_prob serves both tasks now


def test_batches_are_packed_and_prompt_is_unlabelled(tmp_path):
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.tasks import get_task

    cfg = load_config(PretrainConfig, None, TINY + [f"out_dir={tmp_path}"])
    task, tok = get_task("countdown"), build_tokenizer()
    inst = task.generate(8, 0, "train", max_number=12, max_target=30)
    x, y = make_batch(3, 0, cfg, task, inst, tok)
    assert x.shape == y.shape == (4, 96)
    x2, y2 = make_batch(3, 0, cfg, task, inst, tok)
    assert (x == x2).all() and (y == y2).all()  # a pure function of (seed, step, micro)
    text = tok.decode(x[0])
    assert "Assistant: <think>" in text
    labelled = tok.decode(y[y != -100])
    assert "Using the numbers" not in labelled and " vs " in labelled


def test_a_run_resumes_only_under_its_own_settings(tmp_path):
    """A run directory resumed with another lr (or model, data, seq_len, ...) used to go on silently, one metrics file
    mixing two runs; now it is refused before any work. How long it runs, saves and logs may change."""
    run = tmp_path / "run"
    main(load_config(PretrainConfig, None, TINY + ["steps=2", "save_every=2", f"out_dir={run}"]))
    for extra, change in [(["lr=1e-2"], "lr 0.003 -> 0.01"), (["seq_len=48", "model=tiny-3m"], "model 'tiny-1m' ->")]:
        with pytest.raises(ConfigError, match=rf"holds a run with other settings \({change}.*--set model={run}"):
            main(load_config(PretrainConfig, None, TINY + ["steps=4"] + extra + [f"out_dir={run}"]))
    main(load_config(PretrainConfig, None, TINY + ["steps=3", "save_every=3", "keep_last=2", f"out_dir={run}"]))
    assert [step for step, _, _ in losses(run)] == [1, 2, 3]


def test_pretrain_learns_and_resumes_exactly_after_kill(tmp_path):
    straight = tmp_path / "straight"
    cfg = load_config(PretrainConfig, None, TINY + ["steps=8", "save_every=8", f"out_dir={straight}"])
    main(cfg)
    ref = losses(straight)
    assert ref[-1][1] < ref[0][1] - 0.5  # it learns the notation quickly
    assert (straight / "checkpoints" / "step_000008" / "model.safetensors").exists()
    account = json.loads((straight / "account.json").read_text())
    assert account["flops"] > 0 and account["rented_cost"]["dollars"] > 0

    # The same run, killed with SIGKILL right after its step-4 checkpoint, then resumed.
    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "r1lab.cli", "pretrain"] + sum((["--set", s] for s in TINY), []) + [
        "--set", "steps=8", "--set", "save_every=4", "--set", "keep_last=1", "--out", str(killed)]
    kill_after_first_checkpoint(args, killed, timeout_s=240)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert losses(killed) == ref
