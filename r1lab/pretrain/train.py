"""`r1lab pretrain`: build a small base model from scratch on a synthetic corpus of search traces.

Plain next-token prediction on packed documents (prompt + trace + EOS), loss on the trace only: the prompt's
numbers are random, predicting them teaches nothing. AdamW, linear warm-up then cosine decay, gradient
accumulation, bf16 autocast where the hardware makes it faster (runtime.autocast_dtype). Exact resume: the batch
of step s is a pure function of (seed, s), and the checkpoint holds the optimizer and every RNG, so a resumed run
logs the same numbers.

Shapes: B = device_batch_size sequences of T = seq_len tokens.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab import runtime
from r1lab.config import check_resume, config_to_dict, format_config
from r1lab.pretrain.corpus import CorpusConfig, corpus_document


@dataclass
class PretrainConfig(CorpusConfig):
    """Flat: the corpus knobs (give_up_prob ... verify_prob, r1lab/pretrain/corpus.py explains each) are inherited
    from CorpusConfig, so a recipe sets them by name like every other key."""
    task: str = "countdown"
    out_dir: str = "runs/pretrain"
    model: str = "tiny-3m"               # a preset name, or a Hugging Face path / hub id to continue from
    template: str = "short"              # the corpus's plain prompt template (r1lab.tasks.common.TEMPLATES)
    seed: int = 0
    task_args: str = "min_numbers=3,max_numbers=4,max_number=12,max_target=100"  # the task generator's knobs
    train_instances: int = 20000         # distinct training problems; each step draws fresh traces for them
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


RANGES = {
    "give_up_prob": "[0, 1]", "max_attempts": ">= 1", "max_value": ">= 1", "backtrack_prob": "[0, 1]",
    "greedy_finish_prob": "[0, 1]", "reject_prob": "[0, 1]", "guess_prob": "[0, 1]", "verify_prob": "[0, 1]",
    "train_instances": ">= 1", "steps": ">= 1", "seq_len": ">= 2", "device_batch_size": ">= 1", "grad_accum": ">= 1",
    "lr": "> 0", "min_lr_ratio": "[0, 1]", "warmup_steps": ">= 0", "weight_decay": ">= 0", "grad_clip": "> 0",
    "threads": ">= 0", "eval_every": ">= 0", "eval_instances": ">= 0", "eval_max_new_tokens": ">= 1",
    "save_every": ">= 0", "keep_last": ">= 1",
}


def check(cfg: PretrainConfig) -> None:
    """Every setting is valid before any work starts or any folder is made: ranges, names (task, template, dtype),
    the task's knobs, and the model (a preset, or a checkpoint to continue from). ValueError naming the key."""
    from r1lab.config import ConfigError, check_stage
    from r1lab.model.load import resolve_checkpoint
    from r1lab.model.presets import PRESETS
    from r1lab.pretrain.corpus import CORPORA
    from r1lab.tasks import get_task
    from r1lab.tasks.common import TEMPLATES

    check_stage(cfg, RANGES, {"template": tuple(TEMPLATES)})  # the corpus is plain text: no chat template
    if get_task(cfg.task).NAME not in CORPORA:
        raise ConfigError(f"task = {cfg.task!r}: pretraining writes its corpus from search traces of "
                          f"{' and '.join(CORPORA)} problems only; pretrain on one of them, then train on this "
                          "task with `r1lab sft` or `r1lab rl`")
    if cfg.model not in PRESETS:
        resolve_checkpoint(cfg.model)


def cosine_lr(step: int, total: int, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """Linear warm-up to lr, then cosine decay to lr * min_lr_ratio at `total` (pretrain and sft share it).
    cosine_lr(0, 10, 1.0, 0, 0.0) == 1.0"""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """The pretraining schedule: cosine_lr over cfg.steps."""
    return cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)


def make_batch(step: int, micro: int, cfg: PretrainConfig, task, instances, tokenizer):
    """(input_ids, labels), each (B, T): packed documents, prompt tokens unlabelled (-100).

    A pure function of (seed, step, micro), which makes resume exact.
    """
    rng = random.Random(f"{cfg.seed}/{step}/{micro}")
    need = cfg.device_batch_size * (cfg.seq_len + 1)
    ids, labels = [], []
    while len(ids) < need:
        doc = corpus_document(task, rng.choice(instances), rng, cfg, cfg.template)
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


def build_or_resume(cfg: PretrainConfig, resume: Path | None):
    """(model, tokenizer): the checkpoint to resume, else a fresh preset, else the model to continue from."""
    from r1lab.model.load import load_model, resolve_checkpoint
    from r1lab.model.presets import PRESETS, build_model
    from r1lab.model.tokenizer import build_tokenizer

    if resume is not None:
        print(f"pretrain: resuming from {resume}")
        return load_model(str(resume), torch.float32)  # master weights (load_model says why)
    if cfg.model in PRESETS:
        tokenizer = build_tokenizer()
        return build_model(cfg.model, tokenizer, max_positions=max(1024, cfg.seq_len), seed=cfg.seed), tokenizer
    return load_model(resolve_checkpoint(cfg.model), torch.float32)


