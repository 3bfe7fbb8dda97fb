"""benchmarks/claims.py and claims_math.py (issue 17 item 5): the claims computed from hand-made metrics, verdicts
both ways, and the command end to end at smoke size, a second invocation reusing the runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
claims = load_benchmark("claims")
claims_math = load_benchmark("claims_math")


def rows(wrong_slope, right_slope=1.0, steps=12, all_right_at=()):
    """A run's metrics.jsonl: the length of wrong responses 100 + slope * step, right ones 50 + slope * step; at the
    steps in all_right_at every rollout was right (acc 1), so the *_wrong keys read 0.0 there, as the log writes
    them. Plus an evaluation row at the end, as `r1lab rl` logs it."""
    out = []
    for s in range(1, steps + 1):
        acc = 1 if s in all_right_at else 0.5
        out.append({"step": s, "stage": "rl", "acc": acc, "response_len": 0.0,
                    "response_len_correct": 50 + right_slope * s,
                    "response_len_wrong": 0.0 if acc == 1 else 100 + wrong_slope * s,
                    "attempts": 2.0, "attempts_correct": 1.0 + s, "attempts_wrong": 0.0 if acc == 1 else 3.0,
                    "marker_rate": 0.1, "marker_rate_correct": 0.2, "marker_rate_wrong": 0.0 if acc == 1 else 0.4,
                    "truncated_rate": 0.01 * s})
    out.append({"step": steps, "stage": "rl", "eval/pass1": 0.3})
    return out


def ev(pass1, cons, samples=16):
    return {"pass1": pass1, "cons_at_k": cons, "samples": samples}


def test_wrong_length_growth_and_both_verdicts():
    # grpo's wrong responses grow 10 tokens a step, dr_grpo's 2 (seed 2: 12); growth over 12 steps with W = 5 is
    # mean(steps 8..12) - mean(steps 1..5) = 7 x slope. Seed 1's steps 11 and 12 had no wrong rollout: skipped.
    runs = {"grpo": {s: {"metrics": rows(10), "eval": ev(0.30, 0.40)} for s in (0, 1, 2)},
            "dr_grpo": {0: {"metrics": rows(2), "eval": ev(0.28, 0.40)},
                        1: {"metrics": rows(2, all_right_at=(11, 12)), "eval": ev(0.32, 0.35)},
                        2: {"metrics": rows(12), "eval": ev(0.31, 0.33)}}}
    c = claims_math.compute_claims(runs)
    by = {(r["arm"], r["seed"]): r for r in c["length"]["runs"]}
    assert by[("grpo", 0)]["wrong"] == {"first": 130.0, "last": 200.0, "growth": 70.0, "window": 5}
    # seed 1: 10 steps with a wrong rollout (1..10): mean(6..10) - mean(1..5) = 5 x 2
    assert by[("dr_grpo", 1)]["wrong"]["growth"] == pytest.approx(10.0)
    assert by[("dr_grpo", 2)]["wrong"]["growth"] == pytest.approx(84.0)
    assert by[("grpo", 0)]["right"]["growth"] == pytest.approx(7.0)
    assert c["length"]["arms"]["dr_grpo"] == {"growth_wrong": pytest.approx(14.0), "growth_right": pytest.approx(7.0),
                                              "pass1": pytest.approx(0.31)}
    verdict = c["verdicts"][0]
    assert "HOLDS" in verdict and "+14.0 tokens under dr_grpo vs +70.0 under grpo" in verdict
    assert "less in 2 of 3 seeds" in verdict and "0.310 under dr_grpo vs 0.300 under grpo (+1.0 points)" in verdict

    runs["dr_grpo"] = {s: {"metrics": rows(11), "eval": ev(0.2, 0.3)} for s in (0, 1, 2)}  # grows more: fails
    verdict = claims_math.compute_claims(runs)["verdicts"][0]
    assert "DOES NOT REPRODUCE" in verdict and "less in 0 of 3 seeds" in verdict and "(-10.0 points)" in verdict


def test_majority_vote_verdicts_and_missing_data():
    runs = {"grpo": {0: {"metrics": [], "eval": ev(0.30, 0.40)}, 1: {"metrics": [], "eval": ev(0.30, 0.38)},
                     2: {"metrics": [], "eval": ev(0.30, 0.36)}},          # gaps 10, 8, 6: every seed
            "dr_grpo": {0: {"metrics": [], "eval": ev(0.30, 0.32)}, 1: {"metrics": [], "eval": ev(0.30, 0.40)},
                        2: {"metrics": [], "eval": ev(0.30, 0.31)}},       # gaps 2, 10, 1: median 2
            "dapo": {0: {"metrics": [], "eval": ev(0.30, 0.36)}, 1: {"metrics": [], "eval": ev(0.30, 0.37)},
                     2: {"metrics": [], "eval": ev(0.30, 0.33)}},          # gaps 6, 7, 3: median holds, not min
            "rloo": {0: {"metrics": [], "eval": None}}}
    c = claims_math.compute_claims(runs)
    v = c["vote"]["arms"]
    assert v["grpo"]["median"] == pytest.approx(8.0) and v["grpo"]["min"] == pytest.approx(6.0)
    assert v["grpo"]["holds"] and not v["dr_grpo"]["holds"] and v["dapo"]["holds"]
    grpo, dr, dapo, rloo = c["verdicts"][1:]
    assert "cons@16 - pass@1 >= 5 points: HOLDS" in grpo and "(>= 5 in every seed)" in grpo
    assert "DOES NOT REPRODUCE. Median +2.0, min +1.0" in dr and "in 1 of 3 seeds" in dr
    assert "HOLDS" in dapo and "in 2 of 3 seeds" in dapo
    assert "not measured" in rloo
    assert "not measured" in c["verdicts"][0]  # no training metrics: no length claim


def test_curves_average_the_seeds_and_skip_an_empty_side():
    a, b = rows(10, steps=4), rows(2, steps=4, all_right_at=(4,))
    curves = claims_math.compute_claims({"grpo": {0: {"metrics": a, "eval": None}, 1: {"metrics": b, "eval": None}}})
    c = curves["curves"]["grpo"]
    assert c["step"] == [1, 2, 3, 4]
    assert c["response_len_wrong"] == pytest.approx([106, 112, 118, 140])  # step 4: seed 0 alone (seed 1 had none)
    assert c["attempts_wrong"][3] == 3.0 and c["marker_rate_wrong"][3] == pytest.approx(0.4)
    assert c["acc"][3] == pytest.approx(0.75) and c["truncated_rate"] == pytest.approx([0.01, 0.02, 0.03, 0.04])
    assert claims_math.side_value({"acc": 0, "attempts_correct": 0.0}, "attempts_correct") is None
    assert claims_math.side_value({"acc": 0, "attempts_wrong": 0.0}, "attempts_wrong") == 0.0
    assert claims_math.ends([1, 2, 3, 10]) == (1.5, 6.5, 2) and claims_math.ends([5]) is None


def test_the_arms_differ_only_in_what_the_preset_changes():
    """countdown_rl sets kl_coef = 0.01 and the soft overlong penalty itself, so switching the preset keeps them: grpo
    and dr_grpo differ in the advantage and the loss aggregation only."""
    import dataclasses

    from r1lab.config import load_config
    from r1lab.recipes import resolve_recipe
    from r1lab.rl import algos
    from r1lab.rl.train import RLConfig, algorithm

    algs = {arm: dataclasses.asdict(algorithm(load_config(RLConfig, resolve_recipe("countdown_rl"), [f"preset={arm}"])))
            for arm in ("grpo", "dr_grpo")}
    diff = claims_math.arm_difference(algs, {a: dataclasses.asdict(algos.PRESETS[a]) for a in algs})
    assert diff["differ"] == {"advantage": {"grpo": "grpo", "dr_grpo": "dr_grpo"},
                              "loss_agg": {"grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm"}}
    same = diff["same"]
    assert (same["kl_coef"], same["soft_overlong"], same["overlong_cache_frac"]) == (0.01, True, 0.25)
    assert diff["overridden"] == {"grpo": {"kl_coef": (0.001, 0.01), "soft_overlong": (False, True),
                                           "overlong_cache_frac": (0.0, 0.25)},
                                  "dr_grpo": {"kl_coef": (0.0, 0.01), "soft_overlong": (False, True),
                                              "overlong_cache_frac": (0.0, 0.25)}}


SMOKE = ["--recipe", "countdown_rl_quick", "--seeds", "0", "--jobs", "1", "--eval-n", "4", "--eval-samples", "2",
         "--set", "steps=2", "--set", "prompts_per_step=2", "--set", "samples_per_prompt=2",
         "--set", "max_new_tokens=48", "--set", "eval_instances=0", "--set", "train_instances=20"]


def test_claims_end_to_end_then_reused(tmp_path):
    out = tmp_path / "claims"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "claims.py"), *SMOKE, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ledger = (out / "commands.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in ledger] == ["rl", "eval", "rl", "eval"]
    result = json.loads((out / "claims.json").read_text())
    assert set(result["claims"]["curves"]) == {"grpo", "dr_grpo"} and len(result["claims"]["verdicts"]) == 3
    assert {r["arm"] for r in result["claims"]["vote"]["runs"]} == {"grpo", "dr_grpo"}
    assert result["runs"]["grpo_s0"]["rl_command"].startswith("OMP_NUM_THREADS=1 ")
    assert "--set preset=dr_grpo" in result["runs"]["dr_grpo_s0"]["rl_command"]
    md = (out / "claims.md").read_text()
    assert "| grpo | 0 |" in md and "| dr_grpo | 0 |" in md and "### Verdicts" in md
    assert "advantage: 'grpo' (grpo), 'dr_grpo' (dr_grpo)" in md
    page = (out / "claims.html").read_text()
    assert "Content-Security-Policy" in page and "data:image/png;base64," in page and "dr_grpo" in page
    assert "DOES NOT REPRODUCE" in first.stdout or "HOLDS" in first.stdout  # the report is printed
    stamp = (out / "grpo_s0" / "metrics.jsonl").stat().st_mtime_ns, (out / "grpo_s0_eval.json").stat().st_mtime_ns

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "commands.jsonl").read_text().splitlines() == ledger  # nothing ran again
    assert ((out / "grpo_s0" / "metrics.jsonl").stat().st_mtime_ns,
            (out / "grpo_s0_eval.json").stat().st_mtime_ns) == stamp
    assert "rl reused, eval reused" in (out / "claims.md").read_text()


def test_a_gap_of_exactly_the_threshold_holds():
    c = claims_math.compute_claims({"grpo": {0: {"metrics": [], "eval": ev(0.30, 0.35)}}})
    assert c["vote"]["arms"]["grpo"]["holds"] and "HOLDS" in c["verdicts"][1]


@pytest.mark.parametrize("argv", [["--set", "seed=3"], ["--set", "preset=dapo"], ["--set", "no_such_key=1"],
                                  ["--arms", "grpo,no_such_preset"], ["--recipe", "no_such_recipe"]])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, capsys, argv):
    out = tmp_path / "claims"
    assert claims.main([*argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("claims.py: ") and not out.exists()
