"""Evaluation: the pass@k estimator, majority vote and every summary figure on hand-made samples; `r1lab eval` end
to end on a tiny random model; training-time evaluate_model agrees with it."""
from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import pytest
import torch

from r1lab import runtime
from r1lab.cli import main
from r1lab.evaluation.evaluate import Sample, k_values, majority_vote, parse_markers, pass_at_k, summarize


# --- pass@k ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 2, 0.5),          # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 2, 0.7),          # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 1, 0.3),         # pass@1 = c/n
    (8, 2, 4, 11 / 14),      # 1 - C(6,4)/C(8,4) = 1 - 15/70
    (3, 1, 3, 1.0),          # n - c < k: some correct sample is always drawn
    (10, 0, 5, 0.0),
    (6, 6, 1, 1.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12)


def test_pass_at_k_matches_brute_force_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                draws = list(itertools.combinations(outcomes, k))
                brute = Fraction(sum(any(d) for d in draws), len(draws))
                assert pass_at_k(n, c, k) == pytest.approx(float(brute), rel=1e-12, abs=1e-15), (n, c, k)


def test_pass_at_k_is_exact_for_large_n_and_rejects_bad_arguments():
    assert pass_at_k(1000, 1, 999) == pytest.approx(0.999)  # naive float products of big binomials overflow
    for bad in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)
    assert k_values(1) == [1] and k_values(2) == [1, 2] and k_values(6) == [1, 2, 4, 6] and k_values(8) == [1, 2, 4, 8]


# --- cons@k and markers ---------------------------------------------------------------------------------------------

def test_majority_vote():
    assert majority_vote(["7", "5", None, "5", "7"], [True, False, False, False, True]) == ("7", True)  # tie: first
    assert majority_vote(["5", "7", "7"], [False, True, True]) == ("7", True)
    assert majority_vote([None, None, "3"], [False, False, False]) == ("3", False)  # no answer never votes
    assert majority_vote([None, None], [False, False]) == (None, False)
    assert majority_vote(["x", "x", "y"], [False, True, False]) == ("x", True)  # right iff one with the key is right
    assert majority_vote(["y", "x", "x"], [True, False, False]) == ("x", False)


def test_parse_markers():
    assert parse_markers("check,back,") == ("check", "back,")
    assert parse_markers("check,back,,Wait , let me re") == ("check", "back,", "wait", "let me re")
    assert parse_markers("") == ()


# --- summarize on hand-made samples ---------------------------------------------------------------------------------

def S(problem, correct, key, tokens=10, fmt=True, text="", finish="eos", difficulty="easy", greedy=False):
    return Sample(problem, "P", text, tokens, finish, float(correct) + 0.1 * fmt, correct, fmt, key, key, difficulty,
                  greedy)


