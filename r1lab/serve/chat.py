"""A conversation with a model on the engine directly (no server): what `r1lab chat` drives.

    session = ChatSession(engine, SamplingParams(temperature=0.6, max_new_tokens=256), max_thinking=200)
    reasoning, content = session.reply("12+7", on_delta=lambda r, c: print(r, c, end=""))

The conversation is kept in the chat template; earlier turns are dropped, oldest first, when it no longer fits in
the model's context. Replies split into reasoning and content exactly as the server's do (serve/text.py).
"""
from __future__ import annotations

import dataclasses

from r1lab.engine import EngineBatch
from r1lab.engine.forcing import budget_forcer
from r1lab.serve.text import WAIT, CompletionText, chat_prompt_ids, opens_thinking, think_end_token
from r1lab.tasks.format import THINK_END


class ChatSession:
    """A conversation on one engine; reply() streams (reasoning, content) deltas to a callback."""

    def __init__(self, engine, params, system: str | None = None, max_thinking: int | None = None,
                 num_ignore: int = 0, seed: int | None = None, thinking_end: str | None = None):
        self.engine, self.params, self.seed = engine, params, seed
        self.system = [{"role": "system", "content": system}] if system else []
        self.history: list[dict] = []
        self.turns = 0
        tok = engine.tokenizer
        if not getattr(tok, "chat_template", None):  # as the server's /v1/chat/completions says it
            raise ValueError("this model has no chat template, which a chat needs; r1lab eval, r1lab sample and "
                             "r1lab serve's /v1/completions take plain prompts")
        self.think_end_id = think_end_token(tok)
        self.wait_ids = tok(WAIT, add_special_tokens=False)["input_ids"]
        self.max_thinking, self.num_ignore, self.thinking_end = max_thinking, num_ignore, thinking_end
        if thinking_end is not None and not thinking_end.endswith(THINK_END):
            raise ValueError(f"thinking_end {thinking_end!r} must end with {THINK_END}")
        if self.think_end_id is None and num_ignore:  # as the server says it (Server._forcer)
            raise ValueError(f"num_ignore replaces the model's {THINK_END} by \"Wait\", which needs {THINK_END} to be "
                             "one token; this model's tokenizer spells it in several (max_thinking alone works)")
        # what max_thinking forces: </think>, or a closing text that ends with it (thinking_budget's "give up")
        self.close_ids = None if thinking_end is None or self.think_end_id is None else engine.token_ids(thinking_end)
        if self.close_ids is not None and self.close_ids[-1:] != [self.think_end_id]:
            raise ValueError(f"thinking_end {thinking_end!r} must end with {THINK_END}")

    def prompt_ids(self, user: str) -> tuple[list[int], int]:
        """The prompt for a new user message and the tokens left for the reply; drops the oldest turns to fit.

        A turn is dropped only while the reply would get less than max_new_tokens, or half the context when that is
        smaller (max_new_tokens of the whole context would otherwise drop every turn for room the reply has anyway).
        """
        limit = self.engine.max_positions or 10 ** 9
        want = min(self.params.max_new_tokens, limit // 2)
        history = list(self.history)
        while True:
            ids = chat_prompt_ids(self.engine.tokenizer, self.system + history + [{"role": "user", "content": user}])
            if len(ids) + want <= limit or not history:
                return ids, min(self.params.max_new_tokens, limit - len(ids))
            history = history[2:]  # one user message and its reply

    def reply(self, user: str, on_delta) -> tuple[str, str]:
        """Generate the assistant's reply to `user`, calling on_delta(reasoning, content) as text arrives.
        RuntimeError when the engine failed this reply (finish_reason "error"); the conversation is unchanged."""
        ids, room = self.prompt_ids(user)
        if room < 1:
            raise ValueError(f"the message alone fills the model's {self.engine.max_positions}-token context")
        params = dataclasses.replace(self.params, max_new_tokens=room)
        forced = None
        if self.think_end_id is None and self.max_thinking is not None:  # a several-token </think>: the engine's
            params = dataclasses.replace(params, max_thinking_tokens=self.max_thinking,  # budget matches it
                                         thinking_end=self.thinking_end or THINK_END)
        elif self.max_thinking is not None or self.num_ignore:
            forced = budget_forcer(self.think_end_id, self.wait_ids, self.max_thinking, 0, self.num_ignore,
                                   self.close_ids)
        seed = None if self.seed is None else self.seed + self.turns
        batch = EngineBatch(self.engine)
        batch.add(ids, params, forced, seed)
        out = CompletionText(self.engine.tokenizer, params.stop, opened=opens_thinking(self.engine.tokenizer, ids))
        while batch:
            for ev in batch.step():
                on_delta(*out.push([ev]))
        if out.completion.finish_reason == "error":  # the engine ended this row alone; the turn is not kept
            raise RuntimeError(f"generation failed: {out.completion.error}")
        self.turns += 1
        self.history += [{"role": "user", "content": user},
                         {"role": "assistant", "content": out.content, "reasoning_content": out.reasoning}]
        return out.reasoning, out.content

    def reset(self) -> None:
        self.history = []
