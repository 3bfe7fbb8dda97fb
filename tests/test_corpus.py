"""The synthetic pretraining corpora (r1lab/pretrain/corpus.py): true arithmetic, failures from search only, and the
knobs doing what they say."""
import random
import statistics

import pytest

from r1lab.evaluation.behaviour import count_attempts, parse_steps, rejected_steps
from r1lab.pretrain.corpus import CorpusConfig, arithmetic_trace, countdown_trace
from r1lab.tasks import arithmetic, countdown
from r1lab.tasks.format import parse_completion

INSTANCES = countdown.generate(300, seed=0, max_number=12, max_target=100)


def traces(cfg, reps=2, seed=0):
    rng = random.Random(seed)
    out = []
    for ex in INSTANCES:
        for _ in range(reps):
            text, ok = countdown_trace(ex["nums"], ex["target"], rng, cfg)
            if text is not None:
                out.append((ex, "<think>" + text, ok))
    return out


def test_countdown_traces_are_true_and_end_as_they_claim():
    cfg = CorpusConfig()
    docs = traces(cfg)
    assert len(docs) > 500
    for ex, text, ok in docs:
        parsed = parse_completion(text)
        think = parsed.reasoning
        assert parsed.format_ok
        assert all(t for t, _ in parse_steps(think)) and all(rejected_steps(think))
        assert countdown.score(text, ex).correct == ok
        assert countdown.score(text, ex, strict=True).correct == ok  # the reasoning supports every right answer
        lines = [l for l in think.split("\n") if " vs " in l]
        assert 1 <= len(lines) <= cfg.max_attempts
        assert all(l.endswith(" miss") for l in lines[:-1])
        assert lines[-1].endswith(" hit") == ok and (ok or "give up" in think or len(lines) == cfg.max_attempts)
        for line in lines:  # "vs TARGET" echoes the target; the attempt's last step is what it compares
            value = parse_steps(line)[-1][1]
            assert line.endswith(f"vs {ex['target']} {'hit' if value == ex['target'] else 'miss'}")
        assert len(set(map(done_steps, lines))) == len(lines)  # attempts are distinct
    rejected = sum(len(rejected_steps(t)) for _, t, _ in docs)
    assert rejected > len(docs) // 2  # "10/3 no" is common at reject_prob 0.5


def done_steps(line: str) -> str:
    """An attempt line's steps as written, the rejected ones ("10/3 no") left out."""
    return ", ".join(s for s in line.removeprefix("back, ").split(" vs")[0].split(", ") if not s.endswith(" no"))


@pytest.mark.parametrize("seed", range(6))
def test_countdown_attempts_never_repeat_as_written(seed):
    # an intermediate result equal to a number left gives two expressions with one text: with [9, 3, 6], (9-3)-6
    # and 6-(9-3) are both "9-3=6, 6-6=0"; the search keeps attempts distinct by what it writes
    for ex, text, _ in traces(CorpusConfig(), reps=3, seed=seed):
        lines = [done_steps(l) for l in parse_completion(text).reasoning.split("\n") if " vs " in l]
        assert len(set(lines)) == len(lines), text


def test_countdown_knobs():
    base = traces(CorpusConfig())
    never_quit = traces(CorpusConfig(give_up_prob=0.0, max_attempts=30))
    quick_quit = traces(CorpusConfig(give_up_prob=0.6))
    rate = lambda docs: statistics.mean(ok for _, _, ok in docs)
    assert rate(quick_quit) < rate(base) < rate(never_quit)
    assert statistics.mean(count_attempts(t) for _, t, _ in quick_quit) < statistics.mean(
        count_attempts(t) for _, t, _ in never_quit)
    plain = traces(CorpusConfig(reject_prob=0.0, backtrack_prob=0.0, verify_prob=0.0))
    assert not any(rejected_steps(t) or "back," in t or "check" in t for _, t, _ in plain)
    marked = traces(CorpusConfig(backtrack_prob=1.0, verify_prob=1.0))
    hits = [t for _, t, ok in marked if ok]
    assert all("check " in t for t in hits)
    assert statistics.mean("back, " in t for _, t, _ in marked if count_attempts(t) > 1) > 0.9


def test_greedy_finish_hits_more_often():
    def hit_rate(greedy):
        docs = traces(CorpusConfig(greedy_finish_prob=greedy, give_up_prob=0.0, max_attempts=1), reps=3)
        return statistics.mean(ok for _, _, ok in docs)
    assert hit_rate(1.0) > 1.5 * hit_rate(0.0)


@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_arithmetic_traces_are_true_or_an_open_guess(op):
    rng = random.Random(1)
    cfg = CorpusConfig(guess_prob=0.3)
    guesses = 0
    for _ in range(200):
        a, b = rng.randint(0, 9999), rng.randint(0, 999)
        text, ok = arithmetic_trace(a, op, b, rng, cfg)
        ex = {"a": a, "op": op, "b": b}
        think = text.split("</think>")[0]
        assert all(t for t, _ in parse_steps(think)), text
        if ok:
            assert arithmetic.score("<think>" + text, ex).correct
        else:
            guesses += 1
            assert think.startswith("guess ") and not arithmetic.score("<think>" + text, ex).correct
    assert 30 < guesses < 90


@pytest.mark.parametrize("text, steps", [
    ("7-3=4, 4*5=21", [(True, 4), (False, 21)]),
    ("-2184+8594=6410", [(True, 6410)]),  # a leading minus at the start of an expression is the operand's sign
    ("13-9=4", [(True, 4)]),
    ("16 - 3 - 4 = 9", []),  # the tail of a chain is no step: it used to read as a wrong "3 - 4 = 9"
    ("2 * 3 + 4 = 10", []),
    ("x = 3 + 4 = 7", [(True, 7)]),
])
def test_arithmetic_steps_are_single_operations(text, steps):
    assert parse_steps(text) == steps
