"""The papers' claims as pure functions of runs' metrics rows and evaluation files (compute_claims), for
benchmarks/claims.py, which runs the arms and seeds and writes the report; its docstring says what each claim
measures.
"""
from __future__ import annotations

import statistics

CURVES = ("acc", "response_len", "response_len_correct", "response_len_wrong", "attempts", "attempts_correct",
          "attempts_wrong", "marker_rate", "marker_rate_correct", "marker_rate_wrong", "truncated_rate")


def step_rows(rows: list[dict]) -> list[dict]:
    """The training steps' rows (rollout metrics; evaluation rows hold eval/* keys only), in step order."""
    return sorted((r for r in rows if "acc" in r), key=lambda r: r.get("step", 0))


def side_value(row: dict, key: str) -> float | None:
    """row[key], or None where that side had no rollout (the log writes 0.0 there: acc == 1 leaves no wrong one,
    acc == 0 no right one) or the run predates the key. side_value({"acc": 1, "attempts_wrong": 0.0},
    "attempts_wrong") is None"""
    v = row.get(key)
    empty = (key.endswith("_wrong") and row.get("acc") == 1) or (key.endswith("_correct") and row.get("acc") == 0)
    return None if v is None or empty else float(v)


def ends(values: list[float], window: int = 5) -> tuple[float, float, int] | None:
    """(mean of the first w values, mean of the last w, w), w = min(window, half the values) so they never overlap;
    None under 2 values. ends([1, 2, 3, 10], window=5) == (1.5, 6.5, 2)"""
    if len(values) < 2:
        return None
    w = min(window, len(values) // 2)
    return statistics.fmean(values[:w]), statistics.fmean(values[-w:]), w


def growth(rows: list[dict], key: str, window: int = 5) -> dict | None:
    """{"first", "last", "growth", "window"} of one metric over a run's training steps (steps without that side
    skipped); None with fewer than 2 such steps."""
    e = ends([v for r in step_rows(rows) if (v := side_value(r, key)) is not None], window)
    return None if e is None else {"first": e[0], "last": e[1], "growth": e[1] - e[0], "window": e[2]}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mean_curves(runs: dict[int, list[dict]]) -> dict:
    """{"step": [...], key: [mean over the seeds that have a value at that step, or None]} for every CURVES key."""
    by_step: dict[int, list[dict]] = {}
    for rows in runs.values():
        for r in step_rows(rows):
            by_step.setdefault(r["step"], []).append(r)
    steps = sorted(by_step)
    out = {"step": steps}
    for key in CURVES:
        out[key] = [_mean_or_none([side_value(r, key) for r in by_step[s]]) for s in steps]
    return out


def _mean_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def compute_claims(runs: dict[str, dict[int, dict]], window: int = 5, min_gap: float = 5.0,
                   baseline: str = "grpo", variant: str = "dr_grpo") -> dict:
    """The three claims from runs[arm][seed] = {"metrics": metrics.jsonl rows, "eval": r1lab eval JSON or None}.

    Returns {"length": ..., "vote": ..., "curves": ..., "verdicts": [one sentence per claim]}; a claim with no data
    says "not measured". Gaps are in points (x 100), lengths in tokens.
    """
    length_rows, vote_rows = [], []
    for arm, seeds in runs.items():
        for seed, run in sorted(seeds.items()):
            ev = run.get("eval") or {}
            length_rows.append({"arm": arm, "seed": seed, "pass1": ev.get("pass1"),
                                "wrong": growth(run["metrics"], "response_len_wrong", window),
                                "right": growth(run["metrics"], "response_len_correct", window)})
            if ev.get("pass1") is not None and ev.get("cons_at_k") is not None:
                vote_rows.append({"arm": arm, "seed": seed, "samples": ev.get("samples"), "pass1": ev["pass1"],
                                  # subtle: rounded, or 0.35 - 0.30 would fall short of a 5-point threshold
                                  "cons": ev["cons_at_k"], "gap": round(100 * (ev["cons_at_k"] - ev["pass1"]), 9)})
    per_arm = {}
    for arm in runs:
        mine = [r for r in length_rows if r["arm"] == arm]
        per_arm[arm] = {"growth_wrong": _median(r["wrong"]["growth"] for r in mine if r["wrong"]),
                        "growth_right": _median(r["right"]["growth"] for r in mine if r["right"]),
                        "pass1": _median(r["pass1"] for r in mine)}
    verdicts = [_length_verdict(length_rows, per_arm, baseline, variant)]
    vote_arms = {}
    for arm in runs:
        gaps = [r["gap"] for r in vote_rows if r["arm"] == arm]
        k = {r["samples"] for r in vote_rows if r["arm"] == arm}
        med = _median(gaps)
        vote_arms[arm] = {"median": med, "min": min(gaps, default=None), "seeds": len(gaps),
                          "seeds_holding": sum(g >= min_gap for g in gaps), "holds": med is not None and med >= min_gap,
                          "samples": k.pop() if len(k) == 1 else None}
        verdicts.append(_vote_verdict(arm, vote_arms[arm], min_gap))
    return {"length": {"runs": length_rows, "arms": per_arm, "window": window},
            "vote": {"runs": vote_rows, "arms": vote_arms, "min_gap": min_gap},
            "curves": {arm: mean_curves({s: r["metrics"] for s, r in seeds.items()}) for arm, seeds in runs.items()},
            "verdicts": verdicts}


def _length_verdict(rows, per_arm, baseline, variant) -> str:
    claim = f"Dr. GRPO: wrong-response length grew less under {variant} than under {baseline}"
    a, b = per_arm.get(baseline, {}), per_arm.get(variant, {})
    if a.get("growth_wrong") is None or b.get("growth_wrong") is None:
        return f"{claim}: not measured (needs training runs of both arms)"
    paired = {(r["arm"], r["seed"]): r["wrong"]["growth"] for r in rows if r["wrong"]}
    seeds = sorted({s for arm, s in paired if arm == baseline} & {s for arm, s in paired if arm == variant})
    less = sum(paired[(variant, s)] < paired[(baseline, s)] for s in seeds)
    holds = b["growth_wrong"] < a["growth_wrong"]
    acc = ("held-out pass@1 not measured" if a["pass1"] is None or b["pass1"] is None else
           f"held-out pass@1 (median) {b['pass1']:.3f} under {variant} vs {a['pass1']:.3f} under {baseline} "
           f"({100 * (b['pass1'] - a['pass1']):+.1f} points)")
    return (f"{claim}: {'HOLDS' if holds else 'DOES NOT REPRODUCE'}. Median growth {b['growth_wrong']:+.1f} tokens "
            f"under {variant} vs {a['growth_wrong']:+.1f} under {baseline} (less in {less} of {len(seeds)} seeds, "
            f"paired by seed); {acc}.")


def _vote_verdict(arm, v, min_gap) -> str:
    k = v["samples"] or "K"
    claim = f"Majority vote after RL ({arm}): cons@{k} - pass@1 >= {min_gap:g} points"
    if v["median"] is None:
        return f"{claim}: not measured (no evaluation)"
    every = "in every seed" if v["seeds_holding"] == v["seeds"] else f"in {v['seeds_holding']} of {v['seeds']} seeds"
    return (f"{claim}: {'HOLDS' if v['holds'] else 'DOES NOT REPRODUCE'}. Median {v['median']:+.1f}, min "
            f"{v['min']:+.1f} points over {v['seeds']} seed{'s' * (v['seeds'] != 1)} (>= {min_gap:g} {every}).")


def arm_difference(algorithms: dict[str, dict], presets: dict[str, dict]) -> dict:
    """What the arms' resolved algorithms differ in, what they share, and where the recipe or --set overrode an
    arm's preset. algorithms[arm] / presets[arm]: dataclasses.asdict of the run's Algorithm / of PRESETS[arm]."""
    arms = list(algorithms)
    keys = list(algorithms[arms[0]])
    differ = {k: {a: algorithms[a][k] for a in arms} for k in keys if len({repr(algorithms[a][k]) for a in arms}) > 1}
    same = {k: algorithms[arms[0]][k] for k in keys if k not in differ}
    overridden = {a: {k: (presets[a][k], algorithms[a][k]) for k in keys if algorithms[a][k] != presets[a][k]}
                  for a in arms}
    return {"differ": differ, "same": same, "overridden": {a: o for a, o in overridden.items() if o}}
