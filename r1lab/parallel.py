"""Training past one plain model: FSDP2 sharding, LoRA adapters through peft, and the weights rollouts see.

    model = load_policy(path_or_resume, cfg)            # the Hugging Face model, LoRA-wrapped when cfg.lora_r > 0
    policy = shard(model, cfg, amp)                      # fully_shard per decoder layer and at the root when cfg.fsdp
    weights = inference_weights(policy)                  # [(Hugging Face name, full tensor)], LoRA merged in
    with reference(policy): ref_logp = ...               # LoRA: the base itself, adapters disabled (no second copy)

Every stage that trains (rl, sft) inherits ScaleConfig, so a recipe or `--set` turns these on by name:
    fsdp = true               FSDP2 over the ranks torchrun / accelerate launch started (one works too)
    grad_checkpointing = true recompute each layer's activations in backward
    torch_compile = true      torch.compile each decoder layer for the training passes (GPUs; fuses norms, RoPE, SiLU)
    lora_r = 16               LoRA adapters of rank 16 (lora_alpha, lora_dropout, lora_targets), only they train

Data parallel without fsdp (small models) keeps r1lab's own all-reduce (runtime.sum_gradients), not torch's
DistributedDataParallel: a step accumulates many micro-batches and reduces once, after the last (DDP would need
no_sync() on all but one and hides the one reduction that matters inside backward hooks); the loss is already divided
by the step's GLOBAL token count, so the reduction is a plain sum, exact and visible in train_on. DDP's overlap of
communication with backward pays off when gradients are large and the network slow, which is FSDP's ground here.

FSDP2 (torch.distributed.fsdp.fully_shard): parameters, gradients and Adam state are sharded over the ranks (a
DTensor per parameter), each decoder layer all-gathered for its forward and backward and resharded after. Mixed
precision: bf16 parameters and compute where the config's dtype gives bf16, fp32 gradient reduction, fp32 master
weights and optimizer state. subtle: fully_shard divides the reduced gradients by the world size (a mean); r1lab's
losses are already divided by the global counts, so the divide factor is set to 1 (a sum), as runtime.sum_gradients
does, and a 2-rank run equals a 1-rank run (tests/test_parallel.py).

Checkpoints stay Hugging Face directories written by rank 0 (checkpoint.save_checkpoint); under FSDP every rank also
writes its own shard of the optimizer state with torch.distributed.checkpoint into CKPT/optim/ (a folder every rank
can reach: one node, or a shared file system), read back on resume with any number of ranks. With LoRA a checkpoint
holds the adapter (adapter_model.safetensors, adapter_config.json naming the base), and with lora_save_merged the
merged model as well, in CKPT/merged/ (a plain Hugging Face directory, for vLLM or any other tool);
model.load.load_model reads either, merging an adapter for inference.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import types
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class ScaleConfig:
    """Knobs of sharding and adapters, inherited by the training stages' configs (flat keys like any other)."""
    fsdp: bool = False                   # FSDP2 (fully_shard) of the policy and reference model over the ranks
    grad_checkpointing: bool = False     # recompute activations in backward (less memory, ~1/3 more compute)
    torch_compile: bool = False          # each decoder layer's forward under torch.compile while gradients are on
    lora_r: int = 0                      # LoRA rank (peft); 0: every weight trains
    lora_alpha: float = 32.0             # LoRA scale alpha / r
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"     # peft target_modules: "all-linear", or names such as "q_proj,k_proj,v_proj"
    lora_save_merged: bool = False       # LoRA checkpoints also hold the merged model, in CKPT/merged/


SCALE_RANGES = {"lora_r": ">= 0", "lora_alpha": "> 0", "lora_dropout": "[0, 1)"}


def check_scale(cfg: ScaleConfig) -> None:
    """ConfigError, one line, when a knob asks for what this install cannot do (peft missing, torch without FSDP2)."""
    from r1lab.config import ConfigError

    if cfg.lora_r and importlib.util.find_spec("peft") is None:
        raise ConfigError(f"lora_r = {cfg.lora_r}: LoRA needs peft, which is not installed: pip install 'r1lab[lora]'")
    if cfg.fsdp and not _has_fully_shard():
        raise ConfigError("fsdp = true needs torch.distributed.fsdp.fully_shard (torch >= 2.6)")
    if not cfg.lora_r and cfg.lora_save_merged:
        raise ConfigError("lora_save_merged = true needs LoRA (lora_r > 0)")
    check_compile(cfg.torch_compile)


