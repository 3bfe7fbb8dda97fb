"""`r1lab serve` end to end: a real server (a subprocess on a free localhost port, one torch thread) driven by the
official openai client and httpx; plus the pure text helpers and EngineBatch.cancel on a tiny model."""
import asyncio
import time

import httpx
import openai
import pytest
from conftest import drain_events, load_benchmark, tiny_checkpoint, tiny_model
import torch

from r1lab.engine import Engine, EngineBatch, SamplingParams
from r1lab.model.load import load_model
from r1lab.model.tokenizer import build_tokenizer
from r1lab.serve.scheduler import Busy, EngineFailure, Scheduler
from r1lab.engine.forcing import budget_forcer
from r1lab.serve.text import TextStream, chat_prompt_ids, split_reasoning
from r1lab.tasks.format import held_suffix
from r1lab.tasks.format import StreamSplitter

serve_load = load_benchmark("serve_load")

MODEL = "tiny"
CONTEXT = 1024
CONCURRENCY = 16
USER = [{"role": "user", "content": "2+3"}]
LONG = [{"role": "user", "content": "hold"}]  # greedy on the test model runs to the length limit, never EOS


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory, "serve", CONTEXT)


@pytest.fixture(scope="module")
def url(ckpt):
    proc, url = serve_load.start_server(str(ckpt), "--threads", "1", "--served-model-name", MODEL,
                                        "--max-concurrency", str(CONCURRENCY), "--max-batch-size", str(CONCURRENCY),
                                        "--log-level", "warning",
                                        # subtle: on a GPU the 429 test's 16 whole-context streams ran to their end
                                        # before it closed them (0 of 16 cancelled on an H200); on one CPU thread
                                        # they take ~7 s, and the test closes them within a second
                                        env={"CUDA_VISIBLE_DEVICES": ""})
    yield url
    serve_load.stop_server(proc)


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def offline(ckpt):
    torch.set_num_threads(1)
    model, tok = load_model(str(ckpt))
    return Engine(model, tok)


def health(url) -> dict:
    return httpx.get(url + "/health").json()


