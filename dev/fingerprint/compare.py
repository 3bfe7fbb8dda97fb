"""Compare two fingerprint dirs made by record.sh: every metric except timings must match (floats to 1e-6 rel)."""
import json, math, sys
from pathlib import Path
a, b = Path(sys.argv[1]), Path(sys.argv[2])
TIMING = ("time", "step_time_s", "gen_time_s", "train_time_s", "gen_tokens_per_s", "flops_per_s", "mfu", "wall_s", "seconds")
def skip(k): return k in TIMING or k.endswith("_s") or "per_s" in k or k in ("account", "settings")
def cmp(x, y, path):
    bad = []
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if skip(k): continue
            if k not in x or k not in y: bad.append(f"{path}.{k}: only in {'before' if k in x else 'after'}"); continue
            bad += cmp(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, float) or isinstance(y, float):
        if x is None or y is None or not (x == y or (isinstance(x, float) and math.isnan(x) and isinstance(y, float) and math.isnan(y)) or abs(x - y) <= 1e-6 * max(abs(x), abs(y), 1e-12)):
            bad.append(f"{path}: {x} vs {y}")
    elif x != y:
        bad.append(f"{path}: {x!r} vs {y!r}")
    return bad
bad = []
for run in sorted(p.name for p in a.glob("rl_*") if p.is_dir()):
    ra = [json.loads(l) for l in (a / run / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(l) for l in (b / run / "metrics.jsonl").read_text().splitlines()]
    if len(ra) != len(rb): bad.append(f"{run}: {len(ra)} vs {len(rb)} rows")
    for i, (x, y) in enumerate(zip(ra, rb)): bad += cmp(x, y, f"{run}[{i}]")
for f in ("eval.json", "eval_rl.json"):
    bad += cmp(json.loads((a / f).read_text()), json.loads((b / f).read_text()), f)
print("\n".join(bad) if bad else "fingerprint: identical (timings excluded)")
sys.exit(1 if bad else 0)
