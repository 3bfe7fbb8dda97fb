"""The R1 completion format, defined once: its tags, how a completion is written, and the one rule that reads it.

    reasoning</think> <answer>answer</answer>        (an optional leading "<think>"; prompts end with "<think>")

The rule, used by every verifier, the server and `r1lab chat`, so that a user sees the split the reward saw:

- reasoning: the text before the first </think>, exactly; all of it when there is no </think> (a completion cut
  off while thinking).
- answer:    taken only from after the first </think>: the last complete <answer>X</answer> there (X holding no
  answer tag), stripped. None when there is no such block or no </think>. An <answer> inside the reasoning is not
  an answer: it is part of the thinking.
- content:   what a user is shown as the reply: the text after the first </think> with every <answer> and
  </answer> removed, stripped ("" without a </think>). For a well-formed completion it equals the answer.
- format_ok: after an optional leading <think>, a reasoning free of tags, exactly one </think>, then exactly one
  <answer>...</answer> block (free of tags) with nothing but whitespace around it.

    >>> parse_completion("3+4=7</think> <answer>7</answer>")
    Parsed(reasoning='3+4=7', answer='7', content='7', format_ok=True, closed=True)
    >>> parse_completion("I guess <answer>7</answer>").answer is None     # no </think>: still thinking
    True

StreamSplitter applies the same rule to text that arrives in pieces (the server's and the chat's streams); its
deltas add up to exactly what parse_completion() gives for the whole text. Model output is hostile input: nothing
here is evaluated, every step is linear in the length, and verifiers read at most MAX_COMPLETION_CHARS characters.
"""
from __future__ import annotations

import re
from typing import NamedTuple

THINK_START, THINK_END = "<think>", "</think>"
ANSWER_START, ANSWER_END = "<answer>", "</answer>"
TAGS = (THINK_START, THINK_END, ANSWER_START, ANSWER_END)
# Verifiers cut longer completions to this before any parsing. Reasoning models write 32K-tokens answers (R1's
# evaluation budget), ~130K characters; a bound below that loses the answer, which comes last. Every rule is linear:
# a hostile completion of this size costs a verifier under 0.1 s (session 21).
MAX_COMPLETION_CHARS = 500_000

R1_SYSTEM = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    f"answer. The reasoning process and answer are enclosed within {THINK_START} {THINK_END} and {ANSWER_START} "
    f"{ANSWER_END} tags, respectively, i.e., {THINK_START} reasoning process here {THINK_END} {ANSWER_START} answer "
    f"here {ANSWER_END}."
)

_ANSWER_TAG = re.compile(re.escape(ANSWER_START) + "|" + re.escape(ANSWER_END))


def check_thinking_budget(max_thinking_tokens: int | None, thinking_end: str,
                          names: tuple[str, str] = ("max_thinking_tokens", "thinking_end")) -> None:
    """ValueError for a bad thinking budget: a count below 0 (None: no budget), or a closing text that does not end
    with THINK_END. names: what the caller calls the two (SamplingParams' fields, the commands' flags)."""
    if max_thinking_tokens is not None and max_thinking_tokens < 0:
        raise ValueError(f"{names[0]} must be at least 0, got {max_thinking_tokens}")
    if not thinking_end.endswith(THINK_END):
        raise ValueError(f"{names[1]} must end with {THINK_END}, got {thinking_end!r}")


def render_completion(reasoning: str, answer: str) -> str:
    """A well-formed completion, as the corpus writes it and the chat template renders an assistant turn.

    >>> render_completion("3+4=7", "7")
    '3+4=7</think> <answer>7</answer>'
    """
    return f"{reasoning}{THINK_END} {ANSWER_START}{answer}{ANSWER_END}"


class Parsed(NamedTuple):
    """A completion as the rule in the module docstring reads it."""
    reasoning: str
    answer: str | None
    content: str
    format_ok: bool
    closed: bool  # whether a </think> ended the reasoning


def clip(completion, limit: int | None = MAX_COMPLETION_CHARS) -> str:
    """Untrusted input to a bounded str: non-str becomes "", longer strings are cut to `limit` characters."""
    if not isinstance(completion, str):
        return ""
    return completion if limit is None else completion[:limit]


