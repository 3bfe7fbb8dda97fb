"""runtime's dtype rule ("auto" is bf16 only where bf16 matmuls measure faster), and a joined process group left before
the interpreter's teardown."""
import os

import pytest
import torch
from conftest import gloo_env

from r1lab import runtime

AMX = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx512f", "avx512_bf16", "avx512_fp16"}  # a Xeon whose hypervisor hides AMX (dev/LOG.md)


def test_bf16_is_chosen_by_measured_matmul_speed_not_by_flags():
    fast, slow = (4.0e11, 1.0e11), (0.6e11, 1.0e11)  # AMX / an AMD EPYC; a Xeon whose AMX is hidden (dev/LOG.md)
    assert runtime.cpu_bf16_is_faster(AMX, peaks=fast)
    assert runtime.cpu_bf16_is_faster(AVX512_BF16, peaks=fast)
    assert not runtime.cpu_bf16_is_faster(AVX512_BF16, peaks=slow)
    assert not runtime.cpu_bf16_is_faster(AMX, peaks=(1.4e11, 1.0e11))  # inside the margin: fp32
    assert not runtime.cpu_bf16_is_faster({"avx2"}, peaks=fast)  # emulated bf16 is never timed
    assert runtime.cpu_has_bf16(AVX512_BF16) and runtime.cpu_has_bf16(AMX) and not runtime.cpu_has_bf16({"avx2"})


def test_this_cpu_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    from r1lab.cost import account

    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(account, "MEASUREMENTS", 1)
    timed = []
    real = account.measure_matmul_peak
    monkeypatch.setattr(account, "measure_matmul_peak",
                        lambda dtype, **kw: timed.append(dtype) or real(dtype, size=256, seconds=0.05, **kw))
    first = runtime.cpu_bf16_is_faster()
    assert timed == (["bf16", "fp32"] if runtime.cpu_has_bf16() else [])
    cached = (tmp_path / "cpu_peak.json").exists()
    assert cached == runtime.cpu_has_bf16()
    assert runtime.cpu_bf16_is_faster() == first  # the cached peaks give the same answer
    if cached:
        import json
        table = json.loads((tmp_path / "cpu_peak.json").read_text())
        assert sorted(v for k, v in table.items() if k.endswith("|measurements")) == [1, 1]  # not timed again


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


def torchrun_script(tmp_path, body: str):
    """Run `body` (Python lines after the imports) on two ranks under torchrun, one thread each."""
    import subprocess
    import sys

    script = tmp_path / "job.py"
    script.write_text("import atexit\nimport torch.distributed as dist\nfrom r1lab import runtime\n" + body)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    return subprocess.run(cmd, env=gloo_env(), capture_output=True, text=True, timeout=120)


def test_a_joined_gloo_group_is_left_before_the_interpreter_exits(tmp_path):
    """An exit handler registered before the join runs after runtime's (atexit is last in, first out) and must find
    the group gone (runtime.leave_at_exit says why); a rank that raises still exits at once."""
    # subtle: each rank writes its own file; lines printed by two processes to one pipe can interleave
    out = torchrun_script(tmp_path, "import os\n"
                                    f"log = open(os.path.join({str(tmp_path)!r}, 'rank' + os.environ['RANK']), 'w')\n"
                                    "atexit.register(lambda: log.write(f'at exit, joined: {dist.is_initialized()}'))\n"
                                    "runtime.init_distributed()\n"
                                    "log.write(f'joined: {dist.is_initialized()} {runtime.rank_and_world()[1]}\\n')\n")
    assert out.returncode == 0, out.stderr[-3000:]
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}").read_text() == "joined: True 2\nat exit, joined: False"
    out = torchrun_script(tmp_path, "runtime.init_distributed()\n"
                                    "if dist.get_rank() == 1:\n    raise RuntimeError('rank 1 fails')\n"
                                    "import torch\n"
                                    "dist.all_reduce(torch.ones(1))  # rank 0 waits for a peer that is gone\n")
    assert out.returncode != 0 and "RuntimeError: rank 1 fails" in out.stderr  # within the timeout: no hang


def test_a_gpu_world_joins_with_gloo_for_cpu_tensors_on_its_own_gpu(monkeypatch):
    """On GPUs each rank makes its own GPU current before joining (else every rank's NCCL communicator lands on
    cuda:0), and the group carries CPU tensors over gloo: all_sum's counts are CPU tensors, and an NCCL-only group
    refuses them. No GPU here: torch.cuda and the join are recorded, not run (scripts/gpu_check.sh runs them)."""
    import doctest

    assert doctest.testmod(runtime).failed == 0
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(runtime.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime.dist, "init_process_group", lambda backend: calls.append(("join", backend)))
    monkeypatch.setattr(runtime, "leave_at_exit", lambda: calls.append(("leave at exit",)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", str(dev))))
    runtime.init_distributed()
    assert calls == [("set_device", "cuda:1"), ("join", "cpu:gloo,cuda:nccl"), ("leave at exit",)]
    calls.clear()
    # two ranks on a one-GPU machine: said before any join (the H200 check's suite run met CUDA's own error)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"local rank 1 has no GPU of its own: this machine shows 1 GPU\(s\)"):
        runtime.init_distributed()
    assert calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime.init_distributed()
    assert calls == [("join", "gloo"), ("leave at exit",)]


def test_the_cli_caps_onednn_primitive_cache_unless_the_user_set_it(monkeypatch):
    from r1lab import cli

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    cli.steady_cpu_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(cli.ONEDNN_CACHE)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")
    cli.steady_cpu_memory()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "7"
