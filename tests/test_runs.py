"""A thinking budget sampled in runs (r1lab/engine/runs.py, what the vLLM backend uses) gives the engine's own
completions: r1lab's engine is the sampler here, greedy, so both sides are deterministic and must agree token for
token, forced tokens, text and finish reason included, on the shipped base."""
import math

import pytest
import torch
from tolerances import logprob_atol

from r1lab.engine import Engine, SamplingParams
from r1lab.engine.runs import RUN_SEED_STEP, RunOut, generate_in_runs
from r1lab.model.load import load_model, resolve_checkpoint
from r1lab.tasks import get_task

CLOSE = "\ngive up\n</think>"


@pytest.fixture(scope="module")
def base():
    model, tok = load_model(resolve_checkpoint("countdown-base"))
    return model.eval(), tok, Engine(model, tok)


def engine_sampler(model, engine, calls: list):
    """A SampleFn on r1lab's engine (greedy), with the forced tokens' log-probs from a full forward pass."""
    def sample(runs):
        calls.append(runs)
        outs = []
        for run in runs:
            params = SamplingParams(temperature=0.0, max_new_tokens=run.max_tokens, stop=run.stop, logprobs=True)
            c = engine.generate([run.prompt_ids], params)[0]
            tail = None
            if run.tail:
                with torch.no_grad():
                    logp = model(torch.tensor([run.prompt_ids])).logits[0].float().log_softmax(-1)
                n = len(run.prompt_ids)
                tail = [logp[i - 1, run.prompt_ids[i]].item() for i in range(n - run.tail, n)]
            outs.append(RunOut(c.token_ids, c.logprobs, tail))
        return outs
    return sample


def prompts(tok, n=4):
    task = get_task("countdown")
    return [tok(task.prompt(ex, template="short"))["input_ids"] for ex in task.generate(n, seed=3, split="test")]


@pytest.mark.parametrize("budget, max_new, stop", [
    (30, 160, []),                 # cut, then an answer
    (60, 200, ["</answer>"]),      # a stop string after the forced close
    (30, 36, []),                  # max_new_tokens runs out inside the forced text
    (0, 60, []),                   # no thinking at all: the first token is replaced
    (1000, 80, []),                # a budget never reached: one run per row
])
def test_runs_match_the_engines_budget(base, budget, max_new, stop):
    model, tok, engine = base
    ps = prompts(tok)
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new, stop=stop, logprobs=True,
                            max_thinking_tokens=budget, thinking_end=CLOSE)
    want = engine.generate(ps, params)
    calls = []
    got = generate_in_runs(engine_sampler(model, engine, calls), ps, params, [None] * len(ps), tok, engine.eos_ids)
    for w, g in zip(want, got):
        assert g.token_ids == w.token_ids
        assert g.mask == w.mask
        assert (g.text, g.finish_reason) == (w.text, w.finish_reason)
        assert len(g.token_ids) <= max_new
        # the engine's decoding step and a full forward round differently: the bound for these logits and lengths
        with torch.no_grad():
            max_logit = model(torch.tensor([w.prompt_ids + w.token_ids])).logits.abs().max().item()
        atol = logprob_atol(model.config, max_logit, context=len(w.prompt_ids) + len(w.token_ids))
        assert not any(math.isnan(x) for x in g.logprobs)  # forced tokens got theirs too
        assert max(abs(a - b) for a, b in zip(g.logprobs, w.logprobs)) <= atol
    cut = sum(0 in w.mask for w in want)
    if budget < 1000:
        assert cut > 0, "no row was cut: the case tests nothing"
    else:
        assert cut == 0 and len(calls) == 1


