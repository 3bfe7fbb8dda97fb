"""Forced-token hooks that shape the thinking: s1 budget forcing (Muennighoff et al. 2025), for completions that
start inside <think>, and the thinking budget that SamplingParams.max_thinking_tokens asks of the engine.

The engine calls a hook after every sampled token with the row's token ids (the new one last); the hook may append
tokens or replace the new one (engine.Force). budget_forcer serves the server and `r1lab chat`; thinking_budget is
built by the engine for every request with a thinking budget (RL rollouts, evaluation).
"""
from __future__ import annotations

from typing import Callable

from r1lab.engine.engine import Force, ForceFn, SamplingParams
from r1lab.tasks.format import THINK_END, THINK_START


def budget_forcer(think_end_id: int, wait_ids: list[int] | None = None, max_thinking: int | None = None,
                  min_thinking: int = 0, num_ignore: int = 0, close_ids: list[int] | None = None) -> ForceFn:
    """A hook that bounds and stretches the thinking.

    - max_thinking: after this many thinking tokens, force </think> in place of the next token (s1's maximum), or
      `close_ids`, a closing text that ends with it (the "give up" lines thinking_budget forces).
    - min_thinking: while fewer tokens than this were thought, replace the model's </think> by `wait_ids` ("Wait").
    - num_ignore: after that, replace its </think> by "Wait" this many more times (s1's "ignore the end of
      thinking N times", the knob of their test-time scaling).
    "Wait" is only forced when it fits in max_thinking, so the thinking never exceeds max_thinking tokens (plus a
    closing text's words before its </think>). Forced tokens count as thinking and toward max_new_tokens. One hook
    per completion: it counts the ignores.

    >>> hook = budget_forcer(9, wait_ids=[7], max_thinking=3)
    >>> hook([1, 2, 3, 4]), hook([1, 9])
    (Force(ids=[9], replace=True), None)
    """
    if close_ids is not None and (not close_ids or close_ids[-1] != think_end_id):
        raise ValueError("budget_forcer: close_ids must end with the think-end token")
    close = list(close_ids or [think_end_id])
    ignored = 0

    def hook(ids: list[int]) -> Force | None:
        nonlocal ignored
        if think_end_id in ids[:-1]:
            return None  # thinking is over: never interfere
        thought = len(ids) - 1  # tokens before the one just sampled
        if ids[-1] != think_end_id:
            return Force(list(close), replace=True) if max_thinking is not None and thought >= max_thinking else None
        if not wait_ids or (max_thinking is not None and thought + len(wait_ids) > max_thinking):
            return None  # no "Wait" to force, or no room left to keep thinking: let it end
        if thought < min_thinking:
            return Force(list(wait_ids), replace=True)
        if ignored < num_ignore:
            ignored += 1
            return Force(list(wait_ids), replace=True)
        return None
    return hook


def request_budget(tokenizer, prompt_ids: list[int], params: SamplingParams,
                   encode: Callable[[str], list[int]] | None = None) -> ThinkingBudget:
    """The thinking budget (params.max_thinking_tokens, closed by params.thinking_end) of one request: its thinking
    starts with the completion when the prompt ends inside <think>, else when the completion writes <think>.
    encode(text) -> token ids without special tokens (default: the tokenizer's)."""
    encode = encode or (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"])
    prompt = tokenizer.decode(prompt_ids)  # special tokens kept: they may be the markers
    inside = prompt.rfind(THINK_START) > prompt.rfind(THINK_END)  # the prompt opens the thinking itself
    return thinking_budget(encode(THINK_END), encode(params.thinking_end), params.max_thinking_tokens,
                           None if inside else encode(THINK_START))


def thinking_budget(end_ids: list[int], close_ids: list[int], max_thinking: int,
                    start_ids: list[int] | None = None) -> ThinkingBudget:
    """A hook that ends the thinking after `max_thinking` tokens by forcing `close_ids` (a thinking budget).

    The budget's closing text is forced in place of the token sampled when the row has thought max_thinking tokens
    without writing `end_ids` (the think-end marker's token ids) itself, so the closing text is how the thinking
    ends: "</think>" alone (vLLM's and llama.cpp's default), or a phrase in the model's own words before it (Qwen3
    forces "Considering the limited time ...</think>"; the countdown corpus's idiom is "give up"). The model then
    writes its answer. The thinking starts with the completion (a prompt that ends inside <think>), or, given
    `start_ids` (the think-start marker's ids), once the completion writes them: a row that never thinks is never
    cut. One hook per completion (it remembers where the thinking started and whether it ended).

    >>> hook = thinking_budget([9], [5, 9], max_thinking=2)
    >>> hook([1]), hook([1, 2]), hook([1, 2, 3])
    (None, None, Force(ids=[5, 9], replace=True))
    """
    if max_thinking < 0 or not end_ids or not close_ids or start_ids == []:
        raise ValueError("a thinking budget needs max_thinking >= 0, the think-end marker's ids and closing ids")
    return ThinkingBudget(list(end_ids), list(close_ids), max_thinking, None if start_ids is None else list(start_ids))


class ThinkingBudget:
    """thinking_budget's hook: called with the row's token ids after every sampled token (the new one last).

    `room()` says how many more tokens a sampler may draw before the hook can fire, for a sampler that runs ahead
    of it (the vLLM backend samples a row in runs and feeds each run's tokens through the hook afterwards)."""

    def __init__(self, end_ids: list[int], close_ids: list[int], max_thinking: int, start_ids: list[int] | None):
        self.end_ids, self.close_ids, self.max_thinking, self.start_ids = end_ids, close_ids, max_thinking, start_ids
        self.start = 0 if start_ids is None else None  # index of the first thinking token, None until it starts
        self.done = False  # the thinking ended (by the model or forced): never interfere again
        self.seen = 0  # tokens of the completion the hook has been shown

    def __call__(self, ids: list[int]) -> Force | None:
        self.seen = len(ids)
        if self.done:
            return None
        if self.start is None:
            if ids[-len(self.start_ids):] == self.start_ids:
                self.start = len(ids)
            return None
        if ids[-len(self.end_ids):] == self.end_ids:  # the model ended its thinking itself
            self.done = True
            return None
        if len(ids) - 1 - self.start >= self.max_thinking:  # the just-sampled token would be thinking token N + 1
            self.done = True
            return Force(list(self.close_ids), replace=True)
        return None

    def room(self) -> int | None:
        """Tokens that may be sampled after the `seen` ones with the hook firing at most on the last of them: None
        while the thinking has not started (the start marker decides) or is over; else the thinking tokens left,
        plus the one it would replace.

        >>> hook = thinking_budget([9], [5, 9], max_thinking=3)
        >>> hook.room(), hook([1]), hook.room()
        (4, None, 3)
        """
        if self.done or self.start is None:
            return None
        return max(0, self.max_thinking - (self.seen - self.start)) + 1