def check_compile(torch_compile: bool) -> None:
    """ConfigError when torch_compile is asked on a CPU without a C++ compiler (inductor builds its kernels with one)."""
    from r1lab.config import ConfigError

    if torch_compile and not torch.cuda.is_available() and not (shutil.which("c++") or shutil.which("g++")):
        raise ConfigError("torch_compile = true on the CPU needs a C++ compiler (inductor builds its kernels with it): "
                          "install g++, or leave torch_compile off")


def _has_fully_shard() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------------------------
# LoRA

def is_lora(model) -> bool:
    return hasattr(model, "peft_config")


def is_wrapped(model) -> bool:
    """LoRA-wrapped or FSDP-sharded: not a plain model that r1lab's engine can sample from, or rank 0 run alone."""
    return is_lora(model) or is_sharded(model)


def base_param_name(name: str) -> str:
    """A peft model's parameter name -> the base architecture's:
    base_param_name("base_model.model.model.layers.0.q_proj.base_layer.weight") == "model.layers.0.q_proj.weight" """
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def add_lora(model, cfg: ScaleConfig, base_name: str, seed: int = 0):
    """`model` wrapped by peft with fresh adapters (A random from `seed`, B = 0, so the wrapped model computes what the
    base does); only the adapters require grad."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [t.strip() for t in cfg.lora_targets.split(",")]
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    # what adapter_config.json records as the base: a local folder by its absolute path, so that the checkpoint loads
    # from any working directory (a hub id as it is)
    model.name_or_path = str(Path(base_name).resolve()) if Path(base_name).is_dir() else base_name
    try:
        with torch.random.fork_rng(devices=[]):  # lora_A's random init: the same in every run and on every rank
            torch.manual_seed(seed)
            return get_peft_model(model, lcfg)
    except ValueError as e:  # a target that names no module
        from r1lab.config import ConfigError
        raise ConfigError(f"lora_targets = {cfg.lora_targets!r}: {str(e).splitlines()[0]}") from None


def load_policy(path: str, cfg: ScaleConfig, base: str, resume: bool = False):
    """(model, tokenizer) to train: `path` is the base to start from, or the run's latest checkpoint on resume.

    With LoRA, the run's own adapter checkpoint (resume) is loaded onto its base with the adapter trainable; a base
    gets fresh adapters, and a base that is itself an adapter directory is merged first (new adapters on top of the
    merged model). Without LoRA, an adapter directory is loaded merged (training every weight from there)."""
    from r1lab.model.load import adapter_base, is_adapter_dir, load_model, resolve_checkpoint

    if cfg.lora_r and resume and is_adapter_dir(path):
        from peft import PeftModel

        model, tokenizer = load_model(resolve_checkpoint(adapter_base(path)))  # the base, merged if it is an adapter
        model = PeftModel.from_pretrained(model, path, is_trainable=True)
    else:  # every weight trains: float32 master weights, whatever the checkpoint stores (load_model says why)
        model, tokenizer = load_model(path, None if cfg.lora_r else torch.float32)
        if cfg.lora_r:
            model = add_lora(model, cfg, base, seed=getattr(cfg, "seed", 0))
    if cfg.torch_compile:
        compile_layers(model)
    if cfg.grad_checkpointing:
        # subtle: non-reentrant checkpointing; the reentrant kind needs an input that requires grad, which frozen
        # embeddings under LoRA do not give
        enable_checkpointing(model)
        model.config.use_cache = False
    return model, tokenizer


def enable_checkpointing(model) -> None:
    """Non-reentrant activation (gradient) checkpointing, under the name this transformers gives it: recent releases
    renamed gradient_checkpointing_enable to activation_checkpointing_enable (the old name warns)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing(model) -> bool:
    """Whether the model recomputes its layers in backward (is_activation_checkpointing, is_gradient_checkpointing
    before the rename)."""
    on = getattr(model, "is_activation_checkpointing", None)
    return bool(on if on is not None else getattr(model, "is_gradient_checkpointing", False))


# ------------------------------------------------------------------------------------------------------------------
# torch.compile of the training passes

