"""Rejection sampling, as in the R1 pipeline: keep a model's verified-correct completions as SFT traces.

    _, samples = run_eval(model, tok, task, examples, samples=K, greedy=False)   # K scored samples per problem
    records = select(samples, examples, keep="correct", per_problem=2, shortest_first=True)
    rows = pass_rates(samples, examples)    # one row per problem: its fields + pass_rate, samples

Pure functions of scored `Sample`s (r1lab.evaluation.evaluate) and the problems they index: no model, no I/O.
A record is the problem's own fields plus `prompt`, `completion` (the exact text the verifier scored, so `r1lab sft`
trains on it), `correct`, `pass_rate` (the problem's correct fraction over its K samples) and `tokens`. A problem's
`messages` field (NuminaMath's and OpenR1-Math's solutions) is left out: `r1lab sft` would learn it instead.
"""
from __future__ import annotations

KEEP = ("correct", "all")
SFT_FORMS = ("messages",)  # problem fields r1lab sft reads as the record to learn (prompt, completion are set here)


def _by_problem(samples) -> dict[int, list]:
    """Sampled (not greedy) samples grouped by problem index, in their original order."""
    groups: dict[int, list] = {}
    for s in samples:
        if not s.greedy:
            groups.setdefault(s.problem, []).append(s)
    return groups


def pass_rates(samples, examples: list[dict]) -> list[dict]:
    """One row per problem that has samples, in problem order: its fields + `pass_rate` (correct / K) and
    `samples` (K), e.g. for giving RL only the problems with 0.1 < pass_rate < 0.9.

    Three samples of problem 0, one correct: [{**examples[0], "pass_rate": 0.333..., "samples": 3}]
    """
    groups = _by_problem(samples)
    return [{**examples[p], "pass_rate": sum(s.correct for s in g) / len(g), "samples": len(g)}
            for p, g in sorted(groups.items())]


def select(samples, examples: list[dict], keep: str = "correct", per_problem: int | None = None,
           shortest_first: bool = False, extra=None) -> list[dict]:
    """The kept records, grouped by problem in problem order.

    keep="correct" keeps the verified-correct samples that are well-formed (format_ok) and finished (not cut at
    the token limit), as the R1 paper keeps correct and readable ones: a cut or run-on trace teaches the model not
    to stop; keep="all" keeps every sample (with correct false for wrong ones).
    Within a problem, completions are deduplicated by their text (the first kept), then at most `per_problem`
    are kept (None: all). Sample order is kept, unless shortest_first, which puts correct ones first, shortest
    (fewest generated tokens) first, then wrong ones the same way.

    extra(sample) -> dict, when given, adds fields to each sample's record (`r1lab distill`: usage, teacher).

    Completions ["a", "a", "bb"] of one problem, all correct, per_problem=None: records for "a" and "bb".
    """
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    if per_problem is not None and per_problem < 1:
        raise ValueError(f"per_problem must be at least 1, got {per_problem}")
    records = []
    for p, group in sorted(_by_problem(samples).items()):
        rate = sum(s.correct for s in group) / len(group)
        chosen = [s for s in group if keep == "all" or (s.correct and s.format_ok and s.finish_reason != "length")]
        if shortest_first:
            chosen.sort(key=lambda s: (not s.correct, s.tokens))  # stable: ties keep sample order
        seen: set[str] = set()
        kept = []
        for s in chosen:
            if s.completion in seen:
                continue
            seen.add(s.completion)
            kept.append(s)
            if per_problem is not None and len(kept) == per_problem:
                break
        problem = {k: v for k, v in examples[p].items() if k not in SFT_FORMS}
        records += [{**problem, "prompt": s.prompt, "completion": s.completion, "correct": bool(s.correct),
                     "pass_rate": rate, "tokens": s.tokens, **(extra(s) if extra else {})} for s in kept]
    return records
