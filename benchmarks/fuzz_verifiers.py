"""Fuzz the five verifiers with hostile completions: exceptions, calls over the bound, hedges graded right, legit
answers graded wrong, time per call and peak memory.

    python benchmarks/fuzz_verifiers.py [--n 100000] [--seed 0] [--tasks countdown,math] [--bound-s 2.0]

Each task gets n / len(tasks) completions, split evenly over the generators below; generator g of task t draws
from random.Random(f"{seed}/{t}/{g}"), so a run is reproducible case by case (`cases` yields them).

- unicode  random code points (lone surrogates, zero-width and bidi marks, combining marks, fullwidth forms, CJK,
           emoji), alone, around the tags or inside the answer, up to 25,000 characters
- tags     tag soup: think/answer tags and pieces of them, boxes, ####, "the answer is", the right answer and
           others, in random orders
- nesting  brackets, braces, \\frac, \\sqrt, \\left(, \\underbrace, tags, boxes: 1 to 20,000 deep, balanced or not
- huge     towers, huge powers, factorials, binomials, sums, long digit strings, \\underbrace spam
- near     near misses of the right answer (a digit changed, a sign, blanks, a character dropped or doubled)
- mutate   random edits of a right completion
- hedge    built to be WRONG: several candidates ("17 or 18", "\\boxed{17} \\boxed{18}"), negations ("not 18",
           "\\neq 18"), lists ("1,2,...,18"), look-alike digits and signs ("１８", "١٨", "¹⁸", "−18" for 18)
- legit    built to be RIGHT: the forms each verifier promises to accept ("$1,234.00", "18 dollars", "−5" for -5,
           "\\dfrac12" for 1/2, "×" in countdown, clauses in any order in logic)
- known    the issue's cases and the tests' adversarial lists (1 MB strings, None, bytes...)

Reported per task (after one untimed call: math's first starts its verifier worker): calls, exceptions, calls
over the bound, hedges graded right (false +), legit answers graded
wrong (false -), p50 / p99 / max ms per call and the slowest case; then the peak RSS of this process and of the
verifier workers and template (r1lab.tasks.verify_timeout.stats()), and the wall time. Targets: 0 exceptions, 0
calls over the bound, 0 false + and false -, p99 <= 50 ms, peak RSS <= 1 GB; the exit status is 1 when one is
missed.
"""
from __future__ import annotations

import argparse
import random
import resource
import time

from r1lab.tasks import get_task, task_names, verify_timeout
from r1lab.tasks.extract import parse_number

P99_TARGET_MS, RSS_TARGET_MB = 50.0, 1024.0
THINK = "Let me work through this step by step. "
GSM8K_GOLDS = ["18", "-5", "1,234", "3.5"]
# Each math gold with answers math-verify must find equal to it.
MATH_GOLDS = {
    "18": ["18.0", "\\frac{36}{2}", "x = 18"], "-18": ["\u221218", "-18.0"],
    "\\frac{1}{2}": ["0.5", "1/2", "\\dfrac12", "\\tfrac{1}{2}"], "(3, -1)": ["(3,-1)", "\\left(3, -1\\right)"],
    "2\\sqrt{3}": ["\\sqrt{12}"], "x^2+2x+1": ["(x+1)^2"], "[1,2)": ["[1, 2)"], "\\sqrt{2}": ["2^{1/2}"],
    "10^{10^{10}}": [],
}
DIGIT_FAMILIES = [0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE, 0x2080]  # fullwidth, Arabic-Indic, ..., subscripts
SUPERSCRIPTS = str.maketrans("0123456789", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")
MINUS_LOOKALIKES = ["\u2212", "\u2013", "\u2012", "\ufe63", "\uff0d"]  # verifiers read these as "-"
DASHES = ["\u2014", "\u2015", "~", "\u02d7"]  # not minus signs: a number after one is no number
UNICODE_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x590, 0x6FF), (0x2000, 0x206F), (0x2190, 0x22FF),
                  (0x4E00, 0x4FFF), (0xD800, 0xDFFF), (0xE000, 0xE0FF), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF),
                  (0x1D400, 0x1D7FF)]