def wait_idle(url, timeout=10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        h = health(url)
        if (h["requests"] == 0 and h["rows"] == 0) or time.monotonic() > deadline:
            return h
        time.sleep(0.05)


def stream_chat(client, **kw):
    """(reasoning, content, finish_reason, usage) from a streamed chat completion with one choice."""
    reasoning = content = ""
    finish = usage = None
    for chunk in client.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                                **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            reasoning += c.delta.model_extra.get("reasoning_content") or ""
            content += c.delta.content or ""
            finish = c.finish_reason or finish
    return reasoning, content, finish, usage


# -- the server ---------------------------------------------------------------------------------------------------

def test_models_lists_the_checkpoint(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].model_extra["max_model_len"] == CONTEXT


def test_chat_plain_and_streamed_agree_and_split_at_think_end(client, offline):
    kw = dict(messages=USER, max_tokens=40, seed=3, extra_body={"max_thinking_tokens": 8})
    r = client.chat.completions.create(model=MODEL, **kw)
    msg, usage = r.choices[0].message, r.usage
    reasoning = msg.model_extra["reasoning_content"]
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert usage.prompt_tokens == len(chat_prompt_ids(offline.tokenizer, USER))
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # the same request streamed: the deltas add up to the same message and usage
    s_reasoning, s_content, s_finish, s_usage = stream_chat(client, **kw)
    assert (s_reasoning, s_content, s_finish) == (reasoning, msg.content, r.choices[0].finish_reason)
    assert s_usage.model_dump() == usage.model_dump()
    # the offline engine with the same seed and forcing gives the raw text; reasoning is exactly what precedes
    # </think> (less a leading <think>, which this random model writes: never part of the reasoning) and content is
    # the rest without <answer> tags
    ids = chat_prompt_ids(offline.tokenizer, USER)
    forced = budget_forcer(offline.tokenizer.convert_tokens_to_ids("</think>"), offline.encode("Wait"), 8)
    raw = offline.generate([ids], SamplingParams(max_new_tokens=40, seed=3), forced=forced)[0]
    assert "</think>" in raw.text and raw.text.split("</think>")[0].removeprefix("<think>") == reasoning
    end = offline.tokenizer.convert_tokens_to_ids("</think>")
    assert usage.completion_tokens_details.reasoning_tokens == raw.token_ids.index(end) <= 8
    assert msg.content == split_reasoning(raw.text)[1] and len(raw.token_ids) == usage.completion_tokens
    # /v1/completions on the rendered prompt returns that raw text
    prompt = offline.tokenizer.decode(ids)
    c = client.completions.create(model=MODEL, prompt=prompt, max_tokens=40, seed=3,
                                  extra_body={"max_thinking_tokens": 8})
    assert c.choices[0].text == raw.text


def test_n_choices_and_seed_reproducibility(client, offline):
    kw = dict(model=MODEL, messages=USER, max_tokens=30, n=3, temperature=1.0)
    a = client.chat.completions.create(seed=11, **kw)
    b = client.chat.completions.create(seed=11, **kw)
    c = client.chat.completions.create(seed=12, **kw)
    texts = lambda r: [(ch.message.model_extra["reasoning_content"], ch.message.content) for ch in r.choices]
    assert [ch.index for ch in a.choices] == [0, 1, 2]
    assert texts(a) == texts(b) != texts(c)
    assert len(set(texts(a))) == 3  # the choices are different samples
    # choice k uses the seed of row k of Engine.generate, so the offline engine reproduces every choice
    ids = chat_prompt_ids(offline.tokenizer, USER)
    raw = offline.generate([ids] * 3, SamplingParams(max_new_tokens=30, seed=11))
    assert texts(a) == [split_reasoning(o.text) for o in raw]
    assert a.usage.completion_tokens == sum(len(o.token_ids) for o in raw)  # summed over choices
    assert a.usage.prompt_tokens == len(ids)  # counted once


def test_stop_strings_plain_and_streamed(client):
    prompt = "User: 7*8\nAssistant: <think>"
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=60, seed=5).choices[0].text
    stop = full[20:23]  # a string the sampled text is known to reach
    cut = full[:full.find(stop)]
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=60, seed=5, stop=[stop, "\x00"])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (cut, "stop")
    streamed = "".join(ch.choices[0].text for ch in client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=60, seed=5, stop=stop, stream=True) if ch.choices)
    assert streamed == cut  # the held-back partial stop string never leaked into a delta


def test_budget_forcing_wait_extends_thinking(client):
    # num_ignore: the model's own </think> becomes "Wait" (s1); thinking stays within max_thinking_tokens
    kw = dict(model=MODEL, messages=USER, max_tokens=200, temperature=1.0, n=8, seed=0)
    plain = client.chat.completions.create(**kw)
    forced = client.chat.completions.create(**kw, extra_body={"num_ignore": 2, "max_thinking_tokens": 150})
    # the model ended thinking by itself (content follows) early enough for "Wait" to fit in the budget
    ended = [i for i, ch in enumerate(plain.choices)
             if ch.message.content and len(ch.message.model_extra["reasoning_content"]) + 4 <= 150]
    assert ended  # some samples end their thinking early by themselves
    for i in ended:
        assert "Wait" in forced.choices[i].message.model_extra["reasoning_content"]
    assert forced.usage.completion_tokens_details.reasoning_tokens <= 8 * 150


def test_thinking_end_is_forced_at_the_budget(client, offline):
    """thinking_end (an extension, as thinking_budget's closing text) replaces the bare </think> that
    max_thinking_tokens forces: the reasoning is the same up to the cut, then the closing words."""
    end = "\ngive up\n</think>"
    kw = dict(model=MODEL, messages=LONG, max_tokens=40, temperature=0)  # thinks 4 tokens: a budget of 2 cuts it
    bare = client.chat.completions.create(**kw, extra_body={"max_thinking_tokens": 2}).choices[0].message
    closed = client.chat.completions.create(**kw, extra_body={"max_thinking_tokens": 2, "thinking_end": end})
    reasoning = closed.choices[0].message.model_extra["reasoning_content"]
    assert reasoning == bare.model_extra["reasoning_content"] + "\ngive up\n"
    ids = chat_prompt_ids(offline.tokenizer, LONG)
    think_end = offline.tokenizer.convert_tokens_to_ids("</think>")
    forced = budget_forcer(think_end, offline.encode("Wait"), 2, close_ids=offline.encode(end))
    raw = offline.generate([ids], SamplingParams(max_new_tokens=40, temperature=0), forced=forced)[0]
    assert split_reasoning(raw.text) == (reasoning, closed.choices[0].message.content)
    assert closed.usage.completion_tokens_details.reasoning_tokens == raw.token_ids.index(think_end)