def test_summarize_every_figure():
    samples = [  # problem 0: 2 of 4 right, vote "3" wrong; problem 1: 1 of 4 right, vote "9" right; problem 2: none
        S(0, False, "3", 20, text="check 2+2=4, 4*2=9"), S(0, True, "8", 10), S(0, False, "3", 30, finish="length"),
        S(0, True, "8", 12),
        S(1, True, "9", 8, text="1+1=2 vs 5 miss\n2*3=6 vs 6 hit"), S(1, False, None, 40, fmt=False),
        S(1, False, "4", 16), S(1, False, None, 16, fmt=False),
        S(2, False, None, 50, fmt=False, difficulty="hard"), S(2, False, "1", 50, difficulty="hard"),
        S(2, False, "1", 50, difficulty="hard"), S(2, False, "2", 50, fmt=False, finish="length", difficulty="hard"),
    ]
    greedy = [S(0, True, "8", greedy=True), S(1, False, "4", greedy=True),
              S(2, True, "5", fmt=False, greedy=True, difficulty="hard")]
    r = summarize(samples, greedy, markers=("check", "back,"))
    assert (r["problems"], r["samples"], r["completions"]) == (3, 4, 12)
    assert r["pass1"] == pytest.approx(3 / 12)
    assert r["pass_at_k"]["1"] == pytest.approx(3 / 12)
    # pass@2: 1 - C(2,2)/C(4,2) = 5/6; 1 - C(3,2)/C(4,2) = 1/2; 0
    assert r["pass_at_k"]["2"] == pytest.approx((5 / 6 + 1 / 2 + 0) / 3)
    assert r["pass_at_k"]["4"] == pytest.approx(2 / 3)
    # problem 0: "3" and "8" tie 2-2, "3" comes first and is wrong; problem 1: all keys once, "9" first
    assert r["cons_at_k"] == pytest.approx(1 / 3)
    assert r["greedy_acc"] == pytest.approx(2 / 3) and r["greedy_format_rate"] == pytest.approx(2 / 3)
    assert r["format_rate"] == pytest.approx(8 / 12)
    assert r["truncated_rate"] == pytest.approx(2 / 12)
    assert r["mean_reward"] == pytest.approx((3 + 0.8) / 12)
    lens = r["response_len"]
    assert lens["mean"] == pytest.approx(352 / 12) and lens["median"] == 25.0
    assert lens["mean_correct"] == pytest.approx(10) and lens["median_correct"] == 10.0
    assert lens["mean_wrong"] == pytest.approx(322 / 9) and lens["median_wrong"] == 40.0
    b = r["behaviour"]
    assert b["marker_rate"] == pytest.approx(1 / 12)
    assert b["step_acc"] == pytest.approx(3 / 4) and b["steps_per_response"] == pytest.approx(4 / 12)
    assert b["attempts"] == pytest.approx(2 / 12)
    # split by outcome: 3 right (one with 2 attempts), 9 wrong (one with "check")
    assert b["attempts_correct"] == pytest.approx(2 / 3) and b["attempts_wrong"] == 0.0
    assert b["marker_rate_correct"] == 0.0 and b["marker_rate_wrong"] == pytest.approx(1 / 9)
    assert list(r["by_difficulty"]) == ["easy", "hard"]
    easy, hard = r["by_difficulty"]["easy"], r["by_difficulty"]["hard"]
    assert (easy["problems"], easy["pass1"], easy["cons_at_k"], easy["greedy_acc"]) == (2, 3 / 8, 0.5, 0.5)
    assert (hard["problems"], hard["pass1"], hard["format_rate"], hard["greedy_acc"]) == (1, 0.0, 0.5, 1.0)


def test_summarize_without_greedy_or_right_answers_and_natural_bucket_order():
    samples = [S(p, False, None, difficulty=f"{d} numbers") for p, d in enumerate([10, 3, 9])]
    r = summarize(samples)
    assert r["greedy_acc"] is None and r["by_difficulty"]["3 numbers"]["greedy_acc"] is None
    assert math.isnan(r["response_len"]["mean_correct"]) and math.isnan(r["behaviour"]["step_acc"])
    assert math.isnan(r["behaviour"]["attempts_correct"]) and math.isnan(r["behaviour"]["marker_rate_correct"])
    assert r["behaviour"]["attempts_wrong"] == 0.0 and r["behaviour"]["marker_rate_wrong"] == 0.0
    assert list(r["by_difficulty"]) == ["3 numbers", "9 numbers", "10 numbers"]
    assert r["pass_at_k"] == {"1": 0.0}


# --- `r1lab eval` end to end ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from r1lab.checkpoint import save_model_dir
    from r1lab.model.presets import build_model
    from r1lab.model.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    tok = build_tokenizer()
    path = tmp_path_factory.mktemp("tiny") / "model"
    save_model_dir(path, build_model("tiny-1m", tok), tok)
    return path


TOP_KEYS = {"settings", "problems", "samples", "completions", "pass1", "pass_at_k", "cons_at_k", "greedy_acc",
            "greedy_format_rate", "format_rate", "mean_reward", "truncated_rate", "thinking_cut_rate",
            "response_len", "behaviour", "by_difficulty", "wall_s", "account"}