NESTS = [("(", ")"), ("{", "}"), ("[", "]"), ("\\frac{1}{", "}"), ("\\sqrt{", "}"), ("\\left(", "\\right)"),
         ("<answer>", "</answer>"), ("\\boxed{", "}"), ("\\underbrace{", "}_{x}"), ("\\text{", "}"), ("2^{", "}"),
         ("<think>", "</think>")]


# --- the tasks' examples and their right answers -----------------------------------------------------------------

def examples(name: str, task) -> list[tuple[dict, str]]:
    """(example, right answer) pairs: generated for synthetic tasks, fixed rows for the dataset tasks."""
    if name == "countdown":
        return [(ex, task.solve(ex["nums"], ex["target"])) for ex in task.generate(6, seed=0, split="test")]
    if name == "arithmetic":
        rows = task.generate(5, seed=0, split="test", max_digits=5) + [{"a": 12, "op": "-", "b": 1300}]
        return [(ex, str(task._result(ex))) for ex in rows]
    if name == "logic":
        return [(ex, ex["solution_text_format"]) for ex in task.generate(6, seed=0, split="test", max_people=5)]
    if name == "gsm8k":
        return [({"question": "q", "answer": f"work\n#### {g}"}, g) for g in GSM8K_GOLDS]
    return [({"problem": "p", "answer": g}, g) for g in MATH_GOLDS]


def other(name: str, ref: str, rng: random.Random) -> str:
    """A wrong candidate next to the right answer `ref`."""
    if name == "logic":
        i = min(j for j in (ref.find("knight"), ref.find("knave")) if j >= 0)
        return ref[:i] + ("knave" + ref[i + 6:] if ref.startswith("knight", i) else "knight" + ref[i + 5:])
    if name == "countdown":
        return ref.replace("+", "-", 1) if "+" in ref else ref.replace("*", "+", 1) if "*" in ref else ref + " + 1"
    value = parse_number(ref)
    if value is None:
        return rng.choice(["7", "\\frac{1}{3}", "-2"])
    b = value + rng.choice([1, -1, 2, 10])
    return str(b.numerator) if b.denominator == 1 else f"{float(b):g}"


def wrap(rng: random.Random, answer: str) -> str:
    return f"{THINK * rng.randint(0, 3)}</think> <answer>{answer}</answer>"


def numeric(name: str, ref: str) -> bool:
    return name in ("gsm8k", "arithmetic") or name == "math" and parse_number(ref) is not None


# --- generators: (rng, task name, example, right answer) -> (completion, expected correct or None) -------------

def gen_unicode(rng, name, ex, ref):
    def junk(n):
        out = []
        for _ in range(n):
            lo, hi = rng.choice(UNICODE_RANGES)
            out.append(chr(rng.randint(lo, hi)))
        return "".join(out)
    n = rng.choice([1, 10, 100, 1000, 3000, 25_000])
    shape = rng.randrange(4)
    if shape == 0:
        return junk(n), None
    if shape == 1:
        return f"{junk(n)}</think> <answer>{junk(rng.randint(0, 20))}{ref}{junk(rng.randint(0, 20))}</answer>", None
    if shape == 2:
        return f"{junk(min(n, 3000))}</think> <answer>{ref}</answer>{junk(min(n, 3000))}", None
    i = rng.randint(0, len(ref))
    return wrap(rng, ref[:i] + junk(rng.randint(1, 5)) + ref[i:]), None


def gen_tags(rng, name, ex, ref):
    tokens = ["<think>", "</think>", "<answer>", "</answer>", "<answ", "er>", "</", ">", ref, ref,
              other(name, ref, rng), str(rng.randint(-99, 9999)), "\\boxed{", "}", "{", "####", "The answer is ",
              "\n", " ", "$", ".", THINK]
    return "".join(rng.choice(tokens) for _ in range(rng.randint(1, 60))), None


