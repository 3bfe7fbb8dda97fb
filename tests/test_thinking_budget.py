"""The thinking budget (SamplingParams.max_thinking_tokens) through every caller: RL rollouts and their loss mask,
the held-out evaluation, `r1lab eval`, `r1lab demo`'s evaluations, the report, and the refusals (the vLLM backend,
a closing text that does not end the thinking). The engine's own behaviour is in tests/test_engine.py."""
import json
import sys
from pathlib import Path

import pytest

from r1lab.cli import main as cli
from r1lab.config import ConfigError, load_config
from r1lab.engine import SamplingParams
from r1lab.rl.config import RLConfig, check
from r1lab.rl.train import main

CLOSE = "\ngive up\n</think>"
SMALL = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=2",
         "samples_per_prompt=4", "max_new_tokens=96", "train_instances=20", "eval_instances=4", "threads=1",
         "sample_every=0", "dtype=fp32", "lr=1e-4", "steps=1", "save_every=0", "max_thinking_tokens=24"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rl_rollouts_are_cut_at_the_budget_and_the_forced_text_is_not_trained(tmp_path, monkeypatch):
    """The shipped base searches for ~150 tokens; with a 24-token budget nearly every rollout is cut: the closing
    text is forced (mask 0, so the loss never sees it), the answer after it is sampled, and both the rollout metrics
    and the held-out evaluation count the cuts."""
    from r1lab.engine import backend as backends
    from r1lab.evaluation import evaluate
    from r1lab.rl import rollouts

    seen, evals = [], []
    real_generate, real_eval, real_pack = backends.EngineBackend.generate, evaluate.evaluate_model, rollouts.pack

    def generate(self, prompts, params):
        outs = real_generate(self, prompts, params)
        seen.append((params, outs))
        return outs

    def evaluate_model(*args, **kwargs):
        evals.append(kwargs)
        return real_eval(*args, **kwargs)

    packed = []

    def pack(completions, *args, **kwargs):
        packed.append(result := real_pack(completions, *args, **kwargs))
        return result

    monkeypatch.setattr(backends.EngineBackend, "generate", generate)
    monkeypatch.setattr(evaluate, "evaluate_model", evaluate_model)
    monkeypatch.setattr(rollouts, "pack", pack)
    import r1lab.rl.train as train
    monkeypatch.setattr(train, "pack", pack)
    cfg = load_config(RLConfig, None, SMALL + [f"out_dir={tmp_path}"], thinking_end=CLOSE)
    main(cfg)

    close_ids = None
    for params, outs in seen:
        assert params.max_thinking_tokens == 24 and params.thinking_end == CLOSE
        for o in outs:
            if 0 not in o.mask:
                continue
            close_ids = close_ids or [t for t, m in zip(o.token_ids, o.mask) if not m]
            start = o.mask.index(0)
            assert start == 24 and o.mask[start:start + len(close_ids)] == [0] * len(close_ids)
            assert o.token_ids[start:start + len(close_ids)] == close_ids and CLOSE in o.text
    assert close_ids is not None
    rollout_outs = seen[1][1]  # call 0 is the held-out evaluation before step 1
    assert cut_of(rollout_outs) >= 0.5
    assert [e["max_thinking_tokens"] for e in evals] == [24, 24] and evals[0]["thinking_end"] == CLOSE
    _, ids, _, mask = packed[0]
    for row, o in enumerate(rollout_outs):  # the loss mask is the completion's: forced tokens are 0
        assert mask[row, :len(o.mask)].tolist() == [float(m) for m in o.mask]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    step = next(m for m in metrics if "thinking_cut_rate" in m)
    assert step["thinking_cut_rate"] == pytest.approx(cut_of(rollout_outs))
    final = [m for m in metrics if "eval/thinking_cut_rate" in m]
    assert len(final) == 2 and all(m["eval/thinking_cut_rate"] > 0.5 for m in final)


def test_a_budget_for_the_held_out_evaluation_alone(tmp_path, monkeypatch):
    """eval_max_thinking_tokens budgets the held-out evaluation (and r1lab demo's) without cutting the rollouts."""
    from r1lab.engine import backend as backends

    seen = []
    real_generate = backends.EngineBackend.generate

    def generate(self, prompts, params):
        seen.append(params.max_thinking_tokens)
        return real_generate(self, prompts, params)

    monkeypatch.setattr(backends.EngineBackend, "generate", generate)
    overrides = [o for o in SMALL if not o.startswith("max_thinking_tokens")]
    main(load_config(RLConfig, None, overrides + [f"out_dir={tmp_path}", "eval_max_thinking_tokens=24"],
                     thinking_end=CLOSE))
    assert seen == [24, None, 24]  # evaluation, rollouts, evaluation
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any("thinking_cut_rate" in m for m in metrics)  # no rollout budget, no rollout figure
    assert all(m["eval/thinking_cut_rate"] > 0.5 for m in metrics if "eval/thinking_cut_rate" in m)


def cut_of(outs):
    return sum(0 in o.mask for o in outs) / len(outs)


