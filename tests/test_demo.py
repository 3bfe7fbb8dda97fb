"""`r1lab demo --quick`, as CI runs it: the shipped base -> eval -> GRPO -> eval -> report -> table, and accuracy
must rise (the command exits 1 otherwise). About 2.5 minutes on 2 cores: the one long test of the suite, because it
is the project's main claim."""
import json

from r1lab.cli import main


def test_quick_demo_lifts_accuracy(tmp_path, capsys):
    code = main(["demo", "--quick", "--out", str(tmp_path), "--threads", "2"])
    out = capsys.readouterr().out
    before = json.loads((tmp_path / "eval_base.json").read_text())
    after = json.loads((tmp_path / "eval_rl.json").read_text())
    assert code == 0, out[-3000:]
    # measured: 0.340 -> 0.605 (100 3-number problems x 2 samples at T=0.6, 8 GRPO steps); demand a clear rise
    assert after["pass1"] >= before["pass1"] + 0.10, (before["pass1"], after["pass1"])
    assert after["behaviour"]["attempts"] > before["behaviour"]["attempts"]  # it learnt to search longer
    assert before["settings"]["max_new_tokens"] == after["settings"]["max_new_tokens"] == 512
    assert "before and after RL" in out and "[4/4] writing the report" in out
    assert (tmp_path / "report" / "report.html").exists()
    assert json.loads((tmp_path / "rl" / "account.json").read_text())["flops"] > 0