def last_answer(text: str) -> str | None:
    """The last <answer>X</answer> in `text` with no answer tag inside X, stripped; None if there is none.

    >>> last_answer("<answer>1</answer> <answer>2</answer> <answer>3")
    '2'
    """
    answer, open_end = None, -1  # open_end: where the body of the last unclosed <answer> starts
    for m in _ANSWER_TAG.finditer(text):
        if m.group() == ANSWER_START:
            open_end = m.end()
        else:
            if open_end >= 0:
                answer = text[open_end:m.start()]
            open_end = -1
    return None if answer is None else answer.strip()


def _has_tag(text: str) -> bool:
    return any(tag in text for tag in TAGS)


def parse_completion(completion, limit: int | None = MAX_COMPLETION_CHARS) -> Parsed:
    """(reasoning, answer, content, format_ok, closed) of a completion, by the rule in the module docstring.

    Verifiers keep the default limit (hostile input is bounded); the server passes limit=None to split a whole reply.
    """
    text = clip(completion, limit)
    end = text.find(THINK_END)
    if end < 0:
        return Parsed(text, None, "", False, False)
    reasoning, after = text[:end], text[end + len(THINK_END):]
    thought = reasoning.lstrip().removeprefix(THINK_START)
    reply = after.strip()
    inner = reply[len(ANSWER_START):len(reply) - len(ANSWER_END)]
    format_ok = (not _has_tag(thought) and reply.startswith(ANSWER_START) and reply.endswith(ANSWER_END)
                 and len(reply) >= len(ANSWER_START) + len(ANSWER_END) and not _has_tag(inner))
    return Parsed(reasoning, last_answer(after), _ANSWER_TAG.sub("", after).strip(), format_ok, True)


def held_suffix(text: str, patterns) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some pattern (could still grow into it).

    >>> held_suffix("2+2</thi", ["</think>"])
    5
    """
    best = 0
    for p in patterns:
        for n in range(min(len(p) - 1, len(text)), best, -1):
            if text.endswith(p[:n]):
                best = n
                break
    return best


class StreamSplitter:
    """parse_completion()'s reasoning and content for text arriving in pieces: push(piece) and finish() return
    (reasoning, content) deltas that add up to those of parse_completion(whole text, limit=None).

    Text that a later piece could still change is held back: a partial "</think>" at the end of the reasoning, a
    partial answer tag or trailing whitespace in the content.
    """

    def __init__(self):
        self.thinking = True
        self.buf = ""
        self.started = False  # some content has been emitted (leading whitespace is stripped until then)

    def push(self, text: str) -> tuple[str, str]:
        self.buf += text
        reasoning = ""
        if self.thinking:
            i = self.buf.find(THINK_END)
            if i < 0:
                n = len(self.buf) - held_suffix(self.buf, [THINK_END])
                reasoning, self.buf = self.buf[:n], self.buf[n:]
                return reasoning, ""
            reasoning, self.buf, self.thinking = self.buf[:i], self.buf[i + len(THINK_END):], False
        return reasoning, self._content(final=False)

    def finish(self) -> tuple[str, str]:
        if self.thinking:  # never closed its thinking (length, a stop string): everything was reasoning
            reasoning, self.buf = self.buf, ""
            return reasoning, ""
        return "", self._content(final=True)

    def _content(self, final: bool) -> str:
        # subtle: tags are removed in one left-to-right pass, as _ANSWER_TAG.sub does on the whole text; text that
        # was emitted is never scanned again, so "<ans" + "<answer>wer>" stays "<answer>" in both.
        n = len(self.buf) if final else len(self.buf) - held_suffix(self.buf, (ANSWER_START, ANSWER_END))
        ready, self.buf = _ANSWER_TAG.sub("", self.buf[:n]), self.buf[n:]
        if not self.started:
            ready = ready.lstrip()
        out = ready.rstrip()  # subtle: trailing whitespace waits; more content may follow it
        self.buf = ("" if final else ready[len(out):]) + self.buf
        self.started = self.started or bool(out)
        return out