def compile_layers(model) -> None:
    """Each decoder layer's forward runs under torch.compile while gradients are on, and eagerly otherwise.

    Only the training passes compile: the engine's prefill and decoding steps, evaluation and the no-grad log-prob
    passes (old and reference policy) see a new shape at nearly every call, where a compiled graph's guards and
    recompiles cost more than the elementwise work they fuse (dev/LOG.md, session 14). One compiled function per
    layer class serves every layer, its weights passed as inputs; FSDP2's hooks and gradient checkpointing stay
    outside it, around the layer's call. A copy of the model (the RL reference) runs its own layers (the bound
    method rebinds on deepcopy).

    subtle: a pass that hands the layers a KV cache (RL's log-prob forward reads each prompt once and its responses
    over the cache) traces one graph per layer, since the cache is indexed by the layer's index; dynamo's recompile
    limit counts the one function over all layers, and past it would run the remaining layers eagerly with only a
    warning, so the limit is raised to hold every layer's graphs: two passes, each static then dynamic (a 6-layer RL
    run settled at 24 graphs after its second step), with room for sizes of 1, which dynamo specializes.
    """
    layers = decoder_layers(model)
    cfg = torch._dynamo.config
    need = 8 * len(layers) + 8
    for name in ("recompile_limit", "cache_size_limit"):  # the name since torch 2.6, and before it
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), need))
            break
    cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 2 * need)
    for layer in layers:
        layer.forward = types.MethodType(_layer_forward, layer)


_COMPILED: dict = {}  # a function (a layer class's forward, the loss) -> its torch.compile'd version


def _compiled(fn):
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn)
    return _COMPILED[fn]


def _layer_forward(self, *args, **kwargs):
    eager = type(self).forward
    return (_compiled(eager) if torch.is_grad_enabled() else eager)(self, *args, **kwargs)


def cross_entropy_sum(logits, labels, compiled: bool = False, ignore_index: int = -100):
    """Sum of the float32 cross-entropy over the labelled positions: (B, T, V), (B, T) -> scalar.

    compiled (the model's torch_compile): one fused kernel reads the logits in their own dtype and reduces in
    float32, where eager writes a float32 copy of the (B, T, V) logits and then its log-softmax, each kept for
    backward (at Qwen's 151,936 ids and 8 x 1024 tokens, 5 GB each)."""
    return (_compiled(_cross_entropy_sum) if compiled else _cross_entropy_sum)(logits, labels, ignore_index)


def _cross_entropy_sum(logits, labels, ignore_index: int):
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=ignore_index,
                                             reduction="sum")


def is_compiled(model) -> bool:
    """Whether compile_layers has set the model's layers up (False for a model without decoder layers to find)."""
    return any(getattr(m.forward, "__func__", None) is _layer_forward for m in model.modules())


@contextlib.contextmanager
def reference(model):
    """The reference policy inside: with LoRA, the same model with its adapters disabled (the base)."""
    if is_lora(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def merged_weights(state: dict, scalings: dict[str, float], fan_in_fan_out: dict[str, bool]) -> dict:
    """A peft model's state dict -> the base architecture's, each LoRA-wrapped weight merged: W + B @ A * scale.

    Names lose peft's "base_model.model." prefix and ".base_layer"; lora_A / lora_B entries disappear.
    merged_weights({"base_model.model.l.base_layer.weight": W, "base_model.model.l.lora_A.default.weight": A,
                    "base_model.model.l.lora_B.default.weight": B}, {"base_model.model.l": 2.0}, {})
        == {"l.weight": W + 2.0 * B @ A}
    """
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight"):
            module = name[: -len(".base_layer.weight")]
            a, b = state[f"{module}.lora_A.default.weight"], state[f"{module}.lora_B.default.weight"]
            delta = (b.float() @ a.float()) * scalings[module]
            if fan_in_fan_out.get(module):
                delta = delta.T
            tensor = (tensor.float() + delta).to(tensor.dtype)
        out[base_param_name(name)] = tensor
    return out


def _lora_scalings(model) -> tuple[dict, dict]:
    from peft.tuners.lora import LoraLayer

    scalings, fifo = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.scaling:
            scalings[name] = module.scaling["default"]
            fifo[name] = bool(getattr(module, "fan_in_fan_out", False))
    return scalings, fifo


# ------------------------------------------------------------------------------------------------------------------
# FSDP2

def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model, cfg: ScaleConfig, amp):
    """fully_shard each decoder layer (the model's _no_split_modules) and then the root, when cfg.fsdp; else the model
    as given. amp: the stage's autocast dtype, the parameters' compute dtype (fp32 master weights stay sharded)."""
    if not cfg.fsdp:
        return model
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from r1lab import runtime

    if not dist.is_initialized():  # one process, not started by torchrun: a world of one
        dist.init_process_group(runtime.process_group_backend(torch.cuda.is_available()), store=dist.HashStore(),
                                rank=0, world_size=1)
        runtime.leave_at_exit()
    mp = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32)
    layers = decoder_layers(model)
    for layer in layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    for m in [*layers, model]:
        m.set_gradient_divide_factor(1.0)  # a sum over ranks: the losses are divided by the global counts
        m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no PREMUL_SUM, NCCL's default here)
    return model


