"""`r1lab rl`: R1-Zero. Reinforcement learning on chain-of-thought with rule-based rewards.

What one step really is (the "grpo" preset; the others change only the names looked up in r1lab/rl/algos.py):
  1. rollouts: P prompts x G samples from the current policy (a rollout backend, r1lab's KV-cache engine by default,
     the same one eval and serving use; it is synced with the policy after every update);
  2. rewards: the task's verifier, accuracy + format (r1lab/tasks), optionally "strict" (the reasoning must support
     the answer, every arithmetic step correct), DAPO's soft overlong penalty and Kimi k1.5's length reward;
  3. advantages from each group: ADVANTAGES[advantage](rewards) -- grpo: (r - mean) / std over the group;
  4. mu updates of the policy loss POLICY_LOSSES[policy_loss] (every preset: the PPO-clip surrogate) against the
     rollout policy's log-probs, plus kl_coef * KL(pi || ref) by KL_ESTIMATORS[kl_estimator] (as a loss term, or
     folded into the rewards with kl_as_reward), reduced by ONE aggregate(loss, mask, loss_agg) with the step's
     global token and sequence counts, so micro-batching and data parallelism never change the update.
     Every log-prob (policy, reference, entropy) is of logits / temperature: the policy trained is the one the
     rollouts were sampled from (TRL and verl do the same; at temperature 1, the raw model).
     With rollouts from another engine than the trainer (vLLM), each token's loss term is weighted by truncated
     importance sampling, min(exp(old_logp - rollout_logp), tis_cap) (algos.truncated_is; off with r1lab's engine).
Departures from the R1 paper, on purpose: with mu = 1 (the default) the run is on-policy, old_logp is the policy's
own detached log-prob and the ratio is exactly 1 (no clipping happens; the gradient is -A * grad logp, as in
nanochat and Dr. GRPO's analysis); one optimizer step per rollout batch; no reward model, no value model.

Shapes: B = P x G sequences (rows g*G .. g*G+G-1 share a prompt), T response tokens (right-padded).
Rollouts (sampling, scoring, packing, the log-prob forward) live in r1lab/rl/rollouts.py, the math in algos.py,
the config (RLConfig) and its checks in config.py; here: train_on (one update), and main = setup, then rl_step /
evaluate / save per step, then finish.
Exact resume: the prompts and sampling seeds of step s are pure functions of (seed, s), and the checkpoint holds
the optimizer and every RNG, so a run killed with -9 and resumed logs the same metrics as an unbroken one.
Scale (r1lab/parallel.py, keys inherited from ScaleConfig): fsdp shards the policy and the reference model with
FSDP2; lora_r trains LoRA adapters only, the reference being the policy with its adapters disabled; torch_compile
compiles the decoder layers for the training pass only (sampling and the no-grad passes stay eager). A wrapped policy
samples through a plain copy that gets its merged / gathered weights after every update (vLLM gets them directly).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab import parallel, runtime
from r1lab.config import check_resume, config_to_dict, format_config
from r1lab.prompts import check_template
from r1lab.rl import algos
from r1lab.rl.config import RLConfig, algorithm, eval_budget, held_out_task_args
from r1lab.rl.rollouts import (Rollouts, collect_rollouts, forward_tokens, micro_batches, pack, pack_logprobs,
                               print_samples, response_logp, response_width, rollout_metrics, thinking_budget,
                               tis_cap)
from r1lab.runtime import all_gather_objects, all_sum, barrier, rank_and_world


def train_on(model, ref_model, opt, roll: Rollouts, cfg: RLConfig, algo: algos.Algorithm, amp, pad_id: int, device):
    """mu updates on one batch of rollouts; advantages are computed on the full batch.

    Returns (metrics, processed): processed = {kind: (tokens, context length)} for the cost account, "train" for the
    forward + backward passes and "forward" for the no-grad ones (old and reference log-probs), only those that ran.
    """
    G = cfg.samples_per_prompt
    prompts, ids, attn, mask = pack(roll.completions, pad_id)
    ids, attn, mask = ids.to(device), attn.to(device), mask.to(device)
    if algo.overlong_filter:
        truncated = torch.tensor([c.finish_reason == "length" for c in roll.completions], device=device)
        mask = algos.overlong_filter(mask, truncated)
    cap = tis_cap(cfg)
    B, T = ids.shape
    rollout_logp = pack_logprobs(roll.completions, T).to(device) if cap else None  # (B, T)
    chunks = micro_batches(attn.sum(-1), cfg.device_batch_size)  # index tensors; sums over them are order-free
    chunk_prompts = [[prompts[i] for i in c.tolist()] for c in chunks]
    need_ref = algos.needs_reference(algo.kl_coef)
    kl_in_reward = need_ref and algo.kl_as_reward
    need_old = cfg.mu > 1 or kl_in_reward  # with mu = 1 and no KL reward, old_logp is logp.detach(): no extra pass
    old_logp = ref_logp = None

    def logp_of(m, k, with_entropy=False):  # the policy trained is the one sampled: log-probs of logits / temperature
        c = chunks[k]
        return response_logp(m, chunk_prompts[k], ids[c], attn[c], amp, with_entropy, cfg.temperature)

    def all_rows(m):  # (B, T) log-probs, chunk by chunk
        out = torch.zeros((B, T), device=device)
        for k, c in enumerate(chunks):
            out[c] = logp_of(m, k)[0]
        return out

    with torch.no_grad():
        if need_old:
            model.eval()
            old_logp = all_rows(model)
        if need_ref:
            with parallel.reference(ref_model):  # with LoRA: the policy itself, adapters disabled
                ref_logp = all_rows(ref_model)
    kl_reward = algos.KL_ESTIMATORS[algo.kl_estimator](old_logp, ref_logp) * mask if kl_in_reward else None
    adv, adv_metrics = algos.ADVANTAGES[algo.advantage](roll.rewards.to(device), mask, G, kl=kl_reward,
                                                        kl_coef=algo.kl_coef if kl_in_reward else 0.0,
                                                        ranks=algos.Ranks(runtime.sum_over_ranks,
                                                                          runtime.max_over_ranks))
    tokens, seqs = all_sum([float(mask.sum()), float((mask.sum(-1) > 0).sum())])
    tokens, seqs = torch.tensor(max(tokens, 1.0), device=device), torch.tensor(max(seqs, 1.0), device=device)
    sums: dict[str, float] = {}
    tis_max = 0.0  # max |old_logp - rollout_logp| over the step's tokens
    model.train()
    for _ in range(cfg.mu):
        for k, c in enumerate(chunks):
            logp, ent = logp_of(model, k, with_entropy=True)
            old = old_logp[c] if old_logp is not None else logp.detach()
            loss, m, diff = chunk_loss(logp, ent, old, None if ref_logp is None else ref_logp[c],
                                       None if rollout_logp is None else rollout_logp[c], adv[c], mask[c], algo, cap,
                                       tokens, seqs, cfg.max_new_tokens)
            loss.backward()
            tis_max = max(tis_max, diff)
            w = float(mask[c].sum())  # token-weighted metric sums, divided by the global count below
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v * w / cfg.mu
        grad_norm = parallel.reduce_and_clip(model, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    keys = sorted(sums)
    metrics = {k: v / float(tokens) for k, v in zip(keys, all_sum([sums[k] for k in keys]))}
    metrics["grad_norm"] = grad_norm
    if rollout_logp is not None:
        metrics["tis_logp_diff_max"] = max(all_gather_objects(tis_max))
    metrics.update({k: float(v) for k, v in adv_metrics.items()})
    n = sum(forward_tokens(ps, response_width(attn[c])) for ps, c in zip(chunk_prompts, chunks))  # one pass
    L = max(len(p) for p in prompts) + T
    processed = {"train": (n * cfg.mu, L)}
    if need_old + need_ref:
        processed["forward"] = (n * (need_old + need_ref), L)
    return metrics, processed


def chunk_loss(logp, ent, old, ref, rollout, adv, mask, algo: algos.Algorithm, cap: float, tokens, seqs,
               max_new_tokens: int):
    """(loss, metrics, max |old - rollout| log-prob) of one micro-batch, all (b, T) tensors but the counts: logp and
    ent from the policy in training, old its log-probs before the update, ref the reference's (None without KL),
    rollout the sampler's (None without truncated IS). The loss is aggregated with the step's global token and
    sequence counts, so micro-batches add up to the batch's loss; metrics are means over this chunk's tokens."""
    loss_mat, metrics = algos.POLICY_LOSSES[algo.policy_loss](logp, old, adv, mask, algo.clip_low, algo.clip_high,
                                                              algo.clip_c)
    diff = 0.0
    if rollout is not None:  # old is the trainer's log-prob under the weights that sampled the rollouts
        weights, tis_metrics = algos.truncated_is(old, rollout, mask, cap)
        loss_mat = loss_mat * weights
        diff = float(tis_metrics.pop("tis_logp_diff_max"))
        metrics = {**metrics, **tis_metrics}
    loss = algos.aggregate(loss_mat, mask, algo.loss_agg, tokens, seqs, max_new_tokens)
    if ref is not None and not algo.kl_as_reward:
        kl_mat = algos.KL_ESTIMATORS[algo.kl_estimator](logp, ref)
        loss = loss + algo.kl_coef * algos.aggregate(kl_mat, mask, algo.loss_agg, tokens, seqs, max_new_tokens)
    m = {k: float(v) for k, v in metrics.items()}
    count = mask.sum().clamp(min=1)
    m["entropy"] = float((ent * mask).sum() / count)
    if ref is not None:
        m["kl"] = float((algos.kl_k3(logp.detach(), ref) * mask).sum() / count)
    m["loss"] = float(loss.detach()) * float(tokens) / max(float(mask.sum()), 1.0)
    return loss, m, diff


# ------------------------------------------------------------------------------------------------------------------
# The run: setup, one step, evaluation, checkpoints; main() strings them together.

@dataclass
class Run:
    """Everything the steps of one run share (one per process)."""
    cfg: RLConfig
    algo: algos.Algorithm
    rank: int
    run_dir: Path
    device: torch.device
    amp: torch.dtype | None       # training autocast dtype; None: fp32
    task: object
    model: torch.nn.Module        # the policy: a Hugging Face model, LoRA-wrapped and / or FSDP-sharded (parallel.py)
    tokenizer: object
    ref_model: torch.nn.Module | None  # with LoRA, the policy itself (parallel.reference disables its adapters)
    gen_model: torch.nn.Module    # what r1lab's engine samples from: the policy, or its plain copy when wrapped
    pool: list                    # training problems
    later_pool: list              # the curriculum's problems, from step cfg.curriculum_step on ([] without one)
    eval_set: list                # held-out problems ([] with eval_instances = 0)
    opt: torch.optim.Optimizer
    account: object               # r1lab.cost.account.RunAccount
    log: object                   # r1lab.tracking.MetricsLogger on rank 0, else None
    backend: object               # the rollout backend (r1lab.engine.backend), synced after every update
    start: int                    # the first step to run (> 0 on resume)
    wall_before: float            # seconds the run spent before this process (on resume)
    t_run: float = 0.0            # time.time() when this process started stepping

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.t_run


def check_room(cfg: RLConfig, model, tokenizer, task, pools: list[list], eval_set: list) -> None:
    """ConfigError, before any step, when the longest training prompt (as rendered) + max_new_tokens, or the longest
    held-out prompt + its budget, pass the model's positions: the engine's own rule (engine.check_room), said now
    instead of by a traceback at the step-0 evaluation or at the step that first samples that prompt.

    subtle: the vLLM backend needs one more position for rollouts with log-probs (truncated IS) under a thinking
    budget (VLLMBackend.check_room); the held-out evaluation asks for no log-probs."""
    from r1lab.config import ConfigError
    from r1lab.engine import SamplingParams
    from r1lab.engine.engine import check_room as room
    from r1lab.prompts import longest_prompt

    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return
    extra = int(cfg.rollout_backend != "engine" and tis_cap(cfg) > 0 and bool(cfg.max_thinking_tokens))
    eval_key = "eval_max_new_tokens" if cfg.eval_max_new_tokens else "max_new_tokens"
    for what, problems, key, budget, more in (
            ("training", [ex for pool in pools for ex in pool], "max_new_tokens", cfg.max_new_tokens, extra),
            ("held-out", eval_set, eval_key, eval_budget(cfg), 0)):
        if not problems:
            continue
        longest = longest_prompt(task, problems, cfg.template, tokenizer)
        try:
            room(longest, SamplingParams(max_new_tokens=budget), limit, more,
                 " and one more for the log-probs of a thinking budget's forced tokens" if more else "")
        except ValueError as e:
            left = limit - longest - more  # what the longest prompt leaves for new tokens
            fix = f"lower {key} to at most {left}" if left > 0 else f"use a shorter template than {cfg.template!r}"
            off = ", or set eval_instances = 0" if what == "held-out" else ""
            raise ConfigError(f"{key} = {budget}: the longest {what} prompt: {e}; {fix}{off}") from None


def setup(cfg: RLConfig) -> Run:
    """Join the world, load the policy (the run's latest checkpoint on resume, else cfg.model), the reference model
    when the algorithm has a KL term, the problems, the optimizer and its state."""
    from r1lab.checkpoint import latest_checkpoint, restore_trainer_state
    from r1lab.cost.account import RunAccount
    from r1lab.engine import make_backend
    from r1lab.model.load import load_model, resolve_checkpoint
    from r1lab.tasks import get_task, parse_knobs
    from r1lab.tasks.common import cached_generate
    from r1lab.tracking import MetricsLogger, check_tracking

    check_tracking(cfg)  # W&B that cannot log: said before the model loads (rl.config.check does not look)
    runtime.init_distributed()
    rank, world = rank_and_world()
    if cfg.prompts_per_step % world:
        raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must divide evenly over {world} ranks")
    runtime.set_threads(cfg.threads)
    algo = algorithm(cfg)
    run_dir = Path(cfg.out_dir)
    device = runtime.device()
    amp = runtime.autocast_dtype(cfg.dtype, device)
    task = get_task(cfg.task)
    knobs = parse_knobs(task, cfg.task_args)
    base_path = resolve_checkpoint(cfg.model)  # a run directory resolves to its latest checkpoint
    resume = latest_checkpoint(run_dir)
    check_resume(cfg, resume)  # the same run, or a clear error: never two runs in one folder
    model, tokenizer = parallel.load_policy(str(resume or base_path), cfg, base=base_path, resume=resume is not None)
    check_template(cfg.template, tokenizer)  # a chat template needs the model's own
    model.to(device)
    ref_model = None
    if algos.needs_reference(algo.kl_coef):
        if cfg.lora_r:
            ref_model = model  # the base is the policy with its adapters disabled: no second copy
        else:
            ref_model = model if resume is None else load_model(str(base_path), torch.float32)[0].to(device)
            ref_model = parallel.shard(copy.deepcopy(ref_model).eval().requires_grad_(False), cfg, amp)
    model = parallel.shard(model, cfg, amp)
    if rank == 0:
        print(format_config(cfg))
        print(f"rl: algorithm {json.dumps(dataclasses.asdict(algo))}; world {world}; device {device}; autocast {amp}; "
              f"from {resume or base_path}")
    if cfg.data:
        pool = task.load(cfg.data, split="train", limit=cfg.train_instances)
        if len(pool) < cfg.prompts_per_step:
            raise ValueError(f"data = {cfg.data}: {len(pool)} problems, fewer than prompts_per_step = "
                             f"{cfg.prompts_per_step}")
    else:
        pool = cached_generate(task, cfg.train_instances, cfg.seed, "train", run_dir, **knobs)
    later_pool = []
    if cfg.curriculum_step:
        later_pool = cached_generate(task, cfg.train_instances, cfg.seed, "train", run_dir,
                                     **parse_knobs(task, cfg.curriculum_task_args))
    eval_set = []
    if cfg.eval_instances and cfg.eval_data:
        eval_set = task.load(cfg.eval_data, split="test", limit=cfg.eval_instances)
    elif cfg.eval_instances:
        eval_set = cached_generate(task, cfg.eval_instances, cfg.seed + 1, "test", run_dir,
                                   **parse_knobs(task, held_out_task_args(cfg)))
    check_room(cfg, model, tokenizer, task, [pool, later_pool], eval_set)
    # fused on CUDA: one kernel for the whole step (1.5B on an H200: 37.5 -> 21.8 ms, dev/LOG.md). subtle: None, not
    # False, elsewhere: torch's default (foreach); fused=False would turn foreach off too
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=cfg.weight_decay, fused=True if device.type == "cuda" else None)
    engine = cfg.rollout_backend == "engine"
    dtype = "bf16" if amp is not None else "fp32"
    account = RunAccount(model.config, device=device.type, dtype=dtype,  # r1lab's engine samples in fp32 (see below)
                         dtype_by_kind={"generate": "fp32" if engine else dtype}, devices=world)
    start, wall_before = 0, 0.0
    if resume is not None:
        state = restore_trainer_state(resume)
        parallel.restore_optimizer(resume, model, opt, state)
        start, wall_before = state["step"], state["wall_s"]
        account.flops_by_kind = dict(state["flops_by_kind"])
    log = MetricsLogger(run_dir, "rl", cfg.wandb and rank == 0, cfg.tensorboard and rank == 0, config_to_dict(cfg),
                        resume_step=start if resume is not None else None,
                        also=("samples.jsonl",)) if rank == 0 else None
    # subtle: r1lab's engine generates in fp32: RL's rollouts (G samples a prompt) read each prompt once only in fp32
    # (SharedPrefix), and bf16 autocast sampled them no faster on CPU (tiny-1m 1.2x slower, tiny-5m the same; 2.1x
    # slower on an H200; dev/LOG.md sessions 26, 30); the log-probs that train the policy come from the training
    # forward pass anyway. vLLM runs in the training dtype (bf16 on GPUs, as everyone runs it), and TIS corrects for
    # the difference.
    rows = cfg.prompts_per_step // world * cfg.samples_per_prompt  # one rollout call; the engine admits them all
    gen_model = parallel.plain_copy(model, device) if parallel.is_wrapped(model) and engine else model
    # vLLM takes the policy itself: it loads parallel.inference_weights (LoRA merged, FSDP gathered) at each sync
    backend = make_backend(cfg.rollout_backend, gen_model, tokenizer, max_batch_size=rows,
                           autocast_dtype=None if engine else amp)
    return Run(cfg, algo, rank, run_dir, device, amp, task, model, tokenizer, ref_model, gen_model, pool, later_pool,
               eval_set, opt, account, log, backend, start, wall_before, t_run=time.time())


def evaluate(run: Run, step: int) -> dict:
    """The held-out set's metrics (rank 0 only), logged as eval/*; {} without a held-out set."""
    from r1lab.evaluation.evaluate import evaluate_model

    if not run.eval_set:
        return {}
    cfg = run.cfg
    run.gen_model.eval()
    # the rollout backend itself when it is not r1lab's engine: vLLM holds the current weights, and a sharded policy
    # cannot run a forward pass on rank 0 alone
    backend = "engine" if cfg.rollout_backend == "engine" else run.backend
    result = evaluate_model(run.gen_model, run.tokenizer, run.task, run.eval_set, template=cfg.template,
                            max_new_tokens=eval_budget(cfg), autocast_dtype=None, samples=cfg.eval_samples,
                            temperature=cfg.eval_temperature, seed=cfg.seed + 7, account=run.account,
                            backend=backend, **thinking_budget(cfg, evaluation=True))
    run.log.log(step, {f"eval/{k}": v for k, v in result.items()},
                console_keys=tuple(f"eval/{k}" for k in ("pass1", "format_rate", "step_acc", "response_len")))
    return result


def rl_step(run: Run, step: int) -> tuple[dict, Rollouts]:
    """Rollouts and one update (mu inner steps); returns the step's metrics and its rollouts."""
    cfg, model = run.cfg, run.model
    t0 = time.time()
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
    for group in run.opt.param_groups:
        group["lr"] = lr
    model.eval()
    pool = run.later_pool if cfg.curriculum_step and step + 1 >= cfg.curriculum_step else run.pool
    roll, stats = collect_rollouts(step, run.backend, run.task, pool, cfg, run.algo, logprobs=tis_cap(cfg) > 0,
                                   tokenizer=run.tokenizer)
    t_gen = time.time() - t0
    before = dict(run.account.flops_by_kind)  # this rank's share is added below, then summed over the ranks
    G = cfg.samples_per_prompt
    for i in range(0, len(roll.sampled), G):  # each group's prompt once; dynamic sampling's dropped groups too
        run.account.add_group(roll.sampled[i][0], [n for _, n in roll.sampled[i:i + G]])
    metrics = rollout_metrics(roll, thinking_budget=bool(cfg.max_thinking_tokens))
    train_metrics, processed = train_on(model, run.ref_model, run.opt, roll, cfg, run.algo, run.amp,
                                        run.tokenizer.pad_token_id, run.device)
    if run.gen_model is not model:
        parallel.sync_copy(run.gen_model, model)  # a collective under FSDP
    run.backend.sync_weights(run.gen_model)  # the next rollouts sample from the updated policy
    for kind, (n_tokens, context_len) in processed.items():
        run.account.add_tokens("train_frozen" if kind == "train" and cfg.lora_r else kind, n_tokens, context_len)
    run.account.sum_over_ranks(before, runtime.all_sum)
    dt = time.time() - t0
    metrics.update(train_metrics)
    metrics.update({"lr": lr, "step_time_s": dt, "gen_time_s": t_gen, "train_time_s": dt - t_gen,
                    "gen_tokens_per_s": metrics["generated_tokens"] / max(t_gen, 1e-9), **stats})
    summary = run.account.summary(run.wall_s())
    metrics.update({k: summary[k] for k in ("flops", "flops_per_s", "mfu")})
    return metrics, roll


CONSOLE_KEYS = ("reward", "acc", "format_rate", "response_len", "response_len_correct", "response_len_wrong",
                "attempts", "step_acc", "kl", "entropy", "clip_frac_low", "clip_frac_high", "grad_norm",
                "gen_tokens_per_s", "step_time_s", "tis_ratio_mean", "tis_logp_diff_max")


def save(run: Run, done: int) -> None:
    """A checkpoint after `done` steps with the optimizer, every RNG and the FLOP account (exact resume); every rank
    calls it."""
    from r1lab.checkpoint import rng_state

    parallel.save_policy(run.run_dir, done, run.model, run.tokenizer, config_to_dict(run.cfg),
                         {"rng": rng_state(), "step": done, "wall_s": run.wall_s(),
                          "flops_by_kind": run.account.flops_by_kind}, run.opt, run.cfg, keep_last=run.cfg.keep_last)


def finish(run: Run, final: dict | None) -> None:
    """The run's cost account and its final evaluation (rank 0). final: the evaluation this session ran at the last
    step, None when the run had finished before (it is read back from metrics.jsonl, not run twice)."""
    from r1lab.cost.account import format_account
    from r1lab.jsonl import read_jsonl

    if final is None:
        rows = [r for r in read_jsonl(run.log.path, bad="torn") if r.get("step") == run.cfg.steps]
        final = {k.removeprefix("eval/"): v for r in rows for k, v in r.items() if k.startswith("eval/")}
    summary = run.account.summary(run.wall_s())
    (run.run_dir / "account.json").write_text(json.dumps(summary, indent=2))
    print(f"rl: done; final eval {json.dumps(final)}\n{format_account(summary)}")
    run.log.close()


def main(cfg: RLConfig) -> Path:
    """Run (or resume) RL; returns the final checkpoint's path."""
    from r1lab.checkpoint import latest_checkpoint

    run = setup(cfg)
    if run.start == 0 and run.rank == 0:
        evaluate(run, 0)
    final = None
    for step in range(run.start, cfg.steps):
        metrics, roll = rl_step(run, step)
        done = step + 1
        if run.rank == 0:
            run.log.log(done, metrics, console_keys=CONSOLE_KEYS)
            if cfg.sample_every and done % cfg.sample_every == 0:
                print_samples(run.run_dir, done, roll, run.task, cfg, run.tokenizer)
            if cfg.eval_every and done % cfg.eval_every == 0 or done == cfg.steps:
                # the final one too, before the last checkpoint: a rerun of a finished run logs no second one
                final = evaluate(run, done)
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
            save(run, done)  # every rank: each writes its optimizer shard under FSDP
    if run.rank == 0:
        finish(run, final)
    barrier()
    return latest_checkpoint(run.run_dir)