def make_optimizer(model, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA (sft), the adapters only
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                             fused=device.type == "cuda")


def train_step(step: int, model, opt, cfg: PretrainConfig, task, instances, tokenizer, device, amp) -> dict:
    """One optimizer step over grad_accum micro-batches: {"loss", "lr", "grad_norm", "tokens"}."""
    lr = lr_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    loss_sum, n_tok = 0.0, 0
    for micro in range(cfg.grad_accum):
        x, y = make_batch(step, micro, cfg, task, instances, tokenizer)
        x, y = x.to(device), y.to(device)
        with runtime.autocast(device, amp):
            logits = model(input_ids=x).logits  # (B, T, vocab)
        # subtle: the loss is a sum over labelled tokens divided by the step's total count, so the gradient
        # does not depend on how the step is split into micro-batches.
        n_step = int((y != -100).sum())
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                 ignore_index=-100, reduction="sum")
        (loss / max(1, n_step) / cfg.grad_accum).backward()
        loss_sum += float(loss.detach())
        n_tok += n_step
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": loss_sum / max(1, n_tok), "lr": lr, "grad_norm": grad_norm,
            "tokens": cfg.grad_accum * cfg.device_batch_size * cfg.seq_len}


def main(cfg: PretrainConfig) -> Path:
    """Run (or resume) pretraining; returns the path of the final checkpoint."""
    from tqdm import tqdm

    from r1lab.checkpoint import latest_checkpoint, restore_trainer_state, rng_state, save_checkpoint
    from r1lab.cost.account import RunAccount, format_account
    from r1lab.evaluation.evaluate import evaluate_model
    from r1lab.model.presets import count_parameters
    from r1lab.tasks import get_task, parse_knobs
    from r1lab.tasks.common import cached_generate
    from r1lab.tracking import MetricsLogger

    runtime.set_threads(cfg.threads)
    run_dir = Path(cfg.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = runtime.device()
    amp = runtime.autocast_dtype(cfg.dtype, device)
    task = get_task(cfg.task)
    resume = latest_checkpoint(run_dir)
    check_resume(cfg, resume)  # the same run, or a clear error: never two runs in one folder
    model, tokenizer = build_or_resume(cfg, resume)
    model.to(device)
    print(format_config(cfg))
    print(f"pretrain: {count_parameters(model) / 1e6:.2f}M parameters, device {device}, autocast {amp}")

    knobs = parse_knobs(task, cfg.task_args)
    instances = cached_generate(task, cfg.train_instances, cfg.seed, "train", run_dir, **knobs)
    eval_set = []
    if cfg.eval_instances:
        eval_set = cached_generate(task, cfg.eval_instances, cfg.seed + 1, "test", run_dir, **knobs)
    opt = make_optimizer(model, cfg, device)
    account = RunAccount(model.config, device=device.type, dtype="bf16" if amp is not None else "fp32")
    start, tokens_seen, wall_before = 0, 0, 0.0  # wall_before: wall time of earlier (interrupted) sessions
    if resume is not None:
        state = restore_trainer_state(resume, opt)
        start, tokens_seen = state["step"], state["tokens_seen"]
        account.flops_by_kind = dict(state.get("flops_by_kind", {}))
        wall_before = state.get("wall_s", 0.0)
    config_dict = config_to_dict(cfg)
    log = MetricsLogger(run_dir, "pretrain", cfg.wandb, cfg.tensorboard, config_dict,
                        resume_step=start if resume is not None else None)

    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="pretrain", unit="step",
               dynamic_ncols=True, mininterval=2.0)
    t_run = time.time()
    for step in bar:
        t0 = time.time()
        out = train_step(step, model, opt, cfg, task, instances, tokenizer, device, amp)
        tokens_seen += out["tokens"]
        account.add_tokens("train", out["tokens"], cfg.seq_len)
        dt = time.time() - t0
        metrics = {"loss": out["loss"], "lr": out["lr"], "grad_norm": out["grad_norm"],
                   "tokens_per_s": out["tokens"] / dt, "tokens_seen": tokens_seen, "step_time_s": dt}
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
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
            save_checkpoint(run_dir, done, model, tokenizer, config_dict,
                            {"optimizer": opt.state_dict(), "rng": rng_state(), "step": done,
                             "tokens_seen": tokens_seen, "flops_by_kind": account.flops_by_kind,
                             "wall_s": wall_before + time.time() - t_run}, keep_last=cfg.keep_last)
    bar.close()
    log.close()
    final = latest_checkpoint(run_dir)
    summary = account.summary(wall_before + time.time() - t_run)
    (run_dir / "account.json").write_text(json.dumps(summary, indent=2))
    print(f"pretrain: done; checkpoint {final}\n{format_account(summary)}")
    return final
