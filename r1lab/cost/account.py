"""Every r1lab run's own account: FLOPs counted from the tokens it processed, wall time, MFU against this machine's
peak, and what the same work would cost rented (r1lab.cost.published for the GPU table and prices).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

from r1lab.cost import flops as F
from r1lab.cost.published import check_mfu, check_nonnegative, get_gpu, gpu_from_device_name, rented_cost


# --- this machine's peak ----------------------------------------------------------------------------------------

_DTYPES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16",
           "fp32": "fp32", "float32": "fp32", "float": "fp32", "fp8": "fp8"}


def dtype_name(dtype) -> str:
    """dtype_name(torch.bfloat16) == dtype_name("bfloat16") == "bf16" """
    key = str(dtype).removeprefix("torch.").lower()
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(sorted(set(_DTYPES.values())))}")
    return _DTYPES[key]


def compute_dtype(model, autocast=None) -> str:
    """What a model's matmuls run in: the autocast dtype when one is on, else its weights' (a bf16 hub checkpoint
    loaded for inference runs in bf16, and its MFU belongs against the bf16 peak)."""
    if autocast is not None:
        return dtype_name(autocast)
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), "float32")
    return dtype_name(weights)


def cache_dir() -> Path:
    return Path(os.environ.get("R1LAB_CACHE") or Path.home() / ".cache" / "r1lab")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


MEASUREMENTS = 3  # a CPU's matmul peak is measured afresh this many times (keeping the best), then cached


def measure_matmul_peak(dtype="bf16", size: int = 2048, seconds: float = 1.0, cache: bool = True) -> float:
    """The best FLOP/s of a size×size matmul on this CPU, timed for about `seconds`.

    Cached in cache_dir()/cpu_peak.json, keyed by CPU model, dtype, torch threads, torch version and size: the
    best of the first MEASUREMENTS calls, each made afresh, then that. One measurement taken while other work ran
    would otherwise stand for good (2.2x apart on a busy 2-core VM). measure_matmul_peak("fp32") ≈ 5e10 on a 2-core
    AVX-512 VM.
    """
    import torch

    name = dtype_name(dtype)
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(name)
    if torch_dtype is None:
        raise ValueError(f"no CPU matmul peak for {name}; valid: bf16, fp16, fp32")
    key = f"{cpu_model()}|{name}|threads={torch.get_num_threads()}|torch={torch.__version__}|n={size}"
    path = cache_dir() / "cpu_peak.json"
    table = _read_json(path) if cache else {}
    counted = f"{key}|measurements"  # beside the value, so an older r1lab still reads the value as a number
    if isinstance(table.get(key), (int, float)) and table.get(counted, MEASUREMENTS) >= MEASUREMENTS:
        return float(table[key])
    # subtle: a generator of its own; drawing from torch's global one would move every later draw of the run
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(torch_dtype)
    b = torch.randn(size, size, generator=gen).to(torch_dtype)
    a @ b  # warm-up: first call allocates and picks kernels
    best, start = math.inf, time.perf_counter()
    while True:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start >= seconds:
            break
    peak = 2 * size**3 / best
    if cache:
        table = _read_json(path)  # another process may have written meanwhile
        known = table.get(key) if isinstance(table.get(key), (int, float)) else 0.0
        peak = max(peak, float(known))
        table[key], table[counted] = peak, int(table.get(counted, 0)) + 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(path)  # atomic: readers never see half a file
    return peak


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def device_peak_flops(device="cpu", dtype="bf16") -> float | None:
    """Peak FLOP/s to measure MFU against: the GPU preset on CUDA (None for a GPU r1lab has no preset for), the
    measured matmul peak on CPU, None elsewhere."""
    import torch

    device = torch.device(device)
    name = dtype_name(dtype)
    if device.type == "cuda":
        gpu = gpu_from_device_name(torch.cuda.get_device_name(device))
        return None if gpu is None or (name == "fp8" and gpu.fp8 is None) else gpu.peak(name)
    if device.type == "cpu":
        return measure_matmul_peak(name)
    return None


# --- the account every stage keeps ------------------------------------------------------------------------------


class RunAccount:
    """FLOPs one stage did, and what they cost. Counts come from the tokens actually processed (r1lab/flops.py).

        account = RunAccount(model.config, device="cpu", dtype="bf16")        # or peak_flops=... to skip measuring
        # rollouts sampled in fp32 while training runs in bf16 autocast: say so, and each kind meets its own peak
        account = RunAccount(model.config, device="cpu", dtype="bf16", dtype_by_kind={"generate": "fp32"})
        account.add_tokens("train", n_tokens=B * T, context_len=T)            # a forward + backward
        account.add_tokens("forward", n_tokens=B * T, context_len=T)          # e.g. reference log-probs
        account.add_group(prompt_len=P, new_tokens=[N1, N2, ...])              # one prompt's G rollouts
        metrics.update(account.summary(wall_s=time.perf_counter() - t0))
        # {"flops": 3.1e12, "wall_s": 42.0, "flops_per_s": 7.4e10, "peak_flops_per_s": 1.2e11, "mfu": 0.61,
        #  "flops_by_kind": {"train": ..., "forward": ..., "generate": ...},
        #  "dtype_by_kind": {"train": "bf16", ...}, "peak_by_dtype": {"bf16": 1.2e11, ...},
        #  "rented_cost": {"gpu": "H100", "mfu": 0.4, "gpu_hours": 2.2e-06, "dollars": 5.4e-06, ...}}
    """

    def __init__(self, model=None, *, device="cpu", dtype="bf16", peak_flops: float | dict | None = None,
                 rent_gpu: str = "H100", rent_mfu: float = 0.4, rent_price: float | None = None,
                 dtype_by_kind: dict[str, str] | None = None, devices: int = 1):
        """dtype: what the work runs in; dtype_by_kind: the kinds that run in another (e.g. {"generate": "fp32"}).
        peak_flops: one FLOP/s for every dtype, or {dtype: FLOP/s}; what it lacks is measured or looked up.
        devices: how many processes share the work (a data-parallel world): the account holds every process's FLOPs
        (sum_over_ranks), and MFU is against `devices` times one device's peak."""
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.devices = devices
        self.shape = None if model is None else F.shape_of(model)
        self.device, self.dtype = str(device), dtype_name(dtype)
        self.dtype_by_kind = None if dtype_by_kind is None else {k: dtype_name(v) for k, v in dtype_by_kind.items()}
        self._peaks = dict(peak_flops) if isinstance(peak_flops, dict) else {}
        if peak_flops is not None and not isinstance(peak_flops, dict):
            self._peaks = {d: peak_flops for d in {self.dtype, *(self.dtype_by_kind or {}).values()}}
        self._peaks = {dtype_name(d): p for d, p in self._peaks.items()}
        get_gpu(rent_gpu)  # fail at construction, not at the end of a run
        check_mfu(rent_mfu)
        self.rent = {"gpu": rent_gpu, "mfu": rent_mfu, "price": rent_price}
        self.flops_by_kind: dict[str, float] = {}

    @property
    def flops(self) -> float:
        return sum(self.flops_by_kind.values())

    def add(self, flops: float, kind: str = "other") -> None:
        check_nonnegative(flops=flops)
        self.flops_by_kind[kind] = self.flops_by_kind.get(kind, 0.0) + flops

    def add_tokens(self, kind: str, n_tokens: int, context_len: int) -> None:
        """kind "train" (forward + backward), "train_frozen" (forward + backward through frozen weights: LoRA, whose
        backward computes no weight gradients of the base: flops.frozen_train_flops) or "forward", for n_tokens in
        sequences of context_len. Model FLOPs: a recomputed forward
        (gradient checkpointing) is not counted, as MFU is defined."""
        count = {"train": F.train_flops, "forward": F.forward_flops, "train_frozen": F.frozen_train_flops}
        if kind not in count:
            raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(count)} (or add(flops, kind))")
        self.add(count[kind](self._shape(), n_tokens, context_len), kind)

    def add_generate(self, prompt_len: int, new_tokens: int, n_sequences: int = 1) -> None:
        self.add(F.generate_flops(self._shape(), prompt_len, new_tokens, n_sequences), "generate")

    def add_group(self, prompt_len: int, new_tokens: list[int]) -> None:
        """Samples of one prompt (an RL group, an evaluation's k samples): the prompt is prefilled once, as the engine
        and vLLM's prefix cache run it and as the training pass counts its prompts, then each sample decodes."""
        shape, sampled = self._shape(), [n for n in new_tokens if n > 0]
        if sampled:
            prefill = F.generate_flops(shape, prompt_len, 1)  # the prompt's positions and the first token's logits
            self.add(prefill + sum(F.generate_flops(shape, prompt_len, n) - prefill for n in sampled), "generate")

    def sum_over_ranks(self, before: dict[str, float], sum_fn) -> None:
        """Make what each rank added since `before` (a copy of flops_by_kind) the sum of every rank's: each rank
        counts its own share of a step, and rank 0 writes the account. sum_fn: runtime.all_sum (the identity in a
        world of one); a collective, so every rank calls it at the same point."""
        kinds = ("generate", "train", "train_frozen", "forward")  # fixed: every rank sends the same vector
        stray = set(self.flops_by_kind) - set(kinds)
        if stray:
            raise ValueError(f"sum_over_ranks sums {kinds} only, not {sorted(stray)}")
        summed = sum_fn([self.flops_by_kind.get(k, 0.0) - before.get(k, 0.0) for k in kinds])
        self.flops_by_kind = {k: before.get(k, 0.0) + d for k, d in zip(kinds, summed)
                              if before.get(k, 0.0) + d > 0 or k in before}

    def _shape(self) -> F.Shape:
        if self.shape is None:
            raise ValueError("RunAccount(model=None) counts only add(flops); pass a config to count tokens")
        return self.shape

    @property
    def peak_flops(self) -> float | None:
        """The peak of the main dtype (measured or looked up once, on first use)."""
        return self._peak(self.dtype)

    def _peak(self, dtype: str) -> float | None:
        if dtype not in self._peaks:
            self._peaks[dtype] = device_peak_flops(self.device, dtype)
        return self._peaks[dtype]

    def summary(self, wall_s: float) -> dict:
        """The account at `wall_s` seconds. flops_per_s is the whole world's; peak_flops_per_s is one device's; mfu is
        against `devices` of them."""
        total, n = self.flops, self.devices
        rate = total / wall_s if wall_s > 0 else None
        source = " measured matmul" if self.device == "cpu" else ""
        out = {"flops": total, "wall_s": wall_s, "flops_per_s": rate, "peak_flops_per_s": self.peak_flops,
               "mfu": rate / (n * self.peak_flops) if rate is not None and self.peak_flops else None,
               "peak_source": f"{f'{n} x ' if n > 1 else ''}{self.device} {self.dtype}{source}", "devices": n,
               "flops_by_kind": dict(self.flops_by_kind)}
        if self.dtype_by_kind is not None:
            dtypes = {k: self.dtype_by_kind.get(k, self.dtype) for k, f in self.flops_by_kind.items() if f > 0}
            peaks = {d: self._peak(d) for d in sorted({self.dtype, *dtypes.values()})}
            # mixed dtypes: MFU = (seconds the work takes at each kind's own peak) / wall seconds
            ideal = [f / peaks[dtypes[k]] if peaks[dtypes[k]] else None
                     for k, f in self.flops_by_kind.items() if f > 0]
            out.update(dtype_by_kind=dtypes, peak_by_dtype=peaks,
                       mfu=sum(ideal) / (n * wall_s) if wall_s > 0 and None not in ideal else None)
        out["rented_cost"] = rented_cost(total, self.rent["gpu"], self.rent["mfu"], self.rent["price"])
        return out


