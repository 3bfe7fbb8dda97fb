"""A model too short for a run's prompts + new tokens is said before any work, by the engine's rule: `r1lab sft`
(seq_len, the held-out set's longest prompt + eval_max_new_tokens) and `r1lab rl` (the longest training prompt +
max_new_tokens, the held-out one + its budget), one line naming the setting to lower, exit 2, no run."""
import json

from conftest import tiny_checkpoint
from test_rl import SMALL
from test_sft import traces, write

from r1lab.cli import main as cli_main

# The char tokenizer's longest prompts under the "short" template: 84 tokens for SMALL's 40 training and 8 held-out
# problems, 86 for 8 held-out ones of 3-4 numbers up to 100 (sft's default); the model below has 128 positions.
POSITIONS = 128


def test_sft_refuses_a_held_out_set_the_model_cannot_hold_before_any_work(tmp_path_factory, tmp_path, capsys):
    model = tiny_checkpoint(tmp_path_factory, "short", max_positions=POSITIONS)
    data = write(tmp_path / "d.jsonl", traces(4))
    out = tmp_path / "run"
    common = ["sft", "--data", str(data), "--model", str(model), "--out", str(out), "--set", "seq_len=128",
              "--set", "threads=1", "--set", "steps=1", "--set", "eval_instances=8"]
    assert cli_main(common) == 2  # eval_max_new_tokens = 512
    err = capsys.readouterr().err
    assert ("eval_max_new_tokens = 512: the longest evaluation prompt (template 'short') + 512 new tokens need 598 "
            "positions, and the model has 128; lower eval_max_new_tokens to at most 42, or set eval_instances = 0"
            in err), err
    assert "Traceback" not in err and not out.exists()
    assert cli_main(common + ["--set", "eval_max_new_tokens=42"]) == 0  # the bound it names is exact
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert "eval/pass1" in rows[-1]


def test_rl_refuses_prompts_the_model_cannot_hold_before_any_step(tmp_path_factory, tmp_path, capsys):
    model = tiny_checkpoint(tmp_path_factory, "short", max_positions=POSITIONS)
    common = ["rl", "--model", str(model), *sum((["--set", s] for s in SMALL + ["steps=1"]), [])]
    for extra, line in [
            (["max_new_tokens=160"], "max_new_tokens = 160: the longest training prompt: prompt (84) + max_new_tokens "
                                     "(160) exceeds the model's 128 positions; lower max_new_tokens to at most 44"),
            (["max_new_tokens=16", "eval_max_new_tokens=100"],
             "eval_max_new_tokens = 100: the longest held-out prompt: prompt (84) + max_new_tokens (100) exceeds the "
             "model's 128 positions; lower eval_max_new_tokens to at most 44, or set eval_instances = 0"),
            (["max_new_tokens=43", "eval_task_args=min_numbers=3,max_numbers=4,max_number=12,max_target=100"],
             "max_new_tokens = 43: the longest held-out prompt: prompt (86) + max_new_tokens (43) exceeds the model's "
             "128 positions; lower max_new_tokens to at most 42, or set eval_instances = 0")]:
        out = tmp_path / extra[-1].replace("=", "_").replace(",", "_")
        assert cli_main(common + ["--out", str(out)] + sum((["--set", s] for s in extra), [])) == 2
        err = capsys.readouterr().err
        assert line in err and "Traceback" not in err, err
        assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()
