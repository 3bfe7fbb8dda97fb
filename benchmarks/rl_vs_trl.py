"""Seconds per GRPO step: r1lab's RL stage vs TRL's GRPOTrainer, same model, task, batch, precision and settings.

    pip install -e ".[bench]"        # TRL is an optional extra, never a runtime dependency of r1lab
    python benchmarks/rl_vs_trl.py [--presets tiny-1m,tiny-5m] [--steps 5] [--dtypes fp32] [--out out.json]
    python benchmarks/rl_vs_trl.py --workload recipe [--steps 3]    # the countdown_rl recipe's own rollouts

One step = rollouts (P=8 prompts x G=8 samples, 64 new tokens, temperature 1) + countdown rewards + group-std
advantages + ONE optimizer update (AdamW, lr 5e-5, betas (0.9, 0.99), no weight decay, grad clip 1.0) on all 64
sequences in one forward/backward. Matched on purpose in both frameworks:
- no reference model (r1lab: the "grpo" preset with kl_coef=0; TRL: beta=0.0), one update per rollout batch (r1lab
  mu=1; TRL steps_per_generation=1, num_iterations=1, gradient_accumulation_steps=1, so neither computes old
  log-probs), per-sequence token-mean loss (r1lab "seq_mean_token_mean"; TRL loss_type="grpo"), clip 0.2, no
  gradient checkpointing, no vLLM, no logging, no checkpoints, no evaluation;
- the same randomly initialised preset (build_model(seed=0)) and the same 8 countdown prompts ("short" template)
  every step, rewarded by the same countdown score (accuracy 1.0 + format 0.1);
- every sample is exactly 64 tokens: lm_head gets a frozen bias of -1e4 on EOS in both frameworks (in sampling and
  in training alike, so both train the same function), and each worker checks the lengths;
- precision: "fp32" runs everything in fp32 in both. "bf16" is each framework's own bf16 mode: r1lab trains under
  bf16 autocast and samples in fp32 (what `r1lab rl --dtype bf16` does); TRL's bf16=True makes accelerate wrap the
  model's forward in bf16 autocast, for generation and training;
- one fresh process per (framework, preset, dtype) with the same torch thread count (printed), so neither run
  inherits the other's allocator state, import side effects or thread settings.

`--workload recipe` times the countdown_rl recipe's own workload instead of the fixed one above (not the issue's
measure, which is the fixed workload): the shipped countdown-base with EOS allowed, the recipe's 3-number problems
(8 a step, drawn once), up to its 768 new tokens, and its micro-batches of 8 sequences (r1lab device_batch_size 8;
TRL per_device_train_batch_size 8 with 8 accumulation steps and steps_per_generation 8, so one update per 64
rollouts in both). Everything else is matched as above (no KL, no overlong shaping: TRL has neither built in the
same form). The two frameworks draw different samples from the same policy, so their lengths differ from step to
step: each step's mean and longest response are reported beside its time. Here the two designs differ most: r1lab
drops finished rows from its decoding batch and trains on micro-batches of rows sorted by length, each padded to its
own longest; TRL's `generate` keeps every row to the end and its micro-batches keep the generation batch's width.

A step's time is the wall time between the ends of consecutive steps (TRL: on_step_end callbacks, so the Trainer's
data loading and bookkeeping count; r1lab: the loop of `r1lab rl` -- collect_rollouts, rollout_metrics, train_on --
without its logging, evaluation and checkpoints). The first `--warmup` steps are dropped, then the median is
reported. FLOP/s = model FLOPs of the step (r1lab/flops.py: generate_flops of every sample, each with its prompt's
prefill, plus train_flops of the padded batch; the same count for both frameworks, though r1lab's own account
prefills a group's prompt once) / step time; the peak is this machine's matmul rate
(r1lab.cost.measure_matmul_peak, measured afresh here unless --cached-peak) with the same threads and dtype.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

P, G, NEW_TOKENS = 8, 8, 64  # prompts per step, samples per prompt, new tokens per sample (fixed workload)
LR, SEED = 5e-5, 0
RECIPE = "countdown_rl"  # the --workload recipe: this recipe's model, problems, token budget and micro-batches
EOS_LOGIT = -1e4  # finite: exp underflows to exactly 0, and entropy's p * z stays 0 (-inf would give NaN)


# --- shared by both workers --------------------------------------------------------------------------------------

def workload(name: str) -> dict:
    """What one step runs: the model, new tokens per sample, rows per forward/backward, generator knobs, EOS."""
    if name == "fixed":
        return {"new_tokens": NEW_TOKENS, "micro_batch": P * G, "task_args": "", "eos": False}
    if name == "recipe":
        from r1lab.config import load_config
        from r1lab.recipes import resolve_recipe
        from r1lab.rl.train import RLConfig

        cfg = load_config(RLConfig, resolve_recipe(RECIPE))
        return {"model": cfg.model, "new_tokens": cfg.max_new_tokens, "micro_batch": cfg.device_batch_size,
                "task_args": cfg.task_args, "eos": True}
    raise SystemExit(f"unknown workload {name!r}; valid: fixed, recipe")


def setup(preset: str, threads: int, work: dict):
    """(model, tokenizer, countdown task, the 8 examples). Fixed workload: a random preset with EOS suppressed by a
    frozen bias on lm_head; recipe workload: the recipe's model as shipped."""
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.tasks import get_task, parse_knobs

    torch.set_num_threads(threads)
    task = get_task("countdown")
    examples = task.generate(P, seed=SEED, split="train", **parse_knobs(task, work["task_args"]))
    if work["eos"]:
        from r1lab.model.load import load_model, resolve_checkpoint

        model, tok = load_model(resolve_checkpoint(preset))
        return model, tok, task, examples
    from r1lab.model.presets import build_model

    tok = build_tokenizer()
    model = build_model(preset, tok, seed=SEED)
    eos = torch.tensor([tok.eos_token_id])

    # a frozen output bias, -1e4 on EOS: part of the model, so every code path computes it (a forward hook would be
    # skipped by r1lab's lean decoding step, which reads the weights directly, and so it refuses to run with hooks)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    head.weight = model.lm_head.weight  # the same (tied) Parameter
    head.bias = torch.nn.Parameter(torch.zeros(model.config.vocab_size).index_fill_(0, eos, EOS_LOGIT),
                                   requires_grad=False)
    model.lm_head = head
    return model, tok, task, examples


