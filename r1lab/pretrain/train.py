"""`r1lab pretrain`: build a small base model from scratch on a synthetic corpus of search traces.

Plain next-token prediction on packed documents (prompt + trace + EOS), loss on the trace only: the prompt's
numbers are random, predicting them teaches nothing. AdamW, linear warm-up then cosine decay, gradient
accumulation, bf16 autocast on CPUs that support it. Exact resume: the batch of step s is a pure function of
(seed, s), and the checkpoint holds the optimizer and every RNG, so a resumed run logs the same numbers.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab.config import config_to_dict, format_config, parse_task_args
from r1lab.pretrain.corpus import ArithmeticTraceConfig, CountdownTraceConfig, corpus_document


@dataclass
class PretrainConfig:
    task: str = "countdown"
    out_dir: str = "runs/pretrain"
    model: str = "tiny-3m"               # a preset name, or a Hugging Face path / hub id to continue from
    template: str = "short"              # plain prompt template (r1lab.tasks.common.TEMPLATES)
    seed: int = 0
    task_args: str = "min_numbers=3,max_numbers=4,max_number=12,max_target=100"  # the task generator's knobs
    # corpus (r1lab/pretrain/corpus.py explains each knob)
    train_instances: int = 20000         # distinct training problems; each step draws fresh traces for them
    give_up_prob: float = 0.2            # countdown
    max_attempts: int = 16
    max_value: int = 200
    backtrack_prob: float = 0.15
    verify_prob: float = 0.25
    greedy_finish_prob: float = 0.5
    reject_prob: float = 0.5
    guess_prob: float = 0.3              # arithmetic
    arith_verify_prob: float = 0.25
    # optimisation
    steps: int = 2000
    seq_len: int = 512
    device_batch_size: int = 16          # sequences per forward pass
    grad_accum: int = 2
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dtype: str = "auto"                  # auto | bf16 | fp32 (autocast)
    threads: int = 0                     # torch threads; 0 = leave as is
    # evaluation and checkpoints
    eval_every: int = 500                # 0: only after the last step
    eval_instances: int = 200
    eval_max_new_tokens: int = 512
    save_every: int = 250                # 0: only after the last step
    keep_last: int = 2
    wandb: bool = False
    tensorboard: bool = False


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def trace_config(cfg: PretrainConfig):
    if cfg.task == "arithmetic":
        return ArithmeticTraceConfig(guess_prob=cfg.guess_prob, verify_prob=cfg.arith_verify_prob)
    return CountdownTraceConfig(give_up_prob=cfg.give_up_prob, max_attempts=cfg.max_attempts, max_value=cfg.max_value,
                                backtrack_prob=cfg.backtrack_prob, verify_prob=cfg.verify_prob,
                                greedy_finish_prob=cfg.greedy_finish_prob, reject_prob=cfg.reject_prob)


def make_batch(step: int, micro: int, cfg: PretrainConfig, task, instances, tokenizer):
    """(input_ids, labels) of shape (device_batch_size, seq_len): packed documents, prompt tokens unlabelled.

    A pure function of (seed, step, micro), which makes resume exact.
    """
    rng = random.Random(f"{cfg.seed}/{step}/{micro}")
    need = cfg.device_batch_size * (cfg.seq_len + 1)
    traces = trace_config(cfg)
    ids, labels = [], []
    while len(ids) < need:
        doc = corpus_document(task, rng.choice(instances), rng, traces, cfg.template)
        if doc is None:
            continue
        prompt, completion = doc
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids += p + c
        labels += [-100] * len(p) + c
    x = torch.tensor(ids[:need]).view(cfg.device_batch_size, cfg.seq_len + 1)
    y = torch.tensor(labels[:need]).view(cfg.device_batch_size, cfg.seq_len + 1)
    return x[:, :-1].contiguous(), y[:, 1:].contiguous()


def main(cfg: PretrainConfig) -> Path:
    """Run (or resume) pretraining; returns the path of the final checkpoint."""
    from tqdm import tqdm

    from r1lab import runtime
    from r1lab.cost.account import RunAccount, format_account
    from r1lab.checkpoint import latest_checkpoint, restore_trainer_state, rng_state, save_checkpoint
    from r1lab.evaluation.evaluate import evaluate_model
    from r1lab.model.load import load_model
    from r1lab.model.presets import PRESETS, build_model, count_parameters
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.tasks import get_task
    from r1lab.tasks.common import cached_generate
    from r1lab.tracking import MetricsLogger

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = runtime.device()
    amp = runtime.autocast_dtype(cfg.dtype, device)
    task = get_task(cfg.task)
    resume = latest_checkpoint(run_dir)
    if resume is not None:
        model, tokenizer = load_model(str(resume))
        print(f"pretrain: resuming from {resume}")
    elif cfg.model in PRESETS:
        tokenizer = build_tokenizer()
        model = build_model(cfg.model, tokenizer, max_positions=max(1024, cfg.seq_len), seed=cfg.seed)
    else:
        model, tokenizer = load_model(cfg.model)
    model.to(device)
    print(format_config(cfg))
    n_params = count_parameters(model)
    print(f"pretrain: {n_params / 1e6:.2f}M parameters, device {device}, autocast {amp}")

    knobs = parse_task_args(cfg.task_args)
    instances = cached_generate(task, cfg.train_instances, cfg.seed, "train", run_dir, **knobs)
    eval_set = []
    if cfg.eval_instances:
        eval_set = cached_generate(task, cfg.eval_instances, cfg.seed + 1, "test", run_dir, **knobs)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    start, tokens_seen = 0, 0
    if resume is not None:
        state = restore_trainer_state(resume, opt)
        start, tokens_seen = state["step"], state["tokens_seen"]
    log = MetricsLogger(run_dir, "pretrain", cfg.wandb, cfg.tensorboard, config_to_dict(cfg),
                        resume_step=start if resume is not None else None)
    account = RunAccount(model.config, device=device.type, dtype="bf16" if amp is not None else "fp32")
    wall_before = 0.0  # wall time of earlier (interrupted) sessions of this run
    if resume is not None:
        account.flops_by_kind = dict(state.get("flops_by_kind", {}))
        wall_before = state.get("wall_s", 0.0)
    config_dict = config_to_dict(cfg)

    def save(step):
        save_checkpoint(run_dir, step, model, tokenizer, config_dict,
                        {"optimizer": opt.state_dict(), "rng": rng_state(), "step": step, "tokens_seen": tokens_seen,
                         "flops_by_kind": account.flops_by_kind, "wall_s": wall_before + time.time() - t_run},
                        keep_last=cfg.keep_last)

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="pretrain", unit="step",
               dynamic_ncols=True, mininterval=2.0)
    t_run = time.time()
    for step in bar:
        t0 = time.time()
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        loss_sum, n_tok = 0.0, 0
        for micro in range(cfg.grad_accum):
            x, y = make_batch(step, micro, cfg, task, instances, tokenizer)
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(input_ids=x).logits
            # subtle: the loss is a sum over labelled tokens divided by the step's total count, so the gradient
            # does not depend on how the step is split into micro-batches.
            n_step = int((y != -100).sum())
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                     ignore_index=-100, reduction="sum")
            (loss / max(1, n_step) / cfg.grad_accum).backward()
            loss_sum += float(loss.detach())
            n_tok += n_step
            tokens_seen += x.numel()
            account.add_tokens("train", x.numel(), cfg.seq_len)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.time() - t0
        tok_s = cfg.grad_accum * cfg.device_batch_size * cfg.seq_len / dt
        metrics = {"loss": loss_sum / max(1, n_tok), "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tok_s,
                   "tokens_seen": tokens_seen, "step_time_s": dt}
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tok_s:.0f}")
        done = step + 1
        if cfg.eval_instances and ((cfg.eval_every and done % cfg.eval_every == 0) or done == cfg.steps):
            model.eval()
            metrics.update(evaluate_model(model, tokenizer, task, eval_set, template=cfg.template,
                                          max_new_tokens=cfg.eval_max_new_tokens, autocast_dtype=amp,
                                          account=account))
            model.train()
        if done % 10 == 0 or done == cfg.steps:
            summary = account.summary(wall_before + time.time() - t_run)
            metrics.update({k: summary[k] for k in ("flops", "flops_per_s", "mfu")})
        log.log(done, metrics, console_keys=("loss", "lr", "tokens_per_s", "pass1", "format_rate", "step_acc"),
                echo=done % 50 == 0 or "pass1" in metrics)
        if (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
            save(done)
    bar.close()
    log.close()
    final = latest_checkpoint(run_dir)
    summary = account.summary(wall_before + time.time() - t_run)
    (run_dir / "account.json").write_text(json.dumps(summary, indent=2))
    print(f"pretrain: done; checkpoint {final}\n{format_account(summary)}")
    return final
