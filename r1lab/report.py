"""Run reports: PNG plots of one or more runs' metrics and one self-contained report.html.

    paths = write_report(["runs/pretrain", "runs/rl"], "reports/today")   # reports/today/report.html + *.png
    write_report(["runs/demo/rl"], "runs/demo/report",
                 evaluations=[("base", read_evaluation("runs/demo/eval_base.json")),
                              ("after RL", read_evaluation("runs/demo/eval_rl.json"))])

What a run directory may hold (each part is optional; what is missing is left out of the report):
    metrics.jsonl        one row per logged step: "step", "stage" and metrics (eval rows prefix theirs "eval/")
    checkpoints/latest   names the newest checkpoint, whose r1lab_config.json is the run's resolved config
    samples.jsonl        decoded rollouts: step, prompt, completion, reward, correct
    account.json         the cost account (RunAccount.summary)
Evaluations (`r1lab eval --out` JSON files) come first in the page, side by side: the result before the curves.
Per-step curves are smoothed (a centred rolling mean, see smooth()) over their raw points drawn faint; the last
value of every metric is listed in groups (outcome, length and behaviour, optimisation, throughput and cost).
Several runs overlay on the same axes, one colour per run. report.html embeds its images as base64 data URIs and
loads nothing else; its Content-Security-Policy forbids scripts and outside resources. Everything read from a run
(prompts, completions, config values, names) is HTML-escaped: completions are untrusted model output.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from r1lab.evaluation.table import html_table, number, render_evaluations
from r1lab.jsonl import read_jsonl

# (file stem, title, panels); each panel is the metrics that share one y axis. Metrics no run has are skipped, and
# every other numeric metric lands in the "other" figure.
PLOTS = [
    ("reward", "Reward and accuracy",
     [("reward", "acc", "eval/pass1", "eval/cons_at_k", "eval/greedy_acc", "pass1")]),  # pass1: pretrain's eval
    ("format", "Format, truncation and thinking-budget rates",
     [("format_rate", "eval/format_rate", "truncated_rate", "eval/truncated_rate", "thinking_cut_rate",
       "eval/thinking_cut_rate")]),
    ("length", "Response length (tokens), right vs wrong",
     [("response_len", "response_len_correct", "response_len_wrong", "eval/response_len",
       "eval/response_len_correct", "eval/response_len_wrong")]),
    ("kl_entropy", "KL to the reference and policy entropy", [("kl",), ("entropy",)]),
    ("clip", "Clipped token fractions", [("clip_frac_low", "clip_frac_high")]),
    ("throughput", "Throughput and step time",
     [("gen_tokens_per_s", "tokens_per_s"), ("step_time_s", "gen_time_s", "train_time_s")]),
    ("behaviour", "Reasoning behaviour",
     [("step_acc", "eval/step_acc"), ("marker_rate", "marker_rate_correct", "marker_rate_wrong", "eval/marker_rate"),
      ("attempts", "attempts_correct", "attempts_wrong", "eval/attempts")]),
    ("loss", "Loss and learning rate", [("loss",), ("lr",)]),
    ("optim", "Gradient norm", [("grad_norm",)]),
    ("compute", "Compute", [("flops",), ("mfu",)]),
]
NOT_METRICS = {"step", "stage", "time"}
MAX_OTHER = 16  # panels in the "other" figure
HEADLINE = ["reward", "acc", "eval/pass1", "pass1", "eval/cons_at_k", "eval/greedy_acc", "format_rate",
            "eval/format_rate", "response_len", "eval/response_len", "loss", "kl", "entropy", "step_acc", "attempts",
            "flops", "mfu"]
# (group, words): a metric (its "eval/" prefix dropped) goes to the first group one of whose words it contains, else
# to "Other"; the order matters ("step_acc" is behaviour before "acc" is outcome, "gen_tokens_per_s" throughput).
GROUPS = [
    ("Throughput and cost", ("time", "per_s", "flops", "mfu", "tokens")),
    ("Optimisation", ("loss", "kl", "entropy", "grad", "clip", "ratio", "lr")),
    ("Length and behaviour", ("len", "format", "trunc", "cut", "attempt", "step_acc", "marker", "steps_per")),
    ("Outcome", ("reward", "acc", "pass", "cons", "greedy", "std", "groups")),
]
GROUP_ORDER = ["Outcome", "Length and behaviour", "Optimisation", "Throughput and cost", "Other"]
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Run:
    name: str
    path: Path
    metrics: list[dict] = field(default_factory=list)
    config: dict | None = None
    config_source: str | None = None
    samples: list[dict] = field(default_factory=list)
    account: dict | None = None


# --- reading runs -------------------------------------------------------------------------------------------------

def _jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file ([] without one); a bad line (a run killed mid-write) is skipped with a
    warning."""
    return read_jsonl(path, bad="skip") if path.is_file() else []


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):  # a missing, torn or foreign file: not shown
        return None
    return value if isinstance(value, dict) else None


