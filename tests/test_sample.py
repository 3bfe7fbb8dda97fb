"""`r1lab sample` (rejection sampling): the pure selection in r1lab.evaluation.traces, and the command end to end."""
import json

import pytest

from r1lab.cli import main
from r1lab.evaluation.evaluate import Sample
from r1lab.evaluation.traces import pass_rates, select
from r1lab.jsonl import read_jsonl

EXAMPLES = [{"nums": [1, 2], "target": 3}, {"nums": [4, 5], "target": 9}]


def s(problem, completion, correct, tokens=None, greedy=False):
    return Sample(problem, f"P{problem}", completion, len(completion) if tokens is None else tokens, "eos",
                  float(correct), correct, True, None, None, "easy", greedy)


SAMPLES = [s(0, "long right", True), s(0, "wrong", False), s(0, "ok", True), s(0, "ok", True),
           s(1, "no", False), s(1, "nope", False), s(1, "x", False), s(1, "yes", True),
           s(0, "greedy", True, greedy=True)]  # a greedy-pass sample is never counted or kept


def test_keep_correct_dedups_and_keeps_order():
    recs = select(SAMPLES, EXAMPLES)
    assert [(r["target"], r["completion"]) for r in recs] == [(3, "long right"), (3, "ok"), (9, "yes")]
    assert [r["pass_rate"] for r in recs] == [0.75, 0.75, 0.25]
    assert recs[0] == {"nums": [1, 2], "target": 3, "prompt": "P0", "completion": "long right", "correct": True,
                       "pass_rate": 0.75, "tokens": 10}


def test_shortest_first_and_per_problem_cap():
    recs = select(SAMPLES, EXAMPLES, per_problem=1, shortest_first=True)
    assert [r["completion"] for r in recs] == ["ok", "yes"]
    assert [r["completion"] for r in select(SAMPLES, EXAMPLES, per_problem=1)] == ["long right", "yes"]


def test_keep_all_puts_correct_first_when_shortest_first():
    recs = select(SAMPLES, EXAMPLES, keep="all")
    assert [r["completion"] for r in recs] == ["long right", "wrong", "ok", "no", "nope", "x", "yes"]
    assert [r["correct"] for r in recs[:3]] == [True, False, True]
    recs = select(SAMPLES, EXAMPLES, keep="all", per_problem=3, shortest_first=True)
    assert [r["completion"] for r in recs] == ["ok", "long right", "wrong", "yes", "x", "no"]


def test_keep_correct_keeps_only_well_formed_finished_traces_and_never_a_problems_messages():
    """A correct answer that runs on to the token limit, or holds tags in its reasoning, teaches a model not to stop
    or not to close its thinking (R1 keeps correct and readable samples). A problem's `messages` (NuminaMath-CoT,
    OpenR1-Math) used to ride along in the record, and `r1lab sft` learnt it instead of the verified trace."""
    from dataclasses import replace

    examples = [{**EXAMPLES[0], "messages": [{"role": "assistant", "content": "the dataset's solution"}]}]
    group = [s(0, "cut", True), s(0, "bad", True), s(0, "good", True), s(0, "wrong", False)]
    group[0], group[1] = replace(group[0], finish_reason="length"), replace(group[1], format_ok=False)
    recs = select(group, examples)
    assert [r["completion"] for r in recs] == ["good"] and "messages" not in recs[0]
    assert [r["completion"] for r in select(group, examples, keep="all")] == ["cut", "bad", "good", "wrong"]


def test_pass_rates_and_bad_arguments():
    assert pass_rates(SAMPLES, EXAMPLES) == [{**EXAMPLES[0], "pass_rate": 0.75, "samples": 4},
                                             {**EXAMPLES[1], "pass_rate": 0.25, "samples": 4}]
    with pytest.raises(ValueError):
        select(SAMPLES, EXAMPLES, keep="some")
    with pytest.raises(ValueError):
        select(SAMPLES, EXAMPLES, per_problem=0)


def test_sample_cli_end_to_end(tmp_path):
    from r1lab.tasks import get_task

    out, rates = tmp_path / "traces.jsonl", tmp_path / "rates.jsonl"
    assert main(["sample", "--model", "countdown-base", "--task", "countdown", "--n", "4", "--samples", "4",
                 "--max-new-tokens", "64", "--keep", "all", "--task-arg", "max_number=12", "--task-arg",
                 "max_numbers=3", "--threads", "1", "--out", str(out), "--pass-rates", str(rates),
                 "--account", str(tmp_path / "account.json")]) == 0
    recs, task = read_jsonl(out), get_task("countdown")
    account = json.loads((tmp_path / "account.json").read_text())  # the generation's FLOPs, for what runs cost
    assert account["flops"] == account["flops_by_kind"]["generate"] > 0
    assert 1 <= len(recs) <= 16
    for r in recs:
        assert set(r) == {"nums", "target", "prompt", "completion", "correct", "pass_rate", "tokens"}
        assert r["correct"] == task.score(r["completion"], {"nums": r["nums"], "target": r["target"]}).correct
        assert r["prompt"] == task.prompt({"nums": r["nums"], "target": r["target"]}, template="short")
    rows = read_jsonl(rates)
    assert len(rows) == 4 and all(row["samples"] == 4 for row in rows)
    for row in rows:  # each problem's pass rate is the correct fraction of its samples (all kept unless duplicates)
        mine = [r for r in recs if r["nums"] == row["nums"] and r["target"] == row["target"]]
        assert all(r["pass_rate"] == row["pass_rate"] for r in mine)
        assert sum(r["correct"] for r in mine) <= round(row["pass_rate"] * 4)


