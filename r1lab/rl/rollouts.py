"""Rollouts for `r1lab rl`: sample and score them, pack them into tensors, and the log-prob forward over them.

Shapes: B = P x G sequences (rows g*G .. g*G+G-1 share a prompt), T response tokens (right-padded), U distinct
prompts in a micro-batch, Lp their (left-padded) length.
"""
from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from r1lab.prompts import render
from r1lab.rl import algos
from r1lab.runtime import all_gather_objects, autocast, rank_and_world

if TYPE_CHECKING:
    from r1lab.rl.config import RLConfig


@dataclass
class Rollouts:
    examples: list            # (B,) the problem of each row
    completions: list         # (B,) engine Completions
    scores: list              # (B,) task Scores
    rewards: torch.Tensor     # (B,) after penalties
    # (prompt tokens, new tokens) of every completion sampled, the groups dynamic sampling dropped included: what
    # the step's generation cost
    sampled: list = field(default_factory=list)


def score_rollouts(task, examples, completions, cfg: RLConfig, algo: algos.Algorithm):
    """(task Scores, rewards (B,)): the verifier's reward, plus DAPO's soft overlong penalty and Kimi's length reward
    when the algorithm asks. examples / completions: whole groups of cfg.samples_per_prompt, rows of a group adjacent."""
    kwargs = {"strict": True} if cfg.strict_reward else {}
    scores = [task.score(c.text, ex, cfg.accuracy_weight, cfg.format_weight, **kwargs)
              for c, ex in zip(completions, examples)]
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    lengths = torch.tensor([len(c.token_ids) for c in completions])
    if algo.soft_overlong:
        cache = max(1, int(algo.overlong_cache_frac * cfg.max_new_tokens))
        rewards = rewards + algos.soft_overlong_penalty(lengths, cfg.max_new_tokens, cache, algo.overlong_penalty)
    if algo.length_reward:
        right = torch.tensor([bool(s.correct) for s in scores])
        rewards = rewards + algo.length_reward * algos.group_length_reward(lengths, right, cfg.samples_per_prompt,
                                                                           algo.length_reward_wrong)
    return scores, rewards


def thinking_budget(cfg: RLConfig, evaluation: bool = False) -> dict:
    """The rollouts' (or, with evaluation=True, the held-out evaluation's) thinking budget as SamplingParams /
    run_eval keywords; {} when off. eval_max_thinking_tokens = 0 means the rollouts' budget."""
    n = (cfg.eval_max_thinking_tokens or cfg.max_thinking_tokens) if evaluation else cfg.max_thinking_tokens
    return {"max_thinking_tokens": n, "thinking_end": cfg.thinking_end} if n else {}


