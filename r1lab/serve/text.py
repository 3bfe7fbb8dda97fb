"""Pure text helpers shared by the server and `r1lab chat`: streaming detokenisation, the reasoning/content split
(s1 budget forcing lives in r1lab.engine.forcing). No torch, no FastAPI.

The chat template's generation prompt ends with "Assistant: <think>", so a completion starts inside the thinking:

    "3+4 is 7</think> <answer>7</answer>"  ->  reasoning_content "3+4 is 7", content "7"

The split is r1lab.tasks.format's rule, the one the rewards use, so a user sees the reasoning and answer the
reward saw. Content loses its <answer> tags and outer whitespace: DeepSeek's API returns the bare final answer as
content, and our chat template puts the tags back when an assistant message (with its reasoning_content) is sent
as history.
"""
from __future__ import annotations

from r1lab.tasks.format import THINK_END, THINK_START, StreamSplitter, held_suffix, parse_completion

WAIT = "Wait"  # what s1 appends when it suppresses the end of thinking


def think_end_token(tokenizer) -> int | None:
    """The id of </think> when the tokenizer has it as one token; None where it spells it in several (Qwen2.5,
    Llama 3: convert_tokens_to_ids gives their unk, or None)."""
    end = tokenizer.convert_tokens_to_ids(THINK_END)
    return end if isinstance(end, int) and end != tokenizer.unk_token_id else None


class TextStream:
    """Token ids in, text deltas out, for one completion.

    Holds back text that a later token could still change: a trailing U+FFFD (half of a UTF-8 character) and any
    suffix that could grow into a stop string, so that the deltas always add up to a prefix of the engine's final
    Completion.text, which is cut before the stop string. Decodes with skip_special_tokens=True, as the engine does.
    Incremental as in vLLM: each step decodes only the tokens since the last step plus the step before as context
    (a SentencePiece tokenizer drops the leading space of the first token it decodes), not the whole completion.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer, self.stop = tokenizer, list(stop)
        self.token_ids: list[int] = []
        self.context = self.read = 0  # token offsets: ids[context:read] were decoded, ids[read:] are new
        self.text = self.sent = ""

    def push(self, token_ids: list[int]) -> str:
        self.token_ids += token_ids
        decode = self.tokenizer.decode
        before = decode(self.token_ids[self.context:self.read], skip_special_tokens=True)
        now = decode(self.token_ids[self.context:], skip_special_tokens=True)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            self.text += now[len(before):]
            self.context, self.read = self.read, len(self.token_ids)
        n = len(self.text) - held_suffix(self.text, self.stop)
        if n <= len(self.sent):
            return ""
        delta, self.sent = self.text[len(self.sent):n], self.text[:n]
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of the engine's final text (Completion.text)."""
        delta = final_text[len(self.sent):] if final_text.startswith(self.sent) else ""
        self.sent = final_text
        return delta


class CompletionText:
    """One completion's engine events turned into text: (reasoning, content) deltas, or ("", text) with split=False
    (/v1/completions); the totals accumulate in .reasoning and .content.

    A chat reply (split=True) is split at </think> when its prompt opened <think> (`opened`, opens_thinking) or the
    reply opens one itself (a Qwen3-style model, or one RL taught to write the tags after an Instruct template);
    else it is all content. A leading <think> is dropped, never part of the reasoning, as in vLLM's reasoning
    parsers: the reply's first characters are held until they show whether it begins with one.

    The server and `r1lab chat` both use it, so a streamed reply always adds up to the non-streamed one.
    """

    def __init__(self, tokenizer, stop: list[str], split: bool = True, opened: bool = True):
        self.text = TextStream(tokenizer, stop)
        self.opened = opened
        self.head: str | None = "" if split else None  # the reply's start while it may still open <think>
        self.splitter: StreamSplitter | None = None  # once the reply is known to think
        self.reasoning = self.content = ""
        self.completion = None  # the engine's Completion once finished

    def push(self, events) -> tuple[str, str]:
        """Deltas (reasoning, content) for one or more of this completion's Events."""
        self.completion = events[-1].completion
        if self.completion is None:
            delta = self.text.push([e.token_id for e in events])
        else:  # subtle: not push(): the last token may complete a stop string, which the final text cuts off
            delta = self.text.finish(self.completion.text)
        if self.head is not None:
            delta = self._start(self.head + delta, final=self.completion is not None)
        r, c = self.splitter.push(delta) if self.splitter else ("", delta)
        if self.splitter and self.completion is not None:
            r2, c2 = self.splitter.finish()
            r, c = r + r2, c + c2
        self.reasoning, self.content = self.reasoning + r, self.content + c
        return r, c

    def _start(self, text: str, final: bool) -> str:
        """The reply's text so far while undecided: "" (held) while it could still begin with <think>; then the text
        to split or show, the splitter made when the reply thinks."""
        head = text.lstrip()
        if not final and THINK_START.startswith(head):  # "", "<", "<th", ...: wait for more
            self.head = text
            return ""
        self.head = None
        own = head.startswith(THINK_START)
        if own or self.opened:
            self.splitter = StreamSplitter()
        return head[len(THINK_START):] if own else text


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning_content, content) of a whole completion; CompletionText's streamed deltas add up to it.

    >>> split_reasoning("3+4 is 7</think> <answer>7</answer>")
    ('3+4 is 7', '7')
    """
    parsed = parse_completion(text, limit=None)
    return parsed.reasoning, parsed.content


def opens_thinking(tokenizer, prompt_ids: list[int]) -> bool:
    """Whether a rendered chat prompt leaves the model inside <think> (r1lab's template, DeepSeek-R1-Distill's: its
    reply starts with reasoning), judged by its last tag. An Instruct template that opens none (Qwen2.5, Llama 3)
    gets its whole reply as content, as vLLM gives it without a reasoning parser.

    A prompt ending "Assistant: <think>" (or "<think>\n") opens it; one ending "<|im_start|>assistant\n" does not.
    """
    tail = tokenizer.decode(prompt_ids[-64:], skip_special_tokens=False)
    return tail.rfind(THINK_START) > tail.rfind(THINK_END)


def reasoning_tokens(token_ids: list[int], think_end_id: int | None) -> int:
    """Tokens before the first </think> (all of them when thinking never ended); the tag itself is not counted."""
    if think_end_id is not None and think_end_id in token_ids:
        return token_ids.index(think_end_id)
    return len(token_ids)


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat template with its generation prompt (ending inside <think> for r1lab's template).

    Messages are {"role": "system" | "user" | "assistant", "content": str}, an assistant's optionally with
    "reasoning_content"; the template renders that as <think>reasoning</think> <answer>content</answer>.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