def test_bad_thinking_budgets_are_refused_before_anything_loads(monkeypatch):
    """And the shipped recipe with vLLM rollouts is accepted with its held-out budget: vLLM samples it in runs."""
    with pytest.raises(ConfigError, match=r"thinking_end = 'give up': must end with '</think>'"):
        check(load_config(RLConfig, None, ["max_thinking_tokens=8"], thinking_end="give up"))
    with pytest.raises(ConfigError, match=r"max_thinking_tokens = -1: must be >= 0"):
        check(load_config(RLConfig, None, ["max_thinking_tokens=-1"]))
    from r1lab.engine import backend as backends

    monkeypatch.setattr(backends, "check_backend", lambda name: None)  # as if vLLM were installed
    import r1lab.engine
    monkeypatch.setattr(r1lab.engine, "check_backend", lambda name: None)
    for key in ("max_thinking_tokens", "eval_max_thinking_tokens"):
        check(load_config(RLConfig, None, [f"{key}=8", "rollout_backend=vllm"]))
    from r1lab.recipes import resolve_recipe

    check(load_config(RLConfig, resolve_recipe("countdown_rl"), ["rollout_backend=vllm"]))  # the README's line
    from r1lab.engine.runs import Run
    from r1lab.engine.vllm_backend import run_sampling_kwargs, vllm_sampling_kwargs

    with pytest.raises(ValueError, match="sampled in runs"):  # one request cannot hold a budget
        vllm_sampling_kwargs(SamplingParams(max_thinking_tokens=8), 0)
    assert "thinking" not in " ".join(vllm_sampling_kwargs(SamplingParams(), 0))
    params = SamplingParams(temperature=0.6, top_p=0.9, stop=["</answer>"], seed=1, logprobs=True,
                            max_thinking_tokens=8)
    kw = run_sampling_kwargs(params, Run([1, 2, 3], 5, ["</answer>", "<think>"], 77, 2))
    assert (kw["max_tokens"], kw["stop"], kw["seed"], kw["prompt_logprobs"], kw["logprobs"]) == (
        5, ["</answer>", "<think>"], 77, 0, 0)
    assert (kw["temperature"], kw["top_p"]) == (0.6, 0.9)
    assert "prompt_logprobs" not in run_sampling_kwargs(params, Run([1], 5, [], None, 0))


def test_r1lab_eval_takes_a_thinking_budget(tmp_path, capsys):
    args = ["eval", "--model", "countdown-base", "--task", "countdown", "--n", "4", "--samples", "2", "--no-greedy",
            "--max-new-tokens", "96", "--threads", "1"]
    out = tmp_path / "e.json"
    assert cli(args + ["--max-thinking-tokens", "24", "--thinking-end", CLOSE, "--out", str(out),
                       "--completions-out", str(tmp_path / "c.jsonl")]) == 0
    assert "thinking cut at budget" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["settings"]["max_thinking_tokens"] == 24 and result["settings"]["thinking_end"] == CLOSE
    rows = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert result["thinking_cut_rate"] == sum(r["thinking_cut"] for r in rows) / len(rows) > 0.5
    assert all((CLOSE in r["completion"]) == r["thinking_cut"] for r in rows)
    assert cli(args + ["--out", str(out)]) == 0  # no budget: nothing cut, and the table has no budget row
    assert json.loads(out.read_text())["thinking_cut_rate"] == 0 and "thinking cut" not in capsys.readouterr().out
    for bad, message in ((["--max-thinking-tokens", "-1"], "at least 0"),
                         (["--max-thinking-tokens", "8", "--thinking-end", "give up"], "must end with </think>")):
        assert cli(args + bad) == 2
        assert message in capsys.readouterr().err


def test_the_demo_evaluates_under_its_recipes_budget_and_shows_the_cuts(tmp_path, monkeypatch, capsys):
    """`r1lab demo` hands both evaluations the RL recipe's thinking budget, and its table has the cut rate. The stages
    are recorded, not run (the full demo takes 12 minutes; tests/test_demo.py runs the quick one for real)."""
    import r1lab.cli

    calls = []
    figures = {"pass1": 0.5, "cons_at_k": 0.5, "format_rate": 1.0, "thinking_cut_rate": 0.25, "truncated_rate": 0.0,
               "response_len": {"mean": 100.0}, "behaviour": {"step_acc": 1.0, "attempts": 3.0}}

    def fake_cli(argv):
        calls.append(argv)
        if argv[0] == "eval":
            Path(argv[argv.index("--out") + 1]).write_text(json.dumps(figures))
        return 0

    monkeypatch.setattr(r1lab.cli, "main", fake_cli)
    from r1lab import config

    real_load = config.load_config

    def load_with_budget(cls, recipe, overrides):  # a rollout budget of 200, the held-out one 300
        return real_load(cls, recipe, overrides + ["max_thinking_tokens=200", "eval_max_thinking_tokens=300"],
                         thinking_end=CLOSE)

    monkeypatch.setattr(config, "load_config", load_with_budget)  # the demo imports it when it runs
    assert cli(["demo", "--out", str(tmp_path), "--threads", "1"]) == 0
    evals = [argv for argv in calls if argv[0] == "eval"]
    assert len(evals) == 2
    for argv in evals:
        assert argv[argv.index("--max-thinking-tokens") + 1] == "300" and argv[argv.index("--thinking-end") + 1] == CLOSE
    assert "thinking cut at 300 tokens" in capsys.readouterr().out


def test_the_report_table_shows_the_cut_rate_when_a_budget_was_set():
    from r1lab.evaluation.table import eval_rows, render_evaluations

    with_budget = {"pass1": 0.3, "thinking_cut_rate": 0.4,
                   "settings": {"max_thinking_tokens": 480, "thinking_end": "give up</think>"}}
    without = {"pass1": 0.3, "thinking_cut_rate": 0.0, "settings": {"max_thinking_tokens": None}}
    rows = {name: values for name, values, _ in eval_rows([with_budget, with_budget])}
    assert rows["thinking cut at budget"] == [0.4, 0.4]
    assert "thinking cut at budget" not in {name for name, _, _ in eval_rows([without, without])}
    page = render_evaluations([("base", without), ("after RL", with_budget)])
    assert page.count("thinking budget") == 1 and "thinking budget 480 (forced &#x27;give up&lt;/think&gt;&#x27;)" in page


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
