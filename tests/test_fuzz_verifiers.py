"""A slice of benchmarks/fuzz_verifiers.py on every verifier: hostile completions never raise, stay within the bound,
and no hedge is graded right nor any legitimate form wrong. The benchmark runs the same generators at scale, with
timings and memory."""

from r1lab.tasks import task_names
from conftest import load_benchmark

fuzz = load_benchmark("fuzz_verifiers")

N = 3000  # 600 per verifier, about 65 per generator


def test_fuzz_slice_meets_the_targets():
    result = fuzz.run(task_names(), N, seed=0, bound_s=2.5)  # the 2 s bound plus slack for a loaded machine
    for row in result["rows"]:
        assert row["calls"] == N // len(task_names()), row["task"]
        assert row["exceptions"] == [], row["task"]
        assert row["over_bound"] == 0, row["task"]
        assert row["false_pos"] == [], row["task"]
        assert row["false_neg"] == [], row["task"]
    assert result["worker_rss_mb"] < 1024


def test_cases_are_reproducible():
    task = fuzz.get_task("gsm8k")
    first = [c for _, c, _, _ in fuzz.cases("gsm8k", task, 200, seed=3)]
    assert first == [c for _, c, _, _ in fuzz.cases("gsm8k", task, 200, seed=3)]
    assert first != [c for _, c, _, _ in fuzz.cases("gsm8k", task, 200, seed=4)]
