"""`r1lab sft --data FILE.jsonl [--recipe R] [--model MODEL] [--out DIR] [--set key=value ...]`: supervised
fine-tuning (r1lab/sft/train.py)."""
from __future__ import annotations

from r1lab.commands.stage import add_stage_arguments

HELP = "supervised fine-tuning on prompt/completion or chat records (cold start, distillation; torchrun for DP)"
EVAL_KEYS = ("task", "task_args", "template", "eval_instances", "eval_max_new_tokens", "eval_every")


def add_arguments(p) -> None:
    add_stage_arguments(p)
    p.add_argument("--data", help="shorthand for --set data=FILE: a JSONL file of prompt/completion or messages records")


def chat_without_evaluation(args) -> bool:
    """True when the data are chat (messages) records only and neither a recipe nor a --set names the evaluation:
    the default one (countdown under the plain template) would not measure what the run learns, at the cost of
    eval_instances x eval_max_new_tokens sampled tokens. A bad data file is False here (check() names its line)."""
    from r1lab.sft.data import SFTDataError, load_records

    data = [o.split("=", 1)[1] for o in args.overrides if o.split("=", 1)[0].strip() == "data"]
    if args.recipe or not data or any(o.split("=", 1)[0].strip() in EVAL_KEYS for o in args.overrides):
        return False
    try:
        return all("messages" in row for _, row in load_records(data[-1]))
    except SFTDataError:
        return False


def run(args) -> int:
    import sys

    from r1lab.commands.stage import run_stage
    from r1lab.sft.data import SFTDataError
    from r1lab.sft.train import SFTConfig, check, main

    if args.data:
        args.overrides = list(args.overrides) + [f"data={args.data}"]
    if chat_without_evaluation(args):
        # subtle: decided here, where what the user set is known, and saved as eval_instances = 0 in the run's config
        args.overrides = list(args.overrides) + ["eval_instances=0"]
        print("r1lab sft: chat (messages) data and no task set: no held-out evaluation (the default one is countdown "
              "under the plain template); ask for one with --set task=NAME --set eval_instances=N", file=sys.stderr)
    return run_stage(args, "sft", SFTConfig, main, check=check, input_errors=(SFTDataError,))
