"""r1lab.engine on a tiny random Llama: parity with model.generate and with a full forward pass, sampling
controls, stop/EOS/length, forced tokens, seeds and continuous batching. Tolerances: tests/tolerances.py."""
import math

import pytest
import torch
from tolerances import logprob_atol

from r1lab.engine import BACKENDS, Engine, EngineBatch, Force, RolloutBackend, SamplingParams, make_backend
from r1lab.engine.forcing import budget_forcer, thinking_budget
from r1lab.model.presets import build_model
from r1lab.model.tokenizer import build_tokenizer

PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "x", "4*4="]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    model = build_model("tiny-1m", tok).eval()
    # subtle: at the default init (std 0.02) greedy decoding repeats one token forever, which would make parity tests
    # vacuous; larger weights give varied text and occasional EOS.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=g)
    return model


@pytest.fixture(scope="module")
def engine(model, tok):
    return Engine(model, tok)


def full_forward_logprobs(model, completion):
    """log p(token_i | prompt, tokens_<i) from one forward pass over prompt + completion, no cache, no padding:
    (logp (N, V), token ids (N,), how far the engine's log-probs may be from these: logprob_atol for these logits)."""
    ids = torch.tensor([completion.prompt_ids + completion.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()  # (P+N, V)
    P = len(completion.prompt_ids)
    atol = logprob_atol(model.config, logits.abs().max().item(), context=ids.shape[1])
    return torch.log_softmax(logits[P - 1:-1], -1), torch.tensor(completion.token_ids), atol


def test_greedy_equals_hf_generate(engine, model, tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)  # left padding
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=24, pad_token_id=tok.pad_token_id)
    ref = out[:, enc["input_ids"].shape[1]:].tolist()
    for max_batch_size in (64, 2):  # 2: rows are admitted into a running batch with a different cache length
        engine.max_batch_size = max_batch_size
        outs = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=24))
        for o, r in zip(outs, ref):
            assert o.token_ids == r[:len(o.token_ids)]
            assert o.finish_reason == "length" or (o.finish_reason == "eos" and r[len(o.token_ids)] == tok.pad_token_id)
            assert o.mask == [1] * len(o.token_ids)
    engine.max_batch_size = 256
    assert len(set(map(tuple, ref))) == len(ref)  # the prompts really lead to different text


def test_logprobs_equal_full_forward(engine, model):
    for params in (SamplingParams(temperature=1.0, max_new_tokens=30, seed=0, logprobs=True),
                   SamplingParams(temperature=0.7, top_k=10, top_p=0.9, max_new_tokens=30, seed=1, logprobs=True)):
        for o in engine.generate(PROMPTS + PROMPTS[:2] * 2, params):  # repeated prompts share one prefill
            ref, ids, atol = full_forward_logprobs(model, o)
            got = torch.tensor(o.logprobs)
            torch.testing.assert_close(got, ref.gather(-1, ids[:, None])[:, 0], atol=atol, rtol=0)
            assert len(o.sample_logprobs) == len(o.token_ids)
            # sampling distribution: softmax(logits / T), cut to the top k, then to the top-p nucleus, renormalised
            z = ref / params.temperature
            if params.top_k:
                z = z.masked_fill(z < z.topk(params.top_k, -1).values[:, -1:], -math.inf)
            p, order = torch.softmax(z, -1).sort(-1, descending=True)
            p = p.masked_fill(p.cumsum(-1) - p >= params.top_p, 0.0)
            p = torch.zeros_like(p).scatter(-1, order, p / p.sum(-1, keepdim=True))
            expected = p.gather(-1, ids[:, None])[:, 0].log()
            # logits / T carry the logits' error / T; renormalising over the kept tokens is another log-softmax
            torch.testing.assert_close(torch.tensor(o.sample_logprobs), expected, atol=atol / params.temperature,
                                       rtol=0)


def test_top_k_1_and_tiny_top_p_are_greedy(engine):
    greedy = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=20))
    for params in (SamplingParams(temperature=1.5, top_k=1, max_new_tokens=20, seed=3),
                   SamplingParams(temperature=1.5, top_p=1e-6, max_new_tokens=20, seed=4)):
        assert [o.token_ids for o in engine.generate(PROMPTS, params)] == [o.token_ids for o in greedy]


