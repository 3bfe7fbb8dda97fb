"""MATH: extraction paths, math-verify equivalence, hostile answers within the time bound, threads, loading.
Also the shared pieces they rest on: tasks.extract (doctests, paths) and r1lab.tasks.verify_timeout."""
from __future__ import annotations

import doctest
import json
import multiprocessing
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from r1lab.tasks import verify_timeout
from r1lab.tasks import extract, get_task
from r1lab.tasks import math as task  # imports math-verify (slow), once for the whole file
from r1lab.tasks.common import Score
from r1lab.tasks.verify_timeout import call_bounded

HALF = {"problem": "What is 1 - 1/2?", "answer": "\\frac{1}{2}", "level": 1, "subject": "Prealgebra"}
SOLUTION_ONLY = {"problem": "Solve 2x = 10.", "solution": "Divide: $x = \\boxed{5}$.", "level": "Level 2",
                 "type": "Algebra"}
SLACK_S = 1.0  # scheduling slack over the bound on a loaded 2-core CI machine


def test_extract_doctests():
    assert doctest.testmod(extract).failed == 0


@pytest.mark.parametrize("completion, answer, source, format_ok", [
    ("x = 1/2</think> <answer>\\frac{1}{2}</answer>", "\\frac{1}{2}", "answer_tag", True),
    ("</think><answer>$\\boxed{1/2}$.</answer>", "1/2", "answer_tag", True),
    ("</think> <answer>The answer is $\\boxed{5}$</answer>", "5", "answer_tag", True),  # its one box states it
    ("</think> <answer>$x = \\boxed{5}$</answer>", "5", "answer_tag", True),
    ("</think> <answer>\\boxed{5} or \\boxed{6}</answer>", "\\boxed{5} or \\boxed{6}", "answer_tag", True),
    ("</think> <answer>**5**</answer>", "5", "answer_tag", True),  # markdown bold
    ("</think> <answer></answer> \\boxed{7}", "", "answer_tag", False),  # an empty answer is still the answer
    ("<answer>7</answer> \\boxed{8}", "8", "boxed", False),  # no </think>: no tag answer, the text is read whole
    ("\\boxed{7}</think> the answer is 8.", "8", "answer_is", False),  # after </think>, only the reply is read
    ("\\boxed{7} = 7</think>", None, None, False),  # the reasoning's box and numbers are not an answer
    ("first \\boxed{1}, then \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}", "boxed", False),
    ("\\boxed{\\boxed{7}}", "7", "boxed", False),
    ("\\boxed{}\n#### 42", "42", "####", False),  # an empty box falls through
    ("So 2x = 10.\n#### 5\nextra line", "5", "####", False),
    ("Thus the final answer is $\\frac{1}{2}$. I hope it is correct.", "\\frac{1}{2}", "answer_is", False),
    ("The answer is: 3.5\nbecause", "3.5", "answer_is", False),
    ("1 + 2 = 3, then 3 * 4 = 12.", "12", "last_number", False),
    ("x - 3", "3", "last_number", False),  # a minus after a letter is not a sign
    ("no numbers at all", None, None, False),
])
def test_extraction_paths(completion, answer, source, format_ok):
    assert extract.extract_answer(completion) == (answer, format_ok, source)


@pytest.mark.parametrize("truth, answer", [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "1/2"), ("\\frac{1}{2}", "\\dfrac12"), ("5", "x = 5"),
    ("(3, -1)", "(3,-1)"), ("[1,2)", "[1, 2)"), ("2\\sqrt{3}", "\\sqrt{12}"), ("x^2+2x+1", "(x+1)^2"),
    ("\\text{(C)}", "C"), ("\\pi/2", "\\frac{\\pi}{2}"), ("1,000", "1000"), ("\\infty", "\\infty"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    # the guards refused these, although the answer is the reference itself or its plain equal (session 21)
    ("\\sqrt[3]{x^2}", "\\sqrt[3]{x^2}"), ("\\sqrt[3]{\\frac{3}{4}}", "\\sqrt[3]{\\frac{3}{4}}"),
    ("\\sqrt[3]{4}", "\\sqrt[3]{2^2}"), ("10^{2024}", "10^{2024}"), ("10^{2024}", "10^{2024} "),
])
def test_equivalent(truth, answer):
    assert task.is_equivalent(truth, answer)
    assert task.score(f"</think> <answer>{answer}</answer>", {"problem": "p", "answer": truth}).correct


