"""Flags (and the loading of task, problems and model) that the commands which sample from a model on a task's
problems share (`r1lab eval`, `r1lab sample`), so that each one means the same thing in both (README: one
vocabulary on the command line). `r1lab distill` takes them too, with --teacher (a local teacher) or
--teacher-url/--teacher-model (an API) in place of --model."""
from __future__ import annotations

import argparse
import sys

from r1lab.prompts import PROMPT_TEMPLATES
from r1lab.tasks.format import THINK_END, check_thinking_budget


def add_problem_arguments(p: argparse.ArgumentParser, split: str, model: bool = True) -> None:
    """--model (unless model=False), --task, and which problems: --data, or generated --n/--seed/--split/--task-arg."""
    if model:
        p.add_argument("--model", required=True,
                       help="shipped base name (e.g. countdown-base), run dir, model dir or hub id")
    p.add_argument("--task", required=True,
                   help="task: countdown, arithmetic, gsm8k, math, logic, or your own (.py file or module path)")
    p.add_argument("--data", help="JSONL / Parquet file, folder or hub id of problems (required for gsm8k, math)")
    p.add_argument("--split", default=split, help=f"split to generate or load (default {split})")
    p.add_argument("--n", type=int, help="problems: generated (default 500) or the first N of --data")
    p.add_argument("--seed", type=int, default=1, help="generator seed for synthetic problems (default 1)")
    p.add_argument("--task-arg", dest="task_args", action="append", default=[], metavar="KNOB=VALUE",
                   help="a generator knob, repeatable: --task-arg max_numbers=5")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """How completions are sampled (the R1 paper's defaults) and how the engine runs."""
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6, as R1)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95, as R1)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation budget per completion (default 512)")
    p.add_argument("--template", default="short", choices=PROMPT_TEMPLATES,
                   help="prompt template: short or r1 (plain text, for base models), chat (the model's chat template "
                        "around the question) or chat-r1 (R1's system prompt first); default short")
    p.add_argument("--sampling-seed", type=int, default=0, help="seed of the sampled completions (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="rows the engine runs at once (default 256)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--max-thinking-tokens", type=int, metavar="N",
                   help="a thinking budget: after N tokens of thinking the sampler forces --thinking-end and the "
                        "model answers (default: none)")
    p.add_argument("--thinking-end", default=THINK_END, metavar="TEXT",
                   help=f"what the thinking budget forces; must end with {THINK_END} (default {THINK_END}). The "
                        f"countdown recipes force '\\ngive up\\n{THINK_END}', their corpus's own end of a search")