def check_lengths(lengths: list[int], work: dict) -> None:
    """Fixed workload: every sample is exactly new_tokens long (else the two frameworks ran different work)."""
    if not work["eos"]:
        assert set(lengths) == {work["new_tokens"]}, f"not all samples are {work['new_tokens']} tokens"


def length_stats(lengths: list[int], steps: int, warmup: int) -> dict:
    """Per timed step: the mean and the longest response (tokens), from the rollouts' lengths in step order."""
    per = [lengths[i * P * G:(i + 1) * P * G] for i in range(steps)][warmup:]
    return {"mean_tokens": [round(statistics.mean(x), 1) for x in per], "max_tokens": [max(x) for x in per]}


def step_flops(config, completions_shape: list[tuple[int, int]], train_tokens: int, context_len: int) -> float:
    """Model FLOPs one r1lab step did: sampling every (prompt_len, new_tokens), plus a forward+backward over the
    tokens train_on processed (each distinct prompt once per micro-batch, then the padded responses)."""
    from r1lab.cost.flops import generate_flops, train_flops

    gen = sum(generate_flops(config, p, n) for p, n in completions_shape)
    return gen + train_flops(config, train_tokens, context_len)


def timed(fn, log: list):
    """fn, appending the wall time of each call to `log`."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            log.append(time.perf_counter() - t)
    return wrapper


def summarize(ends: list[float], warmup: int, extra: dict) -> dict:
    """Per-step times from consecutive step-end timestamps (ends[0] is the start), warm-up steps dropped."""
    times = [b - a for a, b in zip(ends, ends[1:])][warmup:]
    return {"step_s": statistics.median(times), "step_s_all": times, "threads": torch.get_num_threads(), **extra}


# --- r1lab -------------------------------------------------------------------------------------------------------

def run_r1lab(preset: str, dtype: str, steps: int, warmup: int, threads: int, work: dict) -> dict:
    from r1lab.engine import make_backend
    from r1lab.rl.rollouts import collect_rollouts, rollout_metrics
    from r1lab.rl.train import RLConfig, algorithm, train_on

    model, tok, task, examples = setup(preset, threads, work)
    cfg = RLConfig(task="countdown", template="short", seed=SEED, preset="grpo", kl_coef=0.0, steps=warmup + steps,
                   prompts_per_step=P, samples_per_prompt=G, mu=1, device_batch_size=work["micro_batch"], lr=LR,
                   weight_decay=0.0, grad_clip=1.0, temperature=1.0, top_p=1.0, max_new_tokens=work["new_tokens"])
    algo = algorithm(cfg)
    assert algo.kl_coef == 0.0 and algo.loss_agg == "seq_mean_token_mean", algo
    device = torch.device("cpu")
    amp = torch.bfloat16 if dtype == "bf16" else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    backend = make_backend("engine", model, tok, autocast_dtype=None)  # as `r1lab rl`: fp32 sampling, even in bf16
    gen_s: list[float] = []
    backend.generate = timed(backend.generate, gen_s)  # instance attribute: collect_rollouts calls it
    # pool = exactly the P examples: every step samples all of them (in a step-dependent order), as TRL does below
    ends, parts, flops, all_lengths = [time.perf_counter()], [], [], []
    for step in range(cfg.steps):
        t0 = time.perf_counter()
        model.eval()
        roll, _ = collect_rollouts(step, backend, task, examples, cfg, algo)
        t1 = time.perf_counter()
        rollout_metrics(roll)
        t2 = time.perf_counter()
        _, processed = train_on(model, None, opt, roll, cfg, algo, amp, tok.pad_token_id, device)
        processed, L = processed["train"]  # mu = 1 and no KL: the one forward + backward pass
        ends.append(time.perf_counter())
        lengths = [len(c.token_ids) for c in roll.completions]
        assert len(lengths) == P * G, len(lengths)
        check_lengths(lengths, work)
        all_lengths += lengths
        parts.append({"generate": gen_s[-1], "score": t1 - t0 - gen_s[-1], "metrics": t2 - t1, "train": ends[-1] - t2})
        flops.append(step_flops(model.config, [(len(c.prompt_ids), len(c.token_ids)) for c in roll.completions],
                                processed, L))
    parts = parts[warmup:]
    breakdown = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    return summarize(ends, warmup, {"breakdown_s": breakdown, "flops_per_step": statistics.median(flops[warmup:]),
                                    "params": sum(p.numel() for p in model.parameters()),
                                    **length_stats(all_lengths, warmup + steps, warmup)})


# --- TRL ---------------------------------------------------------------------------------------------------------

def run_trl(preset: str, dtype: str, steps: int, warmup: int, threads: int, work: dict) -> dict:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    model, tok, task, examples = setup(preset, threads, work)
    data = Dataset.from_list([{"prompt": task.prompt(ex, template="short"), "nums": ex["nums"],
                               "target": ex["target"]} for ex in examples])
    lengths: list[int] = []

    def countdown_reward(prompts, completions, completion_ids, nums, target, **kwargs):
        lengths.extend(len(ids) for ids in completion_ids)
        return [task.score(c, {"nums": n, "target": t}).reward for c, n, t in zip(completions, nums, target)]

    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    accumulate = P * G // work["micro_batch"]  # one update per P x G rollouts, as r1lab
    with tempfile.TemporaryDirectory() as out_dir:
        args = GRPOConfig(
            output_dir=out_dir, max_steps=warmup + steps, seed=SEED, use_cpu=True,
            per_device_train_batch_size=work["micro_batch"], gradient_accumulation_steps=accumulate,
            num_generations=G, steps_per_generation=accumulate, num_iterations=1,
            max_completion_length=work["new_tokens"],
            temperature=1.0, top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="grpo", scale_rewards="group",
            learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
            adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
            bf16=dtype == "bf16", fp16=False, gradient_checkpointing=False, use_vllm=False, shuffle_dataset=False,
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            log_completions=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=countdown_reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[StepClock()])
        gen_s: list[float] = []
        model.generate = timed(model.generate, gen_s)  # TRL samples with the unwrapped model's generate
        trainer.train()
    n = warmup + steps
    assert len(ends) == n + 1, f"expected {n} steps, timed {len(ends) - 1}"
    assert len(gen_s) == n, f"expected {n} generate calls, saw {len(gen_s)}"
    assert len(lengths) == n * P * G, len(lengths)
    check_lengths(lengths, work)
    return summarize(ends, warmup, {"breakdown_s": {"generate": statistics.median(gen_s[warmup:])},
                                    "trl_version": trl.__version__, **length_stats(lengths, n, warmup)})


# --- driver ------------------------------------------------------------------------------------------------------

def run_worker(framework: str, preset: str, dtype: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--presets", preset, "--dtypes", dtype,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--workload", args.workload]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"{framework} {preset} {dtype} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def fmt_row(cells, widths) -> str:
    return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="tiny-1m,tiny-5m")
    ap.add_argument("--dtypes", default="fp32", help="comma list of fp32, bf16")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="torch threads (default: all cores; 1 is steadier when other jobs share them)")
    ap.add_argument("--frameworks", default="r1lab,trl")
    ap.add_argument("--cached-peak", action="store_true", help="reuse the cached matmul peak instead of measuring")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "recipe"),
                    help=f"fixed: random presets, exactly {NEW_TOKENS} tokens a sample (the issue's measure); recipe: "
                         f"{RECIPE}'s model, problems, budget and micro-batches (--presets is ignored)")
    ap.add_argument("--out", help="write the results here as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap.parse_args()


def add_rates(rows: list[dict], peaks: dict) -> None:
    """FLOP/s, MFU against the measured peak, and TRL / r1lab, into each row."""
    for row in rows:
        r = row.get("r1lab")
        row["peak_flops_per_s"] = peaks[row["dtype"]]
        if r is not None:
            row["r1lab_flops_per_s"] = r["flops_per_step"] / r["step_s"]
            row["r1lab_mfu"] = row["r1lab_flops_per_s"] / peaks[row["dtype"]]
            if "trl" in row:
                row["trl_over_r1lab"] = row["trl"]["step_s"] / r["step_s"]
                row["trl_mfu"] = r["flops_per_step"] / row["trl"]["step_s"] / peaks[row["dtype"]]


def print_results(rows: list[dict], frameworks: list[str], work: dict) -> None:
    """The table, each framework's phases, and (recipe workload) each timed step's response lengths."""
    head = ["preset", "dtype", "params", "r1lab s/step", "TRL s/step", "TRL/r1lab", "r1lab FLOP/s", "peak FLOP/s",
            "r1lab MFU"]
    widths = [8, 5, 7, 12, 10, 9, 12, 11, 9]
    print(fmt_row(head, widths))
    for row in rows:
        r, t = row.get("r1lab"), row.get("trl")
        print(fmt_row([row["preset"], row["dtype"], f"{r['params'] / 1e6:.2f}M" if r else "-",
                       f"{r['step_s']:.3f}" if r else "-", f"{t['step_s']:.3f}" if t else "-",
                       f"{row['trl_over_r1lab']:.2f}x" if "trl_over_r1lab" in row else "-",
                       f"{row['r1lab_flops_per_s']:.3g}" if r else "-", f"{row['peak_flops_per_s']:.3g}",
                       f"{row['r1lab_mfu']:.2%}" if r else "-"], widths))
    print("\nmedian seconds per step by phase (TRL: its model.generate only)")
    for row in rows:
        for fw in frameworks:
            b = row[fw]["breakdown_s"]
            print(f"  {row['preset']} {row['dtype']} {fw:5s} " + ", ".join(f"{k} {v:.3f}" for k, v in b.items())
                  + f", rest {row[fw]['step_s'] - sum(b.values()):.3f}")
    if work["eos"]:
        print("\nresponse tokens of each timed step, mean / longest (the frameworks sample differently)")
        for row in rows:
            for fw in frameworks:
                r = row[fw]
                print(f"  {row['preset']} {row['dtype']} {fw:5s} " + ", ".join(
                    f"{m:.0f} / {x}" for m, x in zip(r["mean_tokens"], r["max_tokens"])))


def main():
    args = parse_args()
    if args.worker:
        fn = {"r1lab": run_r1lab, "trl": run_trl}[args.worker]
        work = workload(args.workload)
        print("RESULT " + json.dumps(fn(args.presets, args.dtypes, args.steps, args.warmup, args.threads, work)))
        return

    import platform

    import transformers

    from r1lab.cost.account import cpu_model, measure_matmul_peak

    torch.set_num_threads(args.threads)
    work = workload(args.workload)
    presets = [work["model"]] if args.workload == "recipe" else args.presets.split(",")
    load_before = os.getloadavg()
    up_to = "up to " if work["eos"] else ""
    print(f"workload {args.workload}: {P} prompts x {G} samples x {up_to}{work['new_tokens']} new tokens per step, "
          f"micro-batches of {work['micro_batch']}, {args.warmup} warm-up + {args.steps} timed "
          f"steps (median), torch threads {args.threads} of {os.cpu_count()} CPUs ({cpu_model()}), torch "
          f"{torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other jobs share the CPU, figures are noisy")
    frameworks = args.frameworks.split(",")
    rows = []
    for dtype in args.dtypes.split(","):
        if dtype not in ("fp32", "bf16"):
            sys.exit(f"unknown dtype {dtype!r}; valid: fp32, bf16")
        for preset in presets:
            res = {fw: run_worker(fw, preset, dtype, args) for fw in frameworks}
            rows.append({"preset": preset, "dtype": dtype, **res})
            print(f"  {preset} {dtype}: " + ", ".join(f"{fw} {r['step_s']:.3f} s/step ({r['threads']} threads)"
                                                    for fw, r in res.items()), flush=True)
    # measured after the runs, so that it never overlaps them; same threads as the workers
    peaks = {d: measure_matmul_peak(d, seconds=2.0, cache=args.cached_peak) for d in {r["dtype"] for r in rows}}
    add_rates(rows, peaks)
    load_after = os.getloadavg()
    trl_version = next((row["trl"]["trl_version"] for row in rows if "trl" in row), "n/a")
    print(f"\nTRL {trl_version}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print_results(rows, frameworks, work)
    if args.out:
        meta = {"workload": args.workload, "prompts": P, "samples": G, "new_tokens": work["new_tokens"],
                "micro_batch": work["micro_batch"], "steps": args.steps, "warmup": args.warmup,
                "threads": args.threads, "cpus": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
                "transformers": transformers.__version__, "trl": trl_version, "loadavg_before": load_before,
                "loadavg_after": load_after, "peak_measured": not args.cached_peak}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        print(f"wrote {args.out}")

if __name__ == "__main__":
    main()
