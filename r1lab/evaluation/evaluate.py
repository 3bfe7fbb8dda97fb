"""Evaluation with the task's own verifier, through the same engine as RL rollouts and serving.

One core: `run_eval` samples K completions per problem (every sample of every problem in one call of the rollout
backend, r1lab's engine by default, which runs at most max_batch_size rows at once, refilling as rows finish),
scores them with the task's verifier and `summarize`s them. `r1lab eval` prints and saves that summary;
`evaluate_model`, which the pretrain and RL loops call, flattens it into scalar metrics, so a number logged during
training means what `r1lab eval` means by it at the same settings.

The R1 protocol (DeepSeek-R1 paper, section 3.1): pass@1 is the mean correctness of K samples per problem at
temperature 0.6 and top-p 0.95, averaged over problems; cons@K is the majority vote over the K answers.
Undefined figures (the median length of right answers when none is right) are NaN here; `r1lab eval` writes null.

Shapes: N problems, K samples per problem; samples are ordered problem-major (sample j of problem p is row p*K + j).
"""
from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from r1lab.evaluation.behaviour import DEFAULT_MARKERS, arithmetic_steps, count_attempts, has_marker
from r1lab.tasks.format import THINK_END


@dataclass
class Sample:
    """One scored completion."""
    problem: int  # index into the examples
    prompt: str
    completion: str
    tokens: int  # generated tokens, EOS included
    finish_reason: str  # "eos" | "stop" | "length"
    reward: float
    correct: bool
    format_ok: bool
    answer: str | None  # the extracted answer
    key: str | None  # task.answer_key, for majority vote
    difficulty: str
    greedy: bool = False  # from the temperature-0 pass
    thinking_cut: bool = False  # the thinking budget ended its thinking (it holds forced tokens)


# --- pure helpers -------------------------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, the Codex paper):
    1 - C(n-c, k) / C(n, k), the chance that k of the n samples, drawn without replacement, include a correct one.

    >>> pass_at_k(4, 1, 2)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # exact integers; int / int rounds correctly


def k_values(samples: int) -> list[int]:
    """The k of the pass@k table: powers of two up to K, and K itself. k_values(6) == [1, 2, 4, 6]"""
    ks = [1 << i for i in range(samples.bit_length()) if 1 << i <= samples]
    return ks if ks[-1] == samples else ks + [samples]


def majority_vote(keys: list[str | None], correct: list[bool]) -> tuple[str | None, bool]:
    """The most frequent answer key (None, "no answer", never votes) and whether it is right, i.e. whether some
    completion with that key is correct. Ties go to the key seen first, so the vote is deterministic and, since the
    sample order is random, unbiased (a lexicographic tie-break would favour some spellings of answers).

    >>> majority_vote(["7", "5", None, "5", "7"], [True, False, False, False, True])
    ('7', True)
    """
    counts = Counter(k for k in keys if k is not None)  # insertion-ordered: max() keeps the first of a tie
    if not counts:
        return None, False
    winner = max(counts, key=counts.get)
    return winner, any(ok for k, ok in zip(keys, correct) if k == winner)


def parse_markers(text: str) -> tuple[str, ...]:
    """Comma-separated behaviour markers; a comma that ends a marker is written last or doubled ("back,").

    >>> parse_markers("check,back,,Wait")
    ('check', 'back,', 'wait')
    >>> parse_markers("check,back,")
    ('check', 'back,')
    """
    return tuple(m.strip().lower() for m in re.split(r",(?=[^,])", text) if m.strip())


def _mean(xs) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else math.nan


def _median(xs) -> float:
    xs = list(xs)
    return float(statistics.median(xs)) if xs else math.nan


