"""Verifier speed for every registered task: throughput on a realistic mix and the worst case on hostile input.

    python benchmarks/verifiers.py [--tasks countdown,logic] [--n 200] [--repeat 3] [--data gsm8k=path.jsonl]

Throughput: completions/s of task.score over a mix of four completions per example (right and well formatted,
right with text after the answer, wrong, no answer at all), each after ~300 characters of reasoning, one
process, one thread, after the first example's four untimed (math's first call starts its verifier worker).
Examples come from the task's generator, from --data, or from a few hand-written rows in the public format for
tasks without a generator (gsm8k, math).
Worst case: the slowest single score() call over the adversarial suite (1 MB strings, 10,000 nested
parentheses, 9**9**9, unicode digits, code injection, None, bytes, repeated tags...), each case run --repeat
times. A task whose module fails to import (someone may be writing it) is skipped with a note.
"""
from __future__ import annotations

import argparse
import importlib
import time

from r1lab.tasks import TASK_MODULES

THINK = "Let me work through this step by step and check each part of the problem carefully. " * 4

# Tasks without a generator: a few rows in their public dataset format.
SAMPLES = {
    "gsm8k": [
        {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                     "May. How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                   "altogether in April and May.\n#### 72"},
        {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                     "How much did she earn?",
         "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                   "$<<0.2*50=10>>10.\n#### 10"},
        {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total "
                     "does it take?",
         "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts\n#### 3"},
    ],
    "math": [
        {"problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?", "answer": "\\frac{5}{6}", "level": "Level 1",
         "type": "Prealgebra"},
        {"problem": "Solve $x^2 - 5x + 6 = 0$ for the larger root.", "answer": "3", "level": "Level 2",
         "type": "Algebra"},
        {"problem": "Simplify $\\sqrt{50}$.", "answer": "5\\sqrt{2}", "level": "Level 2", "type": "Algebra"},
    ],
}

# The right final answer of a row, to build correct completions.
REFERENCE = {
    "countdown": lambda task, ex: task.solve(ex["nums"], ex["target"]),
    "arithmetic": lambda task, ex: str(ex["answer"]),
    "logic": lambda task, ex: ex["solution_text_format"],
    "gsm8k": lambda task, ex: ex["answer"].split("####")[-1].strip(),
    "math": lambda task, ex: ex["answer"],
}


def perturb(answer: str) -> str:
    """A near miss: the first role flipped, else the last digit changed, else a stray character."""
    roles = [i for i in (answer.find("knight"), answer.find("knave")) if i >= 0]
    if roles:
        i = min(roles)
        word = "knight" if answer.startswith("knight", i) else "knave"
        return answer[:i] + ("knave" if word == "knight" else "knight") + answer[i + len(word):]
    for i in range(len(answer) - 1, -1, -1):
        if answer[i].isdigit():
            return answer[:i] + str((int(answer[i]) + 1) % 10) + answer[i + 1:]
    return answer + "x"


def mix(answer: str) -> list[str]:
    return [
        f"{THINK}</think> <answer>{answer}</answer>",
        f"{THINK}</think> <answer>{answer}</answer> That is my final answer.",
        f"{THINK}</think> <answer>{perturb(answer)}</answer>",
        f"{THINK} so I am not sure.",
    ]


def adversarial(answer: str) -> dict[str, object]:
    wrap = lambda s: f"{THINK}</think> <answer>{s}</answer>"  # noqa: E731
    nested = "(" * 10_000 + answer + ")" * 10_000
    return {
        "9**9**9": wrap("9**9**9"), "10**10**10 latex": wrap("10^{10^{10^{10}}}"), "factorial": wrap("100000!"),
        "nested parens": wrap(nested), "nested braces": wrap("{" * 10_000 + answer + "}" * 10_000),
        "1 MB digits": wrap("9" * 1_000_000), "1 MB garbage": "x" * 1_000_000, "1 MB answers": wrap(answer) * 30_000,
        "unicode digits": wrap("٣٥٧ ３５７"), "import": wrap("__import__('os').system('x')"),
        "reused/odd numbers": wrap(f"{answer} + {answer}"), "division by zero": wrap("1/0"),
        "text after": wrap(answer) + " trailing", "two answers": wrap(answer) + f"<answer>{perturb(answer)}</answer>",
        "empty answer": wrap(""), "repeated <answer>": "<answer>" * 3000, "repeated tags": "</think> <answer>" * 2000,
        "leading blanks": " " * 19_000 + wrap(answer) + "x", "None": None, "bytes": wrap(answer).encode(),
    }


def examples_for(name: str, task, n: int, data: dict[str, str]) -> list[dict]:
    if name in data:
        return task.load(data[name], limit=n)
    if hasattr(task, "generate"):
        return task.generate(n, seed=0, split="test")
    return [SAMPLES[name][i % len(SAMPLES[name])] for i in range(n)]


def bench(name: str, task, n: int, repeat: int, data: dict[str, str]) -> dict:
    examples = examples_for(name, task, n, data)
    pairs = [(c, ex) for ex in examples for c in mix(REFERENCE[name](task, ex))]
    for c, ex in pairs[:4]:  # not timed: math's one-time start of its verifier worker (~1 s, verify_timeout)
        task.score(c, ex)
    t = time.perf_counter()
    correct = sum(task.score(c, ex).correct for c, ex in pairs)
    seconds = time.perf_counter() - t
    worst, worst_case = 0.0, ""
    for case, completion in adversarial(REFERENCE[name](task, examples[0])).items():
        for _ in range(repeat):
            t = time.perf_counter()
            task.score(completion, examples[0])
            dt = time.perf_counter() - t
            if dt > worst:
                worst, worst_case = dt, case
    return {"task": name, "calls": len(pairs), "right": correct, "per_s": len(pairs) / seconds,
            "us_per_call": 1e6 * seconds / len(pairs), "worst_ms": 1e3 * worst, "worst_case": worst_case}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASK_MODULES), help="comma-separated registry names")
    parser.add_argument("--n", type=int, default=200, help="examples per task (4 completions each)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each adversarial case")
    parser.add_argument("--data", action="append", default=[], metavar="TASK=PATH", help="rows to use for TASK")
    args = parser.parse_args(argv)
    data = dict(item.split("=", 1) for item in args.data)
    rows, notes = [], []
    for name in args.tasks.split(","):
        try:
            task = importlib.import_module(TASK_MODULES[name])
        except Exception as e:  # a module being written right now must not stop the others
            notes.append(f"{name}: skipped, import failed ({type(e).__name__}: {e})")
            continue
        rows.append(bench(name, task, args.n, args.repeat, data))
    print(f"{'task':<11} {'calls':>6} {'right':>6} {'completions/s':>14} {'us/call':>9} {'worst ms':>9}  slowest case")
    for r in rows:
        print(f"{r['task']:<11} {r['calls']:>6} {r['right']:>6} {r['per_s']:>14,.0f} {r['us_per_call']:>9.1f} "
              f"{r['worst_ms']:>9.2f}  {r['worst_case']}")
    for note in notes:
        print(note)
    return rows


if __name__ == "__main__":
    main()
