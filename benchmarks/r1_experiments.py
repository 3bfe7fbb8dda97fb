"""Issue 14's two experiments on countdown, 2 CPU cores, 3 seeds each: every run is an ordinary r1lab command.

    python benchmarks/r1_experiments.py --out runs/r1exp              run what is missing (about 2-3 hours), then
                                                                       print the tables and write runs/r1exp/report
    python benchmarks/r1_experiments.py --out runs/r1exp --jobs 2     two runs at a time, 1 thread each
    python benchmarks/r1_experiments.py --out runs/r1exp --table      the tables only, from the runs that exist

1. Cold start. Arm "RL alone": the shipped recipe (countdown_rl, 25 GRPO steps from countdown-base), seeds 0-2,
   held-out pass@1 every 5 steps (200 problems, T=1, the run's own held-out set). Arm "cold start": SFT of the base on
   300 verified traces of the RL-trained model (rl_s0, shortest correct of 4 samples a problem), then the same
   recipe for 12 steps (held-out pass@1 every 4), seeds 0-2. Measured: the steps (and wall seconds) each cold-start seed needs to reach its
   paired RL-alone seed's final pass@1 (same seed, same held-out problems). Target: half the steps or fewer.
2. Distillation vs RL on a small student. The student base: tiny-1m pretrained by the short recipe
   (countdown_base_short) on the shipped base's corpus. Arm A: GRPO from it (countdown_rl, 25 steps). Arm B: SFT of
   it on verified traces of the RL-trained shipped model (rl_s0: 1000 problems x 4 samples, at most 2 correct kept
   each, 2 epochs). Both evaluated on the same 200 held-out problems x 2 samples at T=0.6. FLOPs from each run's
   cost account: the student side (A: rollouts + reference + training; B: SFT), and B with the teacher's
   generation counted. Target: B beats A by 10 points at no more student-side FLOPs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SEEDS = (0, 1, 2)
THREE = ["--task-arg", "min_numbers=3", "--task-arg", "max_numbers=3", "--task-arg", "max_number=12",
         "--task-arg", "max_target=100"]
MIX = ["--task-arg", "min_numbers=3", "--task-arg", "max_numbers=4", "--task-arg", "max_number=12",
       "--task-arg", "max_target=100"]
COLD_STEPS = 12  # half of RL alone's 25: the target is to be there by then


def runs(out: Path, threads: int, student_steps: int = 150) -> list[list[tuple[str, list[str], Path]]]:
    """Phases of (name, r1lab argv, the file that exists once it finished); runs within a phase are independent."""
    t = str(threads)
    rl_set = ["--set", f"threads={t}", "--set", "eval_every=5"]
    teacher = str(out / "rl_s0")

    def distill(name, n, keep, seed):
        return (name, ["distill", "--teacher", teacher, "--task", "countdown", "--split", "train", *THREE,
                       "--n", str(n), "--seed", str(seed), "--samples", "4", "--keep-per-problem", str(keep),
                       "--shortest-first", "--max-new-tokens", "768", "--threads", t,
                       "--out", str(out / name / "traces.jsonl"), "--pass-rates", str(out / name / "rates.jsonl"),
                       "--account", str(out / name / "account.json")],
                out / name / "account.json")

    def evaluate(name, model):
        return (f"eval_{name}", ["eval", "--model", model, "--task", "countdown", "--split", "test", *MIX,
                                 "--n", "200", "--seed", "31", "--samples", "2", "--max-new-tokens", "768",
                                 "--no-greedy", "--batch-size", "64", "--threads", t,
                                 "--out", str(out / "eval" / f"{name}.json")],
                out / "eval" / f"{name}.json")

    return [
        [(f"rl_s{s}", ["rl", "--recipe", "countdown_rl", "--set", f"seed={s}", *rl_set, "--out", str(out / f"rl_s{s}")],
          out / f"rl_s{s}" / "account.json") for s in SEEDS]
        + [("student_base", ["pretrain", "--recipe", "countdown_base_short", "--model", "tiny-1m",
                             "--set", f"steps={student_steps}", "--set", f"eval_every={student_steps}",
                             "--set", f"threads={t}", "--out", str(out / "student_base")],
            out / "student_base" / "account.json")],
        [distill("cold_data", 300, 1, 21), distill("distill_data", 1000, 2, 22)]
        + [(f"studA_s{s}", ["rl", "--recipe", "countdown_rl", "--model", str(out / "student_base"),
                            "--set", f"seed={s}", "--set", f"threads={t}", "--set", "eval_instances=0",
                            "--out", str(out / f"studA_s{s}")], out / f"studA_s{s}" / "account.json")
           for s in SEEDS],
        [(f"cold_sft_s{s}", ["sft", "--recipe", "sft_countdown", "--data", str(out / "cold_data" / "traces.jsonl"),
                             "--set", "seq_len=1024", "--set", f"seed={s}", "--set", f"threads={t}",
                             "--set", "eval_instances=0", "--out", str(out / f"cold_sft_s{s}")],
          out / f"cold_sft_s{s}" / "account.json") for s in SEEDS]
        + [(f"studB_s{s}", ["sft", "--recipe", "sft_countdown", "--model", str(out / "student_base"),
                            "--data", str(out / "distill_data" / "traces.jsonl"), "--set", "seq_len=1024",
                            "--set", "epochs=2", "--set", f"seed={s}", "--set", f"threads={t}",
                            "--set", "eval_instances=0", "--out", str(out / f"studB_s{s}")],
            out / f"studB_s{s}" / "account.json") for s in SEEDS],
        [(f"cold_rl_s{s}", ["rl", "--recipe", "countdown_rl", "--model", str(out / f"cold_sft_s{s}"),
                            "--set", f"seed={s}", "--set", f"steps={COLD_STEPS}", "--set", f"threads={t}",
                            "--set", "eval_every=4",
                            "--out", str(out / f"cold_rl_s{s}")], out / f"cold_rl_s{s}" / "account.json")
         for s in SEEDS]
        + [evaluate("student_base", str(out / "student_base"))]
        + [evaluate(f"studA_s{s}", str(out / f"studA_s{s}")) for s in SEEDS]
        + [evaluate(f"studB_s{s}", str(out / f"studB_s{s}")) for s in SEEDS],
    ]


def execute(out: Path, jobs: int, student_steps: int) -> None:
    threads = 2 // jobs if jobs <= 2 else 1
    for phase in runs(out, threads, student_steps):
        todo = [r for r in phase if not r[2].is_file()]

        def one(run):
            name, argv, _ = run
            t0 = time.time()
            log = out / "logs" / f"{name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as f:
                code = subprocess.call([sys.executable, "-m", "r1lab.cli", *argv], stdout=f, stderr=subprocess.STDOUT,
                                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            print(f"{name}: exit {code} in {time.time() - t0:.0f} s (log {log})", flush=True)
            if code != 0:
                raise SystemExit(f"{name} failed; see {log}")

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, todo))


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _evals(run: Path) -> dict[int, tuple[float, float]]:
    """step -> (held-out pass@1, the run's FLOPs so far) from an rl run's periodic evaluations (a step's "flops" is
    the run's running total)."""
    out, flops = {}, 0.0
    for m in _metrics(run):
        flops = m.get("flops", flops)
        if "eval/pass1" in m:
            out[m["step"]] = (m["eval/pass1"], flops)
    return out


def _flops(path: Path) -> float:
    return json.loads(path.read_text())["flops"] if path.is_file() else float("nan")


def _med(xs) -> str:
    xs = [x for x in xs if x == x]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def tables(out: Path) -> str:
    lines = ["## Cold start vs RL alone (held-out pass@1, 200 problems, T=1, each seed's own held-out set)", "",
             f"| seed | RL alone: step 0 / final (25) | cold start: SFT (step 0) / 4 / 8 / 12 | cold-start steps to "
             f"reach RL alone's final | RL alone's steps to reach it | RL FLOPs to reach it: cold start / RL alone |",
             "|---|---|---|---|---|---|"]
    for s in SEEDS:
        a, c = _evals(out / f"rl_s{s}"), _evals(out / f"cold_rl_s{s}")
        if not a or not c:
            lines.append(f"| {s} | (missing) | | | | |")
            continue
        target = a[max(a)][0]
        reach = next((st for st in sorted(c) if c[st][0] >= target), None)
        first_a = next(st for st in sorted(a) if a[st][0] >= target)
        curve = " / ".join(f"{c[st][0]:.3f}" for st in sorted(c))
        flops = f"{c[reach][1]:.3g} / {a[first_a][1]:.3g}" if reach is not None else f"- / {a[first_a][1]:.3g}"
        lines.append(f"| {s} | {a[0][0]:.3f} / {target:.3f} | {curve} | "
                     f"{reach if reach is not None else f'not within {COLD_STEPS}'} | {first_a} | {flops} |")
    lines.append(f"\nThe cold start's own cost: the teacher's sampling {_flops(out / 'cold_data' / 'account.json'):.3g} "
                 f"FLOPs and its SFT {_flops(out / 'cold_sft_s0' / 'account.json'):.3g} FLOPs (seed 0).")
    lines += ["", "## Distillation vs RL on a tiny-1m student (held-out pass@1, 200 problems x 2 samples, T=0.6)", "",
              "| arm | pass@1 median (range) | format rate | student-side FLOPs | with the teacher's generation |",
              "|---|---|---|---|---|"]
    base = out / "eval" / "student_base.json"
    if base.is_file():
        r = json.loads(base.read_text())
        lines.append(f"| student base | {r['pass1']:.3f} | {r['format_rate']:.3f} | "
                     f"{_flops(out / 'student_base' / 'account.json'):.3g} (pretraining) | |")
    teacher = _flops(out / "distill_data" / "account.json")
    for arm, label in (("studA", "A: GRPO, 25 steps"), ("studB", "B: SFT on the teacher's traces")):
        evals = [out / "eval" / f"{arm}_s{s}.json" for s in SEEDS]
        res = [json.loads(p.read_text()) for p in evals if p.is_file()]
        flops = [_flops(out / f"{arm}_s{s}" / "account.json") for s in SEEDS]
        with_teacher = [f + teacher for f in flops] if arm == "studB" else flops
        lines.append(f"| {label} | {_med([r['pass1'] for r in res])} | {_med([r['format_rate'] for r in res])} | "
                     f"{statistics.median(flops):.3g} | {statistics.median(with_teacher):.3g} |")
    lines.append(f"\nTeacher generation (rl_s0 sampling 1000 x 4): {teacher:.3g} FLOPs; the teacher's own RL run: "
                 f"{_flops(out / 'rl_s0' / 'account.json'):.3g} FLOPs.")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/r1exp")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (2 cores: 1 or 2)")
    p.add_argument("--table", action="store_true", help="only print the tables from the runs that exist")
    p.add_argument("--student-steps", type=int, default=150,
                   help="pretraining steps of the tiny-1m student (default 150: countdown_base_short's)")
    args = p.parse_args()
    out = Path(args.out)
    if not args.table:
        execute(out, args.jobs, args.student_steps)
        from r1lab.cli import main as cli

        runs_ = [str(out / n) for n in ("rl_s0", "cold_rl_s0", "studA_s0", "studB_s0") if (out / n).is_dir()]
        evals = sum((["--eval", f"{n}={out / 'eval' / (n + '.json')}"]
                     for n in ("student_base", "studA_s0", "studB_s0") if (out / "eval" / f"{n}.json").is_file()), [])
        cli(["report", *runs_, "--out", str(out / "report"), *evals, "--title", "R1 experiments: cold start, distillation"])
    print(tables(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
