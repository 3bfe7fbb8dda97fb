"""The RL stage's config (RLConfig: one flat dataclass, recipe keys and --set overrides), its checks, and the
algorithm it names. The loop that runs it is r1lab/rl/train.py."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from r1lab.parallel import SCALE_RANGES, ScaleConfig, check_scale
from r1lab.rl import algos
from r1lab.rl.rollouts import tis_cap
from r1lab.tasks.format import THINK_END


@dataclass
class RLConfig(ScaleConfig):
    """Inherits fsdp, grad_checkpointing, torch_compile and the lora_* knobs from r1lab.parallel.ScaleConfig."""
    task: str = "countdown"
    task_args: str = ""                  # knobs for the task's generator, "key=value,key=value"
    eval_task_args: str | None = None    # the held-out set's knobs when they differ (a curriculum); None: task_args
    curriculum_task_args: str = ""       # a curriculum: from step curriculum_step on, train on problems drawn with
    curriculum_step: int = 0             # these knobs instead (e.g. 3 numbers, then the 3-4 mix); 0: none
    data: str = ""                       # a dataset task's training problems (gsm8k, math): a JSONL / Parquet file,
                                         # a folder or a hub id (its train split); empty: the task's generator
    eval_data: str = ""                  # held-out problems from a file, folder or hub id (its test split)
    model: str = "countdown-base"        # a shipped base name, an r1lab checkpoint or any Hugging Face path / id
    out_dir: str = "runs/rl"
    template: str = "short"              # prompt template (r1lab.prompts: short, r1, or the model's chat, chat-r1)
    rollout_backend: str = "engine"      # who samples the rollouts: r1lab.engine.BACKENDS ("engine", "vllm")
    tis_cap: float | None = None         # truncated IS cap against the rollout log-probs; None: 2 with vllm, 0 (off)
                                         # with the engine (rollouts.tis_cap); 0 turns it off
    seed: int = 0
    train_instances: int = 2000          # countdown 3-4 numbers <= 12 has only ~2,400 3-number train problems
    # algorithm: a preset from r1lab.rl.algos.PRESETS; any field below left unset takes the preset's value
    preset: str = "grpo"
    advantage: str | None = None
    policy_loss: str | None = None
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
    overlong_penalty: float | None = None
    length_reward: float | None = None
    length_reward_wrong: bool | None = None
    # batch and optimisation
    steps: int = 60
    prompts_per_step: int = 8
    samples_per_prompt: int = 8
    mu: int = 1                          # inner updates per rollout batch
    device_batch_size: int = 8           # sequences per forward pass (8 beat 32 and 64 on a CPU: dev/LOG.md, s. 25)
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # sampling and reward
    temperature: float = 1.0             # rollouts sample at it, and the loss reads log-probs of logits / temperature
    top_p: float = 1.0
    max_new_tokens: int = 384
    # a thinking budget for rollouts: after max_thinking_tokens the engine forces thinking_end (ending with
    # "</think>") and the model answers; forced tokens are not trained. 0: off
    max_thinking_tokens: int = 0
    thinking_end: str = THINK_END
    accuracy_weight: float = 1.0
    format_weight: float = 0.1
    strict_reward: bool = False          # the reasoning must support the answer with correct arithmetic
    # evaluation, logging, checkpoints
    eval_every: int = 0                  # 0: evaluate only before the first and after the last step
    eval_instances: int = 200
    eval_samples: int = 1
    eval_temperature: float = 1.0
    eval_max_new_tokens: int = 0         # the held-out evaluation's budget (r1lab demo's too); 0: max_new_tokens
    eval_max_thinking_tokens: int = 0    # its thinking budget (r1lab demo's too); 0: max_thinking_tokens
    sample_every: int = 10               # print a few decoded samples every N steps
    save_every: int = 20                 # 0: only after the last step
    keep_last: int = 2
    dtype: str = "auto"
    threads: int = 0
    wandb: bool = False
    tensorboard: bool = False


def eval_budget(cfg: RLConfig) -> int:
    """The held-out evaluation's max_new_tokens: eval_max_new_tokens when set, else the training budget."""
    return cfg.eval_max_new_tokens or cfg.max_new_tokens


def held_out_task_args(cfg: RLConfig) -> str:
    """The held-out set's generator knobs: eval_task_args when the recipe sets them, else the training ones."""
    return cfg.task_args if cfg.eval_task_args is None else cfg.eval_task_args


RANGES = {
    "train_instances": ">= 1", "max_sampling_rounds": ">= 1", "steps": ">= 1", "prompts_per_step": ">= 1",
    "samples_per_prompt": ">= 2", "mu": ">= 1", "device_batch_size": ">= 1", "lr": "> 0", "warmup_steps": ">= 0",
    "weight_decay": ">= 0", "grad_clip": "> 0", "temperature": "> 0", "top_p": "(0, 1]", "max_new_tokens": ">= 1",
    "eval_every": ">= 0", "eval_instances": ">= 0", "eval_samples": ">= 1", "eval_temperature": ">= 0",
    "eval_max_new_tokens": ">= 0", "max_thinking_tokens": ">= 0", "eval_max_thinking_tokens": ">= 0",
    "sample_every": ">= 0", "save_every": ">= 0", "keep_last": ">= 1", "threads": ">= 0", "curriculum_step": ">= 0",
    "clip_low": "[0, 1)", "clip_high": ">= 0", "clip_c": "> 1", "kl_coef": ">= 0", "overlong_cache_frac": "[0, 1]",
    "overlong_penalty": ">= 0", "length_reward": ">= 0", "tis_cap": ">= 0",
}


