"""`r1lab distill`: verified traces from a teacher, in r1lab's format, as SFT records (the R1 pipeline's cold-start
data, and distillation of a strong reasoner into a small model).

    r1lab distill --teacher-url https://api.deepseek.com --teacher-model deepseek-reasoner --task countdown \\
        --n 1000 --samples 4 --max-new-tokens 32768 --out traces.jsonl --price-in 0.55 --price-out 2.19
    r1lab distill --teacher-url http://127.0.0.1:8000/v1 --teacher-model runs/rl --task countdown --samples 8 \\
        --out traces.jsonl --pass-rates rates.jsonl             # r1lab serve or vLLM
    r1lab distill --teacher runs/rl --task countdown --samples 8 --out traces.jsonl    # a local teacher

The API form (--teacher-url, --teacher-model) sends each problem's chat messages K times, --concurrency at once, with
retries; r1lab.evaluation.replies states how a reply becomes a completion, r1lab.evaluation.teacher the URL rule and
what is retried. The API key is read from $OPENAI_API_KEY (or the variable --api-key-env names; none is sent when it is
unset) and written nowhere. Every reply is journaled in OUT.journal as it arrives: rerunning the same command after a
kill or an error requests only what is missing; delete the journal (or change --out) to start afresh. --out and
--pass-rates are written once every sample is in. The local form (--teacher CHECKPOINT) is `r1lab sample` on the
teacher checkpoint.

A thinking budget (--max-thinking-tokens, --thinking-end) is forced by the local form's sampler as in `r1lab
sample`; an API teacher gets it as the request fields `max_thinking_tokens` and `thinking_end`, which r1lab serve
honours. Other servers differ: vLLM ignores fields it does not know (its own `thinking_token_budget` forces a bare
</think>), and a hosted API may refuse the request (exit 1, with the server's message). Replies that thought past the
budget (by the server's reasoning token count, or where it sends none, the completion tokens its content cannot
account for: replies.thought_tokens) are kept, and the run says how many on stderr.

The teacher gets the task's chat turns (--teacher-template): R1's system prompt and the full question (`r1`), as
DeepSeek asks its own models, or the question alone (`short`), which the chat template of a model r1lab trained
renders as the short prompt it saw in training: r1lab's tiny models, served by `r1lab serve`, read the R1 prompt's
example answer "(1 + 2) / 3" as the problem (the shipped base solved 0 of 20 3-number problems that way). The
default, `auto`, asks the server's GET /models once: r1lab serve names the template its checkpoint was trained on
(`r1lab_template`); any other answer, or none, means `r1`.

Records are those of `r1lab sample`: the problem's fields, `prompt` (the student's, --template), `completion` (the
text the verifier scored and `r1lab sft` trains on), `correct`, `pass_rate` and `tokens`, plus `teacher` (its name)
and, from an API, `usage` (prompt, completion and reasoning tokens as the server counted them).
Exit code: 0; 1 when the run could not finish (a request refused, or its retries spent: what finished stays in the
journal); 2 for a usage error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

HELP = "traces from a teacher (a checkpoint, or an OpenAI-compatible API with retries and resume) as SFT records"

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from r1lab.commands.options import (add_backend_argument, add_problem_arguments, add_sampling_arguments,
                                        add_selection_arguments)

    p.add_argument("--teacher", metavar="CHECKPOINT", help="a local teacher: shipped base, run dir or model dir")
    p.add_argument("--teacher-url", metavar="URL", help="an API teacher: the base URL, as the openai client's "
                                                        "base_url (http://127.0.0.1:8000/v1)")
    p.add_argument("--teacher-model", metavar="NAME", help="the model the API serves (e.g. deepseek-reasoner)")
    add_problem_arguments(p, split="train", model=False)
    add_sampling_arguments(p)
    add_backend_argument(p)  # the local form's sampler; an API teacher samples on its own server
    add_selection_arguments(p)
    api = p.add_argument_group("API teacher")
    api.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
                     help="the environment variable holding the API key (default OPENAI_API_KEY)")
    api.add_argument("--teacher-template", default="auto", choices=["auto", "r1", "short"],
                     help="the teacher's chat turns: r1, R1's system prompt and the full question (for real "
                          "reasoning models); short, the question alone (what an r1lab model's chat template renders "
                          "as the short prompt it was trained on); auto (default): the template the server's "
                          "/models names for the model (r1lab serve names the one its checkpoint was trained on), "
                          "else r1")
    api.add_argument("--concurrency", type=int, default=8, help="requests at once (default 8)")
    api.add_argument("--max-retries", type=int, default=5, help="retries of a request (default 5)")
    api.add_argument("--timeout", type=float, default=600.0, help="seconds one attempt may take (default 600)")
    api.add_argument("--backoff", type=float, default=1.0,
                     help="seconds before the first retry, doubling, jittered (default 1)")
    api.add_argument("--price-in", type=float, default=0.0, help="dollars per million input tokens")
    api.add_argument("--price-out", type=float, default=0.0,
                     help="dollars per million output tokens (reasoning included)")


def run(args: argparse.Namespace) -> int:
    if args.teacher and (args.teacher_url or args.teacher_model):
        return _usage("give --teacher (a checkpoint) or --teacher-url and --teacher-model (an API), not both")
    if not args.teacher and not (args.teacher_url and args.teacher_model):
        return _usage("give --teacher CHECKPOINT, or --teacher-url URL and --teacher-model NAME")
    if args.teacher_url and args.backend != "engine":
        return _usage("--backend chooses the local form's sampler; an API teacher samples on its own server")
    if args.teacher:
        from r1lab.commands import sample

        args.model = args.teacher
        return sample.run(args, fields={"teacher": args.teacher}, name="distill")
    return _run_api(args)


def _usage(message: str) -> int:
    print(f"r1lab distill: {message}", file=sys.stderr)
    return 2


def _check_api_arguments(args: argparse.Namespace) -> None:
    if args.concurrency < 1 or args.max_retries < 0:
        raise ValueError(f"--concurrency must be at least 1 and --max-retries at least 0, got {args.concurrency} "
                         f"and {args.max_retries}")
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    for flag, value in (("--backoff", args.backoff), ("--price-in", args.price_in), ("--price-out", args.price_out)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} must be a finite number >= 0, got {value}")


def _run_api(args: argparse.Namespace) -> int:
    from r1lab.commands.options import check_selection_arguments
    from r1lab.evaluation import replies as R
    from r1lab.evaluation import teacher as T
    from r1lab.evaluation.journal import Journal
    from r1lab.evaluation.traces import pass_rates, select
    from r1lab.jsonl import check_writable, write_jsonl
    from r1lab.prompts import CHAT_TEMPLATES
    from r1lab.tasks import get_task
    from r1lab.tasks.problems import load_problems

    K, journal_path = args.samples, args.out + ".journal"
    try:
        check_selection_arguments(args)
        _check_api_arguments(args)
        if args.template in CHAT_TEMPLATES:
            raise ValueError(f"--template {args.template}: a chat template renders the student's prompts with the "
                             f"student's tokenizer, which distill from an API does not load; use short or r1 (the "
                             f"local form, --teacher, renders the teacher's)")
        task = get_task(args.task)
        examples, source = load_problems(task, args.data, args.n, args.seed, args.split, args.task_args)
        for out in filter(None, (args.out, args.pass_rates, args.account, journal_path)):
            check_writable(out)
        key = os.environ.get(args.api_key_env) or None
        teacher = T.Teacher(args.teacher_url, args.teacher_model, api_key=key, timeout=args.timeout,
                            max_retries=args.max_retries, backoff=args.backoff)
        template, why = args.teacher_template, ""
        if template == "auto":  # one GET /models; r1lab serve names its checkpoint's template
            served = teacher.served_template()
            template = served or "r1"
            why = f" (auto: the server names {served} for the model)" if served else \
                " (auto: the server names no template for the model)"
        prompts = [task.prompt(ex, template=args.template) for ex in examples]  # the student's, as r1lab sample's
        messages = [task.messages(ex, template=template) for ex in examples]  # the teacher's
        params = {"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_new_tokens}
        if args.max_thinking_tokens is not None:  # r1lab serve's request fields (see the docstring)
            params |= {"max_thinking_tokens": args.max_thinking_tokens, "thinking_end": args.thinking_end}
        settings = R.run_settings(args.teacher_url, args.teacher_model, task.NAME, examples, messages, K, params,
                                  args.sampling_seed)
        journal = Journal(journal_path, settings, len(examples), K)
        done = journal.open()
    except (ValueError, TypeError, OSError) as e:
        return _usage(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if key is None and teacher.host not in LOCAL_HOSTS:
        print(f"r1lab distill: ${args.api_key_env} is not set: sending no API key", file=sys.stderr)
    jobs = [(p, j, messages[p], R.request_seed(args.sampling_seed, p * K + j))
            for p in range(len(examples)) for j in range(K) if (p, j) not in done]
    print(f"r1lab distill: {args.teacher_model} at {teacher.url} on {len(examples)} {task.NAME} problems ({source}) "
          f"x {K} samples, {template} chat turns{why}; {len(done)} in {journal_path}, {len(jobs)} to request",
          flush=True)
    t0 = time.perf_counter()
    progress = T.Progress(len(examples) * K, list(done.values()), args.price_in, args.price_out) if jobs else None
    try:
        error = T.request_all(teacher, jobs, params, journal, args.concurrency, progress and progress.update)
    finally:
        if progress:
            progress.close()
        journal.close()
    if error is not None:
        hint = (f" (the API key is read from ${args.api_key_env}; --api-key-env names another variable)"
                if error.status in (401, 403) else "")
        print(f"r1lab distill: {error}{hint}\nr1lab distill: {len(journal.replies)} of {len(examples) * K} samples "
              f"are in {journal_path}; rerun the same command to resume", file=sys.stderr)
        return 1
    samples, usage = R.score_replies(task, examples, prompts, journal.replies, K)
    records = select(samples, examples, keep=args.keep, per_problem=args.keep_per_problem,
                     shortest_first=args.shortest_first,
                     extra=lambda s: {"usage": usage[id(s)], "teacher": args.teacher_model})
    write_jsonl(args.out, records)
    rates = pass_rates(samples, examples)
    if args.pass_rates:
        write_jsonl(args.pass_rates, rates)
    total = R.add_usage(usage.values())
    over = R.over_budget(journal.replies.values(), args.max_thinking_tokens, args.thinking_end) \
        if args.max_thinking_tokens is not None else []
    if over:  # the traces are valid, only not budgeted: kept, and said
        print(f"r1lab distill: {len(over)} of {len(samples)} replies thought past the budget (at least {max(over)} "
              f"reasoning tokens against {args.max_thinking_tokens}): the server ignores max_thinking_tokens "
              f"(vLLM's does; r1lab serve honours it)", file=sys.stderr)
    solved = sum(r["pass_rate"] > 0 for r in rates)
    print(f"r1lab distill: {len(samples)} samples ({len(done)} from the journal), kept {len(records)} -> {args.out}; "
          f"{solved}/{len(rates)} problems solved at least once, mean pass rate "
          f"{sum(r['pass_rate'] for r in rates) / len(rates):.4f}; tokens in {total['prompt']}, out "
          f"{total['completion']} (reasoning {total['reasoning']}); "
          f"${R.cost(total, args.price_in, args.price_out):.4f}; {time.perf_counter() - t0:.1f} s")
    if args.account:  # an API's FLOPs are unknown: what it counted and billed
        from pathlib import Path

        from r1lab.jsonl import write_text_atomic

        account = {"teacher": args.teacher_model, "usage": total, "samples": len(samples),
                   "dollars": R.cost(total, args.price_in, args.price_out), "wall_s": time.perf_counter() - t0}
        write_text_atomic(Path(args.account), json.dumps(account, indent=2) + "\n")
    return 0
