"""How train_on cuts a rollout batch: rows in order of response length, each micro-batch run to its own longest row
rather than the batch's (the samples of one prompt differ in length several-fold). tests/test_rl.py checks that the
update does not depend on the micro-batch size."""
import random

import pytest
import torch
from conftest import tiny_model

from r1lab.engine.engine import Completion
from r1lab.model.tokenizer import build_tokenizer
from r1lab.rl import rollouts as rollouts_module
from r1lab.rl.rollouts import Rollouts, forward_tokens, micro_batches
from r1lab.rl.train import RLConfig, algorithm, train_on
from r1lab.tasks.common import Score

pytestmark = pytest.mark.usefixtures("one_thread")


def test_micro_batches_order_rows_by_length_ties_in_batch_order():
    chunks = micro_batches(torch.tensor([5, 1, 5, 3, 0, 9, 1]), 3)
    assert [c.tolist() for c in chunks] == [[4, 1, 6], [3, 0, 2], [5]]
    assert micro_batches(torch.tensor([2, 2, 2, 2]), 2)[1].tolist() == [2, 3]  # equal lengths: the batch's order


@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
def test_each_micro_batch_runs_to_its_longest_row(monkeypatch, kl_coef):
    tok = build_tokenizer()
    model = tiny_model(tok)
    rng = random.Random(0)
    prompts = [tok(f"Using {a}, {b} make {a + b}.")["input_ids"] for a, b in ((3, 5), (12, 7), (2, 9), (10, 10))]
    lengths = [rng.randint(3, 60) for _ in range(16)]
    comps = [Completion(prompts[i // 4], [rng.randint(5, 60) for _ in range(n)], [1] * n, "x", "eos")
             for i, n in enumerate(lengths)]
    roll = Rollouts([{}] * 16, comps, [Score(0.0, False, True, None)] * 16, torch.tensor([1.0, 0.0, 0.5, 0.0] * 4))
    widths = []
    run = rollouts_module._response_logits

    def recording(model, prompts, ids, attn, amp):
        widths.append(ids.shape[1])
        return run(model, prompts, ids, attn, amp)

    monkeypatch.setattr(rollouts_module, "_response_logits", recording)
    cfg = RLConfig(task="countdown", prompts_per_step=4, samples_per_prompt=4, device_batch_size=4, kl_coef=kl_coef)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ref = tiny_model(tok) if kl_coef else None
    _, processed = train_on(model.train(), ref, opt, roll, cfg, algorithm(cfg), None, tok.pad_token_id,
                            torch.device("cpu"))
    chunks = [sorted(range(16), key=lambda i: lengths[i])[k:k + 4] for k in range(0, 16, 4)]
    longest = [max(lengths[i] for i in c) for c in chunks]
    passes = 1 + (kl_coef > 0)  # the reference pass (no grad), then the training pass
    assert widths == longest * passes
    assert max(lengths) == longest[-1] and sum(longest) < 4 * max(lengths)  # less than padding every row to 60
    tokens = sum(forward_tokens([tuple(comps[i].prompt_ids) for i in c], n) for c, n in zip(chunks, longest))
    assert processed["train"] == (tokens, max(map(len, prompts)) + max(lengths))
    assert processed.get("forward", (0,))[0] == (tokens if kl_coef else 0)


def test_padding_columns_read_zero_and_change_nothing():
    """Columns past every row's end are not run: the log-probs of the real tokens are the same bits with or without
    them, and the padding reads 0."""
    from r1lab.rl.rollouts import pack, response_logp

    tok = build_tokenizer()
    model = tiny_model(tok)
    p = tok("Using 3, 5 make 8.")["input_ids"]
    comps = [Completion(p, list(range(5, 5 + n)), [1] * n, "x", "eos") for n in (4, 9, 6)]
    prompts, ids, attn, _ = pack(comps, tok.pad_token_id)
    wide_ids = torch.cat([ids, torch.full((3, 5), tok.pad_token_id)], 1)
    wide_attn = torch.cat([attn, torch.zeros((3, 5), dtype=attn.dtype)], 1)
    with torch.no_grad():
        logp, ent = response_logp(model, prompts, ids, attn, None, with_entropy=True)
        wide, wide_ent = response_logp(model, prompts, wide_ids, wide_attn, None, with_entropy=True)
    assert wide.shape == (3, 14) and torch.equal(wide[:, :9], logp) and torch.equal(wide_ent[:, :9], ent)
    assert not wide[:, 9:].any() and not wide_ent[:, 9:].any()
