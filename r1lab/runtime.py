"""Where and how a process runs: its device, its autocast dtype, and its place in a data-parallel world.

Every stage (pretrain, rl), evaluation, the server and the chat take these from here, so "which device" and "which
dtype" have one answer. The distributed helpers are a world of one when torch.distributed is not initialised, so
single-process code calls them unconditionally.

    init_distributed()                      # joins the process group torchrun / accelerate launch describe
    dev = device()                          # cuda:LOCAL_RANK, else cpu
    amp = autocast_dtype("auto", dev)       # bf16 where it is faster (CUDA, a CPU that measures so), else None
    with autocast(dev, amp): ...
"""
from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist

DTYPES = ("auto", "bf16", "fp32")


def device() -> torch.device:
    """This process's device: cuda:LOCAL_RANK when a GPU is visible (one process per GPU under torchrun), else cpu."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (avx512_bf16 or AMX); emulated bf16 is far slower than fp32."""
    flags = _cpu_flags() if flags is None else flags
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_MARGIN = 1.5  # on a CPU, "auto" takes bf16 only where its matmuls run at least this much faster than fp32's


def cpu_bf16_is_faster(flags: set[str] | None = None, peaks: tuple[float, float] | None = None) -> bool:
    """Whether bf16 matmuls beat fp32 on this CPU by BF16_MARGIN, as measured: `peaks` (bf16, fp32) FLOP/s, by default
    r1lab.cost.account.measure_matmul_peak's (timed on the first few calls at this thread count, then cached).

    The flags cannot tell (dev/LOG.md): at 2 threads AMX tiles multiply bf16 4.4x faster than fp32 and an AMD EPYC
    with avx512_bf16 4.4x (its pretraining ran 2x faster), but a Xeon with avx512_bf16 whose hypervisor hides its AMX
    0.6x (oneDNN's avx512_core_bf16 kernels; its pretraining ran at 0.6x). A CPU with neither avx512_bf16 nor AMX
    emulates bf16: not timed.
    """
    if not cpu_has_bf16(flags):
        return False
    if peaks is None:
        from r1lab.cost.account import measure_matmul_peak
        peaks = measure_matmul_peak("bf16"), measure_matmul_peak("fp32")
    bf16, fp32 = peaks
    return bf16 >= BF16_MARGIN * fp32


def autocast_dtype(name: str, dev: torch.device):
    """The autocast dtype for a config's `dtype`: "fp32" -> None, "bf16" -> bfloat16, "auto" -> bfloat16 where the
    hardware makes it faster (CUDA with bf16, a CPU whose bf16 matmuls measure faster), else None."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {', '.join(DTYPES)}")
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if dev.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_bf16_is_faster() else None


def autocast(dev: torch.device, dtype):
    """torch.autocast on `dev` with `dtype`, or a no-op context for dtype None (fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(dev.type, dtype=dtype)


def set_threads(threads: int | None) -> None:
    """torch's CPU threads; 0 or None leaves torch's choice."""
    if threads:
        torch.set_num_threads(threads)


# --- data parallelism ---------------------------------------------------------------------------------------------

def process_group_backend(cuda: bool) -> str:
    """gloo for CPU tensors, and NCCL for CUDA ones where there is a GPU.

    subtle: a group made with backend="nccl" alone has no backend for CPU tensors, and all_sum's float64 CPU tensor
    would fail there ("No backend type associated with device type cpu"); NCCL carries the gradients (FSDP's too),
    gloo the few counts and metrics.
    >>> process_group_backend(True), process_group_backend(False)
    ('cpu:gloo,cuda:nccl', 'gloo')
    """
    return "cpu:gloo,cuda:nccl" if cuda else "gloo"


def init_distributed() -> None:
    """Join the process group that torchrun / accelerate launch describe in the environment (process_group_backend;
    a gloo-only group is left at exit); nothing when WORLD_SIZE is 1 or unset. With a GPU, this process's GPU
    (device()) becomes the current one first, so that whatever addresses "cuda" without an index (NCCL's
    communicators among them) lands on it, not on cuda:0 for every rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            local, gpus = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
            if local >= gpus:  # else CUDA's "invalid device ordinal" from set_device, on that rank only
                raise RuntimeError(f"local rank {local} has no GPU of its own: this machine shows {gpus} GPU(s), so "
                                   f"start at most {gpus} process(es) per node (torchrun --nproc_per_node {gpus}), or "
                                   "hide the GPUs (CUDA_VISIBLE_DEVICES=) to run every rank on the CPU with gloo")
            torch.cuda.set_device(device())
        dist.init_process_group(backend=process_group_backend(cuda))
        leave_at_exit()


def leave_at_exit() -> None:
    """Leave a gloo process group when the interpreter exits (an atexit handler: before its teardown), whatever ran.

    subtle: a gloo group still alive at teardown can abort the process ("terminate called without an active
    exception"), and torchrun then reports a finished run as failed: 7 of 77 two-rank runs of a bare all_reduce
    script here, none of 40 with this handler (`r1lab rl` had none in 40 without it). Gloo's destroy is local: a rank
    whose peer died still exits at once. NCCL's is collective and can hang when a peer has crashed (NVIDIA/nccl#1777),
    so a group with NCCL in it (on GPUs, process_group_backend's "cpu:gloo,cuda:nccl") is left to torch, as before
    (it warns at exit); whether its gloo half shows the teardown abort is a GPU check still to make."""
    atexit.register(_leave_gloo)


def _leave_gloo() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums over ranks, in float64."""
    if rank_and_world()[1] == 1:
        return values
    return sum_over_ranks(torch.tensor(values, dtype=torch.float64)).tolist()


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """t's element-wise sum over ranks (summed in float64 on the CPU, returned in t's dtype and device)."""
    return _reduce(t, dist.ReduceOp.SUM)


def max_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """t's element-wise max over ranks."""
    return _reduce(t, dist.ReduceOp.MAX)


def _reduce(t: torch.Tensor, op) -> torch.Tensor:
    if rank_and_world()[1] == 1:
        return t
    x = t.detach().to("cpu", torch.float64)
    dist.all_reduce(x, op=op)
    return x.to(t.device, t.dtype)


def all_gather_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...]."""
    world = rank_and_world()[1]
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def sum_gradients(model) -> None:
    """Sum gradients over ranks in place (each rank's loss is already divided by the global counts)."""
    if rank_and_world()[1] == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()
