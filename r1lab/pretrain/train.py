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
from r1lab.parallel import check_compile, compile_layers, cross_entropy_sum
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
    torch_compile: bool = False          # the decoder layers and the loss under torch.compile (r1lab/parallel.py)
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
    from r1lab.model.load import CheckpointError, resolve_checkpoint
    from r1lab.model.presets import PRESETS
    from r1lab.pretrain.corpus import CORPORA
    from r1lab.tasks import get_task, knob_defaults, parse_knobs
    from r1lab.tasks.common import TEMPLATES

    check_stage(cfg, RANGES, {"template": tuple(TEMPLATES)})  # the corpus is plain text: no chat template
    check_compile(cfg.torch_compile)
    task = get_task(cfg.task)
    if task.NAME not in CORPORA:
        raise ConfigError(f"task = {cfg.task!r}: pretraining writes its corpus from search traces of "
                          f"{' and '.join(CORPORA)} problems only; pretrain on one of them, then train on this "
                          "task with `r1lab sft` or `r1lab rl`")
    if task.NAME == "countdown":
        # subtle: every step of a countdown trace stays within [0, max_value] (corpus.random_attempt), so a target
        # above max_value is never reached: its traces would all end in failure, teaching the model to fail there.
        max_target = {**knob_defaults(task), **parse_knobs(task, cfg.task_args)}["max_target"]
        if max_target > cfg.max_value:
            raise ConfigError(f"max_value = {cfg.max_value} is below the task's max_target = {max_target} "
                              f"(task_args): every step of a corpus trace stays within [0, max_value], so no trace "
                              f"of a problem with a target above {cfg.max_value} can reach it; raise max_value "
                              f"(--set max_value={max_target}) or lower max_target")
    if cfg.model not in PRESETS:
        try:
            resolve_checkpoint(cfg.model)
        except CheckpointError as e:
            if _looks_like_preset(cfg.model):  # "tiny-2m": say so, not only "not available offline"
                raise ConfigError(f"model = {cfg.model!r}: unknown preset or model; presets: {', '.join(PRESETS)} "
                                  f"(as a model: {str(e).removeprefix(cfg.model + ': ')})") from None
            raise


def _looks_like_preset(name: str) -> bool:
    """Whether a model name that resolves to nothing was meant as a preset: tiny-*, or a bare name (no folder in it,
    not a path that exists). A bare name may be a hub id too ("gpt2"): the caller says both."""
    bare = not any(c in name for c in "/\\") and not name.startswith((".", "~")) and not Path(name).exists()
    return name.startswith("tiny-") or bare


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