@pytest.mark.parametrize("truth, answer", [
    ("\\frac{1}{2}", "\\frac{1}{3}"), ("5", "6"), ("(3, -1)", "(-1, 3)"), ("[1,2)", "[1,2]"),
    ("2\\sqrt{3}", "3\\sqrt{2}"), ("3", "3, 4"), ("x^2", "x^3"), ("5", ""), ("5", "five apples"),
])
def test_not_equivalent(truth, answer):
    assert not task.is_equivalent(truth, answer)


def test_interface_gold_difficulty_check():
    assert get_task("math") is task and task.FIELDS == ("problem", "answer") and not hasattr(task, "generate")
    assert task.question(HALF) == HALF["problem"] and task.prompt(HALF).endswith("Assistant: <think>")
    assert task.gold(HALF) == "\\frac{1}{2}" and task.gold(SOLUTION_ONLY) == "5" and task.gold({"problem": "p"}) is None
    assert task.score("</think> <answer>5</answer>", SOLUTION_ONLY) == Score(1.1, True, True, "5")
    assert task.difficulty(HALF) == "Level 1 / Prealgebra" and task.difficulty(SOLUTION_ONLY) == "Level 2 / Algebra"
    assert task.difficulty({"problem": "p", "answer": "1"}) == "unknown"
    assert task.check(HALF) is None and task.check(SOLUTION_ONLY) is None
    assert task.check({"answer": "1"}) == "missing field 'problem'"
    assert task.check({"problem": "p", "answer": 5}) == "field 'answer' must be a string, got int"
    assert "missing field 'answer'" in task.check({"problem": "p", "solution": "no box"})


def test_answer_key():
    key = task.answer_key
    assert key("</think> <answer>\\dfrac{1}{2}</answer>", HALF) == key("\\boxed{\\frac {1}{2}}", HALF) == "1/2"
    assert key("</think> <answer>0.50</answer>", HALF) == key("the answer is 1/2.", HALF) == "1/2"
    assert key("\\boxed{\\frac12}", HALF) == "1/2" and key("\\boxed{-\\tfrac{3}{6}}", HALF) == "-1/2"
    assert key("\\boxed{\\dfrac{x}{2}}", HALF) == key("\\boxed{\\frac {x}{2}}", HALF) == "\\frac{x}{2}"
    assert key("\\boxed{\\frac{1}{0}}", HALF) == "\\frac{1}{0}"
    assert key("\\boxed{\\left( 3, 4 \\right)}", HALF) == "(3,4)"
    assert key("nothing", HALF) is None


def test_load_fills_answer_from_solution(tmp_path):
    path = tmp_path / "math.jsonl"
    path.write_text(json.dumps(HALF) + "\n" + json.dumps(SOLUTION_ONLY) + "\n")
    rows = task.load(path)
    assert rows[0] == HALF and rows[1]["answer"] == "5"
    assert len(task.load(path, limit=1)) == 1
    path.write_text(json.dumps({"problem": "p", "solution": "no boxed answer"}) + "\n")
    with pytest.raises(ValueError, match=r"no usable row; .*\.jsonl:1: its solution has no \\boxed\{\} answer"):
        task.load(path)
    path.write_text(json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"\.jsonl:1: missing field 'answer'"):
        task.load(path)