@pytest.mark.parametrize("body, status, param, code", [
    ({"model": MODEL, "messages": USER, "thinking_end": "</think>"}, 400, "thinking_end", None),
    ({"model": MODEL, "messages": USER, "max_thinking_tokens": 5, "thinking_end": "give up"}, 400, "thinking_end",
     None),
    (b'{"model": "tiny", "messages": [', 400, None, "invalid_json"),
    (b"not json at all", 400, None, "invalid_json"),
    (b"[]", 400, None, None),
    ({"model": "nope", "messages": USER}, 404, "model", "model_not_found"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role", None),
    ({"model": MODEL}, 400, "messages", None),
    ({"model": MODEL, "messages": []}, 400, "messages", None),
    ({"model": MODEL, "messages": USER, "max_tokens": CONTEXT}, 400, "max_tokens", "context_length_exceeded"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "x" * CONTEXT}]}, 400, "messages",
     "context_length_exceeded"),
    ({"model": MODEL, "messages": USER, "n": CONCURRENCY + 1}, 400, "n", None),
    ({"model": MODEL, "messages": USER, "temperature": 3}, 400, "temperature", None),
    ({"model": MODEL, "messages": USER, "max_tokens": 0}, 400, "max_tokens", None),
    ({"model": MODEL, "messages": USER, "logprobs": True}, 400, "logprobs", None),
    ({"model": MODEL, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    ({"model": MODEL, "messages": USER, "min_thinking_tokens": 9, "max_thinking_tokens": 3}, 400,
     "min_thinking_tokens", None),
    ({"model": MODEL, "prompt": [9999]}, 400, "prompt", None),
])
def test_client_errors_are_openai_shaped_4xx(url, body, status, param, code):
    path = "/v1/completions" if isinstance(body, dict) and "prompt" in body else "/v1/chat/completions"
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(url + path, **kw, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)
    assert health(url)["status"] == "ok"


def test_openai_client_raises_its_own_errors(client, url):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=10 ** 6)
    r = httpx.get(url + "/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"


def test_429_when_full_and_disconnects_free_their_slots(client, url):
    before = wait_idle(url)["cancelled"]
    body = {"model": MODEL, "messages": LONG, "temperature": 0, "stream": True}  # max_tokens: the whole context
    with httpx.Client(timeout=30) as http:
        streams = [http.stream("POST", url + "/v1/chat/completions", json=body) for _ in range(CONCURRENCY)]
        # subtle: keep the line iterators; a dropped one closes its connection, which frees the slot too early
        lines = [s.__enter__().iter_lines() for s in streams]
        assert all(next(it).startswith("data: ") for it in lines)  # the slot is held once a chunk has arrived
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
        assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
        for s in streams:
            s.__exit__(None, None, None)  # close the connection mid-stream
    h = wait_idle(url)
    assert (h["requests"], h["rows"]) == (0, 0)
    assert h["cancelled"] - before == CONCURRENCY  # every row was cancelled, not run to its length limit
    # a non-streamed request whose client gives up is cancelled too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json={**body, "stream": False, "n": CONCURRENCY}, timeout=0.5)
    h = wait_idle(url)
    assert (h["requests"], h["rows"], h["cancelled"] - before) == (0, 0, 2 * CONCURRENCY)
    assert client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4).choices[0].finish_reason


def test_load_200_requests_at_concurrency_16_without_errors(url, capsys):
    r = asyncio.run(serve_load.run_load(url, MODEL, requests=200, concurrency=CONCURRENCY, max_tokens=16))
    with capsys.disabled():
        print("\n" + serve_load.format_result(r))
    assert r["errors"] == 0, r["first_errors"]
    assert r["tokens"] > 200 and r["p95_s"] < 30
    assert wait_idle(url)["requests"] == 0