def gen_nesting(rng, name, ex, ref):
    left, right = rng.choice(NESTS)
    depth = rng.choice([1, 2, 3, 5, 8, 9, 12, 20, 50, 100, 1000, 5000, 20_000])
    body = left * depth + ref + right * (depth if rng.random() < 0.7 else rng.randint(0, depth))
    return (wrap(rng, body) if rng.random() < 0.7 else body), None


def gen_huge(rng, name, ex, ref):
    d = lambda: str(rng.choice([2, 9, 10, 99, 9999, 10**8 - 1]))  # noqa: E731
    tower = d()
    for _ in range(rng.randint(1, 6)):
        tower = f"{d()}^{{{tower}}}"
    forms = [tower, f"({tower})!", f"{d()}!", f"({d()}^{{{d()}}})!", "9" * rng.choice([60, 999, 5000, 20_000]),
             f"\\binom{{{d()}^{{{d()}}}}}{{{d()}}}", f"\\binom{{{'9' * 12}}}{{{'4' * 11}}}",
             f"\\sum_{{k=1}}^{{10^{{{d()}}}}} k^{{k}}", f"\\prod_{{k=1}}^{{{d()}}} k", f"(x+y+z)^{{{d()}}}",
             f"x^{{{tower}}}", f"e^{{{tower}}}", f"\\sin({tower})", f"{d()}**{d()}**{d()}", f"1e{d()}",
             f"\\Gamma({tower})", "\\underbrace{" * rng.randint(1, 300) + "1" + "}" * rng.randint(0, 300),
             f"\\sqrt[{tower}]{{2}}", f"{tower} - {tower}", f"0.5^{{{tower}}}", f"\\frac{{{tower}}}{{3}}"]
    body = rng.choice(forms)
    shape = rng.randrange(3)
    return (wrap(rng, body) if shape == 0 else f"\\boxed{{{body}}}" if shape == 1 else f"#### {body}"), None


def gen_near(rng, name, ex, ref):
    s, i = ref, rng.randrange(len(ref))
    edit = rng.randrange(7)
    if edit == 0 and any(c.isdigit() for c in s):
        j = rng.choice([k for k, c in enumerate(s) if c.isdigit()])
        s = s[:j] + str((int(s[j]) + rng.randint(1, 9)) % 10) + s[j + 1:]
    elif edit == 1:
        s = s[:i] + s[i + 1:]
    elif edit == 2:
        s = s[:i] + s[i] + s[i:]
    elif edit == 3:
        s = rng.choice(["-", "+", "\u2212", "--", ""]) + s
    elif edit == 4:
        s = s + rng.choice([".0", ".", "0", " ", "\u00a0", ",", "%", "!"])
    elif edit == 5:
        s = s[:i] + rng.choice([" ", "\u200b", "\u00a0", ",", "."]) + s[i:]
    else:
        s = s.upper() if rng.random() < 0.5 else s.lower()
    return wrap(rng, s), None


def gen_mutate(rng, name, ex, ref):
    s = wrap(rng, ref)
    alphabet = list("0123456789+-*/()=.,{}[]$ \n\\") + ["<answer>", "</answer>", "</think>", "\\boxed{", "\u2212",
                                                          "\uff11", "\u0661", "or", "not", "\\frac", "^"]
    for _ in range(rng.randint(1, 6)):
        i = rng.randint(0, len(s))
        op = rng.randrange(3)
        if op == 0:
            s = s[:i] + rng.choice(alphabet) + s[i:]
        elif op == 1:
            s = s[:i] + s[i + 1:]
        else:
            s = s[:i] + rng.choice(alphabet) + s[i + 1:]
    return s, None


def _lookalike(rng, ref: str) -> str:
    if rng.random() < 0.2:
        return ref.translate(SUPERSCRIPTS)
    base = rng.choice(DIGIT_FAMILIES)
    table = str.maketrans("0123456789", "".join(chr(base + k) for k in range(10)))
    if rng.random() < 0.5:
        return ref.translate(table)
    j = rng.choice([k for k, c in enumerate(ref) if c.isdigit()])
    return ref[:j] + ref[j].translate(table) + ref[j + 1:]