def test_load_reads_upstream_math_solutions(tmp_path, capsys):
    # MATH train as shipped: train/algebra/24014 ends "$\boxed 2$" (no braces), a few end in an empty \boxed{};
    # before, the first stopped the whole load and an earlier braced box won over a later bare one
    rows = [{"problem": "a", "solution": "So $x=\\boxed{3}$."},
            {"problem": "b", "solution": "Hence our answer is $\\boxed 2$."},
            {"problem": "c", "solution": "First $y=\\boxed{4}$; the answer is $\\boxed 9$."},
            {"problem": "d", "solution": "So it is $\\boxed{}$."},
            {"problem": "e", "solution": "Not $\\boxed 7$ but $\\boxed{\\frac{1}{2}}$."}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = task.load(path, split="train")
    assert [r["answer"] for r in loaded] == ["3", "2", "9", "\\frac{1}{2}"]
    assert "skipped 1 of 5 rows that have no reference answer, first " in capsys.readouterr().err
    assert task.score("x</think> <answer>9</answer>", loaded[2]).correct


# Hostile answers against HALF (1/2). Each returns a Score within the bound; none is evaluated by Python.
ADVERSARIAL = [
    ("tower of powers", "\\boxed{9^{9^{9^{9}}}}", False),
    ("huge power", "</think> <answer>9999^{9999^{9999}}</answer>", False),
    ("huge factorial", "\\boxed{(10^{10})!}", False),
    ("huge sum", "\\boxed{\\sum_{k=1}^{10^{10}} k^{k}}", False),
    ("long product", "\\boxed{" + "".join(f"(x+{i})" for i in range(150)) + "}", False),
    ("over MAX_ANSWER_CHARS", "\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(200)) + "}", False),
    ("deeply nested braces", "\\boxed{" + "{" * 40 + "1/2" + "}" * 40 + "}", False),
    ("deeply nested sqrt", "\\boxed{" + "\\sqrt{" * 15 + "2" + "}" * 15 + "}", False),
    ("1 MB of \\frac{", "\\frac{" * 200_000, False),
    ("1 MB of digits", "9" * 1_000_000, False),
    ("1 MB then the answer", "x" * 1_000_000 + "\\boxed{1/2}", False),  # cut at MAX_COMPLETION_CHARS
    ("arabic-indic digits", "\\boxed{\\frac{١}{٢}}", False),
    ("fullwidth digits", "\\boxed{１/２}", False),
    ("code", "</think> <answer>__import__('os').system('echo pwned')</answer>", False),
    ("text after the answer", "</think> <answer>\\frac12</answer> and some more", True),
    ("multiple boxes, last wins", "\\boxed{1/2} or maybe \\boxed{1/3}", False),
    ("two answers in one", "</think> <answer>1/2, 1/3</answer>", False),
    ("none", None, False),
    ("bytes", b"\\boxed{1/2}", False),
    ("surrogates", "\\boxed{\ud800}", False),
]


@pytest.fixture
def warm_verifier():
    """The template's one-time start (an interpreter, math-verify's import, its warm calls: ~1.5 s, several under
    xdist on 2 cores) is outside every bound by design; whichever timed test runs first in a process paid it."""
    call_bounded(task._verify, ("1", "1"), 1.0, None)


@pytest.fixture
def short_bound(monkeypatch, warm_verifier):
    monkeypatch.setattr(task, "VERIFY_TIMEOUT_S", 1.0)
    return 1.0


@pytest.mark.parametrize("name, completion, correct", ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL])
def test_adversarial(short_bound, name, completion, correct):
    start = time.perf_counter()
    s = task.score(completion, HALF)
    assert time.perf_counter() - start < short_bound + SLACK_S
    assert isinstance(s, Score) and s.correct is correct


def test_default_bound_holds(warm_verifier):
    start = time.perf_counter()
    assert not task.score("\\boxed{9^{9^{9^{9}}}}", {"problem": "p", "answer": "42"}).correct
    assert time.perf_counter() - start < task.VERIFY_TIMEOUT_S + SLACK_S


