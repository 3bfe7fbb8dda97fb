"""Forced-token hooks that shape the thinking: s1 budget forcing (Muennighoff et al. 2025), for completions that
start inside <think>, and the thinking budget that SamplingParams.max_thinking_tokens asks of the engine.

The engine calls a hook after every sampled token with the row's token ids (the new one last); the hook may append
tokens or replace the new one (engine.Force). budget_forcer serves the server and `r1lab chat`; thinking_budget is
built by the engine for every request with a thinking budget (RL rollouts, evaluation).
"""
from __future__ import annotations

from r1lab.engine.engine import Force, ForceFn


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


def thinking_budget(end_ids: list[int], close_ids: list[int], max_thinking: int,
                    start_ids: list[int] | None = None) -> ForceFn:
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
    start = 0 if start_ids is None else None  # index of the first thinking token, None until the thinking starts
    done = False

    def hook(ids: list[int]) -> Force | None:
        nonlocal start, done
        if done:
            return None
        if start is None:
            if ids[-len(start_ids):] == start_ids:
                start = len(ids)
            return None
        if ids[-len(end_ids):] == end_ids:  # the model ended its thinking itself
            done = True
            return None
        if len(ids) - 1 - start >= max_thinking:  # the just-sampled token would be thinking token max_thinking + 1
            done = True
            return Force(list(close_ids), replace=True)
        return None
    return hook