def _config(run_dir: Path) -> tuple[dict | None, str | None]:
    """The newest checkpoint's r1lab_config.json, else an older checkpoint's, else one at the top of the run."""
    from r1lab.checkpoint import latest_checkpoint, list_checkpoints

    latest = latest_checkpoint(run_dir)
    candidates = [latest / "r1lab_config.json"] if latest is not None else []
    candidates += [p / "r1lab_config.json" for p in reversed(list_checkpoints(run_dir))]
    candidates += [run_dir / "r1lab_config.json", run_dir / "config.json"]
    for path in candidates:
        if path.is_file() and (config := _json(path)) is not None:
            return config, str(path)
    return None, None


def load_run(run_dir, name: str | None = None) -> Run:
    path = Path(run_dir)
    config, source = _config(path)
    return Run(name or path.name or str(path), path, _jsonl(path / "metrics.jsonl"), config, source,
               _jsonl(path / "samples.jsonl"), _json(path / "account.json"))


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric; rows without it, or with a non-finite value, are skipped."""
    points = [(r.get("step", i), number(r.get(key))) for i, r in enumerate(run.metrics)]
    points = [(s, v) for s, v in points if v is not None and number(s) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def nonfinite_steps(run: Run, key: str) -> list[float]:
    """The steps at which a metric was logged as NaN or an infinity (series() leaves them out)."""
    return [r.get("step", i) for i, r in enumerate(run.metrics)
            if isinstance(r.get(key), float) and not math.isfinite(r[key]) and number(r.get("step", i)) is not None]


def metric_names(runs: list[Run]) -> list[str]:
    """Every numeric metric of any run, in first-seen order."""
    seen = {}
    for run in runs:
        for row in run.metrics:
            for k, v in row.items():
                if k not in NOT_METRICS and number(v) is not None:
                    seen.setdefault(k, None)
    return list(seen)


# --- plots --------------------------------------------------------------------------------------------------------

def plot_runs(runs: list[Run], out_dir) -> list[tuple[str, Path]]:
    """One PNG per PLOTS entry that has data, plus "other" for the remaining metrics; returns (title, path)."""
    present = metric_names(runs)
    used = {m for _, _, panels in PLOTS for panel in panels for m in panel}
    specs = [(stem, title, [tuple(m for m in panel if m in present) for panel in panels]) for stem, title, panels
             in PLOTS]
    rest = [m for m in present if m not in used]
    if rest:
        specs.append(("other", "Other metrics", [(m,) for m in rest[:MAX_OTHER]]))
    out = []
    for stem, title, panels in specs:
        panels = [p for p in panels if p]
        if panels:
            path = Path(out_dir) / f"{stem}.png"
            _figure(runs, title, panels, path)
            out.append((title, path))
    return out


def smooth_window(n: int) -> int:
    """The centred window for n points: odd, growing with n, 1 (no smoothing) under 20 points.
    smooth_window(10) == 1, smooth_window(20) == 3, smooth_window(100) == 11"""
    return 2 * (n // 20) + 1


def smooth(values: list[float], window: int | None = None) -> list[float]:
    """Centred rolling mean; near the ends the window narrows on both sides alike (a one-sided window would lag a
    trend: a collapse in the last steps drew its line ends six times too high), so the end points are their own.
    smooth([1, 2, 6, 3], window=3) == [1.0, 3.0, 11 / 3, 3.0]"""
    w = smooth_window(len(values)) if window is None else window
    n, h = len(values), w // 2
    out = []
    for i in range(n):
        k = min(h, i, n - 1 - i)
        out.append(sum(values[i - k:i + k + 1]) / (2 * k + 1))
    return out


def _plot_text(text: str) -> str:
    """A name as matplotlib shows it literally: "$" is not mathtext, and a leading "_" does not hide a legend entry."""
    text = text.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


RAW_ALPHA = 0.25  # the raw per-step points, faint behind the smoothed line
UNSMOOTHED = {"lr", "flops"}  # a schedule and a running total: every point is exact, a mean would bend them


def _figure(runs: list[Run], title: str, panels: list[tuple[str, ...]], path: Path):
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(max(len(runs), max(len(p) for p in panels)))]
    # several runs: a colour per run, and per metric a line style and a marker, 16 before any pair repeats
    styles = [(line, mark) for mark in (None, "s", "^", "x") for line in ("-", "--", ":", "-.")]
    for ax, panel in zip(axes, panels):
        all_steps = set()
        for r, run in enumerate(runs):
            for m, metric in enumerate(panel):
                steps, values = series(run, metric)
                label = _plot_text(metric if len(runs) == 1 else f"{run.name}: {metric}")
                color, (style, mark) = (colors[m], ("-", None)) if len(runs) == 1 else (colors[r], styles[m % 16])
                broken = nonfinite_steps(run, metric)
                if broken:  # NaN / inf: marked along the top, where no value can be drawn
                    ax.plot(broken, [0.97] * len(broken), "v", color=color, transform=ax.get_xaxis_transform(),
                            label=f"{label}: NaN/inf at {len(broken)} steps", markersize=6, clip_on=False)
                if not steps:
                    continue
                all_steps.update(steps)
                marker = "os^xDv<>"[m % 8] if len(steps) <= 30 else mark  # few points: each metric its own
                smoothed = values if metric in UNSMOOTHED else smooth(values)
                if smoothed == values:  # too few points to smooth, or exact ones: the raw line is the curve
                    ax.plot(steps, values, style, color=color, label=label, marker=marker, markersize=3,
                            markevery=max(1, len(steps) // 12))
                    continue
                ax.plot(steps, values, "-", color=color, alpha=RAW_ALPHA, linewidth=0.8)
                ax.plot(steps, smoothed, style, color=color, label=f"{label} (smoothed)", linewidth=1.8,
                        marker=mark, markersize=4, markevery=max(1, len(steps) // 12))
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(all_steps) == 1:  # one step: integer ticks need a range of more than one
            ax.set_xlim(min(all_steps) - 1, min(all_steps) + 1)
        ax.ticklabel_format(axis="y", useOffset=False)  # lr 1e-4 read "1e-16+1e-4" with an offset
        if len(panels) > 1:
            ax.set_title(_plot_text(", ".join(panel)), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.has_data():  # below the axes: inside, 8-12 entries hid the curves
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(_plot_text(title))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return fig


# --- HTML ---------------------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v)) if v is not None else "&ndash;"
    if isinstance(v, float) and not math.isfinite(v):
        return "&ndash;"
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def last_value(run: Run, key: str):
    """The value the run logged last for `key`, None if never. When that is a NaN or an infinity, a note of it and
    of the last finite value ("NaN at step 12; 0.5 at step 9"): a run that ended broken must not look healthy, and a
    metric with nothing to average at the end (no right answers: response_len_correct) keeps its last figure."""
    rows = [(r.get("step", i), r.get(key)) for i, r in enumerate(run.metrics)]
    rows = [(step, v) for step, v in rows if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not rows:
        return None
    step, v = rows[-1]
    if math.isfinite(v):
        return v
    finite = [(s, x) for s, x in rows if math.isfinite(x)]
    note = f"{'NaN' if math.isnan(v) else v} at step {step}"
    return note + (f"; {_fmt(finite[-1][1])} at step {finite[-1][0]}" if finite else "")


def final_figures(runs: list[Run]) -> list[tuple[str, list]]:
    """(metric, [last value in each run or None]), headline metrics first."""
    names = metric_names(runs)
    names = [m for m in HEADLINE if m in names] + [m for m in names if m not in HEADLINE]
    return [(m, [last_value(run, m) for run in runs]) for m in names]


def metric_group(metric: str) -> str:
    """metric_group("eval/pass1") == "Outcome", metric_group("step_acc") == "Length and behaviour" """
    base = metric.removeprefix("eval/")
    return next((group for group, words in GROUPS if any(w in base for w in words)), "Other")


def grouped_figures(runs: list[Run]) -> list[tuple[str, list[tuple[str, list]]]]:
    """final_figures() split by metric_group(), in GROUP_ORDER; every metric lands in exactly one group."""
    groups: dict[str, list] = {g: [] for g in GROUP_ORDER}
    for metric, values in sorted(final_figures(runs), key=lambda f: f[0].startswith("eval/")):  # training first
        groups[metric_group(metric)].append((metric, values))
    return [(g, rows) for g, rows in groups.items() if rows]


def _account(account: dict) -> str:
    from r1lab.cost.account import format_account

    try:
        line = f"<p><code>{html.escape(format_account(account))}</code></p>"
    except (KeyError, TypeError, ValueError):  # a partial or older account file: show what it holds
        line = ""
    flat = {k: v for k, v in account.items() if not isinstance(v, dict)}
    for k, v in account.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{sub}": x for sub, x in v.items()})
    return line + html_table(["", "value"], [[html.escape(k), _fmt(v)] for k, v in flat.items()])


# Unicode's direction overrides and isolates: in model output they would reorder the text a reader sees
_BIDI = {c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}


def _sample(row: dict) -> str:
    head = ", ".join(f"{k} {_fmt(row[k])}" for k in ("step", "reward", "correct") if k in row)
    text = f"{row.get('prompt', '')}{row.get('completion', '')}".translate(_BIDI)
    return f"<div class='sample'><div class='meta'>{head}</div><pre>{html.escape(text)}</pre></div>"


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1.5em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:0.6em;white-space:pre-wrap;word-break:break-all;max-height:24em;overflow:auto}
.meta{color:#666;font-size:0.9em}figure{margin:0}.row{display:flex;flex-wrap:wrap;gap:0.5em 2em;align-items:flex-start}
.row h3{margin:0.3em 0 0}.result td,.result th{padding:4px 12px}.result{font-size:1.1em}.warn{color:#a30}"""