def test_threads_agree_with_main_thread():
    """math-verify's own signal.alarm raises off the main thread; ours moves the call to a worker process."""
    cases = [(f"</think> <answer>{a}</answer>", {"problem": "p", "answer": t})
             for t, a in [("\\frac{1}{2}", "0.5"), ("(3, -1)", "(3,-1)"), ("x^2+2x+1", "(x+1)^2"), ("5", "6"),
                          ("[1,2)", "[1,2]"), ("2\\sqrt{3}", "\\sqrt{12}"), ("3", "3, 4"), ("\\text{(C)}", "C")]]
    expected = [task.score(c, ex) for c, ex in cases]
    assert [s.correct for s in expected] == [True, True, True, False, False, True, False, True]
    timeout = Score(0.0, False, False, "9^{9^{9^{9}}}")
    cases.insert(4, ("\\boxed{9^{9^{9^{9}}}}", {"problem": "p", "answer": "42"}))  # kills one worker...
    expected.insert(4, timeout)
    cases, expected = cases + cases[:4], expected + expected[:4]  # ...and the threads carry on
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda case: task.score(*case), cases))
    assert got == expected
    assert time.perf_counter() - start < 2 * (task.VERIFY_TIMEOUT_S + SLACK_S)  # worker startup included


def _score(case) -> Score:
    return task.score(*case)


def _score_from_a_thread(case) -> Score:
    out = []
    thread = threading.Thread(target=lambda: out.append(task.score(*case)))
    thread.start()
    thread.join()
    return out[0]


@pytest.mark.skipif(sys.platform != "linux", reason="uses the fork start method")
def test_processes_agree_with_main_thread():
    """In worker processes (their main thread: the alarm) and in threads inside them (their own worker pool)."""
    cases = [("</think> <answer>0.5</answer>", HALF), ("\\boxed{1/3}", HALF), ("the answer is 5", SOLUTION_ONLY)]
    expected = [task.score(*case) for case in cases]
    assert [s.correct for s in expected] == [True, False, True]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        assert list(pool.map(_score, cases)) == expected
        assert list(pool.map(_score_from_a_thread, cases)) == expected


def test_call_bounded_in_both_places():
    assert call_bounded(pow, (2, 10), 1.0, None, isolate=False) == 1024  # main thread: signal.setitimer
    assert call_bounded(pow, (2, 10), 1.0, None) == 1024  # worker process
    for isolate in (False, True):
        start = time.perf_counter()
        assert call_bounded(time.sleep, (30,), 0.3, "late", isolate=isolate) == "late"
        assert call_bounded(int, ("not a number",), 1.0, "error", isolate=isolate) == "error"
        assert time.perf_counter() - start < 0.3 + SLACK_S
    out = []
    thread = threading.Thread(target=lambda: out.append(call_bounded(time.sleep, (30,), 0.3, "late", isolate=False)))
    thread.start()
    thread.join(10)
    assert out == ["late"]
    assert call_bounded(pow, (3, 3), 1.0, None, isolate=True) == 27  # a fresh worker after the kill
    verify_timeout.shutdown()


def _swallows_the_first_timeout():
    """Like a verifier whose first timeout lands in a gc callback or a __del__, where Python drops exceptions."""
    try:
        time.sleep(5)
    except BaseException:
        pass
    time.sleep(5)
    return "finished"


def test_a_dropped_timeout_is_raised_again():
    from r1lab.tasks.verify_timeout import call_bounded
    start = time.perf_counter()
    assert call_bounded(_swallows_the_first_timeout, (), timeout_s=0.3, default="bounded", isolate=False) == "bounded"
    assert time.perf_counter() - start < 1.0


# --- the hard bound: a worker process, killed on time, under a memory limit ---------------------------------------

def test_one_c_level_operation_is_killed_on_time(warm_verifier):
    """A huge integer power is one C call: no signal can stop it in-process; the worker is killed."""
    # subtle: the template's start and its import of each fn's module (math-verify and its warm calls: ~1.4 s here) are
    # outside every bound; an earlier test's shutdown() leaves none, so both are paid before the clock starts (the
    # fixture for math-verify's, here for pow's)
    call_bounded(pow, (2, 2), 1.0, None)
    start = time.perf_counter()
    assert call_bounded(pow, (10, 10**10), 0.5, "bounded") == "bounded"
    tower = "e^{10^{99999999^{99^{99^{99999999}}}}}"  # the LaTeX parser evaluates it (e^x asks whether x is 0)
    assert call_bounded(task._verify, ("1", tower), 0.5, "bounded") in (False, "bounded")  # memory limit or kill
    assert time.perf_counter() - start < 2 * 0.5 + SLACK_S


