"""`r1lab distill` end to end against a real server on localhost, no mock of the HTTP layer: a scripted stdlib
server (ScriptedTeacher) whose answers are a function of the problem and the sample (right when (p + j) % 3 != 0),
in DeepSeek's, vLLM's or the inline shape, with 429s, 500s, slow replies, dropped connections and malformed bodies
on chosen attempts. tests/test_distill_servers.py runs the command against r1lab serve, vLLM and the local form;
tests/test_teacher.py tests the pure rules of r1lab.evaluation.replies and teacher."""
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from r1lab.cli import main
from r1lab.evaluation import replies as R
from r1lab.evaluation import teacher as T
from r1lab.evaluation.journal import Journal
from r1lab.jsonl import read_jsonl
from r1lab.tasks import get_task
from r1lab.tasks.format import render_completion
from r1lab.tasks.problems import load_problems

TASK = get_task("countdown")
KNOBS = ["--task-arg", "max_numbers=3", "--task-arg", "max_number=12"]
FAST = ["--backoff", "0.01", "--max-retries", "3", "--timeout", "5"]


# --- a scripted teacher -------------------------------------------------------------------------------------------

def problems(n, seed=1):
    return load_problems(TASK, None, n, seed, "train", KNOBS[1::2])[0]


def answer(p, j, ex):
    """(reasoning, answer) of sample j of problem p: right when (p + j) % 3 != 0."""
    right = (p + j) % 3 != 0
    expr = TASK.solve(ex["nums"], ex["target"]) if right else str(ex["nums"][0])
    return f"sample {p}.{j}: try {expr}\n", expr


def expected_correct(p, j):
    return (p + j) % 3 != 0