def _natural(name: str):
    """Sort key putting "10 numbers" after "9 numbers"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


# --- summary ------------------------------------------------------------------------------------------------------

def summarize(samples: list[Sample], greedy: list[Sample] | None = None, markers=DEFAULT_MARKERS) -> dict:
    """Every figure of an evaluation from its scored samples (K per problem) and optional greedy samples (one each)."""
    by_problem: dict[int, list[Sample]] = {}
    for s in samples:
        by_problem.setdefault(s.problem, []).append(s)
    K = len(next(iter(by_problem.values())))
    if any(len(group) != K for group in by_problem.values()):
        raise ValueError("every problem needs the same number of samples")
    greedy_ok = {g.problem: g.correct for g in greedy or []}
    votes = {p: majority_vote([s.key for s in group], [s.correct for s in group])[1]
             for p, group in by_problem.items()}
    right = [s.tokens for s in samples if s.correct]
    wrong = [s.tokens for s in samples if not s.correct]
    behave = [(count_attempts(s.completion), has_marker(s.completion, markers), s.correct) for s in samples]
    steps = [arithmetic_steps(s.completion) for s in samples]
    n_steps = sum(t for _, t in steps)
    buckets: dict[str, list[int]] = {}
    for p, group in by_problem.items():
        buckets.setdefault(group[0].difficulty, []).append(p)
    return {
        "problems": len(by_problem),
        "samples": K,
        "completions": len(samples),
        "pass1": _mean(s.correct for s in samples),
        "pass_at_k": {str(k): _mean(pass_at_k(K, sum(s.correct for s in g), k) for g in by_problem.values())
                      for k in k_values(K)},
        "cons_at_k": _mean(votes.values()),
        "greedy_acc": _mean(greedy_ok.values()) if greedy else None,
        "greedy_format_rate": _mean(g.format_ok for g in greedy) if greedy else None,
        "format_rate": _mean(s.format_ok for s in samples),
        "mean_reward": _mean(s.reward for s in samples),
        "truncated_rate": _mean(s.finish_reason == "length" for s in samples),
        "thinking_cut_rate": _mean(s.thinking_cut for s in samples),
        "response_len": {
            "mean": _mean(s.tokens for s in samples), "median": _median(s.tokens for s in samples),
            "mean_correct": _mean(right), "median_correct": _median(right),
            "mean_wrong": _mean(wrong), "median_wrong": _median(wrong),
        },
        "behaviour": {
            "markers": list(markers),
            "marker_rate": _mean(m for _, m, _ in behave),
            "marker_rate_correct": _mean(m for _, m, ok in behave if ok),
            "marker_rate_wrong": _mean(m for _, m, ok in behave if not ok),
            "step_acc": sum(ok for ok, _ in steps) / n_steps if n_steps else math.nan,
            "steps_per_response": n_steps / len(samples),
            "attempts": _mean(a for a, _, _ in behave),
            "attempts_correct": _mean(a for a, _, ok in behave if ok),
            "attempts_wrong": _mean(a for a, _, ok in behave if not ok),
        },
        "by_difficulty": {name: {
            "problems": len(ps),
            "pass1": _mean(s.correct for p in ps for s in by_problem[p]),
            "format_rate": _mean(s.format_ok for p in ps for s in by_problem[p]),
            "cons_at_k": _mean(votes[p] for p in ps),
            "greedy_acc": _mean(greedy_ok[p] for p in ps) if greedy else None,
            "response_len": _mean(s.tokens for p in ps for s in by_problem[p]),
        } for name, ps in sorted(buckets.items(), key=lambda item: _natural(item[0]))},
    }


# --- sampling -----------------------------------------------------------------------------------------------------

def score_sample(task, example: dict, problem: int, prompt: str, text: str, tokens: int, finish_reason: str,
                 greedy: bool = False, thinking_cut: bool = False) -> Sample:
    """One completion scored by the task's own verifier; what every sampled completion goes through (here, and in
    `r1lab distill` for a teacher's replies)."""
    score = task.score(text, example)
    answer_key = getattr(task, "answer_key", None)
    key = answer_key(text, example) if answer_key is not None else score.answer
    return Sample(problem, prompt, text, tokens, finish_reason, float(score.reward), bool(score.correct),
                  bool(score.format_ok), score.answer, key, task.difficulty(example), greedy, thinking_cut)


def _complete(backend, task, examples, prompts, k: int, params, account, greedy: bool = False) -> list[Sample]:
    """k completions of every prompt in one backend call, scored."""
    outs = backend.generate([p for p in prompts for _ in range(k)], params)  # row p*k + j
    if account is not None:
        for i in range(0, len(outs), k):  # a prompt's k samples share its prefill
            account.add_group(len(outs[i].prompt_ids), [len(o.token_ids) for o in outs[i:i + k]])
    rows = []
    for i, o in enumerate(outs):
        p = i // k
        rows.append(score_sample(task, examples[p], p, prompts[p], o.text, len(o.token_ids), o.finish_reason, greedy,
                                 thinking_cut=params.max_thinking_tokens is not None and 0 in o.mask))
    return rows


def run_eval(model, tokenizer, task, examples, *, template: str = "short", samples: int = 1,
             temperature: float = 0.6, top_p: float = 0.95, top_k: int = 0, max_new_tokens: int = 512,
             seed: int = 0, greedy: bool = True, markers=DEFAULT_MARKERS, autocast_dtype=None,
             batch_size: int = 256, account=None, backend="engine", max_thinking_tokens: int | None = None,
             thinking_end: str = THINK_END) -> tuple[dict, list[Sample]]:
    """K samples per problem and, with greedy=True, one temperature-0 pass; returns (summarize()'s figures, every
    scored sample with the greedy pass's last). `backend` names the rollout backend (r1lab.engine.BACKENDS), or is
    one already built (RL's, holding the policy's current weights). max_thinking_tokens / thinking_end: a thinking
    budget for every pass (SamplingParams); summarize() counts the completions it cut (thinking_cut_rate)."""
    from r1lab.engine import SamplingParams, make_backend
    from r1lab.prompts import render

    if not examples or samples < 1:
        raise ValueError(f"need at least one example and one sample, got {len(examples)} and {samples}")
    sampler = backend if not isinstance(backend, str) else make_backend(backend, model, tokenizer,
                                                                         autocast_dtype=autocast_dtype,
                                                                         max_batch_size=batch_size)
    prompts = [render(task, ex, template, tokenizer) for ex in examples]
    budget = {"max_thinking_tokens": max_thinking_tokens, "thinking_end": thinking_end}
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                            seed=seed, **budget)
    sampled = _complete(sampler, task, examples, prompts, samples, params, account)
    best = extra = None
    if greedy and temperature == 0:  # the samples are greedy already: each problem's first one
        best = sampled[::samples]
    elif greedy:
        best = extra = _complete(sampler, task, examples, prompts, 1,
                                 SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, **budget), account,
                                 greedy=True)
    return summarize(sampled, best, markers), sampled + (extra or [])


