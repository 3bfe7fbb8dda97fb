"""The papers' claims at tiny scale, over seeds (issue 17 item 5): every run is an ordinary r1lab command.

    .venv/bin/python benchmarks/claims.py --out runs/claims            run what is missing, then write the report
    .venv/bin/python benchmarks/claims.py --out runs/claims --report   the report only, from the files that exist

Expected cost with the defaults (countdown_rl, arms grpo and dr_grpo, seeds 0-2, 2 jobs on 2 cores): 6 RL runs of
about 10-20 minutes each (10.5-11 min when two single-thread runs had the 2 cores to themselves, 18-21 min beside a
test suite; dev/LOG.md), two at a time: 30-60 minutes of training, plus 6 evaluations of 50 problems x 16 samples
at up to 768 tokens (not timed yet).

What runs, for each arm (a preset of r1lab/rl/algos.py) and seed, in one job slot:
  OMP_NUM_THREADS=1 r1lab rl --recipe RECIPE --set preset=ARM --set seed=S [--set K=V ...] --set threads=1
      --out OUT/ARM_sS
  OMP_NUM_THREADS=1 r1lab eval --model OUT/ARM_sS --task TASK --n N --samples K --temperature 0.6 --top-p 0.95
      --max-new-tokens (the recipe's) --no-greedy --batch-size 64 --threads 1 --task-arg (the recipe's held-out
      knobs, eval_task_args) --out OUT/ARM_sS_eval.json
Every evaluation draws the same N problems (generator seed 1) and the same sampling seed. --jobs slots run at once.
Resumable: a run whose final row is logged (its eval/* row at the last step, or without a held-out set its
checkpoint of the last step and account.json) is not rerun, an unfinished one resumes from its checkpoint, and an
evaluation file that exists is not redone (unless its run was (re)trained in this invocation).

The claims (claims_math.compute_claims, a pure function of the metrics rows and the evaluation files):
1. Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): GRPO's 1/|o| per-response averaging and its
   std normalisation bias it towards long wrong responses; Dr. GRPO's wrong responses grow less, at similar
   accuracy. Measured: the growth of response_len_wrong (training rollouts) = its mean over the last W logged steps
   minus its mean over the first W (W = 5, or half the steps when fewer than 10), counting only steps with a wrong
   rollout; verdict on the median over seeds, with the held-out pass@1 of both arms beside it.
2. Majority vote (DeepSeek-R1): after RL, cons@K exceeds pass@1 (the mean over the K samples) by >= 5 points.
   Verdict per arm on the median over seeds, with the minimum.
3. Curves: per arm, the mean over seeds per step of response length, attempts and marker rate for right and for
   wrong rollouts, the truncation rate and the accuracy (curves.png).
What comes out is reported as it is, a claim that does not reproduce included.

Writes OUT/claims.json, OUT/claims.md (paste-ready tables and verdicts), OUT/claims.html (self-contained, the CSP
of r1lab/report.py) and OUT/curves.png, and prints the report; OUT/commands.jsonl logs every command this script ran
with its wall time, OUT/logs/ARM_sS.log each run's output.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import html
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from claims_math import CURVES, arm_difference, compute_claims, ends

# (label, format, the curves of all rollouts / right ones / wrong ones) in the report's table of claim 3
CURVE_ROWS = [("accuracy", "{:.3f}", ("acc", None, None)),
              ("length (tokens)", "{:.1f}", ("response_len", "response_len_correct", "response_len_wrong")),
              ("attempts", "{:.2f}", ("attempts", "attempts_correct", "attempts_wrong")),
              ("marker rate", "{:.3f}", ("marker_rate", "marker_rate_correct", "marker_rate_wrong")),
              ("truncated rate", "{:.3f}", ("truncated_rate", None, None))]
PANELS = [("acc",), ("response_len_correct", "response_len_wrong"), ("attempts_correct", "attempts_wrong"),
          ("marker_rate_correct", "marker_rate_wrong"), ("truncated_rate",)]
RESERVED = ("preset", "seed", "out_dir", "threads")  # set by this script for every run
EVAL_SEED = 1  # the held-out problems' generator seed, the same for every run (r1lab eval's default)


# --- the report: blocks rendered as Markdown and as HTML -----------------------------------------------------------

def _f(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def report_blocks(claims: dict, meta: dict) -> list[tuple]:
    """("h"|"p"|"ul"|"table"|"pre"|"img", ...) blocks; render_md and render_html write them out."""
    L, V = claims["length"], claims["vote"]
    w = max([r[s]["window"] for r in L["runs"] for s in ("wrong", "right") if r[s]] or [L["window"]])
    k = next((v["samples"] for v in V["arms"].values() if v["samples"]), "K")
    blocks = [("h", 2, f"The papers' claims at tiny scale: {meta['recipe']}, arms {', '.join(meta['arms'])}, "
                       f"seeds {', '.join(map(str, meta['seeds']))}"),
              ("p", f"Written {meta['date']} by benchmarks/claims.py. Held-out evaluation: {meta['eval']}."),
              ("h", 3, "Verdicts"), ("ul", claims["verdicts"]),
              ("h", 3, "1. Dr. GRPO vs GRPO: growth of the wrong responses' length"),
              ("p", f"Growth = mean response_len_wrong of the training rollouts (tokens) over the last {w} logged "
                    f"steps minus over the first {w}, counting only steps that had a wrong rollout; right: the same "
                    f"for response_len_correct. pass@1: the held-out evaluation (mean of {k} samples).")]
    rows = []
    for r in L["runs"]:
        g, h = r["wrong"] or {}, r["right"] or {}
        rows.append([r["arm"], str(r["seed"]), _f(g.get("first"), "{:.1f}"), _f(g.get("last"), "{:.1f}"),
                     _f(g.get("growth"), "{:+.1f}"), _f(h.get("growth"), "{:+.1f}"), _f(r["pass1"])])
    rows += [[arm, "median", "", "", _f(a["growth_wrong"], "{:+.1f}"), _f(a["growth_right"], "{:+.1f}"),
              _f(a["pass1"])] for arm, a in L["arms"].items()]
    blocks.append(("table", ["arm", "seed", f"wrong: first {w}", f"wrong: last {w}", "wrong: growth",
                             "right: growth", "held-out pass@1"], rows))
    blocks += [("h", 3, f"2. Majority vote after RL: cons@{k} - pass@1"),
               ("p", f"Held-out evaluation, {k} samples a problem; gap in points.")]
    rows = [[r["arm"], str(r["seed"]), _f(r["pass1"]), _f(r["cons"]), _f(r["gap"], "{:+.1f}")] for r in V["runs"]]
    rows += [[arm, "median (min)", "", "", f"{_f(v['median'], '{:+.1f}')} ({_f(v['min'], '{:+.1f}')})"]
             for arm, v in V["arms"].items()]
    blocks.append(("table", ["arm", "seed", "pass@1", f"cons@{k}", "gap"], rows))
    blocks += [("h", 3, "3. Behaviour over training, right vs wrong rollouts (mean over seeds)"),
               ("p", f"Each cell: mean over the first {w} logged steps -> over the last {w} (steps without that side "
                     f"skipped). Curves: curves.png.")]
    rows = []
    for arm, c in claims["curves"].items():
        for label, fmt, keys in CURVE_ROWS:
            cells = [arm, label]
            for key in keys:
                e = ends([v for v in c[key] if v is not None], w) if key else None
                cells.append("" if key is None else "-" if e is None else f"{fmt.format(e[0])} -> {fmt.format(e[1])}")
            rows.append(cells)
    blocks.append(("table", ["arm", "metric", "all rollouts", "right", "wrong"], rows))
    if meta.get("figure"):
        blocks.append(("img", meta["figure"], "Mean over seeds per step, right (solid) vs wrong (dashed)"))
    blocks += [("h", 3, "What the arms differ in"),
               ("p", "Each arm's algorithm as its runs resolved it (r1lab.rl.train.algorithm: the preset, then every "
                     "algorithm setting the recipe or --set gives, which stays whatever the preset):"),
               ("ul", meta["difference"]),
               ("h", 3, "Runs"), ("table", ["run", "RL wall (s)", "eval wall (s)", "this invocation"], meta["runs"]),
               ("p", "Commands (each with OMP_NUM_THREADS=1):"), ("pre", "\n".join(meta["commands"]))]
    return blocks


def difference_lines(diff: dict, kl_note: bool) -> list[str]:
    lines = [f"{k}: " + ", ".join(f"{v!r} ({a})" for a, v in by_arm.items()) for k, by_arm in diff["differ"].items()]
    lines.append("the same in every arm: " + ", ".join(f"{k} {v!r}" for k, v in diff["same"].items()))
    for arm, o in diff["overridden"].items():
        lines.append(f"{arm}: the recipe or --set overrides its preset: " +
                     ", ".join(f"{k} {new!r} (preset {old!r})" for k, (old, new) in o.items()))
    if kl_note:
        lines.append("the KL term is a loss reduced by each arm's own loss_agg (r1lab/rl/train.py train_on), so its "
                     "aggregation differs with the policy loss's")
    return lines


def render_md(blocks) -> str:
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {item}" for item in b[1]))
        elif b[0] == "table":
            out.append("\n".join(["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                                 + ["| " + " | ".join(row) + " |" for row in b[2]]))
        elif b[0] == "pre":
            out.append(f"```\n{b[1]}\n```")
        elif b[0] == "img":
            out.append(f"![{b[2]}]({Path(b[1]).name})")
    return "\n\n".join(out) + "\n"


def render_html(blocks, title: str) -> str:
    from r1lab.evaluation.table import html_table
    from r1lab.report import embedded_figure, html_page

    e = html.escape
    parts = []
    for b in blocks:
        if b[0] == "h":
            parts.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "ul":
            parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in b[1]) + "</ul>")
        elif b[0] == "table":
            parts.append(html_table([e(h) for h in b[1]], [[e(c) for c in row] for row in b[2]]))
        elif b[0] == "pre":
            parts.append(f"<pre>{e(b[1])}</pre>")
        elif b[0] == "img":
            parts.append(embedded_figure(b[2], b[1]))
    return html_page(title, parts)


def plot_curves(curves: dict, path: Path) -> Path:
    """curves.png through report.py's figure: one line colour per arm, right solid and wrong dashed, smoothed over
    the faint per-step means."""
    from r1lab.report import Run, _figure

    runs = [Run(arm, path.parent, [{"step": s, **{k: c[k][i] for k in CURVES}} for i, s in enumerate(c["step"])])
            for arm, c in curves.items()]
    _figure(runs, "Behaviour over training, mean over seeds: right (solid) vs wrong (dashed)", PANELS, path)
    return path


# --- the runs ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Plan:
    arm: str
    seed: int
    cfg: object                  # the run's resolved RLConfig
    run_dir: Path
    eval_file: Path
    rl_argv: list[str]
    eval_argv: list[str]

    @property
    def name(self) -> str:
        return f"{self.arm}_s{self.seed}"


def make_plans(args) -> list[Plan]:
    """Every (arm, seed) run's config (checked, as `r1lab rl` would, before any run starts) and commands."""
    from r1lab.config import load_config
    from r1lab.recipes import resolve_recipe
    from r1lab.rl.config import RLConfig, check, eval_budget, held_out_task_args
    from r1lab.tasks import get_task, parse_knobs

    for item in args.set:
        if item.split("=", 1)[0].strip() in RESERVED:
            raise ValueError(f"--set {item}: {', '.join(RESERVED)} are set by this script")
    out, cli = Path(args.out), [sys.executable, "-m", "r1lab.cli"]
    plans = []
    for arm in args.arms:
        for seed in args.seeds:
            run_dir = out / f"{arm}_s{seed}"
            sets = [f"preset={arm}", f"seed={seed}", *args.set, "threads=1"]
            cfg = load_config(RLConfig, resolve_recipe(args.recipe), sets + [f"out_dir={run_dir}"])
            check(cfg)
            knobs = parse_knobs(get_task(cfg.task), held_out_task_args(cfg)) if not cfg.eval_data else {}
            problems = ["--data", cfg.eval_data] if cfg.eval_data else ["--seed", str(EVAL_SEED)]
            rl = cli + ["rl", "--recipe", args.recipe, *(x for s in sets for x in ("--set", s)), "--out", str(run_dir)]
            ev = cli + ["eval", "--model", str(run_dir), "--task", cfg.task, *problems, "--n", str(args.eval_n),
                        "--samples", str(args.eval_samples), "--temperature", str(args.eval_temperature),
                        "--top-p", "0.95", "--max-new-tokens", str(eval_budget(cfg)), "--template", cfg.template,
                        "--no-greedy", "--batch-size", "64", "--threads", "1"]
            ev += [x for k, v in knobs.items() for x in ("--task-arg", f"{k}={v}")]
            plans.append(Plan(arm, seed, cfg, run_dir, out / f"{arm}_s{seed}_eval.json", rl,
                              ev + ["--out", str(out / f"{arm}_s{seed}_eval.json")]))
    return plans


