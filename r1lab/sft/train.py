"""`r1lab sft`: supervised fine-tuning on prompt/completion or chat records (R1's cold start and distillation).

One step: B x grad_accum x world packed sequences of T tokens; next-token cross-entropy on completion (assistant)
tokens only, summed and divided by the step's GLOBAL labelled-token count (all micro-batches, all ranks), so the
update does not depend on how the step is split. AdamW (weight decay on matrices), linear warm-up then cosine decay
to lr * min_lr_ratio, gradient clipping, bf16 autocast where the hardware makes it faster (runtime.autocast_dtype).
Packing (r1lab/sft/data.py) gives each record its own position ids and a block-diagonal causal mask: no attention
across records.

Data order: the records are packed once (a seeded shuffle, first fit), and each epoch visits the N packed sequences in
its own seeded permutation; global sequence i of the run is perm(i // N)[i % N], so the batch of step s is a pure
function of (seed, s) and a resumed run (kill -9 included) logs the same numbers as an unbroken one. Departure from
per-epoch repacking: records packed together stay together in every epoch.

Resume on another number of ranks: the checkpoint keeps the step's global sequence count (per_step = B x grad_accum
x world), and a resumed run must split the same count (B x grad_accum 2 x 2 or 4 x 1 on 1 rank for 2 x 1 on 2), so
every step reads the same sequences and makes the same update, to rounding; device_batch_size and grad_accum may
change for it, and any other total is refused before any work (checkpoints from before per_step was kept: no change).

Shapes: B = device_batch_size sequences of T = seq_len tokens.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab import parallel, runtime
from r1lab.config import check_resume, config_to_dict, format_config
from r1lab.parallel import SCALE_RANGES, ScaleConfig, check_scale
from r1lab.pretrain.train import check_room, cosine_lr, make_optimizer
from r1lab.prompts import check_template
from r1lab.sft.data import IGNORE, block_causal_mask, collate, load_records, pack, shift, tokenize_record


@dataclass
class SFTConfig(ScaleConfig):
    """Inherits fsdp, grad_checkpointing, torch_compile and the lora_* knobs from r1lab.parallel.ScaleConfig."""
    data: str = ""                       # a JSONL file of prompt/completion or messages records
    model: str = "countdown-base"        # a shipped base, an r1lab run or checkpoint, any Hugging Face path / id
    out_dir: str = "runs/sft"
    seed: int = 0
    # held-out evaluation with the task's verifier
    task: str = "countdown"
    task_args: str = "min_numbers=3,max_numbers=4,max_number=12,max_target=100"
    template: str = "short"              # prompt template the evaluation renders (r1lab.prompts.PROMPT_TEMPLATES)
    eval_every: int = 0                  # 0: only after the last step
    eval_instances: int = 100            # 0: no evaluation
    eval_max_new_tokens: int = 512
    # optimisation
    epochs: int = 1                      # used when steps = 0
    steps: int = 0                       # optimizer steps; 0: epochs x packed sequences / sequences per step
    seq_len: int = 512
    device_batch_size: int = 8           # sequences per forward pass
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dtype: str = "auto"                  # auto | bf16 | fp32 (autocast)
    threads: int = 0                     # torch threads; 0 = leave as is
    # checkpoints and logging
    save_every: int = 0                  # 0: only after the last step
    keep_last: int = 2
    wandb: bool = False
    tensorboard: bool = False


RANGES = {
    "epochs": ">= 1", "steps": ">= 0", "seq_len": ">= 2", "device_batch_size": ">= 1", "grad_accum": ">= 1",
    "lr": "> 0", "min_lr_ratio": "[0, 1]", "warmup_steps": ">= 0", "weight_decay": ">= 0", "grad_clip": "> 0",
    "threads": ">= 0", "eval_every": ">= 0", "eval_instances": ">= 0", "eval_max_new_tokens": ">= 1",
    "save_every": ">= 0", "keep_last": ">= 1",
}


def check(cfg: SFTConfig) -> None:
    """Every setting and every record is valid before any work starts or any folder is made: check_settings, then
    each line of the data (SFTDataError naming FILE:LINE)."""
    from r1lab.config import ConfigError

    check_settings(cfg)
    if not cfg.data:
        raise ConfigError("data: no data file (use --data FILE.jsonl or --set data=FILE.jsonl)")
    load_records(cfg.data)


def check_settings(cfg: SFTConfig) -> None:
    """Ranges, names, the task's knobs, the model argument and the trackers: what `r1lab pipeline` checks of its SFT
    stages before their data exists."""
    from r1lab.config import check_stage
    from r1lab.model.load import resolve_checkpoint
    from r1lab.tracking import check_tracking

    check_stage(cfg, {**RANGES, **SCALE_RANGES})
    check_scale(cfg)
    check_tracking(cfg)
    resolve_checkpoint(cfg.model)


BATCH_SPLIT = ("device_batch_size", "grad_accum")  # may change on resume, keeping B x grad_accum x world


def batch_splits(n: int, batch: int, accum: int) -> list[tuple[int, int]]:
    """(device_batch_size, grad_accum) pairs of product n, keeping one of the two given where it divides n.
    batch_splits(4, 2, 1) == [(2, 2), (4, 1)];  batch_splits(3, 2, 2) == [(3, 1)]"""
    out = [(batch, n // batch)] if n % batch == 0 else []
    out += [(n // accum, accum)] if n % accum == 0 else []
    out += [(n, 1)]
    return list(dict.fromkeys(out))[:2]


def check_per_step(cfg: SFTConfig, world: int, per_step: int, where) -> None:
    """ConfigError unless B x grad_accum x world equals the per_step sequences of the run's steps so far: another
    total would re-read or skip data (step s reads sequences s x per_step ...) and change the update."""
    from r1lab.config import ConfigError

    mine = cfg.device_batch_size * cfg.grad_accum * world
    if mine == per_step:
        return
    if per_step % world:
        fix = f"resume on a number of ranks that divides {per_step}"
    else:
        fix = "use " + " or ".join(f"--set device_batch_size={b} --set grad_accum={a}"
                                   for b, a in batch_splits(per_step // world, cfg.device_batch_size, cfg.grad_accum))
    raise ConfigError(f"{where} trained on {per_step} sequences a step, and device_batch_size = "
                      f"{cfg.device_batch_size} x grad_accum = {cfg.grad_accum} x {world} rank(s) = {mine} would "
                      f"change its batch and data order: {fix} (on {world} rank(s))")


def prepare_examples(cfg: SFTConfig, tokenizer) -> list[tuple[list[int], list[int]]]:
    """Every record as (x, y) of at most seq_len tokens. Longer records are cut and their tails are not learnt; the
    run says how many (on rank 0), and how many keep no completion token at all, since a cut completion teaches the
    model to stop nowhere. ConfigError when no record keeps one: the run would train on a loss of 0."""
    from r1lab.config import ConfigError

    examples, cut, empty, need = [], 0, 0, []
    for where, row in load_records(cfg.data):
        tokens, labelled = tokenize_record(row, tokenizer, where)
        cut += len(tokens) - 1 > cfg.seq_len
        x, y = shift(tokens, labelled, cfg.seq_len)
        if all(t == IGNORE for t in y):
            empty += 1
            need += [labelled.index(1)] if 1 in labelled else []  # the seq_len that keeps its first target
        examples.append((x, y))
    if empty == len(examples):
        fix = f"raise seq_len to at least {min(need)}" if need else "raise seq_len"
        raise ConfigError(f"seq_len = {cfg.seq_len}: no record keeps a completion token to learn (every prompt fills "
                          f"the sequence); {fix}")
    if cut and runtime.is_main():
        lost = f", {empty} of them with no completion token left at all" if empty else ""
        print(f"sft: warning: {cut} of {len(examples)} records are longer than seq_len = {cfg.seq_len} tokens; their "
              f"tails are cut and not learnt{lost} (raise seq_len to keep them)", file=sys.stderr)
    return examples


class Schedule:
    """Which packed sequences each (step, rank, micro) trains on: a pure function of (seed, step)."""

    def __init__(self, packs: list[list[int]], seed: int, per_step: int):
        self.packs, self.seed, self.per_step = packs, seed, per_step
        self._perms: dict[int, list[int]] = {}

    def perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            order = list(range(len(self.packs)))
            random.Random(f"{self.seed}/epoch{epoch}").shuffle(order)
            self._perms[epoch] = order
        return self._perms[epoch]

    def groups(self, step: int, first: int, count: int) -> list[list[int]]:
        """The record groups of the step's sequences first .. first+count-1."""
        n = len(self.packs)
        idx = [step * self.per_step + first + j for j in range(count)]
        return [self.packs[self.perm(i // n)[i % n]] for i in idx]


def forward_loss(model, batch: dict, amp, device, compiled: bool = False) -> tuple[torch.Tensor, int]:
    """(sum of the cross-entropy over labelled tokens, their count) for one packed batch of (B, T); compiled: the
    loss under torch.compile, as the layers are with torch_compile."""
    b = {k: v.to(device) for k, v in batch.items()}
    mask = block_causal_mask(b["segment"], model.config._attn_implementation)
    with runtime.autocast(device, amp):
        # use_cache=False: no KV cache to build and drop (and under torch_compile, one graph for every layer)
        logits = model(input_ids=b["input_ids"], attention_mask=mask, position_ids=b["position_ids"],
                       use_cache=False).logits
    loss = parallel.cross_entropy_sum(logits, b["labels"], compiled=compiled, ignore_index=IGNORE)
    return loss, int((b["labels"] != IGNORE).sum())


def train_step(step: int, run) -> dict:
    """One optimizer step over grad_accum micro-batches on each rank: {"loss", "lr", "grad_norm", "tokens", ...}."""
    cfg, model, opt = run.cfg, run.model, run.opt
    rank, world = runtime.rank_and_world()
    lr = cosine_lr(step, run.total_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
    for group in opt.param_groups:
        group["lr"] = lr
    B = cfg.device_batch_size
    batches = [collate(run.schedule.groups(step, (rank * cfg.grad_accum + m) * B, B), run.examples, cfg.seq_len,
                       run.pad_id) for m in range(cfg.grad_accum)]
    # subtle: the divisor is the step's global count of labelled tokens, known before any forward pass.
    n_global, n_records = runtime.all_sum([float(sum(int((b["labels"] != IGNORE).sum()) for b in batches)),
                                           float(sum(int((b["segment"] >= 0).sum()) for b in batches))])
    loss_sum = 0.0
    for batch in batches:
        loss, _ = forward_loss(model, batch, run.amp, run.device, compiled=cfg.torch_compile)
        (loss / max(1.0, n_global)).backward()
        loss_sum += float(loss.detach())
    grad_norm = parallel.reduce_and_clip(model, cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss_global = runtime.all_sum([loss_sum])[0]
    return {"loss": loss_global / max(1.0, n_global), "lr": lr, "grad_norm": grad_norm,
            "tokens": world * cfg.grad_accum * B * cfg.seq_len, "labelled_tokens": int(n_global),
            "record_tokens": int(n_records)}  # tokens counts padding (what the FLOPs cost); record_tokens does not


@dataclass
class Run:
    cfg: SFTConfig
    rank: int
    run_dir: Path
    device: torch.device
    amp: object
    model: torch.nn.Module
    tokenizer: object
    examples: list
    schedule: Schedule
    total_steps: int
    pad_id: int
    task: object
    eval_set: list
    opt: torch.optim.Optimizer
    account: object
    log: object
    start: int
    wall_before: float
    t_run: float = 0.0

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.t_run


def held_out_set(cfg: SFTConfig, task, run_dir: Path) -> list[dict]:
    """The evaluation's problems ([] with eval_instances = 0), on every rank, before the run folder is made.

    subtle: as pretrain.make_problems, a fresh run generates them in memory (cached_generate would make the folder to
    write its cache) and a run folder that exists (a resume) reads and writes its cache; the same rows either way."""
    from r1lab.config import ConfigError
    from r1lab.tasks import parse_knobs
    from r1lab.tasks.common import cached_generate

    if not cfg.eval_instances:
        return []
    try:
        knobs = parse_knobs(task, cfg.task_args)
        if run_dir.is_dir():
            return cached_generate(task, cfg.eval_instances, cfg.seed + 1, "test", run_dir, **knobs)
        return task.generate(cfg.eval_instances, seed=cfg.seed + 1, split="test", **knobs)
    except ValueError as e:
        raise ConfigError(f"task_args = {cfg.task_args!r}, eval_instances = {cfg.eval_instances}: {e}") from None


def setup(cfg: SFTConfig) -> Run:
    """Load the model (the run's latest checkpoint on resume), make the held-out set and check that the model's
    positions hold it and seq_len, tokenize and pack every record, and only then make the run directory, the
    optimizer and the logger."""
    from r1lab.checkpoint import latest_checkpoint, load_trainer_state, set_rng_state
    from r1lab.cost.account import RunAccount
    from r1lab.model.load import resolve_checkpoint
    from r1lab.tasks import get_task
    from r1lab.tracking import MetricsLogger

    runtime.init_distributed()
    rank, world = runtime.rank_and_world()
    runtime.set_threads(cfg.threads)
    run_dir = Path(cfg.out_dir)
    device = runtime.device()
    amp = runtime.autocast_dtype(cfg.dtype, device)
    resume = latest_checkpoint(run_dir)
    state = load_trainer_state(resume) if resume is not None else {}
    # the same run, or a clear error: never two runs in one folder; its steps' global batch kept on any world size
    check_resume(cfg, resume, free=BATCH_SPLIT if "per_step" in state else ())
    if "per_step" in state:
        check_per_step(cfg, world, state["per_step"], run_dir)
    base = resolve_checkpoint(cfg.model)
    model, tokenizer = parallel.load_policy(str(resume or base), cfg, base=base, resume=resume is not None)
    if cfg.eval_instances:
        check_template(cfg.template, tokenizer)  # the evaluation's chat template needs the model's own
    task = get_task(cfg.task)
    eval_set = held_out_set(cfg, task, run_dir)
    # seq_len, and the held-out set's longest prompt + eval_max_new_tokens, within the model's positions: said now,
    # not by the engine at the final evaluation after every step has run
    check_room(cfg, model, tokenizer, task, eval_set)
    eval_set = eval_set if rank == 0 else []  # rank 0 evaluates
    model = parallel.shard(model.to(device), cfg, amp)
    examples = prepare_examples(cfg, tokenizer)
    packs = pack([len(x) for x, _ in examples], cfg.seq_len, cfg.seed)
    per_step = cfg.device_batch_size * cfg.grad_accum * world
    total = cfg.steps or math.ceil(cfg.epochs * len(packs) / per_step)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if rank == 0:
        print(format_config(cfg))
        print(f"sft: {len(examples)} records in {len(packs)} packed sequences of {cfg.seq_len}; {total} steps of "
              f"{per_step} sequences; world {world}; device {device}; autocast {amp}; from {resume or cfg.model}")
        if cfg.warmup_steps >= total:  # a cold start of a few hundred traces is a few steps
            print(f"sft: warning: warmup_steps = {cfg.warmup_steps} covers all {total} steps: the learning rate "
                  f"peaks at {cosine_lr(total - 1, total, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio):.3g}, not lr = "
                  f"{cfg.lr:g} (--set warmup_steps=N with N < {total})", file=sys.stderr)
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad record or model has written nothing
    opt = make_optimizer(model, cfg, device)
    account = RunAccount(model.config, device=device.type, dtype="bf16" if amp is not None else "fp32",
                         dtype_by_kind={"generate": "fp32"},  # its held-out evaluation samples in fp32
                         devices=world)  # train_step counts every rank's tokens
    start, wall_before = 0, 0.0
    if resume is not None:
        set_rng_state(state["rng"])
        parallel.restore_optimizer(resume, model, opt, state)
        start, wall_before = state["step"], state["wall_s"]
        account.flops_by_kind = dict(state["flops_by_kind"])
    log = MetricsLogger(run_dir, "sft", cfg.wandb, cfg.tensorboard, config_to_dict(cfg),
                        resume_step=start if resume is not None else None) if rank == 0 else None
    return Run(cfg, rank, run_dir, device, amp, model, tokenizer, examples, Schedule(packs, cfg.seed, per_step), total,
               pad_id, task, eval_set, opt, account, log, start, wall_before, t_run=time.time())


def evaluate(run: Run) -> dict:
    """The held-out problems solved, by the task's verifier; every rank calls it (a wrapped policy is copied into a
    plain model first, a collective under FSDP), rank 0 evaluates; {} elsewhere and without a held-out set."""
    from r1lab.evaluation.evaluate import evaluate_model

    if not run.cfg.eval_instances:
        return {}
    model = parallel.plain_copy(run.model, run.device) if parallel.is_wrapped(run.model) else run.model
    if not run.eval_set:
        return {}
    model.eval()
    out = evaluate_model(model, run.tokenizer, run.task, run.eval_set, template=run.cfg.template,
                         max_new_tokens=run.cfg.eval_max_new_tokens, autocast_dtype=None, seed=run.cfg.seed + 7,
                         account=run.account)
    return {f"eval/{k}": v for k, v in out.items()}


def save(run: Run, done: int) -> None:
    from r1lab.checkpoint import rng_state

    parallel.save_policy(run.run_dir, done, run.model, run.tokenizer, config_to_dict(run.cfg),
                         {"rng": rng_state(), "step": done, "wall_s": run.wall_s(), "per_step": run.schedule.per_step,
                          "flops_by_kind": run.account.flops_by_kind}, run.opt, run.cfg, keep_last=run.cfg.keep_last)


CONSOLE_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "eval/pass1", "eval/format_rate")


def main(cfg: SFTConfig) -> Path:
    """Run (or resume) SFT; returns the final checkpoint's path."""
    from r1lab.checkpoint import latest_checkpoint
    from r1lab.cost.account import format_account

    run = setup(cfg)
    run.model.train()
    for step in range(run.start, run.total_steps):
        t0 = time.time()
        out = train_step(step, run)
        run.account.add_tokens("train_frozen" if cfg.lora_r else "train", out["tokens"], cfg.seq_len)
        done = step + 1
        dt = time.time() - t0
        metrics = {**out, "tokens_per_s": out["tokens"] / dt, "step_time_s": dt}
        last = done == run.total_steps
        if last:
            save(run, done)  # subtle: before the final evaluation, so that one failing never loses the trained weights
        if cfg.eval_instances and ((cfg.eval_every and done % cfg.eval_every == 0) or last):
            metrics.update(evaluate(run))  # every rank: a sharded policy is gathered for it
            run.model.train()
        if run.rank == 0:
            summary = run.account.summary(run.wall_s())
            metrics.update({k: summary[k] for k in ("flops", "flops_per_s", "mfu")})
            run.log.log(done, metrics, console_keys=CONSOLE_KEYS, echo=done % 10 == 0 or last)
        if cfg.save_every and done % cfg.save_every == 0 and not last:
            save(run, done)  # every rank: each writes its optimizer shard under FSDP
    if run.rank == 0:
        summary = run.account.summary(run.wall_s())
        (run.run_dir / "account.json").write_text(json.dumps(summary, indent=2))
        print(f"sft: done; checkpoint {latest_checkpoint(run.run_dir)}\n{format_account(summary)}")
        run.log.close()
    runtime.barrier()
    return latest_checkpoint(run.run_dir)
