"""The compute and cost account: FLOPs, MFU, GPU-hours and dollars, for published runs and for every r1lab run.

    FLOPs     = GPU-hours · 3600 · peak FLOP/s · MFU          (MFU: model FLOPs utilisation, 0..1)
    dollars   = GPU-hours · price per GPU-hour
    training  ≈ 6·N·D  (N active parameters, D tokens; forward 2·N per token; attention on top: r1lab/flops.py)

Peaks are dense (no 2:4 sparsity) tensor-core FLOP/s. Prices are assumed on-demand rental rates, not quotes:
every one can be overridden (`price=` here, `--price` on the command line). On CPU the "peak" is the best matmul
rate torch reaches on this machine (measured once, cached), so CPU MFU says how close a run gets to big matmuls.

Known runs (`known_run`) rebuild published tables from their inputs, so a test can check them digit for digit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from r1lab.cost import flops as F


@dataclass(frozen=True)
class GPU:
    name: str
    bf16: float  # dense BF16 tensor-core peak, FLOP/s
    fp8: float | None  # dense FP8 peak, FLOP/s (None: no FP8 tensor cores)
    fp32: float  # FP32 on the CUDA cores, FLOP/s: torch's float32 matmuls by default (TF32 off)
    price: float  # assumed rental price, $ per GPU-hour
    note: str

    def peak(self, precision: str = "bf16") -> float:
        """GPUS["A100"].peak("bf16") == 312e12"""
        value = {"bf16": self.bf16, "fp16": self.bf16, "fp8": self.fp8, "fp32": self.fp32}.get(precision)
        if value is None:
            raise ValueError(f"{self.name} has no {precision} peak in r1lab; valid: bf16, fp16, fp32, fp8 (not on "
                             f"A100)")
        return value


# Tensor-core peaks: half of NVIDIA's datasheet "with sparsity" figures; FP32: the datasheets' (no sparsity there).
# H800 has H100 SXM compute (its NVLink is cut).
GPUS = {
    g.name: g
    for g in [
        GPU("H800", 989.5e12, 1979e12, 67e12, 2.00, "H100 SXM compute; $2/h is the DeepSeek-V3 report's assumption"),
        GPU("H100", 989.5e12, 1979e12, 67e12, 2.50, "SXM5 80GB; assumed on-demand rate"),
        GPU("H200", 989.5e12, 1979e12, 67e12, 3.50, "SXM 141GB, H100 compute with more memory; assumed rate"),
        GPU("A100", 312e12, None, 19.5e12, 1.50, "SXM4 80GB, no FP8; assumed rate"),
        GPU("B200", 2250e12, 4500e12, 80e12, 5.00, "HGX B200 (1000 W); assumed rate"),
    ]
}


def get_gpu(name: str) -> GPU:
    """get_gpu("h100").name == "H100"; an unknown name raises ValueError listing the valid ones."""
    for key, gpu in GPUS.items():
        if key.lower() == str(name).strip().lower():
            return gpu
    raise ValueError(f"unknown GPU {name!r}; valid: {', '.join(GPUS)}")


def gpu_from_device_name(device_name: str) -> GPU | None:
    """The preset for a `torch.cuda.get_device_name()` string, or None where r1lab has no peak for it.

    gpu_from_device_name("NVIDIA H100 80GB HBM3").name == "H100"; gpu_from_device_name("NVIDIA H100 PCIe") is None
    """
    name = device_name.upper()
    for key in GPUS:
        if re.search(rf"\b{key}\b", name):
            # subtle: the PCIe / NVL cards of H100, H200 and H800 have lower clocks and peaks than the SXM parts the
            # presets describe (H200 NVL: ~835 dense bf16 TFLOP/s against 989.5)
            if key in ("H100", "H200", "H800") and ("PCIE" in name or "NVL" in name):
                return None
            return GPUS[key]
    return None


# --- unit conversions: pure functions of scalars ---------------------------------------------------------------


def training_flops(active_params: float, tokens: float) -> float:
    """6·N·D. training_flops(37e9, 14.8e12) == 3.2856e24"""
    check_nonnegative(active_params=active_params, tokens=tokens)
    return 6 * active_params * tokens


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """GPU-hours to do `flops` at `mfu` of `peak_flops`. gpu_hours(3600e12, 1e12, 0.5) == 2.0"""
    check_nonnegative(flops=flops)
    check_mfu(mfu)
    return flops / (peak_flops * mfu) / 3600


def flops_from_gpu_hours(hours: float, peak_flops: float, mfu: float) -> float:
    """The inverse of gpu_hours. flops_from_gpu_hours(2.0, 1e12, 0.5) == 3600e12"""
    check_nonnegative(gpu_hours=hours)
    check_mfu(mfu)
    return hours * 3600 * peak_flops * mfu


def implied_mfu(flops: float, hours: float, peak_flops: float) -> float:
    """The MFU at which `flops` take `hours` GPU-hours. implied_mfu(3600e12, 2.0, 1e12) == 0.5"""
    check_nonnegative(flops=flops)
    if hours <= 0:
        raise ValueError(f"GPU-hours must be > 0, got {hours}")
    return flops / (hours * 3600 * peak_flops)


def dollars(hours: float, price_per_hour: float) -> float:
    """dollars(2664e3, 2.0) == 5.328e6"""
    check_nonnegative(gpu_hours=hours, price=price_per_hour)
    return hours * price_per_hour


def rented_cost(flops: float, gpu: str = "H100", mfu: float = 0.4, price: float | None = None,
                precision: str = "bf16") -> dict:
    """What `flops` would cost on rented GPUs: rented_cost(3.6e18, "H100", 0.4)["gpu_hours"] ≈ 2.53"""
    g = get_gpu(gpu)
    price = g.price if price is None else price
    hours = gpu_hours(flops, g.peak(precision), mfu)
    return {"gpu": g.name, "precision": precision, "mfu": mfu, "price_per_hour": price,
            "gpu_hours": hours, "dollars": dollars(hours, price)}


def check_nonnegative(**values) -> None:
    for name, value in values.items():
        if not value >= 0:  # also catches NaN
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_mfu(mfu: float) -> None:
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU must be in (0, 1], got {mfu}")


# --- human numbers ----------------------------------------------------------------------------------------------

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


def parse_count(text: str) -> float:
    """parse_count("14.8T") == 14.8e12; also "37B", "37e9", "2,664K", "512". Negative or junk: ValueError."""
    m = re.fullmatch(r"\s*([0-9][0-9,_]*\.?[0-9]*(?:e[+-]?[0-9]+)?)\s*([KMBGT]?)\s*", str(text), re.I)
    if not m:
        raise ValueError(f"not a non-negative number: {text!r} (examples: 37e9, 37B, 14.8T, 2,664K)")
    return float(m.group(1).replace(",", "").replace("_", "")) * _SUFFIX[m.group(2).upper()]


def format_count(x: float, unit: str = "K") -> str:
    """format_count(2664e3) == "2,664K"; format_count(101376, "") == "101,376" (at most 3 decimals)"""
    return f"{x / _SUFFIX[unit]:,.3f}".rstrip("0").rstrip(".") + unit


def format_si(x: float) -> str:
    """format_si(37e9) == "37B"; format_si(14.8e12) == "14.8T"; format_si(512) == "512" """
    for unit in "TBMK":
        if abs(x) >= _SUFFIX[unit]:
            return f"{x / _SUFFIX[unit]:.4g}{unit}"
    return f"{x:.4g}"


def format_dollars(x: float, unit: str = "M") -> str:
    """format_dollars(5.328e6) == "$5.328M"; format_dollars(1e4) == "$0.01M"; format_dollars(202e3, "K") == "$202K" """
    return "$" + format_count(x, unit)


# --- published runs, rebuilt from their inputs ------------------------------------------------------------------

V3_SOURCE = 'DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv:2412.19437 (2024), Table 1 and Sections 1, 4.2'
R1_SOURCE = ('Guo et al., "DeepSeek-R1 incentivizes reasoning in LLMs through reinforcement learning", '
             "Nature 645 (2025), doi:10.1038/s41586-025-09422-z, Supplementary Information, training cost table")


def _stage(name, hours, how, price, unit, rounded=None):
    billed = hours if rounded is None else rounded
    return {"stage": name, "gpu_hours": hours, "gpu_hours_published": billed, "how": how,
            "dollars": dollars(billed, price), "gpu_hours_str": format_count(billed),
            "dollars_str": format_dollars(dollars(billed, price), unit)}


def _total(stages, price, unit):
    return _stage("total", sum(s["gpu_hours"] for s in stages), "sum of the stages", price, unit,
                  rounded=sum(s["gpu_hours_published"] for s in stages))


def deepseek_v3(price: float | None = None) -> dict:
    """The V3 report's Table 1, rebuilt, and the MFU its pre-training implies."""
    published_price = 2.00
    price = published_price if price is None else price
    tokens, active = 14.8e12, 37e9
    # 180K H800 GPU-hours per trillion tokens (Section 1); integer arithmetic so 180K × 14.8 is exactly 2,664K
    pretrain_hours = 180_000 * 148 // 10
    stages = [
        _stage("pre-training", pretrain_hours, "180K GPU-hours per trillion tokens × 14.8T tokens", price, "M"),
        _stage("context extension", 119_000, "reported (32K then 128K context)", price, "M"),
        _stage("post-training", 5_000, "reported (SFT and RL)", price, "M"),
    ]
    stages.append(_total(stages, price, "M"))
    # Attention as in r1lab/flops.py: 61 layers, MLA with 128 heads, q/k head dim 128 + 64 (RoPE), v head dim 128,
    # 4K context in pre-training (Section 4.2). The multi-token-prediction module is not counted.
    attention = F.Shape(n_layers=61, body_params=0, head_params=0, qk_dim=128 * 192, v_dim=128 * 128)
    h800 = GPUS["H800"]
    mfu = []
    for formula, total in [
        ("6·N·D", training_flops(active, tokens)),
        ("6·N·D + attention 3·2·L·(T+1)/2·(d_qk+d_v)·D, L=61, T=4096, d_qk=128·192, d_v=128·128",
         training_flops(active, tokens) + F.train_flops(attention, n_tokens=tokens, context_len=4096)),
    ]:
        mfu.append({"formula": formula, "flops": total,
                    "flops_per_gpu_s": total / (pretrain_hours * 3600),
                    "mfu_bf16": implied_mfu(total, pretrain_hours, h800.peak("bf16")),
                    "mfu_fp8": implied_mfu(total, pretrain_hours, h800.peak("fp8"))})
    return {
        "run": "deepseek-v3", "title": "DeepSeek-V3 training cost", "source": V3_SOURCE,
        "gpu": "H800", "price_per_hour": price, "published_price_per_hour": published_price,
        "stages": stages,
        "published": {"pre-training": ("2,664K", "$5.328M"), "context extension": ("119K", "$0.238M"),
                      "post-training": ("5K", "$0.01M"), "total": ("2,788K", "$5.576M")},
        "note": "official V3 training only: no prior research, ablations, data or staff (as the report says)",
        "implied_mfu": {"stage": "pre-training", "active_params": active, "tokens": tokens,
                        "gpu_hours": pretrain_hours, "peak_bf16": h800.bf16, "peak_fp8": h800.fp8,
                        "rows": mfu,
                        "note": "V3 ran most GEMMs in FP8, so the FP8 column is the stricter measure"},
    }


