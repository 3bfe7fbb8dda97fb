"""Run reports: PNG plots of one or more runs' metrics and one self-contained report.html.

    paths = write_report(["runs/pretrain", "runs/rl"], "reports/today")   # reports/today/report.html + *.png

What a run directory may hold (each part is optional; what is missing is left out of the report):
    metrics.jsonl        one row per logged step: "step", "stage" and metrics (eval rows prefix theirs "eval/")
    checkpoints/latest   names the newest checkpoint, whose r1lab_config.json is the run's resolved config
    samples.jsonl        decoded rollouts: step, prompt, completion, reward, correct
    account.json         the cost account (RunAccount.summary)
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

from r1lab.jsonl import read_jsonl

# (file stem, title, panels); each panel is the metrics that share one y axis. Metrics no run has are skipped, and
# every other numeric metric lands in the "other" figure.
PLOTS = [
    ("reward", "Reward and accuracy",
     [("reward", "acc", "eval/pass1", "eval/cons_at_k", "eval/greedy_acc", "pass1")]),  # pass1: pretrain's eval
    ("format", "Format and truncation rates",
     [("format_rate", "eval/format_rate", "truncated_rate", "eval/truncated_rate")]),
    ("length", "Response length (tokens), right vs wrong",
     [("response_len", "response_len_correct", "response_len_wrong", "eval/response_len",
       "eval/response_len_correct", "eval/response_len_wrong")]),
    ("kl_entropy", "KL to the reference and policy entropy", [("kl",), ("entropy",)]),
    ("clip", "Clipped token fractions", [("clip_frac_low", "clip_frac_high")]),
    ("throughput", "Throughput and step time",
     [("gen_tokens_per_s", "tokens_per_s"), ("step_time_s", "gen_time_s", "train_time_s")]),
    ("behaviour", "Reasoning behaviour",
     [("step_acc", "eval/step_acc", "marker_rate", "eval/marker_rate"), ("attempts", "eval/attempts")]),
    ("loss", "Pretraining loss and learning rate", [("loss",), ("lr",)]),
    ("optim", "Gradient norm", [("grad_norm",)]),
    ("compute", "Compute", [("flops",), ("mfu",)]),
]
NOT_METRICS = {"step", "stage", "time"}
MAX_OTHER = 16  # panels in the "other" figure
HEADLINE = ["reward", "acc", "eval/pass1", "pass1", "eval/cons_at_k", "eval/greedy_acc", "format_rate",
            "eval/format_rate", "response_len", "eval/response_len", "loss", "kl", "entropy", "step_acc", "attempts",
            "flops", "mfu"]
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
    except (OSError, json.JSONDecodeError):
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


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def series(run: Run, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric; rows without it, or with a non-finite value, are skipped."""
    points = [(r.get("step", i), _number(r.get(key))) for i, r in enumerate(run.metrics)]
    points = [(s, v) for s, v in points if v is not None and _number(s) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def metric_names(runs: list[Run]) -> list[str]:
    """Every numeric metric of any run, in first-seen order."""
    seen = {}
    for run in runs:
        for row in run.metrics:
            for k, v in row.items():
                if k not in NOT_METRICS and _number(v) is not None:
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


def _figure(runs: list[Run], title: str, panels: list[tuple[str, ...]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(max(len(runs), max(len(p) for p in panels)))]
    styles = ["-", "--", ":", "-."]
    for ax, panel in zip(axes, panels):
        for r, run in enumerate(runs):
            for m, metric in enumerate(panel):
                steps, values = series(run, metric)
                if not steps:
                    continue
                # one run: a colour per metric; several: a colour per run and a line style per metric
                color, style = (colors[m], "-") if len(runs) == 1 else (colors[r], styles[m % len(styles)])
                label = metric if len(runs) == 1 else f"{run.name}: {metric}"
                ax.plot(steps, values, style, color=color, label=label, marker="o" if len(steps) <= 30 else None,
                        markersize=3)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(panels) > 1:
            ax.set_title(", ".join(panel), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


# --- HTML ---------------------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return html.escape(str(v)) if v is not None else "&ndash;"
    if isinstance(v, float) and not math.isfinite(v):
        return "&ndash;"
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def final_figures(runs: list[Run]) -> list[tuple[str, list]]:
    """(metric, [last value in each run or None]), headline metrics first."""
    names = metric_names(runs)
    names = [m for m in HEADLINE if m in names] + [m for m in names if m not in HEADLINE]
    return [(m, [(series(run, m)[1] or [None])[-1] for run in runs]) for m in names]


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    return line + _table(["", "value"], [[html.escape(k), _fmt(v)] for k, v in flat.items()])


def _sample(row: dict) -> str:
    head = ", ".join(f"{k} {_fmt(row[k])}" for k in ("step", "reward", "correct") if k in row)
    text = f"{row.get('prompt', '')}{row.get('completion', '')}"
    return f"<div class='sample'><div class='meta'>{head}</div><pre>{html.escape(text)}</pre></div>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
pre{background:#f6f6f6;padding:0.6em;white-space:pre-wrap;word-break:break-all;max-height:24em;overflow:auto}
.meta{color:#666;font-size:0.9em}figure{margin:1em 0}"""


def render_html(runs: list[Run], plots: list[tuple[str, Path]], samples_per_run: int = 6,
                title: str = "r1lab report") -> str:
    names = [html.escape(r.name) for r in runs]
    overview = [[n, html.escape(str(r.path)), html.escape(", ".join(sorted({str(m.get("stage", "?"))
                                                                           for m in r.metrics}))),
                 str(len(r.metrics)), _fmt(max(series(r, "step")[1], default=None))] for n, r in zip(names, runs)]
    parts = [f"<h1>{html.escape(title)}</h1>", _table(["run", "directory", "stage", "rows", "last step"], overview)]
    figures = final_figures(runs)
    if figures:
        parts += ["<h2>Final figures</h2>", _table(["metric (last value)"] + names,
                                                   [[html.escape(m)] + [_fmt(v) for v in vs] for m, vs in figures])]
    if plots:
        parts.append("<h2>Plots</h2>")
    for caption, path in plots:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'>"
                     "</figure>")
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
            parts.append("<p>Nothing to report: no metrics.jsonl, config, account.json or samples.jsonl.</p>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


def write_report(run_dirs, out_dir, samples_per_run: int = 6, title: str = "r1lab report") -> Path:
    """Plots and report.html for the runs in `run_dirs`, written to out_dir; returns report.html's path."""
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for r in runs:  # two runs named alike (a/rl, b/rl) go by their paths
        if names.count(r.name) > 1:
            r.name = str(r.path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_runs(runs, out)
    path = out / "report.html"
    path.write_text(render_html(runs, plots, samples_per_run, title), encoding="utf-8")
    return path