def test_top_k_and_top_p_keep_sampling_inside_the_allowed_set(engine, model):
    for params in (SamplingParams(temperature=1.0, top_k=3, max_new_tokens=25, seed=5),
                   SamplingParams(temperature=1.0, top_p=0.3, max_new_tokens=25, seed=6)):
        for o in engine.generate(PROMPTS, params):
            logp, ids, atol = full_forward_logprobs(model, o)
            sorted_p, order = logp.exp().sort(-1, descending=True)
            for t, token in enumerate(ids.tolist()):
                rank = order[t].tolist().index(token)
                if params.top_k:
                    assert rank < 3
                else:  # the mass of the tokens ranked above it is below top_p (|dp| = p |dlogp|: a mass <= 1 moves
                    assert sorted_p[t, :rank].sum() < 0.3 + atol  # at most atol between the engine and this forward)


def test_sampled_frequencies_match_the_distribution(engine, model, tok):
    prompt = tok("9+9=")["input_ids"]
    n = 2000
    engine.max_batch_size = n
    outs = engine.generate([prompt] * n, SamplingParams(temperature=0.7, top_k=5, max_new_tokens=1, seed=0))
    engine.max_batch_size = 256
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1] / 0.7
    top = logits.topk(5)
    probs = dict(zip(top.indices.tolist(), torch.softmax(top.values, -1).tolist()))
    counts = torch.bincount(torch.tensor([o.token_ids[0] for o in outs]), minlength=logits.shape[0])
    assert set(counts.nonzero()[:, 0].tolist()) <= set(probs)
    # statistical, not rounding: 4 standard errors of a binomial frequency, plus one count (frequencies move in steps
    # of 1 / n, and the normal approximation is poor for the rarest token); float error in p is ~1e-4 relative
    for token, p in probs.items():
        assert abs(counts[token].item() / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1 / n


def test_stop_eos_and_length(engine, tok):
    stops = ["q", "Z", "</think>"]  # no tag contains "q" or "Z"; "</think>" is one token
    params = SamplingParams(temperature=1.0, max_new_tokens=60, stop=stops, seed=0)
    outs = engine.generate(PROMPTS * 8, params)
    reasons = {o.finish_reason for o in outs}
    assert reasons == {"stop", "eos", "length"}  # the seed was picked to hit all three
    for o in outs:
        raw = tok.decode(o.token_ids, skip_special_tokens=True)
        if o.finish_reason == "stop":  # tokens keep the stop string, text is cut before it
            assert any(raw.endswith(s) for s in stops)
            assert not any(s in o.text for s in stops) and raw.startswith(o.text)
        elif o.finish_reason == "eos":
            assert o.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in o.token_ids[:-1]
            assert o.text == raw and not any(s in raw for s in stops)
        else:
            assert len(o.token_ids) == 60 and o.text == raw
    # a stop string spread over several tokens (made certain by forcing "Wait" after the first sampled token)
    o = engine.generate(PROMPTS[:1], SamplingParams(temperature=0, max_new_tokens=30, stop=["ai"]),
                        forced=lambda ids: Force(tok("Wait")["input_ids"]) if len(ids) == 1 else None)[0]
    assert o.finish_reason == "stop" and tok.decode(o.token_ids).endswith("Wai") and o.mask[-3:] == [0, 0, 0]
    assert o.text == tok.decode(o.token_ids)[:-2] and len(o.token_ids) == 4
    eos_free = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=5, stop=["\x00never"]))
    assert all(o.finish_reason in ("length", "eos") for o in eos_free)


