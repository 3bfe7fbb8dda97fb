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
    assert "<th>change</th>" in (tmp_path / "report" / "report.html").read_text()  # one comparison: same settings
    assert json.loads((tmp_path / "rl" / "account.json").read_text())["flops"] > 0


def test_the_from_scratch_plan_pretrains_on_the_problems_it_trains_and_evaluates_on(capsys):
    """`r1lab demo --from-scratch`'s two recipes pass their checks, agree on the problems, and the task has enough
    distinct ones for them (this narrow kind has ~1,230 in the train split and ~130 in the test split)."""
    from r1lab.commands.demo import PLANS
    from r1lab.config import load_config
    from r1lab.pretrain import train as pretrain
    from r1lab.recipes import resolve_recipe
    from r1lab.rl import config as rl
    from r1lab.tasks import get_task, parse_knobs

    plan = PLANS["scratch"]
    base = load_config(pretrain.PretrainConfig, resolve_recipe(plan["pretrain"]), [])
    # the demo hands RL its own base (--model); the shipped one stands in for it here
    rl_cfg = load_config(rl.RLConfig, resolve_recipe(plan["rl"]), plan["rl_set"] + ["model=countdown-base"])
    pretrain.check(base)
    rl.check(rl_cfg)
    assert base.task == rl_cfg.task and base.task_args == rl_cfg.task_args == rl.held_out_task_args(rl_cfg)
    task = get_task(rl_cfg.task)
    knobs = parse_knobs(task, rl_cfg.task_args)
    assert len(task.generate(plan["eval_n"], seed=1, split="test", **knobs)) == plan["eval_n"]
    train_n = max(base.train_instances, rl_cfg.train_instances)
    assert len(task.generate(train_n, seed=0, split="train", **knobs)) == train_n
    assert main(["demo", "--from-scratch", "--quick"]) == 2
    assert "--from-scratch has no --quick form" in capsys.readouterr().err
