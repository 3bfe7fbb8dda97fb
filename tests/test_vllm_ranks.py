"""An engine per rank: two processes started by torchrun (gloo), each with its own colocated vllm.LLM on the same
tiny policy, each sampling its own rows. Each rank's rows are the ones one process gives for the same rows and seeds,
and after an optimizer step (gradients summed over the ranks, or reduced by FSDP) a weight sync reaches both
engines. Skipped where vllm is not importable; run with the venv of tests/test_vllm.py:

    /work/vllm-venv/bin/python -m pytest tests/test_vllm_ranks.py

This file is also the ranks' program: torchrun runs it as a script (worker(), below).
"""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # conftest and tolerances, when torchrun runs this file
from conftest import tiny_model, token_logp  # noqa: E402
from tolerances import logit_scale, logprob_atol  # noqa: E402

vllm = pytest.importorskip("vllm")

from r1lab.engine import GOLDEN, SamplingParams, make_backend  # noqa: E402
from r1lab.model.tokenizer import build_tokenizer  # noqa: E402

PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "4*4="]
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, logprobs=True)
SEED, WORLD = 11, 2
MODES = ("plain", "fsdp")  # a full copy of the policy per rank (r1lab's data parallel), or FSDP2 shards
PER_RANK = len(PROMPTS) // WORLD


def sampled(seed: int) -> SamplingParams:
    return SamplingParams(temperature=1.0, max_new_tokens=24, seed=seed, logprobs=True)


def rank_seed(rank: int) -> int:
    """collect_rollouts' rule: the call's seed offset by the rank's first global row, so that row i of the rank's
    call gets the seed global row rank * PER_RANK + i has in one process."""
    return (SEED + rank * PER_RANK * GOLDEN) % 2 ** 63


def worker(out: Path) -> None:
    """One rank: both kinds of policy in turn (an engine each: a second engine in a process builds in 0.5 s)."""
    from r1lab.runtime import init_distributed

    torch.set_num_threads(1)
    init_distributed()
    for mode in MODES:
        rank_step(out, mode)


def rank_step(out: Path, mode: str) -> None:
    """Its engine samples this rank's rows and the greedy text, the policy takes a step, the engine gets the
    weights; what came out goes to out/rank{r}_{mode}.json."""
    from r1lab.engine.vllm_backend import untied_weights
    from r1lab.parallel import ScaleConfig, shard
    from r1lab.runtime import rank_and_world, sum_gradients

    rank, world = rank_and_world()
    tok = build_tokenizer()
    model = tiny_model(tok, max_positions=256).train()
    if mode == "fsdp":
        model = shard(model, ScaleConfig(fsdp=True), torch.float32)  # each rank holds half of every weight
    backend = make_backend("vllm", model, tok, max_batch_size=8)
    rows = PROMPTS[rank * PER_RANK:(rank + 1) * PER_RANK]
    mine = backend.generate(rows, sampled(rank_seed(rank)))
    before = backend.generate(PROMPTS, GREEDY)
    if rank == 1:  # a call of one rank alone: the engines run on their own, no collective inside generate()
        backend.generate(["only rank 1"], GREEDY)

    # one Adam step making this rank's rows less likely, the loss divided by the global row count, gradients summed
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    logp = [token_logp(model, c).gather(1, torch.tensor([c.token_ids]).T).mean() for c in mine]
    (torch.stack(logp).sum() / (PER_RANK * world)).backward()
    if mode == "plain":
        sum_gradients(model)
    opt.step()
    backend.sync_weights(model)  # a collective under FSDP (the weights are gathered)
    after = backend.generate(PROMPTS, GREEDY)

    # the policy's own forward on the engine's greedy text, with the full weights (gathered under FSDP, collective)
    reference = tiny_model(tok, max_positions=256)
    reference.load_state_dict(dict(untied_weights(model)))
    with torch.no_grad():
        atol = logprob_atol(reference.config, *logit_scale(reference, after))
        margins, diffs = zip(*(margin_and_diff(reference, c) for c in after))
    as_dict = lambda cs: [{"token_ids": c.token_ids, "logprobs": c.logprobs} for c in cs]  # noqa: E731
    (out / f"rank{rank}_{mode}.json").write_text(json.dumps({
        "world": world, "rows": as_dict(mine), "before": as_dict(before), "after": as_dict(after),
        "atol": atol, "greedy_margin_max": max(margins), "logp_diff_max": max(diffs)}))


def margin_and_diff(reference, c) -> tuple[float, float]:
    """How far completion `c` is from `reference`'s greedy text (the largest gap between a token's log-prob and the
    best one's: 0 when every token is the argmax) and from its log-probs (the largest difference)."""
    logp = token_logp(reference, c)
    chosen = logp[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
    return (logp.max(-1).values - chosen).max().item(), (chosen - torch.tensor(c.logprobs)).abs().max().item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_process():
    """What one process gives: all the rows in one call with the call's seed, the greedy text, and how far apart
    two computations of these rows' log-probs may be."""
    torch.set_num_threads(1)  # before any vLLM engine is built (it pins the count)
    tok = build_tokenizer()
    model = tiny_model(tok, max_positions=256)
    backend = make_backend("vllm", model, tok, max_batch_size=8)
    rows = backend.generate(PROMPTS, sampled(SEED))
    return rows, backend.generate(PROMPTS, GREEDY), logprob_atol(model.config, *logit_scale(model, rows))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    """torchrun's two ranks, run once; each writes what it got for each mode."""
    out = tmp_path_factory.mktemp("ranks")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD), "--master-addr",
           "127.0.0.1", "--master-port", str(free_port()), __file__, str(out)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_an_engine_per_rank_samples_its_rows_and_gets_the_update(mode, ranks, one_process):
    rows, greedy, rows_atol = one_process
    ranks = [json.loads((ranks / f"rank{r}_{mode}.json").read_text()) for r in range(WORLD)]
    for r, got in enumerate(ranks):
        assert got["world"] == WORLD
        ours = rows[r * PER_RANK:(r + 1) * PER_RANK]
        assert [c["token_ids"] for c in got["rows"]] == [c.token_ids for c in ours]  # its rows, as in one process
        for c, o in zip(got["rows"], ours):  # same kernels, another batch: equal up to rounding
            assert max(abs(a - b) for a, b in zip(c["logprobs"], o.logprobs)) <= rows_atol
        assert [c["token_ids"] for c in got["before"]] == [c.token_ids for c in greedy]
        # the sync reached this rank's engine: new greedy text, the updated policy's own (argmax up to a tie within
        # rounding, log-probs up to rounding)
        assert all(a["token_ids"] != b.token_ids for a, b in zip(got["after"], greedy))
        assert got["greedy_margin_max"] <= got["atol"] and got["logp_diff_max"] <= got["atol"]
    assert ranks[0]["after"] == ranks[1]["after"]  # one update, the same on both ranks: the same weights in both


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
