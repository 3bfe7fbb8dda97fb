"""`r1lab demo`: the R1-Zero effect on a laptop, in one command.

    r1lab demo                      shipped base -> eval -> GRPO -> eval -> report   (~9 minutes on 2 cores)
    r1lab demo --from-scratch       pretrains its own base first (countdown_base_scratch: tiny-1m on 3-number problems
                                    with numbers <= 8), then GRPO and the evaluations on those problems (15-22 minutes)
    r1lab demo --quick              a shortened run (CI); exits 1 unless accuracy rises
    r1lab demo --r1                 the R1 pipeline instead (`r1lab pipeline --recipe r1_countdown_demo`, ~14 minutes):
                                    R1-Zero teacher -> cold start -> GRPO -> rejection sampling -> SFT, every model
                                    evaluated on the same held-out problems

Each stage is the ordinary command (`r1lab pretrain`, `r1lab eval`, `r1lab rl`, `r1lab report`) run in-process on
shipped recipes, so what the demo shows is what those commands do.
"""
from __future__ import annotations

import argparse
import sys

HELP = "the one-command demo: base model -> eval -> R1-Zero GRPO -> eval -> report, with a before/after table"

# RL recipe (and overrides), eval problems and samples, for the full demo and for --quick
PLANS = {
    "full": {"rl": "countdown_rl", "rl_set": ["eval_instances=0"], "eval_n": 100, "samples": 4},
    "quick": {"rl": "countdown_rl_quick", "rl_set": [], "eval_n": 100, "samples": 2},
    # a base made here, in minutes, knows less: a narrower corpus and RL on the same narrow problems (dev/LOG.md)
    "scratch": {"pretrain": "countdown_base_scratch", "rl": "countdown_rl_scratch", "rl_set": ["eval_instances=0"],
                "eval_n": 100, "samples": 4},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--from-scratch", action="store_true",
                   help="pretrain a base model first (countdown_base_scratch) instead of using the shipped one")
    p.add_argument("--quick", action="store_true", help="a shortened run for CI; fails unless accuracy rises")
    p.add_argument("--r1", action="store_true",
                   help="the R1 pipeline (cold start, GRPO, rejection sampling, SFT) in ~14 minutes, in OUT/r1")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from r1lab import runtime
    from r1lab.cli import main as cli
    from r1lab.config import load_config
    from r1lab.recipes import resolve_recipe
    from r1lab.rl.train import RLConfig

    runtime.set_threads(args.threads)
    if args.r1:
        if args.quick or args.from_scratch:
            print("r1lab demo: --r1 runs from the shipped base; it takes neither --quick nor --from-scratch",
                  file=sys.stderr)
            return 2
        return cli(["pipeline", "--recipe", "r1_countdown_demo", "--out", str(Path(args.out) / "r1"),
                    "--set", f"threads={args.threads}"])
    if args.quick and args.from_scratch:
        print("r1lab demo: --from-scratch has no --quick form (its pretraining is most of its time)", file=sys.stderr)
        return 2
    plan = PLANS["quick" if args.quick else "scratch" if args.from_scratch else "full"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rl_cfg = load_config(RLConfig, resolve_recipe(plan["rl"]), plan["rl_set"])
    stages = 5 if args.from_scratch else 4
    t0 = time.time()
    base = "countdown-base"
    stage = 0

    def banner(text):
        nonlocal stage
        stage += 1
        print(f"\n=== [{stage}/{stages}] {text} ({time.time() - t0:.0f}s elapsed) ===", flush=True)

    if args.from_scratch:
        banner(f"pretraining a base model from scratch (tokenizer + tiny Llama, {plan['pretrain']} recipe)")
        if cli(["pretrain", "--recipe", plan["pretrain"], "--out", str(out / "base"),
                "--set", f"threads={args.threads}"]) != 0:
            return 1
        base = str(out / "base")
    eval_args, budget = _eval_arguments(rl_cfg, plan)

    banner(f"evaluating the base model ({base}) on {plan['eval_n']} held-out problems")
    if cli(["eval", "--model", base, *eval_args, "--out", str(out / "eval_base.json")]) != 0:
        return 1
    banner(f"R1-Zero: GRPO on {rl_cfg.task} ({plan['rl']} recipe, {rl_cfg.steps} steps)")
    rl_set = sum((["--set", item] for item in plan["rl_set"] + [f"threads={args.threads}"]), [])
    if cli(["rl", "--recipe", plan["rl"], "--model", base, "--out", str(out / "rl"), *rl_set]) != 0:
        return 1
    banner("evaluating the RL model on the same problems")
    if cli(["eval", "--model", str(out / "rl"), *eval_args, "--out", str(out / "eval_rl.json")]) != 0:
        return 1
    banner("writing the report")
    evals = ["--eval", f"base={out / 'eval_base.json'}", "--eval", f"after RL={out / 'eval_rl.json'}"]
    if cli(["report", str(out / "rl"), "--out", str(out / "report"), *evals,
            "--title", f"R1-Zero on {rl_cfg.task}: before and after RL"]) != 0:
        return 1

    before = json.loads((out / "eval_base.json").read_text())
    after = json.loads((out / "eval_rl.json").read_text())
    print(f"\nR1-Zero on {rl_cfg.task}: before and after RL ({time.time() - t0:.0f}s in all)")
    print_table(before, after, rl_cfg, plan, budget)
    print(f"\nreport: {out / 'report' / 'report.html'}")
    if args.quick and not after["pass1"] > before["pass1"]:
        print("demo --quick: accuracy did not rise", flush=True)
        return 1
    return 0


def _eval_arguments(rl_cfg, plan: dict) -> tuple[list[str], dict | None]:
    """(`r1lab eval` flags for both evaluations: the same held-out problems, samples and budgets; the recipe's
    held-out thinking budget, None when it has none)."""
    from r1lab.rl.rollouts import thinking_budget
    from r1lab.rl.train import eval_budget, held_out_task_args
    from r1lab.tasks import get_task, parse_knobs

    held_out = parse_knobs(get_task(rl_cfg.task), held_out_task_args(rl_cfg))
    knobs = sum((["--task-arg", f"{k}={v}"] for k, v in held_out.items()), [])
    eval_args = ["--task", rl_cfg.task, "--n", str(plan["eval_n"]), "--samples", str(plan["samples"]),
                 "--max-new-tokens", str(eval_budget(rl_cfg)), "--no-greedy",
                 "--batch-size", "64"] + knobs  # 64 rows at a time keeps the KV cache (and the demo) under 3 GB
    budget = thinking_budget(rl_cfg, evaluation=True)
    if budget:  # both evaluations under the recipe's held-out thinking budget
        eval_args += ["--max-thinking-tokens", str(budget["max_thinking_tokens"]), "--thinking-end",
                      budget["thinking_end"]]
    return eval_args, budget


def print_table(before: dict, after: dict, rl_cfg, plan: dict, budget: dict | None) -> None:
    """The before/after table of two `r1lab eval` results (their JSON)."""
    from r1lab.rl.train import held_out_task_args

    rows = [("pass@1 (mean of %d, T=0.6)" % plan["samples"], "pass1", "{:.3f}"),
            ("cons@%d" % plan["samples"], "cons_at_k", "{:.3f}"),
            ("format rate", "format_rate", "{:.3f}")]
    if budget:
        rows.append((f"thinking cut at {budget['max_thinking_tokens']} tokens", "thinking_cut_rate", "{:.3f}"))
    rows.append(("truncated (no answer)", "truncated_rate", "{:.3f}"))
    print(f"  {plan['eval_n']} held-out problems ({held_out_task_args(rl_cfg)}), {plan['samples']} samples each")
    print(f"  {'':<28}{'base':>10}{'after RL':>10}")
    for label, key, fmt in rows:
        print(f"  {label:<28}{fmt.format(before[key]):>10}{fmt.format(after[key]):>10}")
    mean = "response tokens (mean)"
    print(f"  {mean:<28}{before['response_len']['mean']:>10.1f}{after['response_len']['mean']:>10.1f}")
    for label, key, fmt in (("arithmetic steps correct", "step_acc", "{:.3f}"),
                            ("attempts per response", "attempts", "{:.2f}")):
        print(f"  {label:<28}{fmt.format(before['behaviour'][key]):>10}{fmt.format(after['behaviour'][key]):>10}")
