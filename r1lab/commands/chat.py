"""`r1lab chat CHECKPOINT`: talk to a model in the terminal, on the engine directly (no server).

    r1lab chat runs/rl --max-thinking-tokens 200
    echo "12+7" | r1lab chat runs/rl --color never      # stdin need not be a terminal

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
    parser.add_argument("checkpoint", help="a checkpoint dir, a run dir (its latest checkpoint), a shipped base name "
                                           "or a hub id")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6, as DeepSeek "
                                                                       "recommends for R1)")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=512, help="per reply, thinking included")
    parser.add_argument("--max-thinking-tokens", type=int, help="s1 budget forcing: end the thinking here")
    parser.add_argument("--num-ignore", type=int, default=0,
                        help="s1: replace the model's first N </think> by 'Wait' to make it think longer")
    parser.add_argument("--seed", type=int, help="reply t of the session uses seed + t")
    parser.add_argument("--system", help="a system message")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                        help="dim the thinking with ANSI codes (auto: when stdout is a terminal)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")


class ChatSession:
    """A conversation on one engine; reply() streams (reasoning, content) deltas to a callback."""

    def __init__(self, engine, params, system: str | None = None, max_thinking: int | None = None,
                 num_ignore: int = 0, seed: int | None = None):
        from r1lab.serve.text import THINK_END, WAIT

        self.engine, self.params, self.seed = engine, params, seed
        self.system = [{"role": "system", "content": system}] if system else []
        self.history: list[dict] = []
        self.turns = 0
        tok = engine.tokenizer
        self.think_end_id = tok.convert_tokens_to_ids(THINK_END)
        self.wait_ids = tok(WAIT, add_special_tokens=False)["input_ids"]
        self.max_thinking, self.num_ignore = max_thinking, num_ignore

    def prompt_ids(self, user: str) -> tuple[list[int], int]:
        """The prompt for a new user message and the tokens left for the reply; drops the oldest turns to fit."""
        from r1lab.serve.text import chat_prompt_ids

        limit = self.engine.max_positions or 10 ** 9
        history = list(self.history)
        while True:
            ids = chat_prompt_ids(self.engine.tokenizer, self.system + history + [{"role": "user", "content": user}])
            if len(ids) + self.params.max_new_tokens <= limit or not history:
                return ids, min(self.params.max_new_tokens, limit - len(ids))
            history = history[2:]  # one user message and its reply

    def reply(self, user: str, on_delta) -> tuple[str, str]:
        """Generate the assistant's reply to `user`, calling on_delta(reasoning, content) as text arrives."""
        import dataclasses

        from r1lab.engine import EngineBatch
        from r1lab.engine.forcing import budget_forcer
        from r1lab.serve.text import CompletionText

        ids, room = self.prompt_ids(user)
        if room < 1:
            raise ValueError(f"the message alone fills the model's {self.engine.max_positions}-token context")
        params = dataclasses.replace(self.params, max_new_tokens=room)
        forced = None
        if self.max_thinking is not None or self.num_ignore:
            forced = budget_forcer(self.think_end_id, self.wait_ids, self.max_thinking, 0, self.num_ignore)
        seed = None if self.seed is None else self.seed + self.turns
        batch = EngineBatch(self.engine)
        batch.add(ids, params, forced, seed)
        out = CompletionText(self.engine.tokenizer, params.stop)
        while batch:
            for ev in batch.step():
                on_delta(*out.push([ev]))
        self.turns += 1
        self.history += [{"role": "user", "content": user},
                         {"role": "assistant", "content": out.content, "reasoning_content": out.reasoning}]
        return out.reasoning, out.content

    def reset(self) -> None:
        self.history = []


def chat_loop(session: ChatSession, stdin, stdout, color: bool) -> int:
    """Read messages from stdin until /exit or EOF, writing each streamed reply to stdout."""
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
        except ValueError as e:
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


def run(args: argparse.Namespace) -> int:
    from r1lab.commands.serve import load_engine
    from r1lab.engine import SamplingParams

    try:
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens)
    except ValueError as e:
        print(f"r1lab chat: {e}", file=sys.stderr)
        return 2
    try:
        engine, _ = load_engine(args.checkpoint, args.threads, max_batch_size=1)
    except (OSError, ValueError) as e:
        print(f"r1lab chat: cannot load {args.checkpoint}: {e}", file=sys.stderr)
        return 2
    session = ChatSession(engine, params, args.system, args.max_thinking_tokens, args.num_ignore, args.seed)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    return chat_loop(session, sys.stdin, sys.stdout, color)
