"""`r1lab report` on hand-written run directories: the plots, a self-contained page that escapes model output, and
every image loading in headless Chromium; optional trackers that are not installed never break logging."""
from __future__ import annotations

import json
import re
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

from r1lab.cli import main
from r1lab.evaluation.table import parse_eval_spec
from r1lab.report import (CSP, RAW_ALPHA, GROUP_ORDER, final_figures, grouped_figures, load_run, metric_group,
                          smooth, smooth_window, _figure)

HOSTILE = "<script>document.title='pwned'</script><img src='x' onerror='1'> & </pre>"
RL_KEYS = ["reward", "acc", "format_rate", "response_len", "response_len_correct", "response_len_wrong", "kl",
           "entropy", "clip_frac_low", "clip_frac_high", "grad_norm", "gen_tokens_per_s", "step_time_s", "attempts",
           "step_acc", "flops", "mfu"]


def write_jsonl(path, rows, tail: str = ""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def make_rl_run(root, name, keys, offset=0.0):
    run = root / name
    rows = [{"step": 0, "stage": "rl", "time": 0.0, "eval/pass1": 0.1 + offset, "eval/format_rate": 0.5}]
    for step in range(1, 6):
        rows.append({"step": step, "stage": "rl", "time": float(step),
                     **{k: round(0.1 * step + offset + i * 0.01, 4) for i, k in enumerate(keys)}})
    rows.append({"step": 5, "stage": "rl", "time": 5.5, "eval/pass1": 0.4 + offset, "eval/format_rate": 0.9})
    write_jsonl(run / "metrics.jsonl", rows)
    ckpt = run / "checkpoints" / "step_000005"
    ckpt.mkdir(parents=True)
    (ckpt / "r1lab_config.json").write_text(json.dumps({"task": "countdown", "preset": "grpo", "lr": 5e-5,
                                                        "note": "<b>not bold</b>"}))
    (run / "checkpoints" / "latest").write_text("step_000005")
    write_jsonl(run / "samples.jsonl", [
        {"step": 5, "prompt": "User: 1+2?\nAssistant: <think>", "completion": "3</think> <answer>3</answer>",
         "reward": 1.1, "correct": True},
        {"step": 5, "prompt": "User: 2+2?\nAssistant: <think>", "completion": HOSTILE, "reward": 0.0,
         "correct": False}])
    (run / "account.json").write_text(json.dumps({
        "flops": 1.2e12, "wall_s": 30.0, "flops_per_s": 4e10, "peak_flops_per_s": 5e10, "mfu": 0.8,
        "peak_source": "cpu fp32 measured matmul", "flops_by_kind": {"generate": 8e11, "train": 4e11},
        "rented_cost": {"gpu": "H100", "mfu": 0.4, "price": 2.5, "gpu_hours": 8.4e-07, "dollars": 2.1e-06}}))
    return run


def make_eval(path, pass1, length, hostile_bucket=False):
    """An `r1lab eval --out` file, the shape summarize() + eval.py write, with round numbers."""
    bucket = HOSTILE if hostile_bucket else "4 numbers"
    path.write_text(json.dumps({
        "settings": {"model": "countdown-base", "task": "countdown", "temperature": 0.6, "max_new_tokens": 96},
        "problems": 16, "samples": 4, "completions": 64, "pass1": pass1,
        "pass_at_k": {"1": pass1, "2": pass1 + 0.1, "4": pass1 + 0.2}, "cons_at_k": pass1 + 0.05,
        "greedy_acc": None, "format_rate": 0.25 + pass1, "mean_reward": pass1, "truncated_rate": 0.125,
        "response_len": {"mean": length, "median": length, "mean_correct": length - 10, "mean_wrong": length + 5},
        "behaviour": {"marker_rate": 0.2, "step_acc": 0.75 + pass1 / 10, "attempts": 1.5 + pass1},
        "by_difficulty": {"3 numbers": {"problems": 5, "pass1": pass1 + 0.1},
                          bucket: {"problems": 11, "pass1": pass1 / 2}},
        "wall_s": 3.0, "account": {}}))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    grpo = make_rl_run(root, "grpo", RL_KEYS)
    dapo = make_rl_run(root, "dapo", [k for k in RL_KEYS if k not in ("kl", "clip_frac_low")], offset=0.05)
    pre = root / "pretrain"  # NaN values, a strange extra metric and a line cut short by a kill
    write_jsonl(pre / "metrics.jsonl", [{"step": s, "stage": "pretrain", "loss": 3.0 / s, "lr": 1e-3,
                                         "tokens_per_s": float("nan") if s == 2 else 900.0 + s, "odd_metric": s}
                                        for s in range(1, 6)], tail='{"step": 6, "loss": 0.')
    empty = root / "empty"
    empty.mkdir()
    out = tmp_path_factory.mktemp("report")
    base = make_eval(root / "eval_base.json", 0.25, 80.0)
    after = make_eval(root / "eval_rl.json", 0.625, 120.5, hostile_bucket=True)
    assert main(["report", str(grpo), str(dapo), str(pre), str(empty), "--out", str(out),
                 "--eval", f"base={base}", "--eval", f"after RL={after}"]) == 0
    return out


def test_report_plots_and_page(report):
    pngs = sorted(p.name for p in report.glob("*.png"))
    for stem in ("reward", "format", "length", "kl_entropy", "clip", "throughput", "behaviour", "loss", "optim",
                 "compute", "other"):
        assert f"{stem}.png" in pngs
    for p in report.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    page = (report / "report.html").read_text()
    srcs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(?:src|href)\s*=\s*['\"]?(?:https?:|//|file:)", page)  # no outside assets
    assert CSP in page
    # model output and config values are escaped, never markup
    assert HOSTILE not in page and "<b>not bold</b>" not in page and "<script" not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    # config, cost account, final figures and overlays of every run
    assert "step_000005" in page and "&quot;preset&quot;: &quot;grpo&quot;" in page
    assert "GPU-h" in page and "rented_cost.dollars" in page
    for name in ("grpo", "dapo", "pretrain", "empty", "eval/pass1", "odd_metric", "Nothing to report"):
        assert name in page


def test_report_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def _cells(page: str, label: str) -> list[str]:
    row = re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", page)
    assert row is not None, label
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def test_result_table_comes_first_with_the_evaluations_numbers(report):
    page = (report / "report.html").read_text()
    first_table = page.index("<table")
    assert page.index("Result: evaluations before and after") < first_table < page.index("<img")
    assert first_table < page.index("Last value of every metric") < page.index("Run grpo")
    assert re.search(r"<thead><tr><th></th><th>base</th><th>after RL</th><th>change</th></tr>", page)
    assert _cells(page, "pass@1 (mean of 4 samples)") == ["0.250", "0.625", "+0.375"]
    assert _cells(page, "cons@4 (majority vote)") == ["0.300", "0.675", "+0.375"]
    assert _cells(page, "pass@2") == ["0.350", "0.725", "+0.375"]
    assert _cells(page, "pass@4") == ["0.450", "0.825", "+0.375"]
    assert _cells(page, "format rate") == ["0.500", "0.875", "+0.375"]
    assert _cells(page, "truncation rate") == ["0.125", "0.125", "+0.000"]
    assert _cells(page, "response length, mean (right / wrong)") == ["80.0 (70.0 / 85.0)", "120.5 (110.5 / 125.5)",
                                                                     "+40.5"]
    assert _cells(page, "attempts per response") == ["1.75", "2.12", "+0.38"]  # 2.125 rounds half to even
    assert _cells(page, "arithmetic steps correct") == ["0.775", "0.812", "+0.037"]
    assert _cells(page, "3 numbers (5 problems)") == ["0.350", "0.725", "+0.375"]
    assert _cells(page, "4 numbers (11 problems)") == ["0.125", "&ndash;", "&ndash;"]  # each eval has one bucket
    assert "greedy accuracy" not in page  # neither evaluation ran the greedy pass
    assert "&lt;script&gt;document.title" in page.split("Runs</h2>")[0]  # a bucket name is escaped too


def test_eval_files_that_are_missing_or_unreadable(tmp_path, capsys):
    run = make_rl_run(tmp_path, "rl", ["reward"])
    bad, good = tmp_path / "bad.json", make_eval(tmp_path / "eval_base.json", 0.5, 50.0)
    bad.write_text("{not json")
    code = main(["report", str(run), "--out", str(tmp_path / "o1"), "--eval", f"x={tmp_path / 'nope.json'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"r1lab report: no such eval file: {tmp_path / 'nope.json'}"]
    (tmp_path / "list.json").write_text("[1, 2]")
    code = main(["report", str(run), "--out", str(tmp_path / "o2"), "--eval", f"bad={bad}",
                 "--eval", f"wrong={tmp_path / 'list.json'}", "--eval", str(good)])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert "skipping --eval bad" in err and "skipping --eval wrong" in err and "not an r1lab eval file" in err
    page = (tmp_path / "o2" / "report.html").read_text()
    assert re.search(r"<th>base</th></tr>", page) and "<th>bad</th>" not in page  # the good one, labelled by name


def test_parse_eval_spec():
    assert parse_eval_spec("after RL=out/eval_rl.json") == ("after RL", Path("out/eval_rl.json"))
    assert parse_eval_spec("out/eval_base.json") == ("base", Path("out/eval_base.json"))
    assert parse_eval_spec("runs/a=b/eval.json") == ("eval", Path("runs/a=b/eval.json"))  # "=" inside a path


def test_smoothing_keeps_the_raw_points(tmp_path):
    assert smooth([1, 2, 6, 3], window=3) == pytest.approx([1.0, 3.0, 11 / 3, 3.0])
    line = [0.04 + 0.01 * s for s in range(97)]  # a trend is kept to its ends (a one-sided window lagged it)
    assert smooth(line) == pytest.approx(line)
    assert smooth([5.0, 1.0]) == [5.0, 1.0]  # under 20 points: left alone
    assert [smooth_window(n) for n in (1, 19, 20, 59, 60, 100)] == [1, 1, 3, 5, 7, 11]
    values = [float(s % 2) for s in range(60)]  # 0, 1, 0, 1: noise around 0.5
    write_jsonl(tmp_path / "run" / "metrics.jsonl", [{"step": s, "reward": v} for s, v in enumerate(values)])
    fig = _figure([load_run(tmp_path / "run")], "Reward", [("reward",)], tmp_path / "reward.png")
    lines = fig.axes[0].get_lines()
    raw = [ln for ln in lines if ln.get_alpha() == RAW_ALPHA]
    assert len(lines) == 2 and len(raw) == 1 and list(raw[0].get_ydata()) == values
    smoothed = next(ln for ln in lines if ln is not raw[0])
    assert smoothed.get_label() == "reward (smoothed)" and max(abs(v - 0.5) for v in smoothed.get_ydata()[3:-3]) < 0.1


def test_the_plots_show_what_a_reader_must_not_miss(tmp_path):
    """From a review in a browser: NaN / inf steps vanished from the curves; lr was smoothed (step 1 drawn at 7.5e-5
    for a logged 5e-5) and a flat lr over 1000 steps got an offset axis ("1e-16+1e-4"); the 5th metric of a panel
    repeated the 1st's line when runs overlay; a run named "_scratch" vanished from the legend and a "$" parsed as
    mathtext; one step got fractional ticks."""
    rows = [{"step": s, "loss": float("nan") if s >= 90 else 1.0 / (s + 1), "lr": 1e-4 * min(1.0, (s + 1) / 10),
             "grad_norm": float("inf") if s == 15 else 1.0} for s in range(100)]
    write_jsonl(tmp_path / "_scratch" / "metrics.jsonl", rows)
    write_jsonl(tmp_path / "b$x$" / "metrics.jsonl", rows)
    runs = [load_run(tmp_path / "_scratch"), load_run(tmp_path / "b$x$")]
    fig = _figure(runs[:1], "Loss", [("loss",), ("lr",), ("grad_norm",)], tmp_path / "a.png")
    loss, lr, grad = fig.axes[:3]
    nan = [ln for ln in loss.get_lines() if "NaN/inf at 10 steps" in ln.get_label()]
    assert len(nan) == 1 and list(nan[0].get_xdata()) == list(range(90, 100))
    assert [ln.get_label() for ln in grad.get_lines()] == ["grad_norm: NaN/inf at 1 steps", "grad_norm"]
    (lr_line,) = lr.get_lines()  # one exact line, no smoothed copy
    assert list(lr_line.get_ydata()) == [r["lr"] for r in rows] and not lr.yaxis.get_major_formatter().get_useOffset()
    fig = _figure(runs, "Many", [("loss", "lr", "grad_norm", "x", "y", "z")], tmp_path / "b.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "\u200b_scratch: loss: NaN/inf at 10 steps" in labels and any(t.startswith("b\\$x\\$") for t in labels)
    write_jsonl(tmp_path / "one" / "metrics.jsonl", [{"step": 3, "reward": 0.5}])
    fig = _figure([load_run(tmp_path / "one")], "One", [("reward",)], tmp_path / "c.png")
    assert fig.axes[0].get_xlim() == (2, 4)
    six = [{"step": s, **{f"m{i}": s * i for i in range(6)}} for s in range(40)]
    write_jsonl(tmp_path / "six" / "metrics.jsonl", six)
    write_jsonl(tmp_path / "six2" / "metrics.jsonl", six)
    fig = _figure([load_run(tmp_path / "six"), load_run(tmp_path / "six2")], "Six", [tuple(f"m{i}" for i in range(6))],
                  tmp_path / "d.png")
    drawn = [ln for ln in fig.axes[0].get_lines() if ln.get_color() == "C0" and ln.get_alpha() != RAW_ALPHA]
    assert len({(ln.get_linestyle(), ln.get_marker()) for ln in drawn}) == 6  # six metrics, six looks


def test_evaluations_of_other_problems_show_no_change(tmp_path):
    """A 3-number evaluation beside a 4-number one read as "RL made it worse" (-0.312): the settings lines looked
    alike. Now the table says which settings differ and has no change column."""
    from r1lab.evaluation.table import differing, render_evaluations

    a = json.loads(make_eval(tmp_path / "a.json", 0.5, 50.0).read_text())
    a["settings"]["knobs"] = {"min_numbers": 3}
    b = json.loads(json.dumps(a))
    b["settings"]["knobs"] = {"min_numbers": 4}
    assert differing([a, a]) == [] and differing([a, b]) == ["knobs"]
    page = render_evaluations([("base", a), ("after RL", b)])
    assert "differ in knobs: they are not one comparison" in page and "<th>change</th>" not in page
    assert "knobs {&quot;min_numbers&quot;: 4}" in page  # the differing setting in each settings line
    assert "<th>change</th>" in render_evaluations([("base", a), ("after RL", a)])


def test_a_folder_of_runs_points_at_them_and_model_output_keeps_its_order(tmp_path):
    from r1lab.report import Run, _sample, render_html

    demo = tmp_path / "demo"
    write_jsonl(demo / "rl" / "metrics.jsonl", [{"step": 1, "reward": 0.5}])
    make_eval(demo / "eval_base.json", 0.2, 40.0)
    page = render_html([load_run(demo)], [])
    assert f"It holds the runs {demo / 'rl'} and the evaluations {demo / 'eval_base.json'}" in page
    (demo / "metrics.jsonl").write_text("")
    assert "metrics.jsonl is empty" in render_html([Run("demo", demo)], [])
    assert "RTL\\u202eLTR" in _sample({"completion": "RTL\u202eLTR"})  # a direction override shown, not obeyed


def test_metric_groups_keep_every_metric(report):
    assert [metric_group(m) for m in ("eval/pass1", "reward/group_std", "step_acc", "eval/response_len_wrong",
                                      "approx_kl", "clip_frac_high", "gen_tokens_per_s", "mfu", "odd_metric")] == [
        "Outcome", "Outcome", "Length and behaviour", "Length and behaviour", "Optimisation", "Optimisation",
        "Throughput and cost", "Throughput and cost", "Other"]
    root = report.parent  # the module's runs live next to the report
    runs = [load_run(p) for p in sorted(root.glob("runs[0-9]*/*")) if p.is_dir()]
    assert len(runs) == 4
    groups = grouped_figures(runs)
    flat = [m for _, figures in groups for m, _ in figures]
    assert sorted(flat) == sorted(m for m, _ in final_figures(runs)) and len(flat) == len(set(flat))
    assert [g for g, _ in groups] == [g for g in GROUP_ORDER if g in {g for g, _ in groups}]
    page = (report / "report.html").read_text()
    tables = page.split("Last value of every metric")[1].split("<h2>Run ")[0]
    for metric in flat:
        assert f"<td>{metric}</td>" in tables


# Opened in a real browser: a script injected into a copy of the page counts the images that decoded. The copy's
# policy allows inline scripts, so markup that escaped the escaping would run or add a broken image and fail here.
COUNT = ("<script>addEventListener('load', function () { var ok = 0, im = document.images;"
         " for (var i = 0; i < im.length; i++) if (im[i].complete && im[i].naturalWidth > 0) ok++;"
         " document.title = 'loaded ' + ok + ' of ' + im.length; });</script>")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (scripts/install.sh "
                                                              "installs Debian's chromium when it can)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page = (report / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("</body>", COUNT + "</body>"))
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
    title = re.search(r"<title>(.*?)</title>", dom)
    n_png = len(list(report.glob("*.png")))
    assert title is not None and title.group(1) == f"loaded {n_png} of {n_png}", dom[:500]
    assert "Sample completions" in dom and "&lt;script&gt;" in dom


def test_trackers_that_are_not_installed_only_warn(tmp_path, monkeypatch, capsys):
    from r1lab.jsonl import read_jsonl
    from r1lab.tracking import MetricsLogger

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError, installed or not
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    log = MetricsLogger(tmp_path, "rl", wandb=True, tensorboard=True, config={"lr": 1e-5})
    log.log(1, {"reward": 0.5, "acc": 0.25}, console_keys=("reward",))
    log.log(2, {"reward": 0.75, "acc": 0.5})
    log.close()
    err = capsys.readouterr().err
    assert "wandb is not installed" in err and "tensorboard is not installed" in err
    assert [(r["step"], r["stage"], r["reward"]) for r in read_jsonl(tmp_path / "metrics.jsonl")] == [(1, "rl", 0.5), (2, "rl", 0.75)]


def test_a_run_that_ends_in_nan_does_not_look_healthy():
    """Final figures used to skip non-finite values, showing a run whose loss became NaN with its last finite loss."""
    from pathlib import Path

    from r1lab.report import Run, final_figures

    nan = float("nan")
    run = Run("broken", Path("."), [{"step": 1, "acc": 0.5, "loss": 2.0}, {"step": 2, "acc": nan, "loss": 1.5},
                                    {"step": 3, "acc": nan}, {"step": 4, "acc": float("inf"), "odd": nan}])
    figures = dict(final_figures([run]))
    assert figures["acc"] == ["inf at step 4; 0.5 at step 1"] and figures["loss"] == [1.5]