def decoder_layers(model) -> list:
    """The model's decoder layers: the modules of the classes it names in _no_split_modules (through a LoRA
    wrapper), as fully_shard and compile_layers take them."""
    inner = model.get_base_model() if is_lora(model) else model
    blocks = set(getattr(inner, "_no_split_modules", None) or ())
    # by the class or a base: fully_shard gives each layer a subclass of its own (FSDPQwen2DecoderLayer)
    layers = [m for m in model.modules() if any(c.__name__ in blocks for c in type(m).__mro__)]
    if not layers:
        raise ValueError(f"{type(inner).__name__} names no decoder layer class (_no_split_modules) to shard or compile")
    return layers


def full_state(model, rank0_only: bool = False) -> dict:
    """The model's full state dict: gathered from every rank under FSDP (a collective: every rank calls it), on the
    CPU and only on rank 0 when rank0_only (for saving; the other ranks get {}); the plain state dict otherwise."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=rank0_only))


def tied_keys(model) -> set[str]:
    """Names of the base architecture's weights that are another weight under a second name (a tied output
    embedding), when its config ties them: a checkpoint holds each tied weight once, as transformers saves it, and
    loading ties it again. tied_keys(a Llama with tie_word_embeddings) == {"lm_head.weight"}"""
    base = model.get_base_model() if is_lora(model) else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    if not getattr(config, "tie_word_embeddings", False):
        return set()
    # transformers 5: all_tied_weights_keys {tied name: source}; 4: _tied_weights_keys [tied name]
    keys = getattr(base, "all_tied_weights_keys", None) or getattr(base, "_tied_weights_keys", None) or ()
    return set(keys)


def untied(state: dict, model) -> dict:
    """`state` (base architecture names) without the tied copies (tied_keys). subtle: under FSDP the gathered full
    state dict holds the embedding twice, as two tensors, which transformers' save (it finds ties by shared storage)
    would write twice; plain state dicts share the storage, and dropping the name there changes nothing."""
    drop = tied_keys(model)
    return {k: v for k, v in state.items() if k not in drop}


def inference_weights(model) -> dict:
    """{Hugging Face name: tensor} of the base architecture, what an inference engine loads: LoRA merged, FSDP
    gathered (collective). The whole model at once; iter_inference_weights() holds one weight at a time."""
    return dict(iter_inference_weights(model))


def iter_inference_weights(model):
    """(Hugging Face name, full tensor) of each weight of the base architecture, in state-dict order (a tied
    embedding under both names, as a state dict lists it): LoRA merged, FSDP gathered one parameter at a time
    (a collective per parameter: every rank iterates, in the same order), so a sync never holds more than one
    gathered weight beside what it is copied into. Plain tensors are the model's own (detached, no copy)."""
    state = model.state_dict(keep_vars=True)  # under FSDP the sharded DTensors themselves: nothing gathered yet
    scalings, fifo = _lora_scalings(model) if is_lora(model) else ({}, {})

    def full(t):
        return _full(t).detach()

    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight"):
            module = name[: -len(".base_layer.weight")]
            part = {k: full(state[k]) for k in (name, f"{module}.lora_A.default.weight", f"{module}.lora_B.default.weight")}
            yield from merged_weights(part, {module: scalings[module]}, {module: fifo[module]}).items()
        else:
            yield base_param_name(name), full(tensor)


