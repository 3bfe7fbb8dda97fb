"""Pretraining on a tiny config: it learns, and a run killed with -9 resumes to the same numbers; the shipped
recipes load, and the corpus knobs have one home."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
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


# --- findings of the pretraining review ---------------------------------------------------------------------------

def test_a_preset_gets_the_positions_its_evaluation_needs():
    """A preset used to get max(1024, seq_len) positions, and the countdown "r1" prompt (~625 tokens) + 512 new tokens
    made the engine refuse at the first in-run evaluation (a run that could not be resumed either)."""
    from r1lab.pretrain.train import build_or_resume, check_room, eval_positions
    from r1lab.tasks import get_task

    task = get_task("countdown")
    eval_set = task.generate(4, seed=1, split="test", max_number=12, max_target=100)
    cfg = PretrainConfig(model="tiny-1m", template="r1", eval_max_new_tokens=512)
    model, tok = build_or_resume(cfg, None, task, eval_set)
    need = eval_positions(cfg, task, eval_set, tok)
    assert need > 1024 and model.config.max_position_embeddings == need
    check_room(cfg, model, tok, task, eval_set)  # no error: the evaluation fits
    # the shipped recipes' short prompts fit in 1024: their models keep exactly the shape they had
    short = dataclasses.replace(cfg, template="short")
    assert build_or_resume(short, None, task, eval_set)[0].config.max_position_embeddings == 1024
    assert build_or_resume(dataclasses.replace(short, seq_len=2048), None, task,
                           eval_set)[0].config.max_position_embeddings == 2048


def test_a_model_too_short_for_the_evaluation_is_refused_before_any_folder(tmp_path):
    from r1lab.checkpoint import save_model_dir
    from r1lab.model.presets import build_model
    from r1lab.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    short = tmp_path / "short"
    save_model_dir(short, build_model("tiny-1m", tok, max_positions=200), tok)
    run = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, TINY + ["steps=1", "eval_instances=2", "eval_max_new_tokens=150",
                                                    f"model={short}", f"out_dir={run}"])
    with pytest.raises(ConfigError, match=r"need \d+ positions, and the model has 200; lower eval_max_new_tokens"):
        main(cfg)
    assert not run.exists()


@pytest.mark.parametrize("extra, error", [
    (["task_args=max_numbers=9"], r"task_args = 'max_numbers=9', train_instances = 64: need 3 <= min_numbers"),
    (["task_args=min_numbers=3,max_numbers=3,max_number=8,max_target=50", "eval_instances=400"],
     r"eval_instances = 400: found only \d+ of 400 distinct"),
])
def test_knobs_the_generator_refuses_are_config_errors_with_nothing_written(tmp_path, extra, error):
    run = tmp_path / "run"
    cfg = load_config(PretrainConfig, None, TINY + extra + [f"out_dir={run}"])
    with pytest.raises(ConfigError, match=error):
        main(cfg)
    assert not run.exists()


def test_a_countdown_target_above_max_value_is_refused_in_check():
    from r1lab.pretrain.train import check

    with pytest.raises(ConfigError, match=r"max_value = 200 is below the task's max_target = 400.*--set max_value=400"):
        check(load_config(PretrainConfig, None, ["task_args=max_target=400"]))
    with pytest.raises(ConfigError, match=r"max_value = 50 is below the task's max_target = 100"):  # the default 100
        check(load_config(PretrainConfig, None, ["task_args=max_number=12", "max_value=50"]))
    check(load_config(PretrainConfig, None, ["task_args=max_target=400", "max_value=400"]))
    check(load_config(PretrainConfig, None, ["task=arithmetic", "task_args=max_digits=3", "max_value=1"]))


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*_base*.toml") if "stage2" not in p.stem))
def test_shipped_recipes_pass_check(recipe):
    from r1lab.pretrain.train import check

    check(load_config(PretrainConfig, RECIPES / f"{recipe}.toml"))


def test_changing_steps_on_resume_warns_about_the_schedule(tmp_path, capsys):
    """steps may change on resume; the cosine is over cfg.steps, so extending a run lifts the learning rate again."""
    run = tmp_path / "run"
    main(load_config(PretrainConfig, None, TINY + ["steps=4", "save_every=4", f"out_dir={run}"]))
    assert "steps changed" not in capsys.readouterr().err
    main(load_config(PretrainConfig, None, TINY + ["steps=8", "save_every=8", f"out_dir={run}"]))
    err = capsys.readouterr().err
    cfg8 = load_config(PretrainConfig, None, TINY + ["steps=8"])
    old, new = lr_at(4, dataclasses.replace(cfg8, steps=4)), lr_at(4, cfg8)
    assert new > old  # the saved run had decayed to its floor; the longer cosine starts from higher up
    assert (f"steps changed on resume (4 -> 8): the cosine schedule is recomputed over all 8 steps, so the learning "
            f"rate at step 4 is {new:.3g} where the saved run's schedule had {old:.3g} (a jump back up)") in err
    state = torch.load(run / "checkpoints" / "step_000008" / "trainer_state.pt", weights_only=False)
    assert state["schedule_steps"] == 8


def test_a_warmup_covering_every_step_warns(tmp_path, capsys):
    main(load_config(PretrainConfig, None, TINY + ["steps=1", "warmup_steps=2", f"out_dir={tmp_path / 'run'}"]))
    assert "warning: warmup_steps = 2 covers all 1 steps: the learning rate peaks at 0.0015, not lr = 0.003" in \
        capsys.readouterr().err


def test_a_mistyped_preset_lists_the_presets_and_hub_ids_still_work(tmp_path, monkeypatch):
    from r1lab.model.load import CheckpointError
    from r1lab.pretrain.train import check

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network: the hub cache below is all there is
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    for name in ("tiny-2m", "tiny2m", "gpt2"):  # a bare name may be a preset or a hub id: the error says both
        with pytest.raises(ConfigError, match=rf"model = '{name}': unknown preset or model; presets: tiny-1m, tiny-3m"
                                              rf".*\(as a model: not available offline"):
            check(PretrainConfig(model=name, out_dir=str(tmp_path / "run")))
    with pytest.raises(CheckpointError, match=r"^org/nope: not available offline") as e:  # an "org/name" hub id
        check(PretrainConfig(model="org/nope", out_dir=str(tmp_path / "run")))
    assert "presets" not in str(e.value)
    snapshot = tmp_path / "hub" / "models--gpt2" / "snapshots" / ("0" * 40)  # gpt2 in the hub cache: it resolves
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--gpt2" / "refs" / "main").write_text("0" * 40)
    check(PretrainConfig(model="gpt2", out_dir=str(tmp_path / "run")))


def test_step_gradient_does_not_depend_on_the_micro_batch_split(monkeypatch):
    """The step's gradient is the mean over ALL its labelled tokens, however grad_accum splits the sequences, also
    when the micro-batches hold different numbers of labelled tokens (it was a mean of per-micro-batch means)."""
    import torch
    from tolerances import rounding_atol

    from r1lab.model.presets import build_model
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.pretrain import train

    T = 24
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(3, 100, (4, T), generator=gen)
    y = torch.randint(3, 100, (4, T), generator=gen)
    y[:2, 3:] = -100  # rows 0-1: 3 labelled tokens each; rows 2-3: all 24
    model = build_model("tiny-1m", build_tokenizer(), seed=0)

    class Recorder:  # an optimizer that keeps the step's gradients instead of using them
        param_groups = [{}]

        def step(self):
            self.grads = [p.grad.clone() for p in model.parameters()]

        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

    def grads(accum):
        B = 4 // accum
        monkeypatch.setattr(train, "make_batch", lambda step, micro, *_: (x[micro * B:(micro + 1) * B],
                                                                             y[micro * B:(micro + 1) * B]))
        cfg = PretrainConfig(grad_accum=accum, device_batch_size=B, grad_clip=1e9)
        opt = Recorder()
        out = train.train_step(0, model, opt, cfg, None, None, None, torch.device("cpu"), None)
        return opt.grads, out["loss"]

    want, want_loss = grads(1)
    scale = max(g.abs().max().item() for g in want)
    # float32 rounding of one backward through 2 * layers + 1 reductions of at most B * T (or hidden) terms
    atol = rounding_atol(scale, n=max(4 * T, model.config.intermediate_size),
                         depth=2 * model.config.num_hidden_layers + 1)
    for accum in (2, 4):
        got, loss = grads(accum)
        assert loss == pytest.approx(want_loss, rel=1e-6)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=atol, rtol=0)