def test_thinking_that_the_completion_opens(base):
    """A prompt that does not open the thinking: the budget counts from the <think> the completion writes (the
    shipped base never writes one, so a scripted sampler stands in for a model: it writes STREAM from the start of
    the completion on, whatever came before). The oracle appends the same stream one token at a time through the
    engine's hook and finishing rule; the runs must end the thinking run at the marker, then cap it."""
    from r1lab.engine.engine import finish_reason, stop_window
    from r1lab.engine.forcing import request_budget

    _, tok, engine = base
    text = "ok <think>" + "9+3=12 vs 27 miss\n" * 6 + "</think> <answer>1</answer>"
    stream = tok(text, add_special_tokens=False)["input_ids"]
    prompt = tok("User: hi\nAssistant:")["input_ids"]
    params = SamplingParams(temperature=0.0, max_new_tokens=90, max_thinking_tokens=25, thinking_end=CLOSE)
    calls = []

    def scripted(runs):
        calls.append(runs)
        outs = []
        for run in runs:
            done = len(run.prompt_ids) - len(prompt)
            new = stream[done:done + run.max_tokens]
            for i in range(1, len(new) + 1):  # a stop string ends the run at the token that completes it
                if any(s in tok.decode(new[:i]) for s in run.stop):
                    new = new[:i]
                    break
            outs.append(RunOut(new, None, None))
        return outs

    got = generate_in_runs(scripted, [prompt], params, [None], tok, engine.eos_ids)[0]
    hook, ids, mask, reason = request_budget(tok, prompt, params), [], [], None
    while reason is None:  # the engine's loop: one token a step, forced ones after a replaced token
        force = hook(ids + [stream[len(ids)]])
        for t, m in ([(t, 0) for t in force.ids] if force else [(stream[len(ids)], 1)]):
            ids.append(t)
            mask.append(m)
            reason = finish_reason(ids, params, engine.eos_ids, tok, stop_window(params))
            if reason:
                break
    assert (got.token_ids, got.mask, got.finish_reason) == (ids, mask, reason)
    start = len(tok("ok <think>", add_special_tokens=False)["input_ids"])  # the completion's first thinking token
    assert mask.index(0) == start + 25  # 25 thinking tokens after its own <think>, then the forced close
    assert calls[0][0].stop == ["<think>"] and calls[1][0].stop == [] and calls[1][0].max_tokens == 26


def test_run_seeds_follow_the_row_seed(base):
    """Run 0 of a row samples with the row's own seed (a row the budget never cuts gets its tokens without one);
    later runs with seeds of their own; no log-probs asked, none requested."""
    model, tok, engine = base
    ps = prompts(tok, n=2)
    params = SamplingParams(temperature=0.0, max_new_tokens=100, max_thinking_tokens=20, thinking_end=CLOSE)
    calls = []
    got = generate_in_runs(engine_sampler(model, engine, calls), ps, params, [5, 2 ** 63 - 1], tok, engine.eos_ids)
    assert [r.seed for r in calls[0]] == [5, 2 ** 63 - 1]
    assert [r.seed for r in calls[1]] == [(5 + RUN_SEED_STEP) % 2 ** 63, (2 ** 63 - 1 + RUN_SEED_STEP) % 2 ** 63]
    assert all(r.tail == 0 for runs in calls for r in runs)
    assert all(g.logprobs is None and g.sample_logprobs is None for g in got)


def test_runs_need_a_budget_and_a_sampler_that_answers(base):
    model, tok, engine = base
    ps = prompts(tok, n=1)
    with pytest.raises(ValueError, match="thinking budget"):
        generate_in_runs(lambda runs: [], ps, SamplingParams(max_new_tokens=8), [None], tok, engine.eos_ids)
    params = SamplingParams(max_new_tokens=8, max_thinking_tokens=2)
    with pytest.raises(RuntimeError, match="without tokens"):
        generate_in_runs(lambda runs: [RunOut([], None, None) for _ in runs], ps, params, [None], tok, engine.eos_ids)
    params = SamplingParams(temperature=0.0, max_new_tokens=40, max_thinking_tokens=2, logprobs=True)
    wrong = lambda runs: [RunOut([7] * r.max_tokens, [-1.0] * r.max_tokens, None) for r in runs]  # noqa: E731
    with pytest.raises(RuntimeError, match="no log-probs for the"):
        generate_in_runs(wrong, ps, params, [None], tok, engine.eos_ids)
