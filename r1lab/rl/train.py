"""`r1lab rl`: R1-Zero. Reinforcement learning on chain-of-thought with rule-based rewards.

What one step really is (the "grpo" preset; the others change only the names looked up in r1lab/rl/algos.py):
  1. rollouts: P prompts x G samples from the current policy (our KV-cache engine, the same one eval and serving use);
  2. rewards: the task's verifier, accuracy + format (r1lab/tasks), optionally "strict" (the reasoning must support
     the answer, every arithmetic step correct) and DAPO's soft overlong penalty;
  3. advantages from each group: ADVANTAGES[advantage](rewards) -- grpo: (r - mean) / std over the group;
  4. mu updates of the PPO-clip surrogate against the rollout policy's log-probs, plus kl_coef * KL(pi || ref) by the
     chosen estimator, reduced by ONE aggregate(loss, mask, loss_agg) with the step's global token and sequence
     counts, so micro-batching and data parallelism never change the update.
Departures from the R1 paper, on purpose: with mu = 1 (the default) the run is on-policy, old_logp is the policy's
own detached log-prob and the ratio is exactly 1 (no clipping happens; the gradient is -A * grad logp, as in
nanochat and Dr. GRPO's analysis); one optimizer step per rollout batch; no reward model, no value model.

Shapes: B = P x G sequences (rows g*G .. g*G+G-1 share a prompt), T response tokens (right-padded), U distinct
prompts in a micro-batch, Lp their (left-padded) length.
Exact resume: the prompts and sampling seeds of step s are pure functions of (seed, s), and the checkpoint holds
the optimizer and every RNG, so a run killed with -9 and resumed logs the same metrics as an unbroken one.
"""
from __future__ import annotations

import copy
import json
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab.config import config_to_dict, format_config, parse_task_args
from r1lab.rl import algos
from r1lab.runtime import all_gather_objects, all_sum, barrier, rank_and_world, sum_gradients


@dataclass
class RLConfig:
    task: str = "countdown"
    task_args: str = ""                  # knobs for the task's generator, "key=value,key=value"
    eval_task_args: str | None = None    # the held-out set's knobs when they differ (a curriculum); None: task_args
    model: str = "countdown-base"        # a shipped base name, an r1lab checkpoint or any Hugging Face path / id
    out_dir: str = "runs/rl"
    template: str = "short"              # plain prompt template (r1lab.tasks.common.TEMPLATES)
    seed: int = 0
    train_instances: int = 2000          # countdown 3-4 numbers <= 12 has only ~2,400 3-number train problems
    # algorithm: a preset from r1lab.rl.algos.PRESETS; any field below left unset takes the preset's value
    preset: str = "grpo"
    advantage: str | None = None
    loss_agg: str | None = None
    clip_low: float | None = None
    clip_high: float | None = None
    clip_c: float | None = None
    kl_coef: float | None = None
    kl_estimator: str | None = None
    kl_as_reward: bool | None = None
    dynamic_sampling: bool | None = None
    max_sampling_rounds: int = 3         # dynamic sampling: at most this many rollout rounds to fill a batch
    overlong_filter: bool | None = None
    soft_overlong: bool | None = None
    overlong_cache_frac: float | None = None
    # batch and optimisation
    steps: int = 60
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    mu: int = 1                          # inner updates per rollout batch
    device_batch_size: int = 32          # sequences per forward pass
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # sampling and reward
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 384
    accuracy_weight: float = 1.0
    format_weight: float = 0.1
    strict_reward: bool = False          # the reasoning must support the answer with correct arithmetic
    # evaluation, logging, checkpoints
    eval_every: int = 0                  # 0: evaluate only before the first and after the last step
    eval_instances: int = 200
    eval_samples: int = 1
    eval_temperature: float = 1.0
    sample_every: int = 10               # print a few decoded samples every N steps
    save_every: int = 20                 # 0: only after the last step
    keep_last: int = 2
    dtype: str = "auto"
    threads: int = 0
    wandb: bool = False
    tensorboard: bool = False


def held_out_task_args(cfg: RLConfig) -> str:
    """The held-out set's generator knobs: eval_task_args when the recipe sets them, else the training ones."""
    return cfg.task_args if cfg.eval_task_args is None else cfg.eval_task_args


def algorithm(cfg: RLConfig) -> dict:
    """The preset's settings with every explicitly set config field on top."""
    fields = algos.PRESETS.get(cfg.preset, {})
    overrides = {k: getattr(cfg, k) for k in fields if hasattr(cfg, k) and getattr(cfg, k) is not None}
    return algos.preset(cfg.preset, **overrides)


