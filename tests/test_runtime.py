"""runtime's dtype rule ("auto" is bf16 only where bf16 is the faster choice), and every r1lab command leaving the
process group it joined."""
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


@pytest.mark.parametrize("fails", [False, True])
def test_a_command_leaves_its_process_group_on_the_way_out(tmp_path, fails):
    """A group still alive at exit can abort a finished process (runtime.shutdown_distributed); cli.main leaves it,
    after a command that succeeded and after one that raised. A world of one over a HashStore, as shard() makes."""
    import torch.distributed as dist

    from r1lab.cli import main

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    assert runtime.rank_and_world() == (0, 1) and dist.is_initialized()
    (tmp_path / "file").write_text("")
    out = tmp_path / ("file" if fails else "") / "x.jsonl"
    if fails:  # its folder is a file: the command raises
        with pytest.raises(OSError):
            main(["data", "--task", "countdown", "--n", "3", "--out", str(out)])
    else:
        assert main(["data", "--task", "countdown", "--n", "3", "--out", str(out)]) == 0
    assert not dist.is_initialized()
    runtime.shutdown_distributed()  # and again, with no group: nothing to do