class ScriptedTeacher(ThreadingHTTPServer):
    """A chat-completions server for `examples` x K samples: a request's seed says which (problem, sample) it is.

    fault(p, j, attempt) -> None | "429" | "429:SECONDS" | "500" | "slow" | "drop" | "garbage" picks a failure;
    `key`, when set, is required as a Bearer token (401 otherwise, echoing what it got, as some APIs do).
    GET /v1/models answers `models` (a 404 when None); every chat request must carry the `template` chat turns."""

    daemon_threads = True

    def __init__(self, examples, K, seed=0, shape="deepseek", fault=None, delay=0.0, slow=1.0, key=None, models=None,
                 template="r1"):
        super().__init__(("127.0.0.1", 0), Handler)
        self.examples, self.shape, self.fault, self.key = examples, shape, fault, key
        self.models, self.template, self.gets = models, template, []
        self.delay, self.slow = delay, slow
        self.rows = {R.request_seed(seed, p * K + j): (p, j) for p in range(len(examples)) for j in range(K)}
        self.lock = threading.Lock()
        self.attempts = collections.Counter()  # (p, j) -> requests received
        self.ok = collections.Counter()  # (p, j) -> chat completions sent
        self.times = collections.defaultdict(list)
        self.auth = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def handle_error(self, request, client_address):
        # subtle: a client killed mid-request (the resume test) makes the reply's write fail; socketserver printed
        # that to stderr whenever the handler woke, into whatever a later test step read from capsys
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def close(self):
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, obj, headers=()):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        for k, v in [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers]:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        s = self.server
        s.gets.append((self.path, self.headers.get("Authorization")))
        if s.models is None:
            return self.send(404, {"error": {"message": "no such route"}})
        self.send(200, s.models)

    def do_POST(self):
        s = self.server
        assert self.path == "/v1/chat/completions"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        p, j = s.rows[body["seed"]]
        assert body["messages"] == TASK.messages(s.examples[p], s.template) and body["n"] == 1
        assert body["model"] == "teacher"
        with s.lock:
            attempt = s.attempts[p, j]
            s.attempts[p, j] += 1
            s.times[p, j].append(time.monotonic())
            s.auth.append(self.headers.get("Authorization"))
        if s.key is not None and self.headers.get("Authorization") != f"Bearer {s.key}":
            got = self.headers.get("Authorization")
            return self.send(401, {"error": {"message": f"Incorrect API key provided: {got}"}})
        fault = s.fault(p, j, attempt) if s.fault else None
        if fault and fault.startswith("429"):
            return self.send(429, {"error": {"message": "rate limited"}}, [("Retry-After", fault[4:] or "0")])
        if fault == "500":
            return self.send(500, b"Internal Server Error")
        if fault == "garbage":
            return self.send(200, b'{"choices": [{"message": {"content": ')
        if fault in ("slow", "drop"):
            if fault == "slow":
                time.sleep(s.slow)
            self.close_connection = True  # no reply at all: the socket closes
            return
        time.sleep(s.delay)
        reasoning, expr = answer(p, j, s.examples[p])
        message = {"deepseek": {"content": expr, "reasoning_content": reasoning},
                   "vllm": {"content": f"\n\n<answer>{expr}</answer>", "reasoning": reasoning},
                   "inline": {"content": f"<think>{reasoning}</think>\n\n<answer> {expr} </answer>"}}[s.shape]
        usage = {"prompt_tokens": 100 + p, "completion_tokens": len(reasoning) + len(expr) + 10,
                 "completion_tokens_details": {"reasoning_tokens": len(reasoning)}}
        with s.lock:
            s.ok[p, j] += 1
        choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        self.send(200, {"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})


def distill_args(url, out, n, K, *extra):
    return ["distill", "--teacher-url", url, "--teacher-model", "teacher", "--task", "countdown", *KNOBS, "--n",
            str(n), "--samples", str(K), "--out", str(out), *FAST, *extra]


def sample_lines(journal):
    return [r for r in read_jsonl(journal) if "settings" not in r]


def check_records(records, examples, K, keep_all=True):
    """Every record is exactly what the scripted teacher said for its (problem, sample), scored by the verifier."""
    by_problem = collections.defaultdict(list)
    for r in records:
        p = next(i for i, ex in enumerate(examples) if ex["nums"] == r["nums"] and ex["target"] == r["target"])
        by_problem[p].append(r)
    for p, ex in enumerate(examples):
        want = [render_completion(*answer(p, j, ex)) for j in range(K)]
        got = by_problem[p]
        assert [r["completion"] for r in got] == (want if keep_all else
                                                  [w for j, w in enumerate(want) if expected_correct(p, j)])
        rate = sum(expected_correct(p, j) for j in range(K)) / K
        for r in got:
            j = want.index(r["completion"])
            reasoning, expr = answer(p, j, ex)
            assert r["correct"] == expected_correct(p, j) == TASK.score(r["completion"], ex).correct
            assert r["pass_rate"] == rate and r["teacher"] == "teacher"
            assert r["prompt"] == TASK.prompt(ex, template="short")
            assert r["usage"] == {"prompt": 100 + p, "completion": len(reasoning) + len(expr) + 10,
                                  "reasoning": len(reasoning)}
            assert r["tokens"] == r["usage"]["completion"]


# --- the command against the scripted teacher ---------------------------------------------------------------------

def faults(p, j, attempt):
    """Rows p*3 + j of 4 problems x 3 samples: every one but 0 and 6 fails its first attempt, 5 and 11 twice."""
    row = p * 3 + j
    plan = {1: ["429"], 2: ["500"], 3: ["slow"], 4: ["drop"], 5: ["garbage", "500"], 7: ["429:1"], 8: ["500"],
            9: ["slow"], 10: ["drop"], 11: ["garbage", "500"]}.get(row, [])
    return plan[attempt] if attempt < len(plan) else None


def test_faults_are_retried_and_nothing_is_lost_or_duplicated(tmp_path, capsys):
    examples = problems(4)
    server = ScriptedTeacher(examples, K=3, fault=faults, slow=1.0)
    try:
        out, rates = tmp_path / "t.jsonl", tmp_path / "rates.jsonl"
        argv = distill_args(server.url, out, 4, 3, "--keep", "all", "--pass-rates", str(rates), "--concurrency", "4",
                            "--timeout", "0.4", "--price-in", "1", "--price-out", "2",
                            "--account", str(tmp_path / "account.json"))
        assert main(argv) == 0
    finally:
        server.close()
    pairs = [(p, j) for p in range(4) for j in range(3)]
    assert server.ok == dict.fromkeys(pairs, 1)  # one reply per pair, none twice
    assert [server.attempts[p, j] - 1 for p, j in pairs] == [len([a for a in range(3) if faults(p, j, a)])
                                                             for p, j in pairs]
    t = server.times[2, 1]  # row 7: a 429 with Retry-After 1, honoured though --backoff is 0.01
    assert t[1] - t[0] >= 0.95
    lines = sample_lines(f"{out}.journal")
    assert sorted((r["problem"], r["sample"]) for r in lines) == pairs
    records = read_jsonl(out)
    assert len(records) == 12
    check_records(records, examples, 3)
    assert read_jsonl(rates) == [{**ex, "pass_rate": sum(expected_correct(p, j) for j in range(3)) / 3, "samples": 3}
                                 for p, ex in enumerate(examples)]
    total = R.add_usage(r["usage"] for r in records)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert (f"tokens in {total['prompt']}, out {total['completion']} (reasoning {total['reasoning']}); "
            f"${(total['prompt'] + 2 * total['completion']) / 1e6:.4f}") in summary
    assert "12 samples (0 from the journal), kept 12" in summary and "4/4 problems solved" in summary
    account = json.loads((tmp_path / "account.json").read_text())  # an API's account: its tokens and their price
    assert account["usage"] == total and account["samples"] == 12
    assert account["dollars"] == pytest.approx((total["prompt"] + 2 * total["completion"]) / 1e6, rel=1e-12)


def test_a_server_that_ignores_the_budget_is_named_and_its_traces_kept(tmp_path, capsys):
    """The scripted teacher ignores request fields it does not know, as vLLM's server does: replies that thought past
    the budget (by the reasoning tokens the server reports) are kept and counted on stderr; within it, nothing said."""
    def reply(content, completion, reasoning):
        return R.Reply("r" * 400, content, "stop", {"prompt": 1, "completion": completion, "reasoning": reasoning})

    assert R.over_budget([reply("7", 50, 30), reply("7", 50, 9), reply("7", 10, 0)], 1, "</think>") == [30]
    assert R.over_budget([reply("7", 50, 12)], 1, "\u00e9</think>") == [12]  # the bound counts bytes: 1 + 10 < 12
    # no count from the server (vLLM): what the content and UNSEEN_TOKENS leave of the completion
    answer = "<answer>7</answer>"
    assert R.thought_tokens(reply(answer, 200, 0)) == 200 - len(answer) - R.UNSEEN_TOKENS
    assert R.over_budget([reply(answer, 50 + len(answer) + R.UNSEEN_TOKENS, 0)], 42, "</think>") == []  # 50 = 42 + 8
    assert R.over_budget([reply(answer, 51 + len(answer) + R.UNSEEN_TOKENS, 0)], 42, "</think>") == [51]
    assert R.thought_tokens(reply("<think>" + "r" * 400 + "</think>7", 420, 0)) == 0  # inline: no floor
    examples = problems(2)
    server = ScriptedTeacher(examples, K=2)
    try:
        for budget, warned in (("1", True), ("100", False)):
            out = tmp_path / f"b{budget}.jsonl"
            assert main(distill_args(server.url, out, 2, 2, "--keep", "all", "--max-thinking-tokens", budget)) == 0
            err = capsys.readouterr().err
            assert ("4 of 4 replies thought past the budget" in err) == warned, err
            assert ("the server ignores max_thinking_tokens" in err) == warned
            check_records(read_jsonl(out), examples, 2)
            assert read_jsonl(f"{out}.journal")[0]["settings"]["max_thinking_tokens"] == int(budget)
    finally:
        server.close()


@pytest.mark.parametrize("shape", ["vllm", "inline"])
def test_every_reply_shape_gives_the_same_records(tmp_path, shape):
    examples = problems(2)
    outs = {}
    for name in ("deepseek", shape):
        server = ScriptedTeacher(examples, K=2, shape=name)
        try:
            outs[name] = tmp_path / f"{name}.jsonl"
            assert main(distill_args(server.url, outs[name], 2, 2, "--shortest-first")) == 0
        finally:
            server.close()
    records = read_jsonl(outs["deepseek"])
    assert records == read_jsonl(outs[shape]) and len(records) == 3  # (p + j) % 3 != 0 for 3 of the 4 pairs
    check_records(records, examples, 2, keep_all=False)


def test_a_killed_run_resumes_without_redoing_or_losing_a_sample(tmp_path, capsys):
    examples, K = problems(3), 4
    server = ScriptedTeacher(examples, K, delay=0.25)
    out = tmp_path / "t.jsonl"
    journal = Path(f"{out}.journal")
    argv = distill_args(server.url, out, 3, K, "--concurrency", "2", "--keep", "all")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "r1lab.cli", *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 60
        while (not journal.exists() or len(journal.read_bytes().splitlines()) < 4) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        finished = {(r["problem"], r["sample"]) for r in sample_lines(journal)}
        assert 3 <= len(finished) < 3 * K and not out.exists()
        with open(journal, "ab") as f:  # and a torn write of the next line
            f.write(b'{"fingerprint": "0123", "problem": 2, "sam')
        before = server.attempts.copy()
        server.delay = 0.0
        assert main(argv) == 0
        assert "torn last line" in capsys.readouterr().err
        for pair in finished:  # nothing that was journaled is requested again
            assert server.attempts[pair] == before[pair] == 1
        lines = sample_lines(journal)
        assert sorted((r["problem"], r["sample"]) for r in lines) == [(p, j) for p in range(3) for j in range(K)]
        fresh = tmp_path / "fresh.jsonl"
        assert main(distill_args(server.url, fresh, 3, K, "--keep", "all")) == 0
        assert read_jsonl(out) == read_jsonl(fresh)  # the same records as an uninterrupted run
        check_records(read_jsonl(out), examples, K)

        # a rerun with other selection flags sends no request; one with other sampling settings is refused
        attempts = sum(server.attempts.values())
        assert main(argv[:-2] + ["--keep-per-problem", "1"]) == 0 and len(read_jsonl(out)) == 3
        capsys.readouterr()
        assert main(argv + ["--temperature", "0.7"]) == 2
        err = capsys.readouterr().err.strip()
        assert "temperature 0.6 there, 0.7 now" in err and len(err.splitlines()) == 1, err
        lock = Journal(journal, read_jsonl(journal)[0]["settings"], 3, K)
        lock.open()
        try:  # a second run on a journal in use
            assert main(argv) == 2 and "another r1lab distill" in capsys.readouterr().err
        finally:
            lock.close()
        assert sum(server.attempts.values()) == attempts
    finally:
        server.close()


def test_spent_retries_exit_1_and_keep_what_finished(tmp_path, capsys):
    examples = problems(2)
    broken = {"on": True}
    server = ScriptedTeacher(examples, K=2, fault=lambda p, j, a: "500" if (p, j) == (1, 0) and broken["on"] else None)
    out = tmp_path / "t.jsonl"
    try:
        argv = distill_args(server.url, out, 2, 2, "--concurrency", "1", "--max-retries", "2")
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "problem 1, sample 0: gave up after 3 attempts; the last: HTTP 500" in err and "rerun" in err
        assert server.attempts[1, 0] == 3 and not out.exists()
        kept = {(r["problem"], r["sample"]) for r in sample_lines(f"{out}.journal")}
        assert (0, 0) in kept and (1, 0) not in kept
        broken["on"] = False
        assert main(argv) == 0
        assert all(server.ok[pair] == 1 for pair in kept) and sum(server.ok.values()) == 4
    finally:
        server.close()


def test_the_api_key_is_sent_and_written_nowhere(tmp_path, capsys, monkeypatch):
    secret = "sk-test-SECRET-d1st1ll"
    examples = problems(2)
    server = ScriptedTeacher(examples, K=2, key=secret)
    try:
        monkeypatch.setenv("R1LAB_TEST_TEACHER_KEY", secret)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        assert main(distill_args(server.url, tmp_path / "a.jsonl", 2, 2, "--api-key-env", "R1LAB_TEST_TEACHER_KEY",
                                 "--pass-rates", str(tmp_path / "r.jsonl"))) == 0
        monkeypatch.setenv("OPENAI_API_KEY", secret)  # the default variable
        assert main(distill_args(server.url, tmp_path / "b.jsonl", 2, 2)) == 0
        assert server.auth == [f"Bearer {secret}"] * 8
        assert server.gets == [("/v1/models", f"Bearer {secret}")] * 2  # --teacher-template auto asked, with the key
        monkeypatch.delenv("OPENAI_API_KEY")  # no key for a localhost server: no header
        server.key = None
        assert main(distill_args(server.url, tmp_path / "c.jsonl", 2, 2)) == 0
        assert server.auth[8:] == [None] * 4

        server.key = "the-right-key"  # a wrong key: 401, not retried, and the echoed key is scrubbed
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        before = sum(server.attempts.values())
        assert main(distill_args(server.url, tmp_path / "d.jsonl", 2, 2, "--concurrency", "1")) == 1
        captured = capsys.readouterr()
        assert "HTTP 401" in captured.err and "Incorrect API key provided: Bearer ***" in captured.err
        assert "$OPENAI_API_KEY" in captured.err
        assert sum(server.attempts.values()) - before == 1 and max(server.attempts.values()) == 4  # 4 once in CI
        assert not (tmp_path / "d.jsonl").exists()
    finally:
        server.close()
    assert secret not in captured.out + captured.err
    files = list(tmp_path.iterdir())
    assert len(files) == 8  # a, b, c and their journals, r.jsonl, d's journal
    assert all(secret.encode() not in f.read_bytes() for f in files)


def card(template, model="teacher"):
    return {"id": model, "object": "model", "owned_by": "r1lab", "r1lab_template": template}


@pytest.mark.parametrize("models, extra, template, why", [
    ({"object": "list", "data": [card("short")]}, [], "short", "(auto: the server names short for the model)"),
    ({"object": "list", "data": [card("r1")]}, [], "r1", "(auto: the server names r1 for the model)"),
    (None, [], "r1", "(auto: the server names no template"),  # 404: vLLM's /models names none either
    ({"object": "list", "data": [card("short", model="other")]}, [], "r1", "names no template"),
    ({"object": "list", "data": [card("qwen-chatml")]}, [], "r1", "names no template"),  # not one r1lab renders
    (b"<html>gateway</html>", [], "r1", "names no template"),
    ({"object": "list", "data": [card("short")]}, ["--teacher-template", "r1"], "r1", "r1 chat turns;"),
])
def test_auto_sends_the_chat_turns_the_server_names(tmp_path, capsys, models, extra, template, why):
    """The default --teacher-template auto asks GET /models once and sends the template named there for the model
    (r1lab_template, which r1lab serve sends), else R1's; an explicit template asks nothing. ScriptedTeacher refuses
    any chat request whose turns are not `template`'s."""
    server = ScriptedTeacher(problems(2), K=1, models=models, template=template)
    try:
        assert main(distill_args(server.url, tmp_path / "t.jsonl", 2, 1, *extra)) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert f"{template} chat turns" in out and why in out, out
    assert server.gets == ([] if extra else [("/v1/models", None)])
    assert sum(server.ok.values()) == 2  # each request carried `template`'s turns (the server checks)


def test_a_models_probe_that_never_answers_falls_back_to_r1():
    """served_template gives up within its timeout on a server that accepts and never replies, and says None."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        teacher = T.Teacher(f"http://127.0.0.1:{silent.getsockname()[1]}/v1", "teacher", timeout=5)
        t0 = time.monotonic()
        assert teacher.served_template(timeout=0.3) is None
        assert time.monotonic() - t0 < 3
    assert T.Teacher("http://127.0.0.1:9/v1", "teacher").served_template() is None  # refused


@pytest.mark.parametrize("extra, message", [
    (["--teacher", "countdown-base", "--teacher-url", "http://127.0.0.1:9/v1"], "not both"),
    ([], "give --teacher CHECKPOINT, or --teacher-url URL and --teacher-model NAME"),
    (["--teacher-url", "http://127.0.0.1:9/v1"], "--teacher-url URL and --teacher-model NAME"),
    (["--teacher-url", "127.0.0.1:9/v1", "--teacher-model", "m"], "the API's base URL"),
    (["--teacher-url", "http://127.0.0.1:9/v1?key=k", "--teacher-model", "m"], "no credentials"),
    (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--concurrency", "0"], "--concurrency"),
    (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--timeout", "0"], "--timeout"),
    (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--price-out", "nan"], "--price-out"),
    (["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--samples", "0"], "--samples"),
])
def test_usage_errors_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "t.jsonl"
    argv = ["distill", "--task", "countdown", "--n", "2", "--samples", "2", "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


# --- real servers -------------------------------------------------------------------------------------------------


def test_a_journal_without_samples_gives_way_to_other_settings(tmp_path, capsys):
    # before: a run that failed before its first reply (a wrong --teacher-model: 404) left a journal that refused the
    # corrected command until it was deleted by hand
    path = tmp_path / "t.jsonl.journal"
    first = Journal(path, {"teacher_model": "wrong", "temperature": 0.6}, 3, 2)
    first.open()
    first.close()
    second = Journal(path, {"teacher_model": "right", "temperature": 0.6}, 3, 2)
    assert second.open() == {}
    second.close()
    assert "held no samples, under other settings; started afresh" in capsys.readouterr().err
    assert read_jsonl(path) == [{"journal": "r1lab distill", "fingerprint": second.fingerprint,
                                 "settings": {"teacher_model": "right", "temperature": 0.6}}]