def gen_hedge(rng, name, ex, ref):
    b = other(name, ref, rng)
    if name == "logic":
        first = ref.splitlines()[0].split(") ", 1)[-1]
        person = first.split(" is ")[0]
        forms = [f"{person} is a knight or a knave\n{ref}", f"{ref}\n{person} is not a knight", f"{ref}\n{b}", b,
                 ref.replace(f"{person} is a", f"{person} is not a", 1), ref.replace(" a k", " a \u043a", 1),
                 ref.replace(" a k", " a \uff4b", 1), f"{ref}\nStranger is a knight",
                 "\n".join(ref.splitlines()[1:]) or b,
                 ref.replace(" is a ", " is a knight or a ", 1), f"{ref} (or {b})"]
        return wrap(rng, rng.choice(forms)), False
    if name == "countdown":
        t = ex["target"]
        forms = [f"{ref} or {b}", f"{b} or {ref}", f"{ref}, {b}", f"not {ref}", f"{ref} = {t + 1}",
                 f"{ref} = {t} = {t}", f"{ref} + 0", f"({ref}) * 1 * 1", f"-({ref})", _lookalike(rng, ref),
                 f"{ref} \u2260 {t}", f"{ref} ** 1", f"{ref}; {b}", ref.replace(" ", "\u2014", 1) + " - 0"]
        return wrap(rng, rng.choice(forms)), False
    a = ref
    forms = [f"{a} or {b}", f"{b} or {a}", f"{b}, {a}", f"{b}; {a}", f"{b} and {a}", f"not {a}", f"no {a}",
             f"1,2,3,...,{a}", f"{b} \\lor {a}", f"{b} \\vee {a}", f"{b} \\to {a}", f"{b} \\quad {a}", f"\\neq {a}",
             f"\\neg {a}", f"\\not {a}", f"{b} \\cup {a}", f"{b} | {a}", f"{b} & {a}", f"{b}\\\\{a}", f"{b} = {a}",
             f"\\boxed{{{b}}} \\boxed{{{a}}}", f"\\write{a}{{x}}", f"{b}\\approx {a}", f"{a} is wrong",
             f"about {a}", f"{a} or more", f"{b} {a}", f"{b}\\;{a}", f"{b}_{a}", f"{b}{{{a}}}",
             f"{a} \\text{{ or more}}", f"{a} \\text{{(approx)}}", f"\\text{{not }} {a}", f"{a}?", f"{a}...",
             f"{a} \\ldots", f"...{a}", f"{a}+", f"{b}, \\ldots, {a}"]
    value = parse_number(a)
    if numeric(name, a):
        forms += [_lookalike(rng, a), _lookalike(rng, a)]
        if value is not None and value > 0:
            forms += [rng.choice(MINUS_LOOKALIKES) + a, "-" + a]
        if value is not None:
            forms.append(rng.choice(DASHES) + a.lstrip("-"))
    form = rng.choice(forms)
    if name in ("gsm8k", "math") and rng.random() < 0.3:  # the same hedge outside the answer tags
        # subtle: two boxes in free text are not one hedged answer: the last box is the answer, as the last number is
        free = [f"{THINK}\\boxed{{{form}}}"] + ([] if "boxed" in form else [f"{THINK}the answer is {form}.",
                                                                            f"{THINK}\n#### {form}"])
        return rng.choice(free), False
    return wrap(rng, form), False


