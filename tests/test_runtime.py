"""runtime's dtype rule ("auto" is bf16 only where bf16 is the faster choice), and a joined process group left before
the interpreter's teardown."""
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


def test_a_joined_process_group_is_left_before_the_interpreter_exits(tmp_path):
    """Two ranks under torchrun join through init_distributed; an exit handler registered before the join runs after
    runtime's (atexit is last in, first out) and must find the group gone (runtime.leave_at_exit says why)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "join.py"
    script.write_text(
        "import atexit\n"
        "import torch.distributed as dist\n"
        "from r1lab import runtime\n"
        "atexit.register(lambda: print('at exit, joined:', dist.is_initialized(), flush=True))\n"
        "runtime.init_distributed()\n"
        "print('joined:', dist.is_initialized(), runtime.rank_and_world()[1], flush=True)\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    out = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines.count("joined: True 2") == 2 and lines.count("at exit, joined: False") == 2, out.stdout