def test_forced_tokens_get_mask_zero_and_true_logprobs(engine, model, tok):
    think_end = tok.convert_tokens_to_ids("</think>")
    wait = tok("Wait")["input_ids"]
    outs = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0, logprobs=True),
                           forced=budget_forcer(think_end, max_thinking=5))
    for o in outs:
        if think_end in o.token_ids[:5]:
            continue  # the model ended thinking by itself
        assert o.token_ids[5] == think_end and o.mask[:6] == [1] * 5 + [0] and o.mask[6:] == [1] * (len(o.mask) - 6)
        assert math.isnan(o.sample_logprobs[5])
    assert sum(think_end not in o.token_ids[:5] for o in outs) >= 3

    def hook(ids):  # replace the 3rd token by "Wait", then append "Wait" after the next two sampled tokens
        if len(ids) == 3:
            return Force(wait, replace=True)
        if len(ids) == 4 + len(wait):
            return Force(wait)
        return None
    for o in engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=20, seed=0, logprobs=True),
                             forced=hook):
        if o.finish_reason != "length":
            continue
        n = len(wait)
        assert o.token_ids[2:2 + n] == wait and o.token_ids[4 + n:4 + 2 * n] == wait
        assert o.mask == [1, 1] + [0] * n + [1, 1] + [0] * n + [1] * (20 - 4 - 2 * n)
        ref, ids, atol = full_forward_logprobs(model, o)  # forced tokens carry their log-prob under the model too
        torch.testing.assert_close(torch.tensor(o.logprobs), ref.gather(-1, ids[:, None])[:, 0], atol=atol, rtol=0)


def test_budget_forcer_decisions():
    END, WAIT = 9, [7, 8]
    hook = budget_forcer(END, max_thinking=4, min_thinking=3, wait_ids=WAIT)
    assert hook([1, END]) == Force(WAIT, replace=True)  # ended too early: keep thinking
    assert hook([1, 2, 3, END]) is None  # long enough
    assert hook([1, 2, 3, 4]) is None and hook([1, 2, 3, 4, 5]) == Force([END], replace=True)  # budget reached
    assert hook([1, 2, 3, END, 5, 6, 7, 8, 9]) is None  # after thinking: never interferes


def test_seeds_reproduce_and_rows_are_independent_of_the_batch(engine):
    params = SamplingParams(temperature=1.0, max_new_tokens=30, seed=123)
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    c = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=30, seed=124))
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    # row 0 of a seeded call uses the seed itself, so a request alone reproduces it
    alone = engine.generate(PROMPTS[:1], params)[0]
    assert alone.token_ids == a[0].token_ids
    engine.max_batch_size = 2
    assert [o.token_ids for o in engine.generate(PROMPTS, params)] == [o.token_ids for o in a]
    engine.max_batch_size = 256
    same_prompt = engine.generate([PROMPTS[0]] * 4, params)  # G samples of one prompt differ
    assert len({tuple(o.token_ids) for o in same_prompt}) == 4
    torch.manual_seed(0)  # seed=None follows torch's global RNG
    d = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10))
    torch.manual_seed(0)
    assert [o.token_ids for o in engine.generate(PROMPTS, SamplingParams(max_new_tokens=10))] == \
        [o.token_ids for o in d]


def run_alone_and_together(engine, requests):
    """Completions of (prompt_ids, params, seed) requests run one by one, and all in one EngineBatch."""
    def run(reqs):
        batch, done = EngineBatch(engine), {}
        rids = [batch.add(ids, params, seed=seed) for ids, params, seed in reqs]
        while batch:
            done.update({e.request_id: e.completion for e in batch.step() if e.completion})
        return [done[r].token_ids for r in rids]
    return [run([r])[0] for r in requests], run(requests)


def test_mixed_params_in_one_batch(engine, tok):
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    requests = [(ids[0], SamplingParams(temperature=1.0, max_new_tokens=20), 1),
                (ids[1], SamplingParams(temperature=0.8, top_k=5, max_new_tokens=12), 2),
                (ids[2], SamplingParams(temperature=0, max_new_tokens=25), 3),
                (ids[3], SamplingParams(temperature=1.2, top_p=0.5, max_new_tokens=20), 4)]
    alone, together = run_alone_and_together(engine, requests)
    assert alone == together


def test_continuous_batching_admits_requests_between_steps(engine, tok):
    params = SamplingParams(temperature=0, max_new_tokens=15)
    expected = engine.generate(PROMPTS, params)
    batch = EngineBatch(engine)
    streamed, done = {}, {}
    rids = [batch.add(tok(PROMPTS[0])["input_ids"], params)]
    for step in range(40):
        if step in (3, 5, 6, 9):  # requests arrive while others are running
            rids.append(batch.add(tok(PROMPTS[len(rids)])["input_ids"], params))
        for ev in batch.step():
            streamed.setdefault(ev.request_id, []).append(ev.token_id)
            if ev.completion is not None:
                done[ev.request_id] = ev.completion
    assert not batch and len(done) == len(PROMPTS)
    for rid, exp in zip(rids, expected):
        assert done[rid].token_ids == streamed[rid] == exp.token_ids and done[rid].text == exp.text