# ------------------------------------------------------------------------------------------------------------------
# Rollouts and the batch tensors.

@dataclass
class Rollouts:
    examples: list            # (B,) the problem of each row
    completions: list         # (B,) engine Completions
    scores: list              # (B,) task Scores
    rewards: torch.Tensor     # (B,) after penalties


def score_rollouts(task, examples, completions, cfg: RLConfig, algo: dict):
    kwargs = {"strict": True} if cfg.strict_reward else {}
    scores = [task.score(c.text, ex, cfg.accuracy_weight, cfg.format_weight, **kwargs)
              for c, ex in zip(completions, examples)]
    rewards = torch.tensor([s.reward for s in scores], dtype=torch.float32)
    if algo["soft_overlong"]:
        lengths = torch.tensor([len(c.token_ids) for c in completions])
        cache = max(1, int(algo["overlong_cache_frac"] * cfg.max_new_tokens))
        rewards = rewards + algos.soft_overlong_penalty(lengths, cfg.max_new_tokens, cache)
    return scores, rewards


def collect_rollouts(step: int, engine, task, pool, cfg: RLConfig, algo: dict) -> tuple[Rollouts, dict]:
    """This rank's share of P prompts x G samples; with dynamic sampling, groups of equal rewards are replaced."""
    from r1lab.engine import GOLDEN, SamplingParams

    rank, world = rank_and_world()
    G = cfg.samples_per_prompt
    per_rank = cfg.prompts_per_step // world
    kept = Rollouts([], [], [], torch.zeros(0))
    stats = {"groups_sampled": 0, "groups_dropped": 0}
    rounds = cfg.max_sampling_rounds if algo["dynamic_sampling"] else 1
    for rnd in range(rounds):
        rng = random.Random(f"{cfg.seed}/rl/{step}/{rnd}")
        batch = rng.sample(pool, cfg.prompts_per_step)[rank * per_rank:(rank + 1) * per_rank]
        examples = [ex for ex in batch for _ in range(G)]
        # subtle: the engine seeds row i of a call with seed + i * GOLDEN; offsetting each rank's seed by its first
        # global row gives every row the seed it would have in one process, so sharding never changes rollouts.
        base = (cfg.seed * 1_000_003 + step * 1009 + rnd) % 2**63
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
                                seed=(base + rank * per_rank * G * GOLDEN) % 2**63)
        completions = engine.generate([task.prompt(ex, template=cfg.template) for ex in examples], params)
        scores, rewards = score_rollouts(task, examples, completions, cfg, algo)
        stats["groups_sampled"] += len(batch)
        keep = algos.filter_groups(rewards, G) if algo["dynamic_sampling"] else torch.ones(len(batch), dtype=torch.bool)
        stats["groups_dropped"] += int((~keep).sum())
        rows = [i for i in range(len(examples)) if keep[i // G]]
        kept.examples += [examples[i] for i in rows]
        kept.completions += [completions[i] for i in rows]
        kept.scores += [scores[i] for i in rows]
        kept.rewards = torch.cat([kept.rewards, rewards[rows]])
        if len(kept.examples) >= per_rank * G:
            break
    n = per_rank * G
    if algo["dynamic_sampling"] and len(kept.examples) == 0:  # every group was flat: train on the last round
        kept = Rollouts(examples, completions, scores, rewards)
    kept.examples, kept.completions, kept.scores = kept.examples[:n], kept.completions[:n], kept.scores[:n]
    kept.rewards = kept.rewards[:n]
    return kept, stats


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


def response_logp(model, prompts: list[tuple], ids, attn, amp, with_entropy: bool = False):
    """(B, T) log-prob of each response token under `model`, and optionally the entropy of each prediction.

    subtle: the G samples of a prompt share it, so each distinct prompt runs once (left-padded, with gradients) and
    its key/value cache is gathered out to the rows that continue it; the responses then run on top of that cache.
    The result equals a forward pass over prompt + response per row (tested), at a fraction of the tokens.
    """
    from transformers.cache_utils import DynamicCache

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
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        out = model(input_ids=p_ids, attention_mask=p_attn, position_ids=p_pos, use_cache=True,
                    past_key_values=DynamicCache(config=model.config), logits_to_keep=1)
        cache = out.past_key_values
        # (U, heads, Lp, hd) -> (B, heads, Lp, hd); gradients flow back to the prompt. index_select, not keys[rows]:
        # the backward of advanced indexing (index_put with accumulate) was 17x slower, 7% of a tiny model's step
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        r_pos = p_attn.sum(-1)[rows, None] + torch.arange(ids.shape[1], device=device)  # (B, T)
        logits = model(input_ids=ids, attention_mask=torch.cat([p_attn[rows], attn], -1), position_ids=r_pos,
                       past_key_values=cache, use_cache=True).logits  # (B, T, V): predicts tokens 1..T
    logits = torch.cat([out.logits.index_select(0, rows)[:, -1:], logits[:, :-1]], 1)  # (B, T, V): tokens 0..T-1
    logp = algos.logprobs_from_logits(logits, ids)
    ent = algos.entropy_from_logits(logits.detach()) if with_entropy else None
    return logp, ent


# ------------------------------------------------------------------------------------------------------------------

def train_on(model, ref_model, opt, roll: Rollouts, cfg: RLConfig, algo: dict, amp, pad_id: int, device):
    """mu updates on one batch of rollouts; returns the step's metrics. Advantages are computed on the full batch."""
    G = cfg.samples_per_prompt
    prompts, ids, attn, mask = pack(roll.completions, pad_id)
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    if algo["overlong_filter"]:
        truncated = torch.tensor([c.finish_reason == "length" for c in roll.completions], device=device)
        mask = algos.overlong_filter(mask, truncated)
    B = ids.shape[0]
    chunks = [slice(i, min(B, i + cfg.device_batch_size)) for i in range(0, B, cfg.device_batch_size)]
    need_ref = algos.needs_reference(algo["kl_coef"])
    need_old = cfg.mu > 1 or (need_ref and algo["kl_as_reward"])
    old_logp = ref_logp = None
    with torch.no_grad():
        if need_old:
            model.eval()
            old_logp = torch.cat([response_logp(model, prompts[c], ids[c], attn[c], amp)[0] for c in chunks])
        if need_ref:
            ref_logp = torch.cat([response_logp(ref_model, prompts[c], ids[c], attn[c], amp)[0] for c in chunks])
    kl_reward = None
    if need_ref and algo["kl_as_reward"]:
        kl_reward = algos.KL_ESTIMATORS["k1"](old_logp, ref_logp) * mask
    adv, adv_metrics = algos.ADVANTAGES[algo["advantage"]](roll.rewards.to(device), mask, G, kl=kl_reward,
                                                           kl_coef=algo["kl_coef"] if kl_reward is not None else 0.0)
    tokens, seqs = all_sum([float(mask.sum()), float((mask.sum(-1) > 0).sum())])
    tokens, seqs = torch.tensor(max(tokens, 1.0), device=device), torch.tensor(max(seqs, 1.0), device=device)
    sums: dict[str, float] = {}
    model.train()
    for _ in range(cfg.mu):
        for c in chunks:
            logp, ent = response_logp(model, prompts[c], ids[c], attn[c], amp, with_entropy=True)
            old = old_logp[c] if old_logp is not None else logp.detach()
            loss_mat, pl_metrics = algos.POLICY_LOSSES["ppo_clip"](logp, old, adv[c], mask[c], algo["clip_low"],
                                                                   algo["clip_high"], algo["clip_c"])
            loss = algos.aggregate(loss_mat, mask[c], algo["loss_agg"], tokens, seqs, cfg.max_new_tokens)
            if need_ref and not algo["kl_as_reward"]:
                kl_mat = algos.KL_ESTIMATORS[algo["kl_estimator"]](logp, ref_logp[c])
                kl_loss = algos.aggregate(kl_mat, mask[c], algo["loss_agg"], tokens, seqs, cfg.max_new_tokens)
                loss = loss + algo["kl_coef"] * kl_loss
            loss.backward()
            w = float(mask[c].sum())  # token-weighted metric sums, divided by the global count below
            m = {k: float(v) for k, v in pl_metrics.items()}
            m["entropy"] = float((ent * mask[c]).sum() / mask[c].sum().clamp(min=1))
            if ref_logp is not None:
                m["kl"] = float((algos.kl_k3(logp.detach(), ref_logp[c]) * mask[c]).sum() / mask[c].sum().clamp(min=1))
            m["loss"] = float(loss.detach()) * float(tokens) / max(w, 1.0)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v * w / cfg.mu
        sum_gradients(model)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
    keys = sorted(sums)
    totals = all_sum([sums[k] for k in keys])
    metrics = {k.replace("actor/", ""): v / float(tokens) for k, v in zip(keys, totals)}
    metrics["grad_norm"] = grad_norm
    metrics.update({k.replace("adv/", ""): float(v) for k, v in adv_metrics.items()})
    # tokens one forward pass over the batch processes: each chunk's distinct prompts once, plus its padded responses
    processed = sum(len(set(prompts[c])) * max(len(p) for p in prompts[c]) + len(prompts[c]) * ids.shape[1]
                    for c in chunks)
    return metrics, processed, max(len(p) for p in prompts) + ids.shape[1]


def rollout_metrics(roll: Rollouts) -> dict:
    """Rollout figures over all ranks: reward, accuracy, format, lengths (right vs wrong), behaviour."""
    from r1lab.evaluation.behaviour import arithmetic_steps, count_attempts, has_marker

    local = [(len(c.token_ids), s.correct, s.format_ok, s.reward, arithmetic_steps(c.text), count_attempts(c.text),
              has_marker(c.text), c.finish_reason == "length") for c, s in zip(roll.completions, roll.scores)]
    gathered = [row for part in all_gather_objects(local) for row in part]
    lens = [g[0] for g in gathered]
    right = [g[0] for g in gathered if g[1]]
    wrong = [g[0] for g in gathered if not g[1]]
    ok = sum(g[4][0] for g in gathered)
    total = sum(g[4][1] for g in gathered)
    return {
        "reward": statistics.mean(g[3] for g in gathered),
        "acc": statistics.mean(g[1] for g in gathered),
        "format_rate": statistics.mean(g[2] for g in gathered),
        "response_len": statistics.mean(lens),
        "response_len_correct": statistics.mean(right) if right else 0.0,
        "response_len_wrong": statistics.mean(wrong) if wrong else 0.0,
        "step_acc": ok / total if total else 1.0,
        "attempts": statistics.mean(g[5] for g in gathered),
        "marker_rate": statistics.mean(g[6] for g in gathered),
        "truncated_rate": statistics.mean(g[7] for g in gathered),
        "generated_tokens": sum(lens),
    }


# ------------------------------------------------------------------------------------------------------------------

def main(cfg: RLConfig) -> Path:
    """Run (or resume) RL; returns the final checkpoint's path."""
    from r1lab.checkpoint import latest_checkpoint, restore_trainer_state, rng_state, save_checkpoint
    from r1lab.cost.account import RunAccount, format_account
    from r1lab.engine import Engine
    from r1lab.evaluation.evaluate import evaluate_model
    from r1lab.model.load import load_model
    from r1lab.model.load import resolve_checkpoint
    from r1lab.runtime import autocast_dtype, device as runtime_device, init_distributed
    from r1lab.tasks import get_task
    from r1lab.tasks.common import cached_generate
    from r1lab.tracking import MetricsLogger

    init_distributed()
    rank, world = rank_and_world()
    if cfg.prompts_per_step % world:
        raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must divide evenly over {world} ranks")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    algo = algorithm(cfg)
    run_dir = Path(cfg.out_dir)
    device = runtime_device()
    amp = autocast_dtype(cfg.dtype, device)
    task = get_task(cfg.task)
    knobs = parse_task_args(cfg.task_args)
    base_path = resolve_checkpoint(cfg.model)
    resume = latest_checkpoint(run_dir)
    model, tokenizer = load_model(str(resume or base_path))
    model.to(device)
    ref_model = None
    if algos.needs_reference(algo["kl_coef"]):
        ref_model = model if resume is None else load_model(str(base_path))[0].to(device)
        ref_model = copy.deepcopy(ref_model).eval().requires_grad_(False)
    if rank == 0:
        print(format_config(cfg))
        print(f"rl: algorithm {json.dumps(algo)}; world {world}; device {device}; autocast {amp}; from "
              f"{resume or base_path}")
    pool = cached_generate(task, cfg.train_instances, cfg.seed, "train", run_dir, **knobs)
    eval_set = []
    if cfg.eval_instances:
        eval_set = cached_generate(task, cfg.eval_instances, cfg.seed + 1, "test", run_dir,
                                   **parse_task_args(held_out_task_args(cfg)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    account = RunAccount(model.config, device=device.type, dtype="bf16" if amp is not None else "fp32")
    start, wall_before = 0, 0.0
    if resume is not None:
        state = restore_trainer_state(resume, opt)
        start, wall_before = state["step"], state["wall_s"]
        account.flops_by_kind = dict(state["flops_by_kind"])
    log = MetricsLogger(run_dir, "rl", cfg.wandb and rank == 0, cfg.tensorboard and rank == 0, config_to_dict(cfg),
                        resume_step=start if resume is not None else None) if rank == 0 else None
    # subtle: generation runs in fp32; bf16 autocast made sampling slower on CPU (benchmarks/engine_speed.py), and the
    # log-probs that train the policy come from the training forward pass anyway.
    engine = Engine(model, tokenizer, autocast_dtype=None)
    t_run = time.time()

    def evaluate(step):
        if not eval_set:
            return {}
        model.eval()
        result = evaluate_model(model, tokenizer, task, eval_set, template=cfg.template,
                                max_new_tokens=cfg.max_new_tokens, autocast_dtype=None, samples=cfg.eval_samples,
                                temperature=cfg.eval_temperature, seed=cfg.seed + 7, account=account)
        if rank == 0:
            log.log(step, {f"eval/{k}": v for k, v in result.items()},
                    console_keys=tuple(f"eval/{k}" for k in ("pass1", "format_rate", "step_acc", "response_len")))
        return result

    if start == 0 and rank == 0:
        evaluate(0)
    for step in range(start, cfg.steps):
        t0 = time.time()
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        model.eval()
        roll, stats = collect_rollouts(step, engine, task, pool, cfg, algo)
        t_gen = time.time() - t0
        for c in roll.completions:
            account.add_generate(len(c.prompt_ids), len(c.token_ids))
        metrics = rollout_metrics(roll)
        train_metrics, processed, L = train_on(model, ref_model, opt, roll, cfg, algo, amp, tokenizer.pad_token_id,
                                               device)
        account.add_tokens("train", processed * cfg.mu, L)
        if cfg.mu > 1 or (algos.needs_reference(algo["kl_coef"]) and algo["kl_as_reward"]):
            account.add_tokens("forward", processed, L)
        if algos.needs_reference(algo["kl_coef"]):
            account.add_tokens("forward", processed, L)
        dt = time.time() - t0
        metrics.update(train_metrics)
        metrics.update({"lr": lr, "step_time_s": dt, "gen_time_s": t_gen, "train_time_s": dt - t_gen,
                        "gen_tokens_per_s": metrics["generated_tokens"] / max(t_gen, 1e-9), **stats})
        done = step + 1
        summary = account.summary(wall_before + time.time() - t_run)
        metrics.update({k: summary[k] for k in ("flops", "flops_per_s", "mfu")})
        if rank == 0:
            log.log(done, metrics, console_keys=("reward", "acc", "format_rate", "response_len", "response_len_correct",
                                                 "response_len_wrong", "attempts", "step_acc", "kl", "entropy",
                                                 "clip_frac_low", "clip_frac_high", "grad_norm", "gen_tokens_per_s",
                                                 "step_time_s"))
            if cfg.sample_every and done % cfg.sample_every == 0:
                print_samples(run_dir, done, roll, task, cfg)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
            if rank == 0:
                evaluate(done)
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
            if rank == 0:
                save_checkpoint(run_dir, done, model, tokenizer, config_to_dict(cfg),
                                {"optimizer": opt.state_dict(), "rng": rng_state(), "step": done,
                                 "wall_s": wall_before + time.time() - t_run, "flops_by_kind": account.flops_by_kind},
                                keep_last=cfg.keep_last)
            barrier()
    if rank == 0:
        final = evaluate(cfg.steps)
        summary = account.summary(wall_before + time.time() - t_run)
        (run_dir / "account.json").write_text(json.dumps(summary, indent=2))
        print(f"rl: done; final eval {json.dumps(final)}\n{format_account(summary)}")
        log.close()
    barrier()
    return latest_checkpoint(run_dir)


def print_samples(run_dir: Path, step: int, roll: Rollouts, task, cfg: RLConfig, n: int = 2) -> None:
    """A few decoded rollouts on the console and in samples.jsonl: the best and the worst of the first group."""
    group = list(range(min(cfg.samples_per_prompt, len(roll.completions))))
    group.sort(key=lambda i: -float(roll.rewards[i]))
    picks = group[:1] + group[-1:] if n == 2 else group[:n]
    with open(run_dir / "samples.jsonl", "a") as f:
        for i in picks:
            row = {"step": step, "prompt": task.prompt(roll.examples[i], template=cfg.template),
                   "completion": roll.completions[i].text, "reward": float(roll.rewards[i]),
                   "correct": roll.scores[i].correct}
            f.write(json.dumps(row) + "\n")
            print(f"--- sample (step {step}, reward {row['reward']:.2f}) ---\n{row['prompt']}{row['completion']}")
