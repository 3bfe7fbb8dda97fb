"""The before/after table of `r1lab eval --out` files, as the report shows it first.

    evaluations = [("base", read_evaluation("runs/demo/eval_base.json")), ("after RL", read_evaluation(...))]
    html = render_evaluations(evaluations)   # the table, a change column for two, one settings line each

Two evaluations compare only when they ran on the same problems, sampled the same way (COMPARED): otherwise the
table says which settings differ and shows no change column, since a "change" between a 3-number and a 4-number
evaluation is no result of training.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

# settings that make two evaluations one comparison: the same problems (task, data, split, n, seed, knobs), sampled
# the same way
COMPARED = ("task", "data", "split", "n", "seed", "knobs", "template", "samples", "temperature", "top_p", "top_k",
            "max_new_tokens", "max_thinking_tokens", "thinking_end")
SHOWN = ("task", "samples", "n", "temperature", "max_new_tokens", "seed", "max_thinking_tokens", "thinking_end")  # always


def number(v) -> float | None:
    """v as a float when it is a finite int or float (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def parse_eval_spec(spec: str) -> tuple[str, Path]:
    """"LABEL=FILE" or a bare FILE, labelled by its name without an "eval_" prefix.
    parse_eval_spec("after RL=out/eval_rl.json") == ("after RL", Path("out/eval_rl.json"));
    parse_eval_spec("out/eval_base.json") == ("base", Path("out/eval_base.json"))"""
    label, sep, file = spec.partition("=")
    if sep and label and "/" not in label:
        return label, Path(file)
    path = Path(spec)
    return path.stem.removeprefix("eval_") or path.stem, path


def read_evaluation(path) -> dict:
    """An `r1lab eval --out` file; ValueError (one line, naming the file) when it is not one."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict) or number(value.get("pass1")) is None:
        raise ValueError(f"{path}: not an r1lab eval file (no numeric pass1)")
    return value


def _get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return number(d)


def eval_rows(evals: list[dict]) -> list[tuple[str, list[float | None], str]]:
    """(row label, [value per evaluation], format) of the before/after table; "" as the format marks a section row.
    The length row's values are the means; its cells add (right / wrong) in render."""
    ks = sorted({e.get("samples") for e in evals if isinstance(e.get("samples"), int)})
    k = str(ks[0]) if len(ks) == 1 else "k"
    pass_ks = sorted({int(x) for e in evals for x in (e.get("pass_at_k") or {}) if str(x).isdigit()} - {1})
    rows = [(f"pass@1 (mean of {k} samples)", [_get(e, "pass1") for e in evals], "{:.3f}"),
            (f"cons@{k} (majority vote)", [_get(e, "cons_at_k") for e in evals], "{:.3f}")]
    rows += [(f"pass@{n}", [_get(e, "pass_at_k", str(n)) for e in evals], "{:.3f}") for n in pass_ks]
    if any(_get(e, "greedy_acc") is not None for e in evals):
        rows.append(("greedy accuracy", [_get(e, "greedy_acc") for e in evals], "{:.3f}"))
    rows += [("format rate", [_get(e, "format_rate") for e in evals], "{:.3f}"),
             ("truncation rate", [_get(e, "truncated_rate") for e in evals], "{:.3f}"),
             *([("thinking cut at budget", [_get(e, "thinking_cut_rate") for e in evals], "{:.3f}")]
               if any(_get(e, "settings", "max_thinking_tokens") is not None for e in evals) else []),
             ("response length, mean (right / wrong)", [_get(e, "response_len", "mean") for e in evals], "len"),
             ("attempts per response", [_get(e, "behaviour", "attempts") for e in evals], "{:.2f}"),
             ("arithmetic steps correct", [_get(e, "behaviour", "step_acc") for e in evals], "{:.3f}")]
    buckets = list(dict.fromkeys(b for e in evals for b in (e.get("by_difficulty") or {})))
    if buckets:
        rows.append(("pass@1 by difficulty", [None] * len(evals), ""))
        for b in buckets:
            n = {_get(e, "by_difficulty", b, "problems") for e in evals} - {None}
            label = f"{b} ({int(n.pop())} problems)" if len(n) == 1 else str(b)
            rows.append((label, [_get(e, "by_difficulty", b, "pass1") for e in evals], "{:.3f}"))
    return rows


def _eval_cell(e: dict, value, fmt: str) -> str:
    if value is None:
        return "&ndash;"
    if fmt != "len":
        return fmt.format(value)
    right, wrong = (_get(e, "response_len", k) for k in ("mean_correct", "mean_wrong"))
    parts = ["&ndash;" if x is None else f"{x:.1f}" for x in (right, wrong)]
    return f"{value:.1f} ({parts[0]} / {parts[1]})"


def render_evaluations(evaluations: list[tuple[str, dict]]) -> str:
    """The before/after table (with a change column for two evaluations of the same problems, sampled the same way)
    and one settings line per evaluation; evaluations that differ in a COMPARED setting say so, and which."""
    labels, evals = [lbl for lbl, _ in evaluations], [e for _, e in evaluations]
    differ = differing(evals)
    delta = len(evals) == 2 and not differ
    header = [""] + [html.escape(lbl) for lbl in labels] + (["change"] if delta else [])
    rows = []
    for name, values, fmt in eval_rows(evals):
        if not fmt:
            rows.append([f"<b>{html.escape(name)}</b>"] + [""] * (len(header) - 1))
            continue
        row = [html.escape(name)] + [_eval_cell(e, v, fmt) for e, v in zip(evals, values)]
        if delta:
            a, b = values
            row.append("&ndash;" if a is None or b is None else
                       (f"{b - a:+.1f}" if fmt == "len" else fmt.replace("{:", "{:+").format(b - a)))
        rows.append(row)
    notes = []
    for label, e in evaluations:
        st = e.get("settings") if isinstance(e.get("settings"), dict) else {}
        what = [f"{st.get('model', '?')} on {e.get('problems', '?')} {st.get('task', '?')} problems x "
                f"{e.get('samples', '?')} samples"]
        what += [f"{k} {st[k]}" for k in ("temperature", "max_new_tokens", "seed") if k in st]
        if st.get("max_thinking_tokens") is not None:
            what.append(f"thinking budget {st['max_thinking_tokens']} (forced {st.get('thinking_end', '?')!r})")
        what += [f"{k} {json.dumps(st[k], sort_keys=True)}" for k in differ if k not in SHOWN]
        notes.append(f"<li><b>{html.escape(label)}</b>: {html.escape(', '.join(what))}</li>")
    warning = (f"<p class='warn'>These evaluations differ in {html.escape(', '.join(differ))}: they are not one "
               f"comparison, so no change is shown (evaluate every model with the same settings).</p>"
               if differ else "")
    return ("<h2>Result: evaluations before and after</h2>" + warning + "<div class='result'>"
            + html_table(header, rows) + "</div>" + f"<ul class='meta'>{''.join(notes)}</ul>")


def differing(evals: list[dict]) -> list[str]:
    """The COMPARED settings whose values differ between the evaluations (a setting an older file lacks is not
    compared). differing([{"settings": {"n": 5}}, {"settings": {"n": 6}}]) == ["n"]"""
    settings = [e.get("settings") if isinstance(e.get("settings"), dict) else {} for e in evals]
    out = []
    for key in COMPARED:
        values = [json.dumps(s[key], sort_keys=True) for s in settings if key in s]
        if len(values) == len(settings) and len(set(values)) > 1:
            out.append(key)
    return out


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