def collect_rollouts(step: int, backend, task, pool, cfg: RLConfig, algo: algos.Algorithm,
                     logprobs: bool = False, tokenizer=None) -> tuple[Rollouts, dict]:
    """This rank's share of P prompts x G samples; with dynamic sampling, groups whose answers are all right or all
    wrong are replaced (DAPO's rule, 0 < correct < G, on the verifier's accuracy alone: a group of wrong answers that
    differ only in format or length, by the format bonus or the overlong penalty, would teach only that).
    logprobs: the backend's log-prob of every sampled token in each Completion (what TIS compares with)."""
    from r1lab.engine import GOLDEN, SamplingParams

    rank, world = rank_and_world()
    G = cfg.samples_per_prompt
    per_rank = cfg.prompts_per_step // world
    kept = Rollouts([], [], [], torch.zeros(0))
    stats = {"groups_sampled": 0, "groups_dropped": 0}
    rounds = cfg.max_sampling_rounds if algo.dynamic_sampling else 1
    for rnd in range(rounds):
        rng = random.Random(f"{cfg.seed}/rl/{step}/{rnd}")
        batch = rng.sample(pool, cfg.prompts_per_step)[rank * per_rank:(rank + 1) * per_rank]
        examples = [ex for ex in batch for _ in range(G)]
        # subtle: the engine seeds row i of a call with seed + i * GOLDEN (the vLLM backend gives its row i the same
        # request seed); offsetting each rank's seed by its first global row gives every row the seed it would have in
        # one process, so sharding never changes rollouts.
        base = (cfg.seed * 1_000_003 + step * 1009 + rnd) % 2**63
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                seed=(base + rank * per_rank * G * GOLDEN) % 2**63, logprobs=logprobs,
                                **thinking_budget(cfg))
        prompts = [render(task, ex, cfg.template, tokenizer) for ex in batch]  # once a prompt, not once a sample
        completions = backend.generate([p for p in prompts for _ in range(G)], params)
        kept.sampled += [(len(c.prompt_ids), len(c.token_ids)) for c in completions]
        scores, rewards = score_rollouts(task, examples, completions, cfg, algo)
        stats["groups_sampled"] += len(batch)
        keep = torch.ones(len(batch), dtype=torch.bool)
        if algo.dynamic_sampling:  # accuracy alone: no format bonus, no overlong penalty
            keep = algos.filter_groups(torch.tensor([float(s.correct) for s in scores]), G)
        stats["groups_dropped"] += int((~keep).sum())
        rows = [i for i in range(len(examples)) if keep[i // G]]
        kept.examples += [examples[i] for i in rows]
        kept.completions += [completions[i] for i in rows]
        kept.scores += [scores[i] for i in rows]
        kept.rewards = torch.cat([kept.rewards, rewards[rows]])
        if len(kept.examples) >= per_rank * G:
            break
    n = per_rank * G
    if algo.dynamic_sampling and len(kept.examples) == 0:  # every group was flat: train on the last round
        kept = Rollouts(examples, completions, scores, rewards, kept.sampled)
    if algo.dynamic_sampling and world > 1:
        # subtle: a rank that could not refill its share keeps fewer rows, so fewer micro-batches; under FSDP every
        # forward and backward is a collective, and the rank with more waited for the other until the timeout.
        # Every rank trains on the fewest kept (whole groups: each rank keeps whole groups).
        n = min(n, *all_gather_objects(len(kept.examples)))
    kept.examples, kept.completions, kept.scores = kept.examples[:n], kept.completions[:n], kept.scores[:n]
    kept.rewards = kept.rewards[:n]
    return kept, stats


# ------------------------------------------------------------------------------------------------------------------
# Rollout figures for the log.

@dataclass
class RolloutFigures:
    """What the log reports of one rollout; gathered from every rank."""
    length: int                  # response tokens
    correct: bool
    format_ok: bool
    reward: float                # the task's reward, before penalties
    steps: tuple[int, int]       # arithmetic steps (correct, total) in the reasoning
    attempts: int                # countdown search attempts
    marker: bool                 # a reflection marker ("wait", ...)
    truncated: bool              # stopped at max_new_tokens
    forced: bool                 # holds forced tokens: the thinking budget ended its thinking


def rollout_metrics(roll: Rollouts, thinking_budget: bool = False) -> dict:
    """Rollout figures over all ranks: reward, accuracy, format, and lengths, attempts and marker rates overall and
    for right vs wrong rollouts (a side with no rollout reads 0.0: acc == 1 or acc == 0 tells it from a real 0);
    with thinking_budget, the share of rollouts it cut."""
    from r1lab.evaluation.behaviour import arithmetic_steps, count_attempts, has_marker

    local = [RolloutFigures(len(c.token_ids), s.correct, s.format_ok, s.reward, arithmetic_steps(c.text),
                            count_attempts(c.text), has_marker(c.text), c.finish_reason == "length", 0 in c.mask)
             for c, s in zip(roll.completions, roll.scores)]
    rows = [row for part in all_gather_objects(local) for row in part]
    lens = [r.length for r in rows]
    right = [r for r in rows if r.correct]
    wrong = [r for r in rows if not r.correct]

    def side(rs, key):  # a mean over the right (or wrong) rollouts; 0.0 when there are none (acc says which)
        return statistics.mean(getattr(r, key) for r in rs) if rs else 0.0

    ok = sum(r.steps[0] for r in rows)
    total = sum(r.steps[1] for r in rows)
    return {
        "reward": statistics.mean(r.reward for r in rows),
        "acc": statistics.mean(r.correct for r in rows),
        "format_rate": statistics.mean(r.format_ok for r in rows),
        "response_len": statistics.mean(lens),
        "response_len_correct": side(right, "length"),
        "response_len_wrong": side(wrong, "length"),
        "step_acc": ok / total if total else 1.0,
        "attempts": statistics.mean(r.attempts for r in rows),
        "attempts_correct": side(right, "attempts"),
        "attempts_wrong": side(wrong, "attempts"),
        "marker_rate": statistics.mean(r.marker for r in rows),
        "marker_rate_correct": side(right, "marker"),
        "marker_rate_wrong": side(wrong, "marker"),
        "truncated_rate": statistics.mean(r.truncated for r in rows),
        "generated_tokens": sum(lens),
    } | ({"thinking_cut_rate": statistics.mean(r.forced for r in rows)} if thinking_budget else {})


def print_samples(run_dir: Path, step: int, roll: Rollouts, task, cfg: RLConfig, tokenizer=None, n: int = 2) -> None:
    """A few decoded rollouts on the console and in samples.jsonl: the best and the worst of the first group."""
    group = list(range(min(cfg.samples_per_prompt, len(roll.completions))))
    group.sort(key=lambda i: -float(roll.rewards[i]))
    picks = group[:1] + group[-1:] if n == 2 else group[:n]
    with open(run_dir / "samples.jsonl", "a") as f:
        for i in picks:
            row = {"step": step, "prompt": render(task, roll.examples[i], cfg.template, tokenizer),
                   "completion": roll.completions[i].text, "reward": float(roll.rewards[i]),
                   "correct": roll.scores[i].correct}
            f.write(json.dumps(row) + "\n")
            print(f"--- sample (step {step}, reward {row['reward']:.2f}) ---\n{row['prompt']}{row['completion']}")


# ------------------------------------------------------------------------------------------------------------------
# The batch tensors and the log-prob forward.

def pack(completions, pad_id: int):
    """Responses in their own coordinates: prompts (B,) id tuples, right-padded ids (B, T), attention (B, T) and the
    loss mask (B, T): 1 on sampled tokens, 0 on padding and forced tokens."""
    T = max(1, max(len(c.token_ids) for c in completions))
    ids = torch.full((len(completions), T), pad_id, dtype=torch.long)
    attn = torch.zeros((len(completions), T), dtype=torch.long)
    mask = torch.zeros((len(completions), T), dtype=torch.float32)
    for i, c in enumerate(completions):
        n = len(c.token_ids)
        ids[i, :n] = torch.tensor(c.token_ids, dtype=torch.long)
        attn[i, :n] = 1
        mask[i, :n] = torch.tensor(c.mask, dtype=torch.float32)
    return [tuple(c.prompt_ids) for c in completions], ids, attn, mask


def pack_logprobs(completions, T: int) -> torch.Tensor:
    """(B, T) the rollout backend's log-prob of each response token (Completion.logprobs), 0 on padding."""
    out = torch.zeros((len(completions), T), dtype=torch.float32)
    for i, c in enumerate(completions):
        if c.logprobs is None:
            raise ValueError("a rollout has no log-probs: sample with SamplingParams(logprobs=True)")
        out[i, :len(c.logprobs)] = torch.tensor(c.logprobs, dtype=torch.float32)
    return out


# The default truncated-IS cap of each rollout backend: r1lab's engine samples from the trainer's own model in the
# same process (off); vLLM's kernels differ from the trainer's (2, verl's and the TIS paper's choice).
TIS_CAPS = {"engine": 0.0, "vllm": 2.0}


def tis_cap(cfg: RLConfig) -> float:
    """The truncated-IS cap in force, 0 for off: cfg.tis_cap when set, else the backend's default (TIS_CAPS; 2 for
    a backend registered elsewhere, which is not the trainer either)."""
    return cfg.tis_cap if cfg.tis_cap is not None else TIS_CAPS.get(cfg.rollout_backend, 2.0)


def forward_tokens(prompts: list[tuple], T: int) -> int:
    """Tokens response_logp runs for these rows: each distinct prompt once (left-padded), plus the responses padded
    to T, the longest of them."""
    return len(set(prompts)) * max(len(p) for p in prompts) + len(prompts) * T


def micro_batches(lengths: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices in chunks of `size`, rows in order of response length (ties in batch order), so that a chunk
    pads to little more than its own rows: response_logp runs a chunk to its longest row only. A group's samples
    differ in length several-fold, so chunking in batch order would pad every row to its group's longest."""
    order = torch.sort(lengths, stable=True).indices
    return [order[i:i + size] for i in range(0, len(order), size)]


def response_width(attn) -> int:
    """The columns response_logp runs for these right-padded rows: up to the longest row (at least one); the
    columns after it are padding in every row."""
    return max(1, int(attn.sum(-1).max()))


def response_logp(model, prompts: list[tuple], ids, attn, amp, with_entropy: bool = False, temperature: float = 1.0):
    """(B, T) log-prob of each response token under softmax(logits / temperature) of `model` (the distribution
    the rollouts were sampled from), and optionally the entropy of each prediction.

    subtle: the G samples of a prompt share it, so each distinct prompt runs once (left-padded, with gradients) and
    its key/value cache is gathered out to the rows that continue it; the responses then run on top of that cache.
    The result equals a forward pass over prompt + response per row (tested), at a fraction of the tokens.
    Columns past the longest row are padding in every row: they are not run, and read 0 in the outputs.
    """
    T, n = ids.shape[1], response_width(attn)
    ids, attn = ids[:, :n], attn[:, :n]
    logits = _response_logits(model, prompts, ids, attn, amp)
    logits = logits / temperature if temperature != 1.0 else logits
    logp = _pad_to(algos.logprobs_from_logits(logits, ids), T)
    return logp, _pad_to(algos.entropy_from_logits(logits.detach()), T) if with_entropy else None


def _pad_to(x, T: int):
    """(B, n) -> (B, T), zeros after column n."""
    return x if x.shape[1] == T else torch.nn.functional.pad(x, (0, T - x.shape[1]))


def _response_logits(model, prompts: list[tuple], ids, attn, amp):
    """(B, T, V) the logits that predict each response token (response_logp's forward)."""
    from transformers.cache_utils import DynamicCache

    from r1lab.engine.kvcache import cache_kwarg, returned_cache
    from r1lab.parallel import checkpointing

    device = ids.device
    distinct = {p: k for k, p in enumerate(dict.fromkeys(prompts))}
    rows = torch.tensor([distinct[p] for p in prompts], device=device)  # (B,) which distinct prompt
    Lp = max(len(p) for p in distinct)
    p_ids = torch.zeros((len(distinct), Lp), dtype=torch.long, device=device)
    p_attn = torch.zeros((len(distinct), Lp), dtype=torch.long, device=device)
    for p, k in distinct.items():
        p_ids[k, Lp - len(p):] = torch.tensor(p, device=device)
        p_attn[k, Lp - len(p):] = 1
    p_pos = (p_attn.cumsum(-1) - 1).clamp(min=0)
    if checkpointing(model) and model.training and torch.is_grad_enabled():
        # subtle: a checkpointed layer is run again in backward, and would append its keys to the shared prompt's
        # cache a second time; so one plain pass over prompt + response per row (the tokens the cache saves)
        full_attn = torch.cat([p_attn[rows], attn], -1)
        with autocast(device, amp):
            return model(input_ids=torch.cat([p_ids[rows], ids], -1), attention_mask=full_attn,
                         position_ids=(full_attn.cumsum(-1) - 1).clamp(min=0),
                         logits_to_keep=ids.shape[1] + 1).logits[:, :-1]  # (B, T, V): tokens 0..T-1
    with autocast(device, amp):
        key = cache_kwarg(model)
        out = model(input_ids=p_ids, attention_mask=p_attn, position_ids=p_pos, use_cache=True,
                    **{key: DynamicCache(config=model.config)}, logits_to_keep=1)
        cache = returned_cache(out)
        # (U, heads, Lp, hd) -> (B, heads, Lp, hd); gradients flow back to the prompt. index_select, not keys[rows]:
        # the backward of advanced indexing (index_put with accumulate) is much slower (dev/LOG.md)
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        r_pos = p_attn.sum(-1)[rows, None] + torch.arange(ids.shape[1], device=device)  # (B, T)
        logits = model(input_ids=ids, attention_mask=torch.cat([p_attn[rows], attn], -1), position_ids=r_pos,
                       **{key: cache}, use_cache=True).logits  # (B, T, V): predicts tokens 1..T
    return torch.cat([out.logits.index_select(0, rows)[:, -1:], logits[:, :-1]], 1)  # (B, T, V): tokens 0..T-1
