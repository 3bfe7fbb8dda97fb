"""The demo's pipeline (eval -> GRPO -> eval -> report -> table) on a tiny budget, from the shipped base.

The --quick demo's own check (accuracy must rise) is not asserted here: dev/LOG.md records that the current
recipe does not lift the shipped base yet.
"""
import json

from r1lab.cli import main
from r1lab.commands import demo


def test_demo_pipeline_runs_end_to_end(tmp_path, capsys, monkeypatch):
    tiny = {"rl": "countdown_rl_quick", "rl_set": ["steps=2", "prompts_per_step=2", "samples_per_prompt=4",
                                                   "max_new_tokens=96"], "eval_n": 6, "samples": 2}
    monkeypatch.setitem(demo.PLANS, "quick", tiny)
    code = main(["demo", "--quick", "--out", str(tmp_path), "--threads", "1"])
    out = capsys.readouterr().out
    before = json.loads((tmp_path / "eval_base.json").read_text())
    after = json.loads((tmp_path / "eval_rl.json").read_text())
    assert code == (0 if after["pass1"] > before["pass1"] else 1)
    assert before["settings"]["max_new_tokens"] == after["settings"]["max_new_tokens"] == 96
    assert "before and after RL" in out and "[4/4] writing the report" in out
    assert (tmp_path / "report" / "report.html").exists()
    assert json.loads((tmp_path / "rl" / "account.json").read_text())["flops"] > 0
