"""`r1lab chat --model MODEL`: talk to a model in the terminal, on the engine directly (no server).

    r1lab chat --model runs/rl --max-thinking-tokens 200
    echo "12+7" | r1lab chat --model runs/rl --color never      # stdin need not be a terminal

Reads one message per line and keeps the conversation in the chat template. Each reply streams as it is generated:
the thinking (the text before </think>) dimmed, then the answer plain (its <answer> tags removed). /reset forgets
the conversation; /exit, /quit or end of input quits. Earlier turns are dropped, oldest first, when the
conversation no longer fits in the model's context.
"""
from __future__ import annotations

import argparse
import sys

HELP = "chat with a checkpoint in the terminal: thinking shown dimmed, the answer plain"
DIM, RESET = "\x1b[2m", "\x1b[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a shipped base name, a run dir (its latest checkpoint), a "
                                                       "model dir or a hub id")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6, as DeepSeek "
                                                                       "recommends for R1)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default 0.95)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="per reply, thinking included (default 512)")
    parser.add_argument("--max-thinking-tokens", type=int, help="s1 budget forcing: end the thinking here")
    parser.add_argument("--thinking-end", help="the text forced at --max-thinking-tokens (default </think>); it "
                                                  "must end with </think>, e.g. $'\\ngive up\\n</think>'")
    parser.add_argument("--num-ignore", type=int, default=0,
                        help="s1: replace the model's first N </think> by 'Wait' to make it think longer")
    parser.add_argument("--seed", type=int, help="reply t of the session uses seed + t")
    parser.add_argument("--system", help="a system message")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                        help="dim the thinking with ANSI codes (auto: when stdout is a terminal)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


def chat_loop(session, stdin, stdout, color: bool) -> int:
    """Read messages from stdin until /exit or EOF, writing each streamed reply (of a serve.chat.ChatSession)."""
    interactive = stdin.isatty()
    while True:
        if interactive:
            stdout.write(">>> ")
            stdout.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            break
        if not line:
            break
        line = line.strip()
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            session.reset()
            continue
        if not line:
            continue
        view = _ReplyView(stdout, color)
        try:
            session.reply(line, view.write)
        except KeyboardInterrupt:
            stdout.write("\n[interrupted]")
        except (ValueError, RuntimeError) as e:
            stdout.write(f"[{e}]")
        view.close()
    return 0


class _ReplyView:
    """Writes one reply: the thinking dimmed (or between <think> tags without color), then the answer plain."""

    def __init__(self, out, color: bool):
        self.out, self.color, self.state = out, color, "start"  # start -> thinking -> answer

    def write(self, reasoning: str, content: str) -> None:
        if reasoning:
            if self.state == "start":
                self.out.write(DIM if self.color else "<think>")
                self.state = "thinking"
            self.out.write(reasoning)
        if content:
            self._end_thinking()
            self.out.write(content)
        self.out.flush()

    def _end_thinking(self) -> None:
        if self.state == "thinking":
            self.out.write(RESET + "\n" if self.color else "</think>\n")
        self.state = "answer"

    def close(self) -> None:
        self._end_thinking()
        self.out.write("\n")
        self.out.flush()


def load_engine(args: argparse.Namespace):
    """An Engine for --model on runtime.device(), one row at a time; raises CheckpointError when it cannot load."""
    from r1lab import runtime
    from r1lab.engine import Engine
    from r1lab.model.load import load_checkpoint

    runtime.set_threads(args.threads)
    model, tokenizer, _ = load_checkpoint(args.model)
    return Engine(model.eval(), tokenizer, max_batch_size=1)


def run(args: argparse.Namespace) -> int:
    from r1lab.engine import SamplingParams
    from r1lab.serve.chat import ChatSession

    try:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    except ValueError as e:
        print(f"r1lab chat: {e}", file=sys.stderr)
        return 2
    for flag, value in (("--max-thinking-tokens", args.max_thinking_tokens), ("--num-ignore", args.num_ignore)):
        if value is not None and value < 0:
            print(f"r1lab chat: {flag} must be at least 0, got {value}", file=sys.stderr)
            return 2
    end = args.thinking_end
    if end is not None and (args.max_thinking_tokens is None or not end.endswith("</think>")):
        print("r1lab chat: --thinking-end is what --max-thinking-tokens forces: it needs --max-thinking-tokens and "
              "must end with </think>", file=sys.stderr)
        return 2
    try:
        engine = load_engine(args)
        session = ChatSession(engine, params, args.system, args.max_thinking_tokens, args.num_ignore, args.seed,
                              args.thinking_end)
    except (OSError, ValueError) as e:
        print(f"r1lab chat: {e}", file=sys.stderr)
        return 2
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    return chat_loop(session, sys.stdin, sys.stdout, color)