def gen_legit(rng, name, ex, ref):
    if name == "logic":
        lines = [line.split(") ", 1)[-1] for line in ref.splitlines()]
        rng.shuffle(lines)
        join = rng.choice(["\n", ", ", " and ", "; ", "\n\n"])
        text = join.join(f"{i}. {line}" if rng.random() < 0.3 else line for i, line in enumerate(lines, 1))
        return wrap(rng, text.lower() if rng.random() < 0.2 else text + rng.choice(["", "."])), True
    if name == "countdown":
        forms = [ref, f"{ref} = {ex['target']}", ref.replace(" ", ""), ref.replace("-", "\u2212"),
                 ref.replace("*", "\u00d7").replace("/", "\u00f7"), f"  {ref}  "]
        return wrap(rng, rng.choice(forms)), True
    value = parse_number(ref)
    if name == "math":
        forms = [ref, f"\\boxed{{{ref}}}", f"${ref}$", f"\\({ref}\\)"] + MATH_GOLDS[ref]
        return wrap(rng, rng.choice(forms)), True
    a = ref.replace("-", "\u2212") if rng.random() < 0.3 else ref
    forms = [a, f" {a} "]
    if abs(value) >= 1000 and value.denominator == 1:
        forms.append(f"{int(value):,}")
    if name == "gsm8k":
        dollars = f"-${ref[1:]}" if ref.startswith("-") else f"${ref}"
        forms += [dollars, f"{a}.", f"{a} dollars", f"\\boxed{{{a}}}", f"$\\boxed{{{a}}}$", f"x = {a}", f"{a}%",
                  f"The answer is {a}", f"{a} \\text{{ eggs}}", f"{float(value):.2f}", f"{a} eggs per day"]
        if rng.random() < 0.3:
            return rng.choice([f"{THINK}\n#### {a}", f"{THINK}The answer is {a}.", f"{THINK}\\boxed{{{a}}}"]), True
    return wrap(rng, rng.choice(forms)), True


def known(name: str, ex: dict, ref: str) -> list[tuple[object, bool | None]]:
    """The issue's cases (for the numeric tasks, against an answer of 18) and the tests' adversarial lists."""
    cases = [(None, False), (b"</think> <answer>" + ref.encode() + b"</answer>", False), (18, False), ([ref], False),
             ("9" * 1_000_000, False), ("x" * 1_000_000 + wrap(random.Random(0), ref), False),
             ("<answer>" * 5000, False), ("</think> <answer>" * 4000, False), (wrap(random.Random(0), ""), False),
             (wrap(random.Random(0), "(" * 10_000 + ref + ")" * 10_000), None),
             (wrap(random.Random(0), "__import__('os').system('echo pwned')"), False),
             (" " * 19_000 + wrap(random.Random(0), ref), None), (wrap(random.Random(0), ref) * 300, None)]
    if name in ("gsm8k", "arithmetic", "math") and parse_number(ref) == 18:
        cases += [(wrap(random.Random(0), a), False)
                  for a in ["17 or 18", "not 18", "1,2,3,...,18", "\u221218", "\\write18{rm -rf /}"]]
    if name == "math":
        cases += [(wrap(random.Random(0), a), False) for a in
                  ["(10^{10^{10}})!", "10^{10^{10}}!", "9^{9^{9^{9}}}", "(10^{100})!", "10^{-10^{10}}",
                   "\\binom{10^{10}}{5^{10}}", "\\sum_{k=1}^{10^{10}} k^{k}", "(x+y+z)^{1000}",
                   "{" * 20 + "1" + "}" * 20, "99999999^{99999999}", "\\sqrt{2}^{10^{10}}"]]
    return cases


GENERATORS = {"unicode": gen_unicode, "tags": gen_tags, "nesting": gen_nesting, "huge": gen_huge,
              "near": gen_near, "mutate": gen_mutate, "hedge": gen_hedge, "legit": gen_legit}


def cases(name: str, task, n: int, seed: int):
    """n (generator, completion, example, expected) cases for one task, reproducible from `seed`."""
    pairs = examples(name, task)
    per = n // (len(GENERATORS) + 1)
    for gen_name, gen in GENERATORS.items():
        rng = random.Random(f"{seed}/{name}/{gen_name}")
        for _ in range(per):
            ex, ref = rng.choice(pairs)
            completion, expected = gen(rng, name, ex, ref)
            yield gen_name, completion, ex, expected
    fixed = [(c, e, ex) for ex, ref in pairs for c, e in known(name, ex, ref)]
    for i in range(n - per * len(GENERATORS)):
        completion, expected, ex = fixed[i % len(fixed)]
        yield "known", completion, ex, expected