def make_problems(task, cfg: PretrainConfig, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training problems, evaluation problems), before the run folder is made: knobs the generator refuses, or that
    cannot give so many distinct problems ("found only 132 of 400"), are a ConfigError and nothing is written.

    subtle: a fresh run generates them in memory (cached_generate would make the folder to write its cache); a run
    folder that exists already (a resume) reads and writes its cache as before. Both are the same rows: generation
    is a pure function of (seed, split, knobs)."""
    from r1lab.config import ConfigError
    from r1lab.tasks import parse_knobs
    from r1lab.tasks.common import cached_generate

    knobs = parse_knobs(task, cfg.task_args)

    def make(key: str, n: int, seed: int, split: str) -> list[dict]:
        try:
            if run_dir.is_dir():
                return cached_generate(task, n, seed, split, run_dir, **knobs)
            return task.generate(n, seed=seed, split=split, **knobs)
        except ValueError as e:
            raise ConfigError(f"task_args = {cfg.task_args!r}, {key} = {n}: {e}") from None

    instances = make("train_instances", cfg.train_instances, cfg.seed, "train")
    eval_set = make("eval_instances", cfg.eval_instances, cfg.seed + 1, "test") if cfg.eval_instances else []
    return instances, eval_set


def eval_positions(cfg: PretrainConfig, task, eval_set: list[dict], tokenizer) -> int:
    """The positions the in-run evaluation needs: its longest prompt + eval_max_new_tokens (0 without problems)."""
    from r1lab.prompts import longest_prompt

    if not eval_set:
        return 0
    longest = longest_prompt(task, eval_set, cfg.template, tokenizer)
    return longest + cfg.eval_max_new_tokens


def build_or_resume(cfg: PretrainConfig, resume: Path | None, task=None, eval_set: list[dict] = ()):
    """(model, tokenizer): the checkpoint to resume, else a fresh preset, else the model to continue from.

    subtle: a preset gets max(1024, seq_len, what the evaluation needs) positions. The shipped recipes' prompts +
    512 new tokens fit in 1024, so their models are as before; the "r1" template's ~625-token countdown prompt
    gets more, instead of the engine refusing at the first evaluation (a run that could then not be resumed)."""
    from r1lab.model.load import load_model, resolve_checkpoint
    from r1lab.model.presets import PRESETS, build_model
    from r1lab.model.tokenizer import build_tokenizer

    if resume is not None:
        print(f"pretrain: resuming from {resume}")
        return load_model(str(resume), torch.float32)  # master weights (load_model says why)
    if cfg.model in PRESETS:
        tokenizer = build_tokenizer()
        positions = max(1024, cfg.seq_len, eval_positions(cfg, task, eval_set, tokenizer))
        return build_model(cfg.model, tokenizer, max_positions=positions, seed=cfg.seed), tokenizer
    return load_model(resolve_checkpoint(cfg.model), torch.float32)


def check_room(cfg: PretrainConfig, model, tokenizer, task, eval_set: list[dict]) -> None:
    """ConfigError, before any work, when the model's positions hold neither seq_len nor the evaluation's longest
    prompt + eval_max_new_tokens (a model to continue from, or a run resumed from before presets got the room)."""
    from r1lab.config import ConfigError

    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None:
        return
    if cfg.seq_len > limit:
        raise ConfigError(f"seq_len = {cfg.seq_len}: the model has only {limit} positions")
    need = eval_positions(cfg, task, eval_set, tokenizer)
    if need > limit:
        room = limit - (need - cfg.eval_max_new_tokens)  # what the longest prompt leaves for new tokens
        fix = f"lower eval_max_new_tokens to at most {room}" if room > 0 else "use a shorter template"
        raise ConfigError(f"eval_max_new_tokens = {cfg.eval_max_new_tokens}: the longest evaluation prompt "
                          f"(template {cfg.template!r}) + {cfg.eval_max_new_tokens} new tokens need {need} positions, "
                          f"and the model has {limit}; {fix}, or set eval_instances = 0")


def make_optimizer(model, cfg: PretrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]  # with LoRA (sft), the adapters only
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                             fused=device.type == "cuda")


def train_step(step: int, model, opt, cfg: PretrainConfig, task, instances, tokenizer, device, amp) -> dict:
    """One optimizer step over grad_accum micro-batches: {"loss", "lr", "grad_norm", "tokens"}.

    Pretraining runs on one process (no distributed set-up), so the step's token count is this process's."""
    lr = lr_at(step, cfg)
    for group in opt.param_groups:
        group["lr"] = lr
    batches = [make_batch(step, micro, cfg, task, instances, tokenizer) for micro in range(cfg.grad_accum)]
    # subtle: the loss is a sum over labelled tokens divided by the step's total count (all micro-batches, known
    # before any forward pass), so the gradient does not depend on how the step is split into micro-batches.
    n_step = sum(int((y != -100).sum()) for _, y in batches)
    loss_sum = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with runtime.autocast(device, amp):
            logits = model(input_ids=x, use_cache=False).logits  # (B, T, vocab); no KV cache to build and drop
        loss = cross_entropy_sum(logits, y, compiled=cfg.torch_compile)
        (loss / max(1, n_step)).backward()
        loss_sum += float(loss.detach())
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": loss_sum / max(1, n_step), "lr": lr, "grad_norm": grad_norm,
            "tokens": cfg.grad_accum * cfg.device_batch_size * cfg.seq_len}


def warn_schedule(cfg: PretrainConfig, resumed_steps: int | None, start: int) -> None:
    """Warnings on stderr about the learning-rate schedule: a warm-up covering every step, and `steps` changed on
    resume (resumed_steps: the schedule's length the run was saved under), which moves the cosine under it."""
    import sys

    if cfg.warmup_steps >= cfg.steps:
        print(f"pretrain: warning: warmup_steps = {cfg.warmup_steps} covers all {cfg.steps} steps: the learning rate "
              f"peaks at {lr_at(cfg.steps - 1, cfg):.3g}, not lr = {cfg.lr:g} (--set warmup_steps=N with "
              f"N < {cfg.steps})", file=sys.stderr)
    if resumed_steps is not None and resumed_steps != cfg.steps:
        before = cosine_lr(start, resumed_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        print(f"pretrain: warning: steps changed on resume ({resumed_steps} -> {cfg.steps}): the cosine schedule is "
              f"recomputed over all {cfg.steps} steps, so the learning rate at step {start} is "
              f"{lr_at(start, cfg):.3g} where the saved run's schedule had {before:.3g} "
              f"({'a jump back up' if lr_at(start, cfg) > before else 'a drop'}), then decays to "
              f"{cfg.lr * cfg.min_lr_ratio:.3g} at step {cfg.steps}", file=sys.stderr)


def main(cfg: PretrainConfig) -> Path:
    """Run (or resume) pretraining; returns the path of the final checkpoint."""
    from tqdm import tqdm

    from r1lab.checkpoint import latest_checkpoint, restore_trainer_state, rng_state, save_checkpoint
    from r1lab.cost.account import RunAccount, format_account
    from r1lab.evaluation.evaluate import evaluate_model
    from r1lab.model.load import saved_config
    from r1lab.model.presets import count_parameters
    from r1lab.tasks import get_task
    from r1lab.tracking import MetricsLogger

    runtime.set_threads(cfg.threads)
    run_dir = Path(cfg.out_dir)
    device = runtime.device()
    amp = runtime.autocast_dtype(cfg.dtype, device)
    task = get_task(cfg.task)
    resume = latest_checkpoint(run_dir)
    check_resume(cfg, resume)  # the same run, or a clear error: never two runs in one folder
    instances, eval_set = make_problems(task, cfg, run_dir)
    model, tokenizer = build_or_resume(cfg, resume, task, eval_set)
    check_room(cfg, model, tokenizer, task, eval_set)
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: bad knobs or a model too short have written nothing
    model.to(device)
    if cfg.torch_compile:
        compile_layers(model)
    print(format_config(cfg))
    print(f"pretrain: {count_parameters(model) / 1e6:.2f}M parameters, device {device}, autocast {amp}")

    opt = make_optimizer(model, cfg, device)
    account = RunAccount(model.config, device=device.type, dtype="bf16" if amp is not None else "fp32")
    start, tokens_seen, wall_before = 0, 0, 0.0  # wall_before: wall time of earlier (interrupted) sessions
    resumed_steps = None  # the schedule's length the resumed run was saved under
    if resume is not None:
        state = restore_trainer_state(resume, opt)
        start, tokens_seen = state["step"], state["tokens_seen"]
        account.flops_by_kind = dict(state.get("flops_by_kind", {}))
        wall_before = state.get("wall_s", 0.0)
        resumed_steps = state.get("schedule_steps", saved_config(resume).get("steps"))  # older: its config's
    warn_schedule(cfg, resumed_steps, start)
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
                             "schedule_steps": cfg.steps,
                             "wall_s": wall_before + time.time() - t_run}, keep_last=cfg.keep_last)
    bar.close()
    log.close()
    final = latest_checkpoint(run_dir)
    summary = account.summary(wall_before + time.time() - t_run)
    (run_dir / "account.json").write_text(json.dumps(summary, indent=2))
    print(f"pretrain: done; checkpoint {final}\n{format_account(summary)}")
    return final
