"""One request never fails another: a row that breaks in EngineBatch's per-row code (its forced-token hook, its
sampling values, its prefill) ends alone with finish_reason "error", and every other row keeps exactly the tokens
it has without it; the server's Scheduler turns that into an error for that request only."""
import asyncio

import pytest
from conftest import drain_events, tiny_model

from r1lab.engine import Engine, EngineBatch, Force, SamplingParams
from r1lab.model.tokenizer import build_tokenizer
from r1lab.serve.scheduler import EngineFailure, Scheduler

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["User: 1+1\nAssistant: <think>", "hello", "x"]
PARAMS = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12)


@pytest.fixture(scope="module")
def engine():
    tok = build_tokenizer()
    return Engine(tiny_model(tok), tok)


def ids(engine, text):
    return engine.tokenizer(text)["input_ids"]


def alone(engine, prompt, seed, params=PARAMS):
    batch = EngineBatch(engine)
    batch.add(ids(engine, prompt), params, seed=seed)
    events = []
    while batch:
        events += batch.step()
    return events[-1].completion.token_ids


def raises_at(n):
    def hook(token_ids):
        if len(token_ids) == n:
            raise RuntimeError("hook broke")
        return None
    return hook


def run(batch):
    done = {}
    while batch:
        done.update({e.request_id: e for e in batch.step() if e.completion is not None})
    return done


@pytest.mark.parametrize("bad", ["hook raises", "hook forces a bad id", "top_k overflows", "temperature nan",
                                 "top_p is 0 in float32"])
def test_a_breaking_row_ends_alone_and_the_others_keep_their_tokens(engine, bad):
    params, forced = PARAMS, None
    if bad == "hook raises":
        forced = raises_at(3)
    elif bad == "hook forces a bad id":
        forced = lambda token_ids: Force([10 ** 9]) if len(token_ids) == 2 else None  # noqa: E731
    elif bad == "top_k overflows":  # 2**63 passes SamplingParams; the per-row tensor cannot hold it
        params = SamplingParams(temperature=1.0, top_k=2 ** 63, max_new_tokens=12)
    elif bad == "temperature nan":
        params = SamplingParams(temperature=float("nan"), max_new_tokens=12)
    else:
        params = SamplingParams(temperature=1.0, top_p=1e-50, max_new_tokens=12)
    batch = EngineBatch(engine)
    good = [batch.add(ids(engine, p), PARAMS, seed=s) for p, s in zip(PROMPTS, (0, 1))]
    broken = batch.add(ids(engine, PROMPTS[2]), params, forced, seed=2)
    late = batch.add(ids(engine, PROMPTS[2]), PARAMS, seed=3)
    done = run(batch)
    assert done[broken].completion.finish_reason == "error" and done[broken].token_id == -1
    assert done[broken].completion.error
    for rid, prompt, seed in zip(good + [late], PROMPTS[:2] + PROMPTS[2:], (0, 1, 3)):
        assert done[rid].completion.finish_reason != "error"
        assert done[rid].completion.token_ids == alone(engine, prompt, seed)


def test_a_prompt_whose_prefill_raises_fails_alone(engine, monkeypatch):
    marker = ids(engine, "~")[0]
    real = engine.forward_last

    def forward_last(ids_, *args):
        if (ids_ == marker).any():
            raise RuntimeError("this prompt cannot be prefilled")
        return real(ids_, *args)

    monkeypatch.setattr(engine, "forward_last", forward_last)
    batch = EngineBatch(engine)
    rids = [batch.add(ids(engine, p), PARAMS, seed=s) for s, p in enumerate(["hello", "bad~", "x"])]
    done = run(batch)
    assert done[rids[1]].completion.finish_reason == "error" and "prefilled" in done[rids[1]].completion.error
    monkeypatch.undo()
    assert done[rids[0]].completion.token_ids == alone(engine, "hello", 0)
    assert done[rids[2]].completion.token_ids == alone(engine, "x", 2)


def test_add_refuses_what_it_can_check_and_generate_raises_on_an_error_row(engine):
    batch = EngineBatch(engine)
    with pytest.raises(ValueError, match="token ids"):
        batch.add([5, engine.vocab_size], PARAMS)
    with pytest.raises(ValueError, match="token ids"):
        batch.add([-1], PARAMS)
    with pytest.raises(ValueError, match="seed"):
        batch.add([5], PARAMS, seed=2 ** 64)
    calls = []

    def second_call_raises(token_ids):  # the first token of row 1: rows are visited in order
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("hook broke")

    with pytest.raises(RuntimeError, match="prompt 1: RuntimeError: hook broke"):
        engine.generate(["a", "b", "c"], PARAMS, forced=second_call_raises)


def test_scheduler_fails_only_the_request_whose_row_broke(engine):
    good = (ids(engine, PROMPTS[0]), SamplingParams(max_new_tokens=6), None, 0)
    bad = (ids(engine, PROMPTS[1]), SamplingParams(max_new_tokens=6), raises_at(2), 1)
    refused = ([10 ** 6], SamplingParams(max_new_tokens=6), None, 2)  # add() raises

    async def scenario():
        scheduler = Scheduler(engine, max_jobs=8)
        scheduler.start(asyncio.get_running_loop())
        try:
            ok, failing, both, no = (scheduler.submit(s) for s in ([good], [bad], [good, bad], [refused]))
            for job in (failing, both):
                with pytest.raises(EngineFailure, match="hook broke"):
                    await drain_events(job)
            with pytest.raises(EngineFailure, match="refused"):
                await drain_events(no)
            events = await drain_events(ok)
            assert len(events) == 6 and events[-1].completion.finish_reason == "length"
            for job in (ok, failing, both, no):
                job.close()
            for _ in range(100):  # the failed request's other choice was cancelled, not decoded to its end
                if scheduler.rows == 0:
                    break
                await asyncio.sleep(0.01)
            assert (scheduler.jobs, scheduler.rows, scheduler.failed) == (0, 0, 3)
            again = scheduler.submit([good])
            assert [e.token_id for e in await drain_events(again)] == [e.token_id for e in events]
            again.close()
        finally:
            scheduler.stop()

    asyncio.run(scenario())