# --- the campaign ------------------------------------------------------------------------------------------------

def run(tasks: list[str], n: int, seed: int = 0, bound_s: float = 2.0) -> dict:
    """Score every case; per-task figures, peak memory and wall time (see the module docstring)."""
    start, rows = time.perf_counter(), []
    for name in tasks:
        task = get_task(name)
        task.score("</think> <answer>0.5</answer>", examples(name, task)[0][0])  # untimed: math's one-time start
        times, errors, over, false_pos, false_neg = [], [], 0, [], []
        for gen_name, completion, ex, expected in cases(name, task, n // len(tasks), seed):
            t = time.perf_counter()
            try:
                correct = task.score(completion, ex).correct
            except Exception as e:  # the finding we are looking for: a verifier must never raise
                errors.append(f"{gen_name}: {type(e).__name__}: {e}"[:200])
                continue
            dt = time.perf_counter() - t
            times.append((dt, gen_name, repr(completion)[:80]))
            over += dt > bound_s
            if expected is False and correct:
                false_pos.append(f"{gen_name}: {completion!r}"[:200])
            if expected is True and not correct:
                false_neg.append(f"{gen_name}: {completion!r}"[:200])
        times.sort()
        ms = [1e3 * t for t, _, _ in times]
        rows.append({"task": name, "calls": len(times) + len(errors), "exceptions": errors, "over_bound": over,
                     "false_pos": false_pos, "false_neg": false_neg, "p50_ms": ms[len(ms) // 2],
                     "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "max_ms": ms[-1],
                     "slowest": f"{times[-1][1]}: {times[-1][2]}"})
    workers = verify_timeout.stats()
    return {"rows": rows, "wall_s": time.perf_counter() - start, "workers": workers,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rss_mb": max(workers["peak_worker_rss_kb"], workers["template_rss_kb"]) / 1024}


def report(result: dict, bound_s: float) -> bool:
    """Print the table; whether every target was met."""
    print(f"{'task':<11} {'calls':>7} {'exc':>4} {'>bound':>6} {'false+':>6} {'false-':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>8}  slowest case")
    ok = True
    for r in result["rows"]:
        print(f"{r['task']:<11} {r['calls']:>7} {len(r['exceptions']):>4} {r['over_bound']:>6} "
              f"{len(r['false_pos']):>6} {len(r['false_neg']):>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{r['max_ms']:>8.1f}  {r['slowest']}")
        for what in ("exceptions", "false_pos", "false_neg"):
            for line in r[what][:5]:
                print(f"    {what}: {line}")
        ok &= not (r["exceptions"] or r["over_bound"] or r["false_pos"] or r["false_neg"])
        ok &= r["p99_ms"] <= P99_TARGET_MS
    w = result["workers"]
    print(f"peak RSS: this process {result['rss_mb']:.0f} MB, verifier workers/template "
          f"{result['worker_rss_mb']:.0f} MB (workers forked {w['forked']}, killed on timeout {w['killed']}, "
          f"retired {w['retired']}); bound {bound_s} s; wall {result['wall_s']:.0f} s")
    return ok and max(result["rss_mb"], result["worker_rss_mb"]) <= RSS_TARGET_MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="completions in all, split evenly over the tasks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", default=",".join(task_names()), help="comma-separated registry names")
    parser.add_argument("--bound-s", type=float, default=2.0, help="a call slower than this is over the bound")
    args = parser.parse_args(argv)
    result = run(args.tasks.split(","), args.n, args.seed, args.bound_s)
    return 0 if report(result, args.bound_s) else 1


if __name__ == "__main__":
    raise SystemExit(main())