def test_eval_cli_json_samples_and_difficulty(tiny_checkpoint, tmp_path, capsys):
    out, samples_out = tmp_path / "eval.json", tmp_path / "samples.jsonl"
    argv = ["eval", "--model", str(tiny_checkpoint), "--task", "countdown", "--n", "4", "--samples", "2", "--max-new-tokens",
            "12", "--threads", "1", "--markers", "check,back,", "--out", str(out), "--completions-out", str(samples_out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "pass@1 (mean of 2)" in table and "cons@2" in table and "difficulty" in table and "flops" in table
    r = json.loads(out.read_text())  # standard JSON: NaN was written as null
    assert set(r) == TOP_KEYS
    s = r["settings"]
    assert (s["model"], s["task"], s["n"], s["seed"], s["samples"], s["temperature"], s["top_p"],
            s["max_new_tokens"], s["template"], s["markers"]) == (str(tiny_checkpoint), "countdown", 4, 1, 2, 0.6,
                                                                  0.95, 12, "short", ["check", "back,"])
    assert s["data"].startswith("generated: countdown test n=4 seed=1")
    assert (r["problems"], r["samples"], r["completions"]) == (4, 2, 8)
    assert set(r["pass_at_k"]) == {"1", "2"} and 0 <= r["pass1"] <= 1 and r["greedy_acc"] is not None
    assert set(r["response_len"]) == {"mean", "median", "mean_correct", "median_correct", "mean_wrong",
                                      "median_wrong"}
    assert 1 <= r["response_len"]["mean"] <= 12
    assert {"marker_rate", "step_acc", "steps_per_response", "attempts", "attempts_correct", "attempts_wrong",
            "marker_rate_correct", "marker_rate_wrong"} <= set(r["behaviour"])
    buckets = r["by_difficulty"]
    assert buckets and all(name.endswith("numbers") for name in buckets)
    assert sum(b["problems"] for b in buckets.values()) == 4
    assert {"pass1", "format_rate", "cons_at_k", "greedy_acc"} <= set(next(iter(buckets.values())))
    account = r["account"]
    assert account["flops"] > 0 and account["flops_by_kind"]["generate"] == account["flops"]
    rows = [json.loads(line) for line in samples_out.read_text().splitlines()]
    assert len(rows) == 4 * 2 + 4 and sum(row["greedy"] for row in rows) == 4
    assert {"prompt", "completion", "reward", "correct", "format_ok", "answer", "difficulty"} <= set(rows[0])
    assert rows[0]["prompt"].startswith("User: Using the numbers")

    # Training-time evaluation is the same core: the same problems and settings give the same numbers.
    from r1lab.evaluation.evaluate import evaluate_model
    from r1lab.model.load import load_model
    from r1lab.tasks import get_task

    task = get_task("countdown")
    model, tok = load_model(str(tiny_checkpoint))
    flat = evaluate_model(model, tok, task, task.generate(4, 1, split="test"), max_new_tokens=12, samples=2,
                          temperature=0.6, top_p=0.95, seed=0, greedy=True)
    assert flat["pass1"] == r["pass1"] and flat["format_rate"] == r["format_rate"]
    assert flat["response_len"] == pytest.approx(r["response_len"]["mean"])
    assert flat["greedy_acc"] == r["greedy_acc"] and flat["cons_at_k"] == r["cons_at_k"]
    assert {"pass1", "format_rate", "step_acc", "response_len", "pass@2"} <= set(flat)


@pytest.mark.parametrize("extra, message", [
    (["--task", "gsm8k"], "--data"),
    (["--task", "countdown", "--task-arg", "colour=3"], "no knob 'colour'"),
    (["--task", "nope"], "unknown task"),
])
def test_eval_usage_errors(tmp_path, capsys, extra, message):
    assert main(["eval", "--model", str(tmp_path / "no-such-model")] + extra + ["--n", "2"]) == 2
    assert message in capsys.readouterr().err


def test_eval_names_a_missing_model_path_and_checks_outputs_first(tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "no-such-model"), "--task", "countdown", "--n", "2"]) == 2
    assert "no-such-model: no such file or directory" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    argv = ["eval", "--model", str(tiny_checkpoint), "--task", "countdown", "--n", "2", "--max-new-tokens", "4"]
    assert main(argv + ["--out", str(blocked / "eval.json")]) == 2  # its folder would be a file: refused up front
    assert "cannot create its folder" in capsys.readouterr().err