def mfu_label(summary: dict) -> str:
    """What the MFU figure of a RunAccount.summary() was measured against, e.g.
    "MFU 21.0% of cpu bf16 measured matmul peak", or with kinds in different dtypes
    "MFU 21.0% against cpu measured matmul peaks per kind: generate fp32, train/forward bf16"; a world of two processes
    "MFU 21.0% of 2 x cpu bf16 measured matmul peak"."""
    mfu = "n/a" if summary["mfu"] is None else f"{summary['mfu']:.1%}"
    kinds = {k: f for k, f in (summary.get("flops_by_kind") or {}).items() if f > 0}
    dtypes = summary.get("dtype_by_kind")
    if dtypes and len(set(dtypes.values())) > 1:
        by_dtype: dict[str, list[str]] = {}
        for kind, dtype in dtypes.items():
            by_dtype.setdefault(dtype, []).append(kind)
        n = summary.get("devices", 1)
        prefix = f"{n} x " if n > 1 else ""
        device, _, source = summary["peak_source"].removeprefix(prefix).partition(" ")
        source = source.partition(" ")[2]  # "cpu bf16 measured matmul" -> "measured matmul"
        where = prefix + " ".join(filter(None, (device, source)))
        per_kind = ", ".join(f"{'/'.join(ks)} {d}" for d, ks in by_dtype.items())
        return f"MFU {mfu} against {where} peaks per kind: {per_kind}"
    label = f"MFU {mfu} of {summary['peak_source']} peak"
    if dtypes is None and len(kinds) > 1 and "generate" in kinds:  # an account that never said what generation ran in
        label += f", assumed for every kind (generate: {kinds['generate'] / sum(kinds.values()):.0%} of FLOPs)"
    return label


def format_account(summary: dict) -> str:
    """One greppable line for logs and run reports, from RunAccount.summary()."""
    rent = summary["rented_cost"]
    rate = "n/a" if summary["flops_per_s"] is None else f"{summary['flops_per_s']:.3g}"
    return (f"flops {summary['flops']:.3g} | wall {summary['wall_s']:.1f}s | {rate} FLOP/s | "
            f"{mfu_label(summary)} | on {rent['gpu']} at {rent['mfu']:.0%} MFU: "
            f"{rent['gpu_hours']:.3g} GPU-h, ${rent['dollars']:.3g}")