def evaluate_model(model, tokenizer, task, examples, template: str = "short", max_new_tokens: int = 512,
                   autocast_dtype=None, samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                   seed: int = 0, account=None, top_k: int = 0, greedy: bool = False, markers=DEFAULT_MARKERS,
                   batch_size: int = 256, backend="engine", max_thinking_tokens: int | None = None,
                   thinking_end: str = THINK_END) -> dict:
    """Scalar metrics for training logs: run_eval's figures, flattened (pass1, format_rate, step_acc, response_len,
    and more; pass@k and cons_at_k with samples > 1, greedy_acc with greedy=True)."""
    s, _ = run_eval(model, tokenizer, task, examples, template=template, samples=samples, temperature=temperature,
                    top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed, greedy=greedy,
                    markers=markers, autocast_dtype=autocast_dtype, batch_size=batch_size, account=account,
                    backend=backend, max_thinking_tokens=max_thinking_tokens, thinking_end=thinking_end)
    out = {
        "pass1": s["pass1"], "format_rate": s["format_rate"], "step_acc": s["behaviour"]["step_acc"],
        "response_len": s["response_len"]["mean"], "response_len_correct": s["response_len"]["mean_correct"],
        "response_len_wrong": s["response_len"]["mean_wrong"], "truncated_rate": s["truncated_rate"],
        "thinking_cut_rate": s["thinking_cut_rate"],
        "marker_rate": s["behaviour"]["marker_rate"], "attempts": s["behaviour"]["attempts"],
    }
    if samples > 1:
        out.update({f"pass@{k}": v for k, v in s["pass_at_k"].items() if k != "1"})
        out["cons_at_k"] = s["cons_at_k"]
    if greedy:
        out["greedy_acc"] = s["greedy_acc"]
    return out


# --- presenting a result ------------------------------------------------------------------------------------

def finite(x):
    """NaN and infinities as None, so the JSON is standard: finite({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}"""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _f(x, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(r: dict) -> str:
    """The console report: headline figures, then one row per difficulty bucket."""
    s, K, rl, b = r["settings"], r["samples"], r["response_len"], r["behaviour"]
    lines = [f"{s['task']}: {r['problems']} problems x {K} samples, temperature {s['temperature']}, top-p "
             f"{s['top_p']}, max {s['max_new_tokens']} new tokens, template {s['template']}",
             f"  {'pass@1 (mean of %d)' % K:<24}{_f(r['pass1'])}"]
    lines += [f"  {'pass@' + k:<24}{_f(v)}" for k, v in r["pass_at_k"].items() if k != "1"]
    lines += [f"  {'cons@%d' % K:<24}{_f(r['cons_at_k'])}",
              f"  {'greedy':<24}{_f(r['greedy_acc'])}",
              f"  {'format rate':<24}{_f(r['format_rate'])}",
              f"  {'truncated':<24}{_f(r['truncated_rate'])}"]
    if s.get("max_thinking_tokens") is not None:
        lines.append(f"  {'thinking cut at budget':<24}{_f(r['thinking_cut_rate'])}  (after "
                     f"{s['max_thinking_tokens']} tokens, forced {s['thinking_end']!r})")
    lines += [f"  {'response tokens':<24}mean {_f(rl['mean'], 1)}  median {_f(rl['median'], 1)}  | right "
              f"{_f(rl['mean_correct'], 1)} / {_f(rl['median_correct'], 1)}  | wrong {_f(rl['mean_wrong'], 1)} / "
              f"{_f(rl['median_wrong'], 1)}",
              f"  {'markers':<24}{_f(b['marker_rate'])}  ({', '.join(repr(m) for m in b['markers'])})",
              f"  {'arithmetic steps':<24}{_f(b['step_acc'])} correct, {_f(b['steps_per_response'], 2)} per response",
              f"  {'attempts / response':<24}{_f(b['attempts'], 2)}",
              f"  {'difficulty':<24}{'problems':>9}{'pass@1':>9}{'format':>9}{'cons@%d' % K:>9}{'greedy':>9}"]
    for name, d in r["by_difficulty"].items():
        lines.append(f"  {name[:23]:<24}{d['problems']:>9}{_f(d['pass1']):>9}{_f(d['format_rate']):>9}"
                     f"{_f(d['cons_at_k']):>9}{_f(d['greedy_acc']):>9}")
    return "\n".join(lines)