def check(cfg: RLConfig) -> None:
    """Every setting is valid before anything loads or any folder is made: ranges (every advantage is
    group-relative, so a group needs two samples), names (task, template, algorithm, rollout backend and that its
    library is installed, dtype), the task's knobs, a training pool that holds a step's prompts, and the model
    argument. ValueError naming the key."""
    from r1lab.config import ConfigError, check_stage
    from r1lab.engine import BACKENDS, check_backend
    from r1lab.model.load import resolve_checkpoint

    check_stage(cfg, {**RANGES, **SCALE_RANGES}, {"rollout_backend": tuple(BACKENDS)},
                knob_keys=("task_args", "eval_task_args", "curriculum_task_args"))
    check_scale(cfg)
    try:
        check_backend(cfg.rollout_backend)
    except ValueError as e:
        raise ConfigError(f"rollout_backend = {cfg.rollout_backend!r}: {e}") from None
    if cfg.tis_cap is not None and 0 < cfg.tis_cap < 1:
        raise ConfigError(f"tis_cap = {cfg.tis_cap!r}: must be 0 (off) or at least 1 (a cap below 1 would shrink "
                          f"every token's weight)")
    if cfg.temperature != 1.0 and tis_cap(cfg) > 0:
        raise ConfigError(f"temperature = {cfg.temperature} with truncated IS (tis_cap {tis_cap(cfg)}): the rollout "
                          f"backend's log-probs are of the raw distribution, the loss's of logits / temperature; "
                          f"set tis_cap = 0 or temperature = 1")
    if cfg.lora_r and cfg.lora_dropout and tis_cap(cfg) > 0:
        raise ConfigError(f"lora_dropout = {cfg.lora_dropout} with truncated IS (tis_cap {tis_cap(cfg)}): the "
                          f"trainer's log-probs (with dropout) would be compared with the rollout backend's "
                          f"(without), so the weights measure dropout noise; set lora_dropout = 0 or tis_cap = 0")
    if not cfg.thinking_end.endswith(THINK_END):
        raise ConfigError(f"thinking_end = {cfg.thinking_end!r}: must end with {THINK_END!r}")
    algorithm(cfg)
    check_problem_sources(cfg)
    if bool(cfg.curriculum_step) != bool(cfg.curriculum_task_args):
        raise ConfigError(f"curriculum_step = {cfg.curriculum_step} and curriculum_task_args = "
                          f"{cfg.curriculum_task_args!r}: a curriculum needs both (the step it starts and its knobs)")
    if cfg.curriculum_step and cfg.data:
        raise ConfigError("curriculum_task_args: a curriculum draws from the task's generator; data is set")
    if cfg.prompts_per_step > cfg.train_instances:
        raise ConfigError(f"prompts_per_step = {cfg.prompts_per_step}: more than the training pool holds "
                          f"(train_instances = {cfg.train_instances})")
    resolve_checkpoint(cfg.model)


def check_problem_sources(cfg: RLConfig) -> None:
    """A dataset task (no generator) needs `data`, and `eval_data` unless eval_instances = 0; a local path given for
    either must exist. Hub ids are loaded (and so checked) in setup."""
    from r1lab.config import ConfigError
    from r1lab.tasks import get_task
    from r1lab.tasks.common import _looks_local

    generated = hasattr(get_task(cfg.task), "generate")
    if not generated and not cfg.data:
        raise ConfigError(f"task = {cfg.task!r} is a dataset: set data = FILE, FOLDER or HUB_ID (its train split), e.g. "
                          f"--set data=openai/gsm8k")
    if not generated and cfg.eval_instances and not cfg.eval_data:
        raise ConfigError(f"task = {cfg.task!r} is a dataset: set eval_data = FILE, FOLDER or HUB_ID for the held-out "
                          f"evaluation, or eval_instances = 0")
    for key in ("data", "eval_data"):
        value = getattr(cfg, key)
        if value and not Path(value).exists() and _looks_local(value):
            raise ConfigError(f"{key} = {value!r}: no such file or folder")
    if cfg.data and cfg.data == cfg.eval_data and Path(cfg.data).is_file():
        raise ConfigError(f"data and eval_data are the same file ({cfg.data}): the held-out set would be trained on")


def algorithm(cfg: RLConfig) -> algos.Algorithm:
    """The preset's settings with every config field that is set (not None) on top; a ValueError for bad names.
    KL folded into the rewards takes k1 unless kl_estimator is set (REINFORCE++'s, OpenRLHF's): k1 in the reward
    follows KL's gradient, while the presets' k3 there follows KL(pi||ref) - KL(ref||pi), which nearly cancels."""
    names = [f.name for f in dataclasses.fields(algos.Algorithm)]
    overrides = {k: getattr(cfg, k) for k in names if getattr(cfg, k) is not None}
    if overrides.get("kl_as_reward") and "kl_estimator" not in overrides:
        overrides["kl_estimator"] = "k1"
    return algos.preset(cfg.preset, **overrides)


# ------------------------------------------------------------------------------------------------------------------
# One update.