def embedded_figure(caption: str, path) -> str:
    """A PNG file as a <figure> with its bytes inline (a data URI: the page stays one self-contained file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'></figure>"


def html_page(title: str, parts: list[str]) -> str:
    """A self-contained page: the report's style, and a Content-Security-Policy that allows inline images only."""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def render_html(runs: list[Run], plots: list[tuple[str, Path]], samples_per_run: int = 6,
                title: str = "r1lab report", evaluations: list[tuple[str, dict]] = ()) -> str:
    """The page, result first: evaluations, the runs, plots, the last value of every metric by group, then each run's
    config, cost account and samples."""
    names = [html.escape(r.name) for r in runs]
    overview = [[n, html.escape(str(r.path)), html.escape(", ".join(sorted({str(m.get("stage", "?"))
                                                                           for m in r.metrics}))),
                 str(len(r.metrics)), _fmt(max(series(r, "step")[1], default=None))] for n, r in zip(names, runs)]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if evaluations:
        parts.append(render_evaluations(list(evaluations)))
    parts += ["<h2>Runs</h2>", html_table(["run", "directory", "stage", "rows", "last step"], overview)]
    if plots:
        parts.append("<h2>Plots</h2><p class='meta'>Lines from 20 logged points on: centred rolling means over the "
                     "faint per-step values.</p><div class='row'>")
        for caption, path in plots:
            parts.append(embedded_figure(caption, path))
        parts.append("</div>")
    groups = grouped_figures(runs)
    if groups:
        parts.append("<h2>Last value of every metric</h2><div class='row'>")
        for group, figures in groups:
            rows = [[html.escape(m)] + [_fmt(v) for v in vs] for m, vs in figures]
            parts.append(f"<div><h3>{html.escape(group)}</h3>{html_table(['metric'] + names, rows)}</div>")
        parts.append("</div>")
    for name, run in zip(names, runs):
        parts.append(f"<h2>Run {name}</h2>")
        if run.config is not None:
            parts.append(f"<h3>Config</h3><p class='meta'>{html.escape(run.config_source or '')}</p>"
                         f"<pre>{html.escape(json.dumps(run.config, indent=2, default=str))}</pre>")
        if run.account is not None:
            parts += ["<h3>Cost account</h3>", _account(run.account)]
        if run.samples and samples_per_run:
            parts.append(f"<h3>Sample completions (last {min(samples_per_run, len(run.samples))} of "
                         f"{len(run.samples)})</h3>")
            parts += [_sample(row) for row in run.samples[-samples_per_run:]]
        if not (run.metrics or run.config or run.account or run.samples):
            parts.append(f"<p>Nothing to report: {html.escape(_nothing(run.path))}</p>")
    return html_page(title, parts)