def rl_finished(run_dir: Path, steps: int) -> bool:
    """The run reached its last step: its final eval/* row is logged, or (without a held-out set) its checkpoint of
    the last step and its account.json exist."""
    from r1lab.checkpoint import latest_checkpoint
    from r1lab.report import _jsonl

    rows = _jsonl(run_dir / "metrics.jsonl")
    if any(r.get("step") == steps and any(k.startswith("eval/") for k in r) for r in rows):
        return True
    ckpt = latest_checkpoint(run_dir)
    return ckpt is not None and ckpt.name == f"step_{steps:06d}" and (run_dir / "account.json").is_file()


def command_line(argv: list[str]) -> str:
    return "OMP_NUM_THREADS=1 " + shlex.join(argv)


def execute(plans: list[Plan], out: Path, jobs: int) -> dict[str, dict]:
    """Run what is missing, `jobs` (arm, seed) pairs at a time, each RL run followed by its evaluation in the same
    slot; returns {name: {"rl": "ran" | "reused" | "failed", "eval": ...}}."""
    lock, status = threading.Lock(), {}
    (out / "logs").mkdir(parents=True, exist_ok=True)

    def call(plan: Plan, kind: str, argv: list[str]) -> str:
        log, t0 = out / "logs" / f"{plan.name}.log", time.time()
        started = datetime.datetime.now().isoformat(" ", "seconds")
        print(f"{plan.name}: {kind} starts", flush=True)
        with open(log, "a") as f:
            code = subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.time() - t0
        with lock, open(out / "commands.jsonl", "a") as f:
            f.write(json.dumps({"run": plan.name, "kind": kind, "command": command_line(argv), "started": started,
                                "wall_s": round(wall, 1), "exit": code}) + "\n")
        print(f"{plan.name}: {kind} exit {code} in {wall:.0f} s (log {log})", flush=True)
        return "ran" if code == 0 else "failed"

    def one(plan: Plan) -> None:
        s = {"rl": "reused", "eval": "reused"}
        if not rl_finished(plan.run_dir, plan.cfg.steps):
            s["rl"] = call(plan, "rl", plan.rl_argv)
        if s["rl"] == "failed":
            s["eval"] = "not run"
        elif s["rl"] == "ran" or not plan.eval_file.is_file():
            s["eval"] = call(plan, "eval", plan.eval_argv)
        status[plan.name] = s

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, plans))
    return status