def test_bf16_autocast_and_mode_restored(model, tok):
    engine = Engine(model, tok, autocast_dtype=torch.bfloat16)
    model.train()
    outs = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=8, logprobs=True))
    assert model.training
    model.eval()
    assert all(len(o.token_ids) <= 8 and all(math.isfinite(x) for x in o.logprobs) for o in outs)


def test_bad_requests(engine, tok):
    with pytest.raises(ValueError):
        engine.generate([[]], SamplingParams())
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_k=-1), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)
    with pytest.raises(ValueError, match="positions"):
        engine.generate(["x"], SamplingParams(max_new_tokens=5000))


# -- the rollout-backend seam ----------------------------------------------------------------------------------------

def test_engine_backend_gives_the_engines_completions(model, tok):
    backend = make_backend("engine", model, tok, max_batch_size=3)
    assert isinstance(backend, RolloutBackend) and backend.engine.max_batch_size == 3
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=20, stop=["q"], seed=7, logprobs=True)
    prompts = PROMPTS + [tok(PROMPTS[0])["input_ids"]]  # text and token ids
    assert backend.generate(prompts, params) == Engine(model, tok, max_batch_size=3).generate(prompts, params)


def test_unknown_backend_is_an_error_listing_the_valid_ones(model, tok):
    assert list(BACKENDS) == ["engine", "vllm"]
    with pytest.raises(ValueError, match="unknown rollout backend 'vlm'; valid backends: engine, vllm"):
        make_backend("vlm", model, tok)


def test_a_backend_whose_library_is_missing_says_how_to_install_it(model, tok, monkeypatch):
    """Checked before anything loads; vllm is not imported by r1lab until its backend is built."""
    import sys

    from r1lab.engine import check_backend

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM (CI)
    for call in (lambda: check_backend("vllm"), lambda: make_backend("vllm", model, tok)):
        with pytest.raises(ValueError, match=r"rollout backend 'vllm' needs vllm, which is not installed: "
                                             r"pip install 'r1lab\[vllm\]'"):
            call()
    check_backend("engine")


def test_sync_weights_after_an_optimizer_step(model, tok):
    import copy

    policy = copy.deepcopy(model)  # the module's model is shared with the other tests
    backend = make_backend("engine", policy, tok)
    params = SamplingParams(temperature=0, max_new_tokens=20)
    before = [o.token_ids for o in backend.generate(PROMPTS, params)]
    opt = torch.optim.SGD(policy.parameters(), lr=5.0)
    ids = torch.tensor([tok(PROMPTS[0] + "7")["input_ids"]])
    policy.train()
    policy(ids, labels=ids).loss.backward()  # a real (large) step toward one text
    opt.step()
    policy.eval()
    backend.sync_weights(policy)  # the in-process engine reads the live weights: nothing to copy
    after = [o.token_ids for o in backend.generate(PROMPTS, params)]
    assert after == [o.token_ids for o in Engine(policy, tok).generate(PROMPTS, params)] and after != before
    other = copy.deepcopy(model)  # another model object (e.g. reloaded from a checkpoint): the backend follows it
    backend.sync_weights(other)
    assert [o.token_ids for o in backend.generate(PROMPTS, params)] == before


def test_thinking_budget_forces_the_closing_text_and_changes_nothing_before_it(engine, tok):
    """SamplingParams.max_thinking_tokens: a row that has not written </think> after N tokens gets the closing text
    in place of token N+1 (mask 0), then samples on; every token before that is the unbudgeted row's."""
    end = engine.token_ids("</think>")
    close = engine.token_ids("\ngive up\n</think>")
    free = SamplingParams(temperature=1.0, max_new_tokens=40, seed=5)
    budgeted = SamplingParams(temperature=1.0, max_new_tokens=40, seed=5, max_thinking_tokens=6,
                              thinking_end="\ngive up\n</think>")
    prompts = [p + " <think>" for p in PROMPTS for _ in range(3)]  # each prompt opens the thinking
    cut = 0
    for a, b in zip(engine.generate(prompts, free), engine.generate(prompts, budgeted)):
        ended = next((i for i in range(len(a.token_ids)) if a.token_ids[i:i + len(end)] == end), None)
        if ended is not None and ended + len(end) <= 7 or len(a.token_ids) <= 6:  # token 7 may end it
            assert b.token_ids == a.token_ids and b.mask == [1] * len(b.mask)  # thought less than the budget
            continue
        cut += 1
        assert b.token_ids[:6] == a.token_ids[:6]
        assert b.token_ids[6:6 + len(close)] == close[:len(b.token_ids) - 6]
        assert b.mask == [1] * 6 + [0] * len(close[:len(b.token_ids) - 6]) + [1] * (len(b.token_ids) - 6 - len(close))
        assert "\ngive up\n" in b.text  # forced once (the mask above), as text the caller reads
    assert cut >= 5


