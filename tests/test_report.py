"""`r1lab report` on hand-written run directories: the plots, a self-contained page that escapes model output, and
every image loading in headless Chromium; optional trackers that are not installed never break logging."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from r1lab.cli import main
from r1lab.report import CSP

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
    assert main(["report", str(grpo), str(dapo), str(pre), str(empty), "--out", str(out)]) == 0
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