# -- pure helpers and EngineBatch.cancel ------------------------------------------------------------------------

@pytest.mark.parametrize("text, reasoning, content", [
    ("3+4 is 7</think> <answer>7</answer>", "3+4 is 7", "7"),
    ("no end of thinking <answer>7</answer>", "no end of thinking <answer>7</answer>", ""),
    ("a</think>\n  <answer> 4 2 </answer>  ", "a", "4 2"),
    ("a</think>plain answer", "a", "plain answer"),
    ("a</think>x</think>y", "a", "x</think>y"),
    ("</think>", "", ""),
    ("a</thin", "a</thin", ""),
    ("a</think>42</ans", "a", "42</ans"),
    ("a</think>42 </answer>x", "a", "42 x"),
    ("<think>a</think> <answer>7</answer>", "<think>a", "7"),  # the text before </think>, exactly
    ("a <answer>6</answer></think> <answer>7</answer>", "a <answer>6</answer>", "7"),
    ("a</think><ans<answer>wer>7", "a", "<answer>7"),  # tags are removed in one pass, as the whole-text rule does
])
def test_split_reasoning_and_every_streamed_split_agree(text, reasoning, content):
    assert split_reasoning(text) == (reasoning, content)
    for cuts in [list(range(len(text) + 1)), [0, len(text) // 2, len(text)]]:  # char by char, and two pieces
        splitter, r, c = StreamSplitter(), "", ""
        for a, b in zip(cuts, cuts[1:]):
            dr, dc = splitter.push(text[a:b])
            r, c = r + dr, c + dc
        dr, dc = splitter.finish()
        assert (r + dr, c + dc) == (reasoning, content)


def test_held_suffix_and_text_stream_hold_back_stop_prefixes():
    assert held_suffix("2+2</thi", ["</think>"]) == 5
    assert held_suffix("abc", ["x", "cd"]) == 1 and held_suffix("abc", ["abc"]) == 0  # whole match: not held
    tok = build_tokenizer()
    stream = TextStream(tok, ["END"])
    out = [stream.push(tok(ch)["input_ids"]) for ch in "abENxyE"]
    assert out == ["a", "b", "", "", "ENx", "y", ""]
    assert stream.finish("abENxy") == ""
    # incremental decoding adds up to decoding everything at once, special tokens (skipped) and tags included
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, len(tok), (400,), generator=g).tolist()
    stream, deltas, i = TextStream(tok, []), [], 0
    for size in torch.randint(1, 5, (400,), generator=g).tolist():
        deltas.append(stream.push(ids[i:i + size]))
        i += size
    assert "".join(deltas) == tok.decode(ids, skip_special_tokens=True)


def test_budget_forcer_follows_s1():
    END, WAIT = 9, [7, 8]
    hook = budget_forcer(END, WAIT, max_thinking=10, min_thinking=3, num_ignore=1)
    assert hook([1, END]).ids == WAIT and hook([1, END]).replace  # too early: keep thinking (not an ignore)
    assert hook([1, 2, 3, END]).ids == WAIT  # the one ignore
    assert hook([1, 2, 3, 4, END]) is None  # ignores spent
    assert hook([1] * 10 + [2]).ids == [END]  # budget reached: forced end
    late = budget_forcer(END, WAIT, max_thinking=10, num_ignore=5)
    assert late([1] * 9 + [END]) is None  # "Wait" would not fit in the budget: let it end
    assert late([1, END, 2]) is None  # thinking is over: never interferes
    closing = budget_forcer(END, WAIT, max_thinking=2, close_ids=[5, 6, END])
    assert closing([1, 2, 3]).ids == [5, 6, END] and closing([1, 2, 3, 5, 6, END, 4]) is None
    with pytest.raises(ValueError, match="end with the think-end token"):
        budget_forcer(END, WAIT, max_thinking=2, close_ids=[5, 6])


def test_engine_batch_cancel_drops_queued_and_running_requests():
    tok = build_tokenizer()
    engine = Engine(tiny_model(tok), tok)
    prompts = [tok(p)["input_ids"] for p in ("User: 1+1\nAssistant: <think>", "hello", "x")]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=0)
    ref = engine.generate(prompts, params)
    batch = EngineBatch(engine)
    rids = [batch.add(p, params, seed=o_seed) for p, o_seed in zip(prompts, [0, 1, 2])]
    events = batch.step()  # all three admitted and running
    n_before = sum(e.request_id == rids[1] for e in events)
    late = batch.add(prompts[0], params, seed=3)
    assert batch.cancel(rids[1]) and batch.cancel(late) and not batch.cancel(rids[1]) and not batch.cancel(99)
    assert len(batch) == 2
    while batch:
        events += batch.step()
    done = {e.request_id: e.completion for e in events if e.completion is not None}
    assert set(done) == {rids[0], rids[2]} and late not in {e.request_id for e in events}
    assert sum(e.request_id == rids[1] for e in events) == n_before  # nothing after the cancel
    alone = engine.generate([prompts[2]], SamplingParams(temperature=1.0, max_new_tokens=12, seed=2))[0]
    assert done[rids[2]].token_ids == alone.token_ids  # the others are untouched by the cancel
    assert done[rids[0]].token_ids == ref[0].token_ids
    assert not batch.cancel(rids[0])  # finished