def test_sample_under_a_thinking_budget_marks_the_cut_traces(tmp_path, capsys):
    """--max-thinking-tokens: the engine forces --thinking-end after N tokens of thinking (as `r1lab eval` does), and
    each record says whether its thinking was cut; a cut completion holds the forced text, scored as written."""
    from r1lab.tasks import get_task

    out, task = tmp_path / "traces.jsonl", get_task("countdown")
    assert main(["sample", "--model", "countdown-base", "--task", "countdown", "--n", "4", "--samples", "4",
                 "--max-new-tokens", "96", "--keep", "all", "--task-arg", "max_number=12", "--task-arg",
                 "max_numbers=3", "--threads", "1", "--out", str(out), "--max-thinking-tokens", "40",
                 "--thinking-end", "\ngive up\n</think>"]) == 0
    assert "thinking budget 40 tokens (then '\\ngive up\\n</think>')" in capsys.readouterr().out
    recs = read_jsonl(out)
    assert recs and all(set(r) == {"nums", "target", "prompt", "completion", "correct", "pass_rate", "tokens",
                                   "thinking_cut"} for r in recs)
    cut = [r for r in recs if r["thinking_cut"]]
    assert cut, "the base's searches run past 40 characters of thinking"
    for r in recs:
        thinking = r["completion"].split("</think>")[0]
        assert thinking.endswith("\ngive up\n") or not r["thinking_cut"]
        assert len(thinking) <= 40 + len("\ngive up\n") or not r["thinking_cut"]  # character-level tokenizer
        assert r["tokens"] <= 96
        assert r["correct"] == task.score(r["completion"], {"nums": r["nums"], "target": r["target"]}).correct


@pytest.mark.parametrize("extra", [["--samples", "0"], ["--samples", "2", "--keep-per-problem", "0"],
                                   ["--samples", "2", "--task-arg", "nope=1"], ["--samples", "2", "--n", "0"],
                                   ["--samples", "2", "--pass-rates", "SAME"],
                                   ["--samples", "2", "--account", "SAME"],
                                   ["--samples", "2", "--max-thinking-tokens", "-1"],
                                   ["--samples", "2", "--max-thinking-tokens", "8", "--thinking-end", "give up"]])
def test_sample_cli_bad_arguments_exit_2(tmp_path, extra, capsys):
    out = tmp_path / "t.jsonl"
    extra = [str(out) if a == "SAME" else a for a in extra]
    assert main(["sample", "--model", "countdown-base", "--task", "countdown", "--out", str(out)] + extra) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not out.exists()


def test_sample_cli_unwritable_out_and_bad_model(tmp_path):
    args = ["sample", "--task", "countdown", "--samples", "1", "--n", "1"]
    assert main(args + ["--model", "countdown-base", "--out", str(tmp_path)]) == 2  # a directory
    assert main(args + ["--model", str(tmp_path / "none"), "--out", str(tmp_path / "t.jsonl")]) == 2


@pytest.mark.parametrize("command", [["sample", "--model", "countdown-base"], ["distill", "--teacher", "countdown-base"]])
def test_backend_vllm_without_vllm_is_a_usage_error_naming_the_extra(tmp_path, capsys, monkeypatch, command):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM (CI)
    out = tmp_path / "t.jsonl"
    assert main([*command, "--task", "countdown", "--n", "2", "--samples", "2", "--backend", "vllm",
                 "--out", str(out)]) == 2
    assert "needs vllm, which is not installed: pip install 'r1lab[vllm]'" in capsys.readouterr().err
    assert not out.exists()


def test_distill_api_form_refuses_a_local_backend(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["distill", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--task", "countdown",
                 "--n", "2", "--samples", "2", "--backend", "vllm", "--out", str(out)]) == 2
    assert "an API teacher samples on its own server" in capsys.readouterr().err and not out.exists()


def test_sample_through_vllm_keeps_verified_records(tmp_path):
    """Rejection sampling with vLLM as the sampler (runs where vllm is installed; CI skips it): the kept records
    re-score as correct with the task's verifier, and the pass rates count K samples each."""
    pytest.importorskip("vllm")
    from r1lab.tasks import get_task

    out, rates = tmp_path / "traces.jsonl", tmp_path / "rates.jsonl"
    assert main(["sample", "--model", "countdown-base", "--task", "countdown", "--n", "6", "--samples", "4",
                 "--max-new-tokens", "128", "--task-arg", "max_number=12", "--task-arg", "max_numbers=3",
                 "--threads", "1", "--backend", "vllm", "--out", str(out), "--pass-rates", str(rates)]) == 0
    task = get_task("countdown")
    for r in read_jsonl(out):
        assert r["correct"] and task.score(r["completion"], {"nums": r["nums"], "target": r["target"]}).correct
    rows = read_jsonl(rates)
    assert len(rows) == 6 and all(row["samples"] == 4 for row in rows)