def test_thinking_budget_counts_only_thinking(engine):
    """The budget counts from the completion's first token when the prompt ends inside <think>; otherwise from the
    <think> the completion writes, so a row that never thinks is never cut."""
    start, end = engine.token_ids("<think>"), engine.token_ids("</think>")
    words = engine.token_ids("abc, def; ghi")

    def forced_at(prompt_ids, completion):
        """How many completion tokens come before the one the budget (3 tokens) replaces; None: never cut."""
        batch = EngineBatch(engine)
        batch.add(prompt_ids, SamplingParams(max_new_tokens=64, max_thinking_tokens=3))
        hook = batch.waiting[0].forced
        for n in range(1, len(completion) + 1):  # the hook sees the completion so far, the new token last
            if hook(completion[:n]) is not None:
                return n - 1
        return None

    plain = engine.encode("User: 12+7\nAssistant:")
    assert forced_at(plain + start, words) == 3  # inside: the first 3 tokens are thinking
    assert forced_at(plain, words) is None  # no thinking: never cut
    assert forced_at(plain, words[:2] + start + words) == 2 + len(start) + 3  # from the <think> it writes
    assert forced_at(plain + start + end, words[:2] + start + words) == 2 + len(start) + 3  # closed in the prompt
    assert forced_at(plain + start, words[:2] + end + words) is None  # ended by itself within the budget


def test_thinking_budget_bad_requests(engine):
    with pytest.raises(ValueError, match="max_thinking_tokens"):
        SamplingParams(max_thinking_tokens=-1)
    with pytest.raises(ValueError, match="thinking_end must end with"):
        SamplingParams(max_thinking_tokens=4, thinking_end="give up")
    with pytest.raises(ValueError, match="not both"):
        engine.generate(PROMPTS, SamplingParams(max_thinking_tokens=4), forced=lambda ids: None)


def test_thinking_budget_hook_counts_once_and_lets_a_natural_end_be():
    hook = thinking_budget([8, 9], [5, 8, 9], max_thinking=3)
    assert hook([1]) is None and hook([1, 8]) is None and hook([1, 8, 9]) is None  # ended by itself
    assert hook([1, 8, 9, 4, 4, 4, 4]) is None  # and never forced after
    hook = thinking_budget([9], [5, 9], max_thinking=3)
    assert [hook(list(range(1, n + 1))) for n in range(1, 5)] == [None, None, None, Force([5, 9], replace=True)]
    assert hook([1, 2, 3, 5, 9, 7]) is None  # forced once
    with pytest.raises(ValueError):
        thinking_budget([], [9], 3)


def test_a_stop_string_split_by_tokens_that_decode_to_nothing_still_stops():
    """Special tokens decode to "" (skip_special_tokens), so a fixed window of tokens could hold less text than the
    stop string: "Q" + 50 pads + "</think>" ran on to the length limit (found by a review, session 21)."""
    from r1lab.engine.engine import finish_reason, stop_window

    tok = build_tokenizer()
    params = SamplingParams(max_new_tokens=1000, stop=["Q</think>"])
    think_end = tok.convert_tokens_to_ids("</think>")
    ids = tok.encode("xyz Q", add_special_tokens=False) + [tok.pad_token_id] * 50 + [think_end]
    assert finish_reason(ids, params, {tok.eos_token_id}, tok, stop_window(params)) == "stop"
    ids[-52] = tok.convert_tokens_to_ids("R")  # no stop string in the text: the widened window finds none
    assert finish_reason(ids, params, {tok.eos_token_id}, tok, stop_window(params)) is None