def test_scheduler_survives_an_engine_error_and_limits_jobs(monkeypatch):
    tok = build_tokenizer()
    engine = Engine(tiny_model(tok), tok)
    spec = (tok("User: 1+1\nAssistant: <think>")["input_ids"], SamplingParams(max_new_tokens=6), None, 0)
    real_step, calls = EngineBatch.step, []

    def flaky_step(self):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_step(self)

    async def scenario():
        scheduler = Scheduler(engine, max_jobs=2)
        scheduler.start(asyncio.get_running_loop())
        try:
            monkeypatch.setattr(EngineBatch, "step", flaky_step)
            job = scheduler.submit([spec, spec])
            with pytest.raises(EngineFailure, match="boom"):
                await drain_events(job)
            job.close()
            ok = scheduler.submit([spec])
            other = scheduler.submit([spec])
            with pytest.raises(Busy):
                scheduler.submit([spec])
            events = await drain_events(ok)
            assert len(events) == 6 and events[-1].completion.finish_reason == "length"
            assert len(await drain_events(other)) == 6
            ok.close(), other.close()
            assert scheduler.jobs == 0
        finally:
            scheduler.stop()

    asyncio.run(scenario())


def test_reasoning_tokens_estimated_from_text_never_exceed_the_completion():
    """Where </think> is several tokens (Qwen2.5's and Llama-3's tokenizers) the reasoning is re-tokenized; partial
    UTF-8 bytes decode to U+FFFD, which re-encode longer: a server reported 16 reasoning tokens of 8 completed."""
    from types import SimpleNamespace

    from r1lab.serve.app import Server

    fake = SimpleNamespace(think_end_id=None, tokenizer=build_tokenizer())
    reply = SimpleNamespace(reasoning="\ufffd" * 16, completion=SimpleNamespace(token_ids=[7] * 8), splitter=object())
    assert Server._reasoning_tokens(fake, reply) == 8
    reply.reasoning = "ab"
    assert Server._reasoning_tokens(fake, reply) == 2


