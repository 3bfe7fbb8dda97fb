"""runtime's dtype rule: "auto" is bf16 only where bf16 is the faster choice."""
import pytest
import torch

from r1lab import runtime

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx512f", "avx512_bf16", "avx512_fp16"}  # a Xeon whose hypervisor hides AMX (dev/LOG.md)


def test_bf16_is_faster_only_with_amx():
    assert runtime.cpu_bf16_is_faster(AMX)
    assert not runtime.cpu_bf16_is_faster(AVX512_BF16)
    assert not runtime.cpu_bf16_is_faster({"avx2"})
    assert runtime.cpu_has_bf16(AVX512_BF16) and runtime.cpu_has_bf16(AMX) and not runtime.cpu_has_bf16({"avx2"})


def test_flags_are_whole_words_of_the_flags_line():
    flags = runtime._cpu_flags()
    assert "amx_bf16" not in flags or "amx_tile" in flags  # an AMX CPU names both
    assert not {f for f in flags if " " in f or ":" in f}


def test_autocast_dtype_for_each_name():
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype("fp32", cpu) is None
    assert runtime.autocast_dtype("bf16", cpu) is torch.bfloat16
    auto = runtime.autocast_dtype("auto", cpu)
    assert auto is (torch.bfloat16 if runtime.cpu_bf16_is_faster() else None)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        runtime.autocast_dtype("fp8", cpu)