def _full(t):
    """A DTensor (an FSDP shard) gathered whole (a collective); any other tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def reduce_and_clip(model, max_norm: float) -> float:
    """Sum the gradients over ranks (FSDP has reduce-scattered them in backward already) and clip the trainable ones
    to max_norm; returns their total norm before clipping, as a float."""
    from r1lab.runtime import sum_gradients

    if not is_sharded(model):
        sum_gradients(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return float(_full(torch.nn.utils.clip_grad_norm_(trainable, max_norm)))


# ------------------------------------------------------------------------------------------------------------------
# The plain model rollouts and evaluation run on

def plain_copy(model, device=None):
    """A plain Hugging Face model of the policy's base architecture holding its inference_weights (a collective
    under FSDP), in fp32, frozen: what r1lab's engine samples from when the policy is wrapped (its decoding reads
    plain nn.Linear weights, and a sharded forward cannot run on one rank alone). sync_copy() refreshes it."""
    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if is_lora(model) else model
    copy = AutoModelForCausalLM.from_config(base.config, dtype=torch.float32)
    copy.generation_config = base.generation_config
    copy.to(device if device is not None else device_of(model)).eval().requires_grad_(False)
    sync_copy(copy, model)
    return copy


def sync_copy(copy, model) -> None:
    """Copy `model`'s inference_weights into `copy` in place (every rank calls it under FSDP)."""
    params = dict(copy.named_parameters())  # a tied embedding once
    seen = set()
    with torch.no_grad():
        for name, w in iter_inference_weights(model):
            if name in params:
                params[name].copy_(w)
                seen.add(name)
    if missing := sorted(set(params) - seen):
        raise RuntimeError(f"the policy's weights lack {missing[:3]} of its plain copy")


def device_of(model) -> torch.device:
    """Where the model's weights live: under FSDP a parameter is a DTensor, whose shard on this rank tells."""
    p = next(model.parameters())
    return p.to_local().device if hasattr(p, "to_local") else p.device


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints: every rank calls save_policy; rank 0 writes the model, each rank its optimizer shard under FSDP

def save_policy(run_dir, step: int, model, tokenizer, config: dict, trainer_state: dict, optimizer, cfg: ScaleConfig,
                keep_last: int):
    """RUN/checkpoints/step_NNNNNN, atomically (checkpoint.begin_checkpoint / commit_checkpoint): a Hugging Face model
    directory (or a LoRA adapter, and with lora_save_merged the merged model too), trainer_state.pt, and the optimizer
    state: in trainer_state.pt, or under FSDP sharded in optim/ (torch.distributed.checkpoint, one file per rank)."""
    from r1lab import runtime
    from r1lab.checkpoint import begin_checkpoint, commit_checkpoint, save_model_dir, save_tokenizer

    rank = runtime.rank_and_world()[0]
    tmp = begin_checkpoint(run_dir, step) if rank == 0 else None
    tmp = Path(runtime.all_gather_objects(str(tmp))[0])
    state = dict(trainer_state)
    if is_sharded(model):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(tmp / "optim"))
    else:
        state["optimizer"] = optimizer.state_dict()
    state["fsdp"] = is_sharded(model)
    full = full_state(model, rank0_only=True)  # collective under FSDP
    if rank == 0:
        if is_lora(model):
            model.save_pretrained(tmp, state_dict=full)  # peft keeps the adapter's entries
            save_tokenizer(tmp, tokenizer)
            if cfg.lora_save_merged:
                scalings, fifo = _lora_scalings(model)
                # subtle: in a folder of its own; transformers' from_pretrained on a folder holding adapter_config.json
                # loads the adapter onto whatever model it finds there
                save_model_dir(tmp / "merged", model.get_base_model(), tokenizer,
                               state_dict=untied(merged_weights(full, scalings, fifo), model))
            (tmp / "r1lab_config.json").write_text(json.dumps(config, indent=2, default=str))
        else:
            save_model_dir(tmp, model, tokenizer, config, state_dict=untied(full, model))
        torch.save(state, tmp / "trainer_state.pt")
    runtime.barrier()
    final = commit_checkpoint(run_dir, step, tmp, keep_last) if rank == 0 else None
    runtime.barrier()
    return final


def restore_optimizer(ckpt: Path, model, optimizer, state: dict) -> None:
    """The optimizer state a checkpoint holds, into `optimizer`: from optim/ (sharded, any number of ranks) or from
    trainer_state.pt. A checkpoint written with fsdp on resumes with fsdp on, and off with off (ValueError)."""
    if state.get("fsdp", False) != is_sharded(model):
        raise ValueError(f"{ckpt} was written with fsdp = {str(state.get('fsdp', False)).lower()}; resume the run "
                         f"with the same setting")
    if is_sharded(model):
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

        osd = get_optimizer_state_dict(model, optimizer)  # the layout to fill (initialises Adam's state)
        dcp.load({"optimizer": osd}, checkpoint_id=str(Path(ckpt) / "optim"))
        set_optimizer_state_dict(model, optimizer, osd)
    else:
        optimizer.load_state_dict(state["optimizer"])
