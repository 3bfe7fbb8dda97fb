"""Synthetic pretraining corpora that make a small model behave like a real base model for RL.

A real base model knows the notation and the <think>/<answer> format, sometimes solves a task and often fails.
We get that by pretraining on *search traces*: problems worked in the R1 format, where the arithmetic inside the
reasoning is always correct but the search is blind, so a controlled share of traces ends unsuccessfully.

Countdown trace (numbers [3, 5, 7], target 22), one attempt per line:

    User: Using the numbers [3, 5, 7], create an equation that equals 22.
    Assistant: <think>7-3=4, 4*5=20 vs 22 miss
    5+3=8, 8*7=56 vs 22 miss
    3*5=15, 15+7=22 vs 22 hit
    check (3*5)+7=22 ok
    </think> <answer>(3*5)+7</answer><|endoftext|>

Design, and the knobs (CountdownTraceConfig):
- An attempt is a random walk: pick two of the numbers left, apply a random operation whose result is a
  non-negative integer no larger than `max_value`, repeat until one number is left. Attempts are distinct within a
  trace. Every step is true arithmetic; the base model's failures must come from search, not arithmetic.
- Each attempt ends with "vs TARGET" beside its result and "hit" or "miss", so the decision to stop is a comparison
  of two adjacent numbers (an earlier run without the echo never learnt when to stop).
- After a miss the trace gives up with probability `give_up_prob` ("give up", then the last attempt is the answer:
  a wrong final answer), and always after `max_attempts`. Giving up is independent of everything else, so RL can
  learn to search longer, the R1-Zero signature: length and accuracy rise together.
- With probability `backtrack_prob` an attempt after a miss starts "back," and keeps the previous attempt's first
  step (backtracking); with `verify_prob` a hit is re-checked on the final expression before answering
  (self-verification). Both are behaviours for RL to amplify, and markers for evaluation to count.
- The answer substitutes each intermediate result by its parenthesised step: "(3*5)+7".
"""
from __future__ import annotations

import random
from dataclasses import dataclass

OPS = "+-*/"


@dataclass
class CountdownTraceConfig:
    give_up_prob: float = 0.3
    max_attempts: int = 12
    max_value: int = 200
    backtrack_prob: float = 0.15
    verify_prob: float = 0.25
    greedy_finish_prob: float = 0.5


def _apply(a: int, op: str, b: int) -> int | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b if a >= b else None
    if op == "*":
        return a * b
    return a // b if b != 0 and a % b == 0 else None


def random_attempt(nums: list[int], rng: random.Random, max_value: int, first_step=None, target: int | None = None):
    """A random walk to one number: (steps, expression, value); steps are (a, op, b, result) tuples.

    With `target` given, the last step takes the operation that lands closest to it (a greedy finish).
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
                    v = _apply(items[c[0]][0], c[2], items[c[1]][0])
                    return abs(v - target) if v is not None and 0 <= v <= max_value else float("inf")
                choices.sort(key=distance)
        for i, j, op in choices:
            value = _apply(items[i][0], op, items[j][0])
            if value is not None and 0 <= value <= max_value:
                break
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
    return ", ".join(f"{a}{op}{b}={c}" for a, op, b, c in steps)


def countdown_trace(nums: list[int], target: int, rng: random.Random, cfg: CountdownTraceConfig) -> tuple[str, bool]:
    """(completion text after the prompt's "<think>", whether it ends on a correct answer)."""
    lines, seen, prev = [], set(), None
    for attempt_no in range(cfg.max_attempts):
        backtrack = prev is not None and rng.random() < cfg.backtrack_prob
        for _ in range(20):  # look for an attempt not tried yet
            greedy = target if rng.random() < cfg.greedy_finish_prob else None
            attempt = random_attempt(nums, rng, cfg.max_value, prev[0][0] if backtrack else None, greedy)
            if attempt is not None and attempt[1] not in seen:
                break
        else:
            break
        steps, expr, value = attempt
        seen.add(expr)
        hit = value == target
        lines.append(f"{'back, ' if backtrack else ''}{format_steps(steps)} vs {target} {'hit' if hit else 'miss'}")
        prev = attempt
        if hit:
            if rng.random() < cfg.verify_prob:
                lines.append(f"check {expr}={value} ok")
            return "\n".join(lines) + f"\n</think> <answer>{expr}</answer>", True
        if rng.random() < cfg.give_up_prob:
            break
    if prev is None:
        return None, False
    lines.append("give up")
    return "\n".join(lines) + f"\n</think> <answer>{prev[1]}</answer>", False


def corpus_document(task, example: dict, rng: random.Random, cfg: CountdownTraceConfig, template: str):
    """(prompt, completion) of one pretraining document for `task`, or None when the problem has no trace."""
    if task.NAME != "countdown":
        raise ValueError(f"no pretraining corpus for task {task.NAME!r} yet")
    completion, _ = countdown_trace(example["nums"], example["target"], rng, cfg)
    if completion is None:  # no legal first step under max_value: nothing to show for this problem
        return None
    return task.prompt(example, template=template), completion