def _nothing(path: Path) -> str:
    """Why a folder gave nothing, and where its runs are when it holds some (a demo's or a pipeline's folder)."""
    empty = (path / "metrics.jsonl").is_file()
    what = ("metrics.jsonl is empty, and there is no config, account.json or samples.jsonl" if empty else
            "no metrics.jsonl, config, account.json or samples.jsonl")
    runs = sorted(str(p.parent) for p in path.glob("*/metrics.jsonl"))
    evals = sorted(str(p) for p in path.glob("eval*.json")) + sorted(str(p) for p in path.glob("eval/*.json"))
    if not runs:
        return what + "."
    return (f"{what}. It holds the runs {', '.join(runs)}" + (f" and the evaluations {', '.join(evals)}" if evals
            else "") + f": r1lab report {' '.join(runs)}" + "".join(f" --eval {e}" for e in evals))


def write_report(run_dirs, out_dir, samples_per_run: int = 6, title: str = "r1lab report",
                 evaluations: list[tuple[str, dict]] = ()) -> Path:
    """Plots and report.html for the runs in `run_dirs`, written to out_dir; returns report.html's path.
    `evaluations`: (label, read_evaluation(file)) pairs, shown side by side at the top in this order."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for r in runs:  # two runs named alike (a/rl, b/rl) go by their paths
        if names.count(r.name) > 1:
            r.name = str(r.path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_runs(runs, out)
    path = out / "report.html"
    path.write_text(render_html(runs, plots, samples_per_run, title, evaluations), encoding="utf-8")
    return path