def test_a_template_that_opens_no_thinking_gets_its_reply_as_content(ckpt, tmp_path):
    """An Instruct template (Qwen2.5, Llama 3) leaves the model outside <think>: its whole reply is content, as vLLM
    gives it without a reasoning parser. The server used to file it all under reasoning_content, content empty."""
    import shutil

    plain = tmp_path / "instruct"
    shutil.copytree(ckpt, plain)
    tok = build_tokenizer()
    tok.chat_template = ("{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}Assistant: {% endif %}")
    tok.save_pretrained(plain)
    proc, url = serve_load.start_server(str(plain), "--threads", "1", "--served-model-name", MODEL,
                                        "--log-level", "warning")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=24, temperature=0)
        text = client.completions.create(model=MODEL, prompt="User: 2+3\nAssistant: ", max_tokens=24, temperature=0)
    finally:
        serve_load.stop_server(proc)
    message = chat.choices[0].message
    assert message.content == text.choices[0].text and len(message.content) > 0
    assert not getattr(message, "reasoning_content", None)
    assert chat.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize("text, opened, split, want", [
    ("\n<think>\nabc</think>\n<answer>7</answer>", False, True, ("\nabc", "7")),  # the reply opens it itself
    ("The answer is 7", False, True, ("", "The answer is 7")),
    ("<thinking aloud: 7", False, True, ("", "<thinking aloud: 7")),  # not the tag: held, then shown
    ("  <th", False, True, ("", "  <th")),  # cut off while it could still have been the tag
    ("<think>abc</think> <answer>7</answer>", True, True, ("abc", "7")),  # re-opened after the prompt opened it
    ("\nabc</think> <answer>7</answer>", True, True, ("\nabc", "7")),
    ("<think>abc", False, True, ("abc", "")),  # never closed: all reasoning
    ("<think>abc</think>", False, False, ("", "<think>abc</think>")),  # /v1/completions: the raw text
])
def test_a_reply_that_opens_its_own_thinking_is_split_and_the_tag_dropped(text, opened, split, want):
    """A model that writes <think> itself after a prompt that opened none (Qwen3-style, or one RL taught the tags
    under an Instruct template) used to get the tags and its reasoning as content; a leading <think> after a
    prompt that opened one stayed in reasoning_content. Every chunking of the token stream adds up to the same."""
    import random
    from types import SimpleNamespace

    from r1lab.serve.text import CompletionText

    tok = build_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    events = [SimpleNamespace(token_id=t, completion=None) for t in ids[:-1]]
    events.append(SimpleNamespace(token_id=ids[-1], completion=SimpleNamespace(text=text)))
    rng = random.Random(0)
    for trial in range(20):
        cuts = sorted(rng.sample(range(1, len(events)), min(trial, len(events) - 1))) if trial else []
        out = CompletionText(tok, [], split=split, opened=opened)
        deltas = [out.push(events[a:b]) for a, b in zip([0, *cuts], [*cuts, len(events)])]
        assert ("".join(r for r, _ in deltas), "".join(c for _, c in deltas)) == want == (out.reasoning, out.content)
        assert (out.splitter is not None) == bool(want[0]) or not split


def test_a_thinking_budget_where_think_end_is_several_tokens(tmp_path):
    """Qwen2.5's and Llama 3's tokenizers spell </think> in several tokens: the server answered every
    max_thinking_tokens with 400 "no single </think> token", so `r1lab distill --max-thinking-tokens` against it
    failed at once. A budget alone now runs as the engine's own, which matches the marker's tokens; "Wait"
    (min_thinking_tokens, num_ignore) needs one </think> token and the 400 says so."""
    from conftest import CHAT, bos_tokenizer

    from r1lab.checkpoint import save_model_dir

    tok = bos_tokenizer(CHAT.replace("<|assistant|>\n{% endif %}", "<|assistant|>\n<think>{% endif %}"), tags=False)
    save_model_dir(tmp_path / "ckpt", tiny_model(tok), tok)
    proc, url = serve_load.start_server(str(tmp_path / "ckpt"), "--threads", "1", "--served-model-name", MODEL,
                                        "--log-level", "warning")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=40, temperature=1.0, seed=0,
                                              extra_body={"max_thinking_tokens": 4})
        with pytest.raises(openai.BadRequestError, match="needs </think> to be one token"):
            client.chat.completions.create(model=MODEL, messages=USER, max_tokens=40,
                                           extra_body={"max_thinking_tokens": 8, "min_thinking_tokens": 4})
    finally:
        serve_load.stop_server(proc)
    engine = Engine(*load_model(str(tmp_path / "ckpt")))
    ids = chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": USER[0]["content"]}])
    offline = engine.generate([ids], SamplingParams(temperature=1.0, max_new_tokens=40, max_thinking_tokens=4,
                                                    seed=0))[0].text
    assert "</think>" in offline and len(offline.split("</think>")[0]) <= 4
    message = chat.choices[0].message
    assert (message.reasoning_content or "", message.content) == split_reasoning(offline)