def test_memory_is_bounded():
    before = verify_timeout.stats()["retired"]
    start = time.perf_counter()
    assert call_bounded(bytearray, (verify_timeout.WORKER_MEMORY_BYTES,), 10.0, "out of memory") == "out of memory"
    assert time.perf_counter() - start < 2.0  # MemoryError at once, no swapping
    stats = verify_timeout.stats()
    assert stats["retired"] == before + 1 and stats["peak_worker_rss_kb"] < verify_timeout.WORKER_MEMORY_BYTES // 1024
    assert call_bounded(pow, (2, 10), 1.0, None) == 1024  # a fresh worker


def _timed_call(seconds: float, timeout_s: float):
    start = time.perf_counter()
    return call_bounded(time.sleep, (seconds,), timeout_s, "late"), time.perf_counter() - start


THREAD_SLACK_S = 0.25  # over the bound, for 32 threads on a loaded 2-core machine (the kill itself takes < 1 ms)


def test_many_threads_each_return_within_their_bound():
    """The pool grows to meet demand: 8 hung calls hold 8 workers while 24 quick ones get workers of their own."""
    call_bounded(time.sleep, (0,), 1.0, None)
    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(lambda i: _timed_call(30 if i % 4 == 0 else 0.01, 1.0), range(32)))
    assert [r for r, _ in got] == ["late" if i % 4 == 0 else None for i in range(32)]
    assert max(dt for _, dt in got) < 1.0 + THREAD_SLACK_S
    # nobody waited for the hung calls: that takes their whole 1.0 s bound (0.5 here failed once at 0.59 s, with
    # two other test runs on the 2 cores spawning workers)
    assert max(dt for i, (_, dt) in enumerate(got) if i % 4) < 1.0


def test_the_wait_for_a_worker_counts_in_the_bound(monkeypatch):
    """Past MAX_WORKERS a call waits for a worker, and returns `default` when its bound runs out while waiting."""
    verify_timeout.shutdown()  # no idle workers left from other tests
    call_bounded(time.sleep, (0,), 1.0, None)  # the template's start; leaves one idle worker
    monkeypatch.setattr(verify_timeout, "MAX_WORKERS", 2)
    with ThreadPoolExecutor(6) as pool:
        hung = [pool.submit(_timed_call, 30, 1.0) for _ in range(2)]
        time.sleep(0.2)  # both workers taken
        quick = [pool.submit(_timed_call, 0.01, 0.5) for _ in range(4)]
        got = [f.result() for f in hung + quick]
    assert [r for r, _ in got] == ["late"] * 6  # the quick four found no worker in time
    assert max(dt for _, dt in got[2:]) < 0.5 + THREAD_SLACK_S
    verify_timeout.shutdown()


def test_math_from_many_threads():
    cases = [("0.5", True), ("\\frac{2}{4}", True), ("1/3", False), ("(10^{10^{10}})!", False), ("17 \\lor 18", False)]
    task.score("</think> <answer>1</answer>", HALF)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda i: task.score(f"</think> <answer>{cases[i % 5][0]}</answer>", HALF), range(40)))
    assert [s.correct for s in got] == [cases[i % 5][1] for i in range(40)]


# --- guards before the worker: hostile answers stop in microseconds ------------------------------------------------