def _ledger(out: Path) -> dict[tuple[str, str], dict]:
    """The last successful command of each (run, kind) from commands.jsonl."""
    from r1lab.report import _jsonl

    return {(r["run"], r["kind"]): r for r in _jsonl(out / "commands.jsonl") if r.get("exit") == 0}


def write_report(plans: list[Plan], out: Path, args, status: dict) -> dict:
    from r1lab.evaluation.evaluate import finite
    from r1lab.jsonl import write_text_atomic
    from r1lab.report import _json, _jsonl
    from r1lab.rl import algos
    from r1lab.rl.train import algorithm, eval_budget

    runs: dict[str, dict[int, dict]] = {}
    ledger, info = _ledger(out), {}
    for p in plans:
        runs.setdefault(p.arm, {})[p.seed] = {"metrics": _jsonl(p.run_dir / "metrics.jsonl"),
                                              "eval": _json(p.eval_file)}
        own = {"rl": (_json(p.run_dir / "account.json") or {}).get("wall_s"),
               "eval": (runs[p.arm][p.seed]["eval"] or {}).get("wall_s")}
        # the wall time of the process that made it (commands.jsonl); else the run's own count (no process start-up)
        walls = {k: ledger[(p.name, k)]["wall_s"] if (p.name, k) in ledger else own[k] for k in own}
        info[p.name] = {"rl_command": command_line(p.rl_argv), "eval_command": command_line(p.eval_argv),
                        "rl_wall_s": walls["rl"], "eval_wall_s": walls["eval"],
                        "this_invocation": status.get(p.name, {"rl": "reused", "eval": "reused"})}
    run_rows = [[name, _f(i["rl_wall_s"], "{:.0f}"), _f(i["eval_wall_s"], "{:.0f}"),
                 ", ".join(f"{k} {v}" for k, v in i["this_invocation"].items())] for name, i in info.items()]
    commands = [c for i in info.values() for c in (i["rl_command"], i["eval_command"])]
    claims = compute_claims(runs)
    algs = {p.arm: dataclasses.asdict(algorithm(p.cfg)) for p in plans}
    diff = arm_difference(algs, {a: dataclasses.asdict(algos.PRESETS[a]) for a in algs})
    kl_note = "loss_agg" in diff["differ"] and any(a["kl_coef"] > 0 and not a["kl_as_reward"] for a in algs.values())
    curves = claims["curves"]
    figure = plot_curves(curves, out / "curves.png") if any(c["step"] for c in curves.values()) else None
    meta = {"recipe": args.recipe, "arms": args.arms, "seeds": args.seeds, "date": datetime.date.today().isoformat(),
            "eval": f"r1lab eval, {args.eval_n} problems (the recipe's held-out knobs, generator seed {EVAL_SEED}) x "
                    f"{args.eval_samples} samples, T={args.eval_temperature}, top-p 0.95, "
                    f"{eval_budget(plans[0].cfg)} new tokens" + (f"; --set {' '.join(args.set)}" if args.set else ""),
            "difference": difference_lines(diff, kl_note), "runs": run_rows, "commands": commands, "figure": figure}
    blocks = report_blocks(claims, meta)
    md = render_md(blocks)
    title = f"The papers' claims at tiny scale: {args.recipe}"
    write_text_atomic(out / "claims.md", md)
    write_text_atomic(out / "claims.html", render_html(blocks, title))
    result = finite({"settings": {"recipe": args.recipe, "arms": args.arms, "seeds": args.seeds, "set": args.set,
                                  "eval_n": args.eval_n, "eval_samples": args.eval_samples,
                                  "eval_temperature": args.eval_temperature, "eval_seed": EVAL_SEED,
                                  "algorithms": algs, "difference": diff},
                     "claims": claims, "runs": info})
    write_text_atomic(out / "claims.json", json.dumps(result, indent=2, default=str) + "\n")
    print(md)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="countdown_rl", help="the RL recipe both arms run (default countdown_rl)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--arms", default="grpo,dr_grpo", help="comma-separated presets, an arm each (default grpo,dr_grpo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an RLConfig override for every arm (repeatable)")
    p.add_argument("--eval-n", type=int, default=50, help="held-out problems (default 50)")
    p.add_argument("--eval-samples", type=int, default=16, help="samples a problem: pass@1 and cons@K (default 16)")
    p.add_argument("--eval-temperature", type=float, default=0.6, help="evaluation temperature (default 0.6, as R1)")
    p.add_argument("--jobs", type=int, default=2, help="(arm, seed) runs at a time, one thread each (default 2)")
    p.add_argument("--out", default="runs/claims")
    p.add_argument("--report", action="store_true", help="run nothing; the report from the files that exist")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.jobs < 1 or args.eval_n < 1 or args.eval_samples < 1 or not args.seeds or not args.arms:
        p.error("--jobs, --eval-n and --eval-samples must be at least 1, and --seeds and --arms not empty")
    try:
        plans = make_plans(args)
    except ValueError as e:  # ConfigError included: a bad recipe, key, value or preset
        print(f"claims.py: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = {} if args.report else execute(plans, out, args.jobs)
    write_report(plans, out, args, status)
    failed = [n for n, s in status.items() if "failed" in s.values()]
    if failed:
        print(f"claims.py: failed: {', '.join(failed)} (see {out / 'logs'}); the report holds what exists",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