def check_thinking_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the flag for a bad thinking budget (SamplingParams' rule, without loading torch: an API
    teacher's run checks it too)."""
    check_thinking_budget(args.max_thinking_tokens, args.thinking_end, ("--max-thinking-tokens", "--thinking-end"))


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    """--backend: who samples, r1lab's engine or vLLM (r1lab.engine.BACKENDS); run_eval(backend=args.backend)."""
    p.add_argument("--backend", default="engine", choices=["engine", "vllm"],
                   help="who samples: r1lab's engine (default) or vllm (pip install 'r1lab[vllm]')")


def add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """K samples per problem, where the kept records go and which are kept (r1lab.evaluation.traces.select)."""
    p.add_argument("--samples", type=int, required=True, help="K samples per problem")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the kept records")
    p.add_argument("--keep-per-problem", type=int, metavar="M", help="at most M records per problem (default: all)")
    p.add_argument("--shortest-first", action="store_true", help="keep the shortest correct completions first")
    p.add_argument("--keep", default="correct", choices=["correct", "all"],
                   help="correct (default): verified-correct, well-formed and finished (not cut at the token "
                        "limit); all: every sample, wrong ones with correct false")
    p.add_argument("--pass-rates", metavar="FILE.jsonl", help="write one line per problem: its fields + pass_rate")
    p.add_argument("--account", metavar="FILE.json",
                   help="write the run's cost account as JSON: a local model's generation FLOPs and tokens (from an "
                        "API: the tokens the server counted and their price)")


def check_selection_arguments(args: argparse.Namespace) -> None:
    """ValueError naming the flag for a bad value of the sampling and selection flags, before any work."""
    from pathlib import Path

    if args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    if args.keep_per_problem is not None and args.keep_per_problem < 1:
        raise ValueError(f"--keep-per-problem must be at least 1, got {args.keep_per_problem}")
    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise ValueError("--max-new-tokens and --batch-size must be at least 1")
    check_thinking_arguments(args)
    outs = [Path(f).resolve() for f in (args.out, args.pass_rates, args.account) if f]
    if len(set(outs)) < len(outs):
        raise ValueError("--out, --pass-rates and --account must name different files")


def load_task_problems_model(args: argparse.Namespace, outputs=(), dtype=None) -> tuple:
    """(task, examples, source, model, tokenizer, path) for a command that samples from --model on a task's
    problems, in the order a user's mistakes are cheapest to report: the task, its problems, every output file
    writable, the --backend installed, then the model (its weights in `dtype`, else as stored). ValueError / OSError
    name the bad input; nothing is written."""
    from r1lab.engine import check_backend
    from r1lab.jsonl import check_writable
    from r1lab.model.load import load_checkpoint
    from r1lab.prompts import check_template
    from r1lab.tasks import get_task
    from r1lab.tasks.problems import load_problems

    task = get_task(args.task)
    examples, source = load_problems(task, args.data, args.n, args.seed, args.split, args.task_args)
    for out in filter(None, outputs):
        check_writable(out)
    check_backend(args.backend)
    loaded = load_checkpoint(args.model, dtype=dtype)
    check_template(args.template, loaded[1])  # a chat template needs the model's own
    check_prompts_fit(task, examples, args.template, args.max_new_tokens, *loaded)
    if not args.data and not args.task_args:
        note = trained_knobs_note(task, loaded[2], args.model)
        if note:
            print(note, file=sys.stderr)
    return (task, examples, source, *loaded)


def check_prompts_fit(task, examples: list[dict], template: str, max_new_tokens: int, model, tokenizer, path) -> None:
    """ValueError, before any sampling, when the longest prompt + max_new_tokens pass the model's positions: the
    engine refuses such a row (engine.check_room), which used to stop a command mid-run with a traceback."""
    from r1lab.prompts import longest_prompt

    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is None or not examples:
        return
    longest = longest_prompt(task, examples, template, tokenizer)
    if longest + max_new_tokens > limit:
        fix = (f"lower --max-new-tokens to at most {limit - longest}" if longest < limit
               else "use a shorter template or shorter problems")
        raise ValueError(f"the longest prompt ({longest} tokens, template {template!r}) + --max-new-tokens "
                         f"{max_new_tokens} need {longest + max_new_tokens} positions, and {path} has {limit}; {fix}")


def trained_knobs_note(task, path, model: str) -> str | None:
    """A line for a model that r1lab trained on generated problems unlike the task's defaults (countdown's recipes:
    numbers up to 12, the default 100), which the command is about to use: how to ask for the model's own kind."""
    from r1lab.model.load import trained_task_args
    from r1lab.tasks import knob_defaults, parse_knobs

    try:
        knobs = parse_knobs(task, trained_task_args(path, task.NAME) or "")
    except ValueError:  # knobs of an older r1lab: say nothing
        return None
    defaults = knob_defaults(task) if knobs else {}
    differ = {k: v for k, v in knobs.items() if defaults.get(k) != v}
    if not differ:
        return None
    flags = " ".join(f"--task-arg {k}={v}" for k, v in differ.items())
    listed = ", ".join(f"{k}={v}" for k, v in differ.items())
    return (f"r1lab: note: {model} was trained on {task.NAME} problems with {listed}; these are generated with the "
            f"task's defaults. For problems of its own kind add: {flags}")
