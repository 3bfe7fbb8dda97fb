"""Synthetic pretraining corpora that make a small model behave like a real base model for RL.

A real base model knows the notation and the <think>/<answer> format, sometimes solves a task and often fails.
We get that by pretraining on *search traces*: problems worked in the R1 format, where the arithmetic inside the
reasoning is always correct but the search is blind, so a controlled share of traces ends unsuccessfully.

Countdown trace (numbers [3, 5, 7], target 22), one attempt per line:

    User: Using the numbers [3, 5, 7], create an equation that equals 22.
    Assistant: <think>7-3=4, 4*5=20 vs 22 miss
    7/5 no, 5+3=8, 8*7=56 vs 22 miss
    3*5=15, 15+7=22 vs 22 hit
    check (3*5)+7=22 ok
    </think> <answer>(3*5)+7</answer><|endoftext|>

Design, and the knobs (CorpusConfig, which PretrainConfig inherits, so a recipe sets them by name):
- An attempt is a random walk: pick two of the numbers left, apply a random operation whose result is a
  non-negative integer no larger than `max_value`, repeat until one number is left. Attempts are distinct within a
  trace. Every step is true arithmetic; the base model's failures must come from search, not arithmetic.
- When the walk draws a step with no whole non-negative result, it writes it as rejected ("10/3 no", "4-5 no")
  with probability `reject_prob`, and draws again. Without these negative examples a model sees only the legal
  divisions and learns none of the illegal ones: the first base's wrong steps were 80% "10/3=4"-like divisions
  and "11-12=9"-like subtractions (dev/LOG.md).
- Each attempt ends with "vs TARGET" beside its result and "hit" or "miss", so the decision to stop is a comparison
  of two adjacent numbers (an earlier run without the echo never learnt when to stop).
- After a miss the trace gives up with probability `give_up_prob` ("give up", then the last attempt is the answer:
  a wrong final answer), and always after `max_attempts`. Giving up is independent of everything else, so RL can
  learn to search longer, the R1-Zero signature: length and accuracy rise together.
- With probability `backtrack_prob` an attempt after a miss starts "back," and keeps the previous attempt's first
  step (backtracking); with `verify_prob` a hit is re-checked on the final expression before answering
  (self-verification). Both are behaviours for RL to amplify, and markers for evaluation to count.
- The answer substitutes each intermediate result by its parenthesised step: "(3*5)+7".

Arithmetic trace ("Calculate 347 + 829."): column by column, every step a true two-operand fact, then the result:

    7+9=16, 4+2=6, 6+1=7, 3+8=11
    347+829=1176
    check 1176-829=347 ok
    </think> <answer>1176</answer>

Subtraction borrows ("13-9=4"); multiplication writes one partial product per digit of the second operand and adds
them. With probability `guess_prob` the trace skips the work ("guess 1180") and answers a near miss: the failure
RL removes. `verify_prob` adds the inverse-operation check.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from r1lab.evaluation.behaviour import whole_result
from r1lab.tasks.format import render_completion

OPS = "+-*/"


@dataclass
class CorpusConfig:
    """The corpus knobs, one home: the traces read them from here and PretrainConfig inherits them."""
    give_up_prob: float = 0.2            # countdown
    max_attempts: int = 16
    max_value: int = 200                 # every step's result <= it; pretrain refuses a max_target above it
    backtrack_prob: float = 0.15
    greedy_finish_prob: float = 0.5
    reject_prob: float = 0.5
    guess_prob: float = 0.3              # arithmetic
    verify_prob: float = 0.25            # both: a "check" line before the answer


def random_attempt(nums: list[int], rng: random.Random, max_value: int, first_step=None, target: int | None = None,
                   reject_prob: float = 0.0):
    """A random walk to one number: (steps, expression, value); steps are (a, op, b, result) tuples.

    With `target` given, the last step takes the operation that lands closest to it (a greedy finish). When the
    walk draws a step with no whole non-negative result (10/3, 4-5), it writes it as rejected, result None
    ("10/3 no"), with probability `reject_prob`, at most once per step, and draws again.
    Items carry (value, expression) so the final expression is built by substitution; None if stuck.
    """
    items = [(n, str(n)) for n in nums]
    steps = []
    while len(items) > 1:
        if first_step is not None and not steps:
            a, op, b, _ = first_step
            i = next(k for k, it in enumerate(items) if it[0] == a)
            j = next(k for k, it in enumerate(items) if it[0] == b and k != i)
            choices = [(i, j, op)]
        else:
            choices = [(i, j, op) for i in range(len(items)) for j in range(len(items)) if i != j for op in OPS
                       if not (op in "+*" and i > j)]  # + and * are symmetric: one order only
            rng.shuffle(choices)
            if target is not None and len(items) == 2:
                def distance(c):
                    v = whole_result(items[c[0]][0], c[2], items[c[1]][0])
                    return abs(v - target) if v is not None and 0 <= v <= max_value else float("inf")
                choices.sort(key=distance)
        rejected = False
        for i, j, op in choices:
            value = whole_result(items[i][0], op, items[j][0])
            if value is not None and 0 <= value <= max_value:
                break
            if value is None and not rejected and rng.random() < reject_prob:
                steps.append((items[i][0], op, items[j][0], None))
                rejected = True
        else:
            return None
        (a, ea), (b, eb) = items[i], items[j]
        steps.append((a, op, b, value))
        expr = f"{_paren(ea)}{op}{_paren(eb)}"
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [(value, expr)]
    return steps, items[0][1], items[0][0]


def _paren(expr: str) -> str:
    return expr if expr.isdigit() else f"({expr})"


def format_steps(steps) -> str:
    return ", ".join(f"{a}{op}{b}={c}" if c is not None else f"{a}{op}{b} no" for a, op, b, c in steps)


def _done_steps(steps) -> tuple:
    """An attempt as the reader sees it: its steps, rejected ones aside. Not its expression: with a 6 left after
    "9-3=6", the expressions (9-3)-6 and 6-(9-3) are both written "9-3=6, 6-6=0"."""
    return tuple(st for st in steps if st[3] is not None)


def countdown_trace(nums: list[int], target: int, rng: random.Random, cfg: CorpusConfig) -> tuple[str, bool]:
    """(completion text after the prompt's "<think>", whether it ends on a correct answer)."""
    lines, seen, prev = [], set(), None
    for attempt_no in range(cfg.max_attempts):
        backtrack = prev is not None and rng.random() < cfg.backtrack_prob
        for _ in range(20):  # look for an attempt not tried yet
            greedy = target if rng.random() < cfg.greedy_finish_prob else None
            first = next(st for st in prev[0] if st[3] is not None) if backtrack else None
            attempt = random_attempt(nums, rng, cfg.max_value, first, greedy, cfg.reject_prob)
            if attempt is not None and _done_steps(attempt[0]) not in seen:
                break
        else:
            break
        steps, expr, value = attempt
        seen.add(_done_steps(steps))
        hit = value == target
        lines.append(f"{'back, ' if backtrack else ''}{format_steps(steps)} vs {target} {'hit' if hit else 'miss'}")
        prev = attempt
        if hit:
            if rng.random() < cfg.verify_prob:
                lines.append(f"check {expr}={value} ok")
            return render_completion("\n".join(lines) + "\n", expr), True
        if rng.random() < cfg.give_up_prob:
            break
    if prev is None:
        return None, False
    lines.append("give up")
    return render_completion("\n".join(lines) + "\n", prev[1]), False


def _digits(n: int) -> list[int]:
    """Least significant first: _digits(347) == [7, 4, 3]"""
    return [int(c) for c in reversed(str(n))]


def column_add(a: int, b: int) -> list[str]:
    """column_add(347, 829) == ["7+9=16", "4+2=6", "6+1=7", "3+8=11"]"""
    da, db = _digits(a), _digits(b)
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        steps.append(f"{x}+{y}={x + y}")
        if carry:
            steps.append(f"{x + y}+1={x + y + 1}")
        carry = (x + y + carry) // 10
    return steps


def column_sub(a: int, b: int) -> list[str]:
    """a >= b >= 0. column_sub(52, 17) == ["12-7=5", "5-1=4", "4-1=3"]"""
    da, db = _digits(a), _digits(b)
    steps, borrow = [], 0
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        if borrow:
            steps.append(f"{x}-1={x - 1}") if x >= 1 else steps.append("10-1=9")
            x -= 1
            borrow = 0
            if x < 0:
                x, borrow = 9, 1
        if x < y:
            steps.append(f"{x + 10}-{y}={x + 10 - y}")
            borrow = 1
        elif y or i < len(db):
            steps.append(f"{x}-{y}={x - y}")
    return steps


def arithmetic_trace(a: int, op: str, b: int, rng: random.Random, cfg: CorpusConfig) -> tuple[str, bool]:
    """(completion text after the prompt's "<think>", whether its answer is right)."""
    result = a + b if op == "+" else a - b if op == "-" else a * b
    if rng.random() < cfg.guess_prob:
        wrong = result + rng.choice([-1, 1]) * rng.choice([1, 2, 10, 100, max(1, abs(result) // 10)])
        return render_completion(f"guess {wrong}\n", str(wrong)), False
    lines = []
    if op == "+":
        lines.append(", ".join(column_add(a, b)))
    elif op == "-":
        hi, lo = max(a, b), min(a, b)
        lines.append(", ".join(column_sub(hi, lo)))
        if a < b:
            lines.append(f"{a} is less than {b}, so the result is negative")
    else:
        partials = []
        for k, d in enumerate(_digits(b)):
            partials.append(a * d * 10**k)
            lines.append(f"{a}*{d * 10**k}={partials[-1]}")
        total = partials[0]
        for p in partials[1:]:
            lines.append(f"{total}+{p}={total + p}")
            total += p
    lines.append(f"{a}{op}{b}={result}")
    if rng.random() < cfg.verify_prob and op in "+-":
        inverse = f"{result}-{b}={a}" if op == "+" else f"{result}+{b}={a}"
        lines.append(f"check {inverse} ok")
    return render_completion("\n".join(lines) + "\n", str(result)), True


CORPORA = ("countdown", "arithmetic")  # the tasks whose search traces this module writes


def corpus_document(task, example: dict, rng: random.Random, cfg, template: str):
    """(prompt, completion) of one pretraining document for `task`, or None when the problem has no trace.

    `cfg` holds the corpus knobs (a CorpusConfig, or a PretrainConfig, which is one).
    """
    if task.NAME == "countdown":
        completion, _ = countdown_trace(example["nums"], example["target"], rng, cfg)
    elif task.NAME == "arithmetic":
        completion, _ = arithmetic_trace(example["a"], example["op"], example["b"], rng, cfg)
    else:
        raise ValueError(f"no pretraining corpus for task {task.NAME!r}; corpora exist for {', '.join(CORPORA)}")
    if completion is None:  # no legal first step under max_value: nothing to show for this problem
        return None
    return task.prompt(example, template=template), completion