HUGE = ["(10^{10^{10}})!", "10^{10^{10}}", "9^{9^{9^{9}}}", "(10^{100})!", "100000!", "10^{10}!",
        "\\binom{10^{10}}{5^{10}}", "\\binom{999999999999}{44444444444}", "\\sum_{k=1}^{10^{10}} k^{k}",
        "\\prod_{k=1}^{10^{6}} k", "\\sqrt[10^{10}]{2}", "\\sqrt[99^{9}]{2}", "10^{-10^{10}}", "(x+y+z)^{1000}",
        "(x+y+z)^{99}", "e^{10^{10}}", "e^{99^{10^{99999999}}}", "\\sin(10^{10^{10}})", "(10^{10^{10}}, 1)",
        "[2^{10^{8}}, 3)", "10^{10^{10}} \\pm 1", "\\sqrt{2}^{10^{10}}", "99999999^{99999999}", "\\gcd(10^{100}, 5)",
        "x^{2^{64}}", "0.5^{10^{10}}", "\\Gamma(10^{10})", "10^{10^{10}} \\cdot 0", "i^{10^{10^{10}}}",
        "{" * 20 + "1" + "}" * 20, "\\underbrace{" * 50 + "1" + "}" * 50, "\\underbrace{1}_{x}" * 60, "9" * 999]


@pytest.mark.parametrize("truth", ["\\sqrt{2}", "10^{10^{10}}", "42"])
@pytest.mark.parametrize("answer", HUGE, ids=range(len(HUGE)))
def test_huge_answers_are_wrong_well_within_the_bound(truth, answer):
    task.is_equivalent("1", "1")
    start = time.perf_counter()
    assert task.is_equivalent(truth, answer) is (answer == truth)
    assert time.perf_counter() - start < 0.5 * task.VERIFY_TIMEOUT_S


def test_bits_and_tower_height():
    assert task._bits(task._parse("2^{2024}")[0]) == 2 * 2024  # 2 is 2 bits wide: an upper bound
    assert task._bits(task._parse("10^{10^{10}}")[0]) == 4 * 2.0**40  # 10^10 is bounded by 2^40
    assert task._bits(task._parse("(x+1)^{5}")[0]) == 15 and task._bits(task._parse("1000!")[0]) < task.MAX_BITS
    assert task._bits(task._parse("\\sum_{k=1}^{3} k")[0]) == float("inf")
    assert [task._tower_height(t) for t in ("x", "x^2", "e^{-x^2}", "10^{10^{10}}", "{x^2}^{3}")] == [0, 1, 2, 2, 1]


# --- hedges: math-verify reads only a part of these, so they are wrong unless the reference writes the same ---------

MATH_HEDGES = ["17 \\lor 18", "17 \\vee 18", "17 \\land 18", "\\neq 18", "\\ne 18", "\\neg 18", "\\not 18",
               "17 = 18", "x = 17 = 18", "17 \\quad 18", "17 18", "17\\;18", "17{18}", "{17}{18}", "17_18", "17 | 18",
               "17 & 18", "17 \\to 18", "17 \\Rightarrow 18", "17 \\approx 18", "\\approx 18", "\\sim 18",
               "17 \\cup 18", "17 \\setminus 18", "17 \\mid 18", "17\\par 18", "\\therefore 18", "\\phantom{17} 18",
               "\\boxed{17} \\boxed{18}", "17} \\boxed{18", "\\write18{x}", "17 or 18", "17, 18", "not 18",
               "1,2,3,\\ldots,18", "\\{17, 18\\}", "\\pm 18", "\u221218", "\u201418", "\uff11\uff18", "\u0661\u0668",
               "\u00b9\u2078", "17 \u2228 18", "\u2260 18"]


@pytest.mark.parametrize("answer", MATH_HEDGES)
def test_hedges_are_wrong(answer):
    assert not task.is_equivalent("18", answer)
    assert not task.score(f"</think> <answer>{answer}</answer>", {"problem": "p", "answer": "18"}).correct


@pytest.mark.parametrize("truth, answer", [
    ("18", "x = 18"), ("18", "18.0"), ("-18", "\u221218"), ("-18", "\u201318"), ("30", "30^\\circ"),
    ("30^\\circ", "30"), ("(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty,1)\\cup(2,\\infty)"), ("1011_2", "1011_2"),
    ("e^{-x^{2}}", "e^{-x^2}"), ("2^{2024}", "2^{2024}"), ("1, 2", "1 \\text{ or } 2"), ("1000", "1{,}000"),
    ("\\frac{5}{2}", "\\frac{10}{4}"), ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                                       "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
])
def test_what_the_guards_let_through(truth, answer):
    assert task.is_equivalent(truth, answer)