def test_eval_json_prints_one_object_on_stdout(tiny_checkpoint, capsys):
    argv = ["eval", "--model", str(tiny_checkpoint), "--task", "countdown", "--n", "2", "--samples", "1",
            "--max-new-tokens", "6", "--no-greedy", "--threads", "1", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["problems"] == 2 and r["settings"]["model"] == str(tiny_checkpoint)


def test_eval_backend_vllm_without_vllm_is_a_usage_error_naming_the_extra(tmp_path, capsys, monkeypatch):
    """Refused before the model loads (the model path does not even exist), with how to install the backend."""
    import sys

    from r1lab.engine import BACKENDS

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM (CI)
    argv = ["eval", "--model", "countdown-base", "--task", "countdown", "--n", "2", "--backend", "vllm"]
    assert main(argv) == 2
    assert "rollout backend 'vllm' needs vllm, which is not installed: pip install 'r1lab[vllm]'" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(argv[:-1] + ["vlm"])
    err = capsys.readouterr().err
    assert "argument --backend: invalid choice: 'vlm'" in err and "engine" in err and "vllm" in err
    assert list(BACKENDS) == ["engine", "vllm"]  # --backend's choices are the registry's


def test_a_model_trained_on_other_knobs_is_told_which(capsys):
    """The shipped base learnt countdown with numbers up to 12; on the generator's defaults (up to 100) it solves
    nothing, so eval says which knobs to add, and says nothing once they are given."""
    argv = ["eval", "--model", "countdown-base", "--task", "countdown", "--n", "1", "--samples", "1",
            "--max-new-tokens", "4"]
    assert main(argv) == 0
    assert ("r1lab: note: countdown-base was trained on countdown problems with max_number=12; these are generated "
            "with the task's defaults. For problems of its own kind add: --task-arg max_number=12"
            in capsys.readouterr().err)
    assert main(argv + ["--task-arg", "max_number=12"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_the_results_record_the_dtype_that_ran(tmp_path, capsys):
    """A checkpoint stored in bf16 loads and runs in bf16 for inference; eval recorded "fp32" (its --dtype default)
    and read its MFU against the fp32 peak."""
    from r1lab.model.load import load_model, resolve_checkpoint

    model, tok = load_model(resolve_checkpoint("countdown-base"))
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    out = tmp_path / "eval.json"
    assert main(["eval", "--model", str(tmp_path / "bf16"), "--task", "countdown", "--n", "1", "--samples", "1",
                 "--max-new-tokens", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    # on a GPU (the H200 check's suite run) eval runs there, against the GPU's bf16 peak
    peak = "of cpu bf16 measured matmul peak" if runtime.device().type == "cpu" else "of cuda bf16 peak"
    assert result["settings"]["dtype"] == "bf16" and peak in capsys.readouterr().out


def test_bf16_eval_of_an_fp32_checkpoint_runs_its_weights_cast_to_bf16(tmp_path):
    """--dtype bf16 loads the weights in bf16 (no autocast at every decoding step): the same completions and figures as
    the checkpoint saved in bf16 and evaluated as it is."""
    from r1lab.model.load import load_model, resolve_checkpoint

    model, tok = load_model(resolve_checkpoint("countdown-base"))
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    tok.save_pretrained(tmp_path / "bf16")
    args = ["--task", "countdown", "--n", "4", "--samples", "2", "--max-new-tokens", "48", "--no-greedy"]
    for name, model_arg, extra in (("cast", "countdown-base", ["--dtype", "bf16"]),
                                   ("stored", str(tmp_path / "bf16"), [])):
        assert main(["eval", "--model", model_arg, *args, *extra, "--out", str(tmp_path / f"{name}.json"),
                     "--completions-out", str(tmp_path / f"{name}.jsonl")]) == 0
    cast, stored = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cast", "stored"))
    assert cast["settings"]["dtype"] == stored["settings"]["dtype"] == "bf16"
    assert (tmp_path / "cast.jsonl").read_text() == (tmp_path / "stored.jsonl").read_text()
    assert cast["pass1"] == stored["pass1"] and cast["format_rate"] == stored["format_rate"]
