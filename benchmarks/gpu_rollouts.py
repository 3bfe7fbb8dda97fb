"""Parts a and d of benchmarks/gpu_check.py: rollout tokens/s of r1lab's engine and of vLLM, and vLLM's weight sync,
sharing one policy, one tokenizer and one vLLM engine in this process (Rollouts); part_rollouts runs the parts asked
for, each time-boxed, and records their rows.
"""
from __future__ import annotations

import sys
import time

import torch

from gpu_common import (ROOT, VOCAB, Sizes, build_model, build_tokenizer, environment, free_memory, guarded, peak_gib,
                        record, reset_peak)


class Rollouts:
    def __init__(self, S: Sizes, device, amp, vllm_eager: bool):
        self.S, self.device, self.amp, self.vllm_eager = S, device, amp, vllm_eager
        self.tok = self.policy = self.prompts = None
        self.vllm = None
        self.vllm_error: str | None = None

    def ensure(self):
        """The tokenizer, the 0.5B policy (fp32 weights, as RL trains it) and B random prompts, built once."""
        if self.policy is None:
            self.tok = build_tokenizer()
            self.policy = build_model(self.S.rollout_model, self.device).eval()
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(3, VOCAB, (self.S.batch, self.S.prompt_len), generator=g)
            self.prompts = ids.tolist()
        return self

    def timed(self, backend) -> tuple[int, float]:
        from r1lab.engine import SamplingParams

        S = self.S
        backend.generate(self.prompts[:4], SamplingParams(max_new_tokens=8))  # warm-up
        params = SamplingParams(temperature=1.0, max_new_tokens=S.new_tokens, seed=0, logprobs=True)
        t = time.perf_counter()
        outs = backend.generate(self.prompts, params)
        dt = time.perf_counter() - t
        return sum(len(o.token_ids) for o in outs), dt

    def engine(self) -> list[dict]:
        from r1lab.engine import make_backend

        self.ensure()
        t0 = time.perf_counter()
        reset_peak(self.device)
        # fp32, as `r1lab rl` samples with its engine (rl/train.py)
        backend = make_backend("engine", self.policy, self.tok, autocast_dtype=None, max_batch_size=self.S.batch)
        n, dt = self.timed(backend)
        del backend
        peak = peak_gib(self.device)
        free_memory(self.device)
        return [{"key": "engine", "tokens_per_s": round(n / dt, 1), "peak_gib": peak,
                 "seconds": round(time.perf_counter() - t0, 1), "note": self.shape_note(n, dt, "fp32")}]

    def shape_note(self, n: int, dt: float, dtype: str) -> str:
        S = self.S
        return (f"{S.batch} rows x {S.new_tokens} new after {S.prompt_len}, T=1, log-probs, {dtype}; "
                f"{n} tokens in {dt:.2f} s")

    def build_vllm(self, eager: bool):
        """The vLLM backend on the policy; eager: no CUDA graphs or torch.compile (else the backend's default: eager
        on CPU only)."""
        from r1lab.engine import make_backend

        try:
            self.vllm = make_backend("vllm", self.ensure().policy, self.tok, autocast_dtype=self.amp,
                                     max_batch_size=self.S.batch, enforce_eager=True if eager else None)
        except Exception as e:  # noqa: BLE001: recorded, re-raised; the sync part then builds an eager one
            self.vllm_error = f"{type(e).__name__}: {e}"
            raise
        return self.vllm

    def vllm_mode(self, eager: bool) -> str:
        return "eager" if eager or self.device.type != "cuda" else "CUDA graphs + torch.compile"

    def vllm_rollout(self) -> list[dict]:
        self.ensure()
        t0 = time.perf_counter()
        reset_peak(self.device)
        backend = self.build_vllm(self.vllm_eager)
        build_s = time.perf_counter() - t0
        used = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used = (total - free) / 2 ** 30
        try:
            n, dt = self.timed(backend)
        except Exception as e:  # noqa: BLE001: an engine stopped mid-generate is not reused by the sync part
            self.vllm, self.vllm_error = None, f"{type(e).__name__}: {e}"
            raise
        note = f"vllm {environment()['vllm']}, {self.vllm_mode(self.vllm_eager)}, built in {build_s:.1f} s"
        if used is not None:
            note += f"; device {used:.1f} GiB in use after the build (gpu_memory_utilization 0.3: KV cache)"
        row = {"key": "vllm", "tokens_per_s": round(n / dt, 1), "peak_gib": peak_gib(self.device)}
        if backend.sleeps:  # the same call without the wake-up and sleep around it
            backend.sleeps = False
            n2, dt2 = self.timed(backend)  # its warm-up call wakes it and leaves it awake
            backend.sleeps = True
            row["tokens_per_s_awake"] = round(n2 / dt2, 1)
            note += f"; {n2 / dt2:,.0f} tok/s without the sleep/wake around generate()"
        dtype = "bf16" if self.amp is not None else "fp32"
        return [{**row, "seconds": round(time.perf_counter() - t0, 1),
                 "note": f"{note}; {self.shape_note(n, dt, dtype)}"}]

    def sync(self) -> list[dict]:
        from r1lab.engine import SamplingParams

        S = self.ensure().S
        t0 = time.perf_counter()
        reset_peak(self.device)
        built = ""
        if self.vllm is None:  # part a was not run, or failed (a build too slow?): an eager build is quicker
            eager = self.vllm_eager or self.vllm_error is not None
            if self.vllm_error:
                built = f"; built {self.vllm_mode(eager)} here after part a failed"
            self.build_vllm(eager)
        backend, model = self.vllm, self.policy
        prompts = self.prompts[:S.sync_rows]
        greedy = SamplingParams(temperature=0, max_new_tokens=S.sync_new_tokens, logprobs=True)
        before = backend.generate(prompts, greedy)
        logp0, big0 = self.policy_logp(before)
        matched = max_diff(before, logp0)  # vLLM vs the policy before the step: the first push worked
        opt = torch.optim.AdamW(model.parameters(), lr=S.sync_lr)
        model.train()
        loss = -torch.cat(self.policy_logp(before, grad=True)[0]).mean()  # NLL of vLLM's continuations
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
        logp1, big1 = self.policy_logp(before)
        moved = max_diff(before, logp1)  # vLLM's old log-probs vs the updated policy on the same tokens
        unsynced = backend.generate(prompts, greedy)
        stale = max_diff(unsynced, self.policy_logp(unsynced)[0])
        backend.sync_weights(model)
        synced = backend.generate(prompts, greedy)
        logp2, big2 = self.policy_logp(synced)
        after = max_diff(synced, logp2)
        tol = self.tolerance(max(big0, big1, big2))
        ok = matched <= tol and moved > tol and after <= tol and stale > tol
        note = (f"max |vLLM logp - policy logp| over {len(prompts)} x {S.sync_new_tokens} greedy tokens: before the "
                f"step {matched:.3g}; the step moved them {moved:.3g}; unsynced generate {stale:.3g} (must differ); "
                f"after sync {after:.3g}; tol {tol:.3g} (max |logit| {max(big0, big1, big2):.2f}){built}")
        return [{"key": "sync", "verdict": "PASS" if ok else "FAIL", "after": round(after, 6), "tol": round(tol, 6),
                 "moved": round(moved, 6), "unsynced": round(stale, 6), "matched": round(matched, 6),
                 "peak_gib": peak_gib(self.device), "seconds": round(time.perf_counter() - t0, 1), "note": note}]

    def policy_logp(self, completions, grad: bool = False):
        """([log-prob of each completion token] per row, the largest |logit|): the policy's own forward over prompt +
        completion, one row at a time, under the rollouts' autocast."""
        from r1lab.runtime import autocast

        rows, biggest = [], 0.0
        with torch.set_grad_enabled(grad), autocast(self.device, self.amp):
            for c in completions:
                ids = torch.tensor([c.prompt_ids + c.token_ids], device=self.device)
                P = len(c.prompt_ids)
                logits = self.policy(input_ids=ids, use_cache=False).logits[0, P - 1:-1].float()  # (T, V)
                biggest = max(biggest, logits.detach().abs().max().item())
                logp = logits.log_softmax(-1).gather(-1, ids[0, P:, None])[:, 0]  # (T,)
                rows.append(logp if grad else logp.tolist())
        return rows, biggest

    def tolerance(self, max_logit: float) -> float:
        """tests/tolerances.py's bound for two computations of a log-prob in this dtype (bf16 inputs: u = 2^-9)."""
        sys.path.insert(0, str(ROOT / "tests"))
        from tolerances import logprob_atol

        dtype = torch.bfloat16 if self.amp is not None else torch.float32
        return logprob_atol(self.policy.config, max_logit, self.S.prompt_len + self.S.sync_new_tokens, dtype)


def max_diff(completions, logps) -> float:
    return max(abs(a - b) for c, lp in zip(completions, logps) for a, b in zip(c.logprobs, lp))


def part_rollouts(S: Sizes, device, amp, parts: list[str], rows_path, vllm_eager: bool) -> None:
    import importlib.util

    r = Rollouts(S, device, amp, vllm_eager)
    has_vllm = importlib.util.find_spec("vllm") is not None
    for part, fn in (("engine", r.engine), ("vllm", r.vllm_rollout), ("sync", r.sync)):
        if part not in parts:
            continue
        if part != "engine" and not has_vllm:
            record(rows_path, {"key": part, "verdict": "SKIP", "note": "vllm is not importable here (pip install "
                                                                         "vllm==0.32.0 on a GPU)"})
            continue
        guarded([part], fn, S.budget_s[part], rows_path)