def deepseek_r1(price: float | None = None) -> dict:
    """The R1 RL-stage cost reported with the Nature paper, rebuilt from GPU counts and hours."""
    published_price = 2.00
    price = published_price if price is None else price
    gpus = 64 * 8  # 64 nodes of 8 H800
    # subtle: the paper prices GPU-hours rounded to thousands (101,376 → 101K → $202K), so we do too
    stages = [
        _stage("R1-Zero RL", gpus * 198, "512 H800 × ~198 hours", price, "K", rounded=round(gpus * 198, -3)),
        _stage("SFT data creation", 5_000, "reported ~5K GPU-hours", price, "K", rounded=5_000),
        _stage("R1 RL", gpus * 80, "512 H800 × ~80 hours", price, "K", rounded=round(gpus * 80, -3)),
    ]
    stages.append(_total(stages, price, "K"))
    return {
        "run": "deepseek-r1", "title": "DeepSeek-R1 RL-stage cost", "source": R1_SOURCE,
        "gpu": "H800", "price_per_hour": price, "published_price_per_hour": published_price,
        "stages": stages,
        "published": {"R1-Zero RL": ("101K", "$202K"), "SFT data creation": ("5K", "$10K"),
                      "R1 RL": ("41K", "$82K"), "total": ("147K", "$294K")},
        "note": ("GPU-hours rounded to thousands before pricing, as published; unrounded total "
                 f"{format_count(stages[-1]['gpu_hours'], '')} GPU-hours = "
                 f"{format_dollars(dollars(stages[-1]['gpu_hours'], price), '')}. Excludes the V3 base model "
                 "(r1lab cost --known deepseek-v3)"),
    }


KNOWN_RUNS = {"deepseek-v3": deepseek_v3, "deepseek-r1": deepseek_r1}


def known_run(name: str, price: float | None = None) -> dict:
    """A published run's cost table rebuilt from its inputs; `matches_published` compares it digit for digit."""
    if name not in KNOWN_RUNS:
        raise ValueError(f"unknown run {name!r}; valid: {', '.join(KNOWN_RUNS)}")
    run = KNOWN_RUNS[name](price)
    run["matches_published"] = all(
        run["published"][s["stage"]] == (s["gpu_hours_str"], s["dollars_str"]) for s in run["stages"])
    return run
