"""What a teacher's chat replies become (`r1lab distill --teacher-url`): the pure rules that read a reply into an r1lab
completion, and what a run keeps of its replies (token usage, cost, thinking past a budget, request seeds, the
settings that make a journal this run's). The client that fetches the replies is r1lab/evaluation/teacher.py.

    reply = parse_reply(body)     # a chat completion's JSON body -> Reply; BadReply for anything else
    completion = rebuild(reply)   # "reasoning</think> <answer>answer</answer>": what the verifier scores, sft trains

A reply is read by one rule (split_reply, rebuild):
- reasoning: `reasoning_content` (DeepSeek's API, r1lab serve), else `reasoning` (recent vLLM), else the text before
  </think> in `content` (a server without a reasoning parser; a leading <think> dropped); "" when there is none.
  Without a parser, a reply cut off by max_tokens (finish_reason "length") before any </think> is all reasoning,
  <answer> drafts included: the chat template opened <think> (R1's and r1lab's do) and the teacher never closed it,
  as the task's verifier reads the same text from a local teacher.
- answer: from `content` (what follows that </think> when inline): the last complete <answer>X</answer> when there is
  one (vLLM keeps the tags), else the whole content without answer tags, stripped (DeepSeek and r1lab serve send the
  bare answer).
- completion: render_completion(reasoning, answer), tasks/format.py's one format, so a student learns exactly the
  format its rewards check. With no answer (empty content: the teacher ran out of tokens while thinking) it is the
  reasoning alone, which every verifier reads as a completion cut off while thinking: wrong.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from r1lab.jsonl import parse_line
from r1lab.tasks.common import TEMPLATES
from r1lab.tasks.format import THINK_END, THINK_START, parse_completion, render_completion

GOLDEN = 0x9E3779B97F4A7C15  # r1lab.engine.engine.GOLDEN, the engine's row-seed rule (not imported: it pulls torch)
USAGE = ("prompt", "completion", "reasoning")  # token counts kept per reply; reasoning is part of completion


class BadReply(ValueError):
    """A 2xx reply that is not a chat completion r1lab can read."""


@dataclass(frozen=True)
class Reply:
    """One chat completion as the server sent it."""
    reasoning: str | None  # reasoning_content, else reasoning; None when the server sent neither
    content: str  # "" for null
    finish_reason: str | None
    usage: dict  # {"prompt", "completion", "reasoning"}: token counts, 0 where the server reported none


def split_reply(reasoning: str | None, content: str, cut: bool = False) -> tuple[str, str]:
    """(reasoning, answer) of a reply by the rule in the module docstring; answer "" when there is none. cut: the
    reply ended at max_tokens.

    >>> split_reply("3+4=7", "7"), split_reply("3+4=7", "<answer> 7 </answer>")       # DeepSeek; vLLM
    (('3+4=7', '7'), ('3+4=7', '7'))
    >>> split_reply(None, "<think>3+4=7</think> <answer>7</answer>"), split_reply(None, "<think>3+4")  # inline
    (('3+4=7', '7'), ('3+4', ''))
    >>> split_reply(None, "3+4=7, 7-2", cut=True), split_reply(None, "7", cut=False)  # the template opened <think>
    (('3+4=7, 7-2', ''), ('', '7'))
    """
    if not reasoning:
        head, closed, rest = content.partition(THINK_END)
        lead = head.lstrip()
        if closed or lead.startswith(THINK_START) or cut:  # inline thinking; unclosed: cut off while thinking
            reasoning = lead[len(THINK_START):] if lead.startswith(THINK_START) else head
            content = rest
    # subtle: tasks/format.py's answer rule, applied to the content alone (parse_completion reads after </think>)
    parsed = parse_completion(THINK_END + content, limit=None)
    return reasoning or "", parsed.answer if parsed.answer is not None else parsed.content


def rebuild(reply: Reply) -> str:
    """The completion in r1lab's format: rebuild(Reply("3+4=7", "7", "stop", {})) == "3+4=7</think> <answer>7</answer>"
    """
    reasoning, answer = split_reply(reply.reasoning, reply.content, cut=reply.finish_reason == "length")
    return render_completion(reasoning, answer) if answer else reasoning


def _count(usage: dict, name: str) -> int:
    value = usage.get(name)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise BadReply(f"usage.{name} is {str(value)[:40]!r}, not a count")
    return value


def parse_usage(usage) -> dict:
    """{"prompt", "completion", "reasoning"} from an OpenAI usage object; 0 for a count the server did not send.

    >>> parse_usage({"prompt_tokens": 9, "completion_tokens": 5, "completion_tokens_details": {"reasoning_tokens": 3}})
    {'prompt': 9, 'completion': 5, 'reasoning': 3}
    """
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("completion_tokens_details")
    details = details if isinstance(details, dict) else {}
    return {"prompt": _count(usage, "prompt_tokens"), "completion": _count(usage, "completion_tokens"),
            "reasoning": _count(details, "reasoning_tokens")}


def parse_reply(body: bytes) -> Reply:
    """The Reply in a chat completion's JSON body; BadReply, never another exception, for anything else."""
    obj, problem = parse_line(body)  # bounded like every JSON line r1lab reads: no traceback on hostile input
    if problem:
        raise BadReply(f"not a JSON object: {problem}")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadReply(f"no choices: {error_text(body)}" if "error" in obj else "no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise BadReply("choices[0] has no message")
    content, reasoning = message.get("content"), message.get("reasoning_content")
    if reasoning is None:
        reasoning = message.get("reasoning")
    for name, value in (("content", content), ("reasoning", reasoning)):
        if value is not None and not isinstance(value, str):
            raise BadReply(f"message.{name} is a {type(value).__name__}, not a string")
    finish = choices[0].get("finish_reason")
    return Reply(reasoning, content or "", finish if isinstance(finish, str) else None, parse_usage(obj.get("usage")))


def models_template(body: bytes, model: str) -> str | None:
    """The prompt template a GET /models reply says `model` was trained on (`r1lab_template`, which r1lab serve
    sends for a checkpoint r1lab wrote), else None: other servers, other models, anything unreadable.

    >>> models_template(b'{"data": [{"id": "t", "r1lab_template": "short"}]}', "t"), models_template(b"[]", "t")
    ('short', None)
    """
    obj, problem = parse_line(body)
    cards = obj.get("data") if problem is None else None
    for card in cards if isinstance(cards, list) else []:
        if isinstance(card, dict) and card.get("id") == model:
            template = card.get("r1lab_template")
            return template if template in TEMPLATES else None
    return None


def error_text(body: bytes, limit: int = 300) -> str:
    """What an error reply says: OpenAI's error.message when there is one, else the body's text, on one line.

    >>> error_text(b'{"error": {"message": "Invalid model"}}'), error_text(b"Bad Gateway")
    ('Invalid model', 'Bad Gateway')
    """
    obj, _ = parse_line(body)
    text = None
    if obj is not None:
        err = obj.get("error")
        text = err.get("message") if isinstance(err, dict) else err
        text = text if isinstance(text, str) else obj.get("message", obj.get("detail"))
    if not isinstance(text, str):
        text = body[:4 * limit].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return (text[:limit] + "...") if len(text) > limit else text or "(no body)"


def request_seed(seed: int, row: int) -> int:
    """The seed of row p*K + j (problem p, sample j), by the engine's rule for the rows of one generate() call.

    >>> request_seed(0, 0), request_seed(5, 0), request_seed(0, 1) == GOLDEN % 2 ** 63
    (0, 5, True)
    """
    return (seed + row * GOLDEN) % 2 ** 63


def fingerprint(settings: dict) -> str:
    """A short hash of a run's settings, JSON with sorted keys.

    >>> fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    True
    """
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_settings(url: str, model: str, task: str, examples: list[dict], messages: list[list[dict]], samples: int,
                 params: dict, seed: int) -> dict:
    """What makes a journal's replies this run's: the teacher, the exact requests (the problems and the messages,
    hashed) and the sampling. Not the API key, the selection flags, --template or the client's settings."""
    problems = json.dumps([examples, messages], sort_keys=True, default=str)
    return {"url": url, "model": model, "task": task, "problems": len(examples),
            "requests_sha256": hashlib.sha256(problems.encode()).hexdigest(), "samples": samples, **params,
            "seed": seed}


def add_usage(usages) -> dict:
    """The sum of usage dicts: add_usage([{"prompt": 1, "completion": 2, "reasoning": 0}] * 2)["completion"] == 4"""
    total = dict.fromkeys(USAGE, 0)
    for u in usages:
        for k in USAGE:
            total[k] += u[k]
    return total


UNSEEN_TOKENS = 16  # completion tokens a server may send in neither text: </think>, whitespace it strips, EOS


def thought_tokens(reply: Reply) -> int:
    """Reasoning tokens of a reply: the server's count, or where it reports none (vLLM), a floor: its completion
    tokens not spent on the content (at most one token per byte) nor on UNSEEN_TOKENS; 0 for inline thinking.

    thought_tokens(Reply("r" * 40, "<answer>7</answer>", "stop", {"completion": 60, "reasoning": 0})) == 26
    """
    if reply.usage["reasoning"]:
        return reply.usage["reasoning"]
    return max(reply.usage["completion"] - len(reply.content.encode()) - UNSEEN_TOKENS, 0)


def over_budget(replies, max_thinking_tokens: int, thinking_end: str) -> list[int]:
    """thought_tokens of the replies that exceed a thinking budget the server was asked for: N plus the closing text
    (at most one token per byte), so a server that honours the budget never shows here.
    over_budget([Reply("r", "7", "stop", {"completion": 40, "reasoning": 30})], 1, "</think>") == [30]
    """
    bound = max_thinking_tokens + len(thinking_end.encode())
    return [t for t in map(thought_tokens, replies) if t > bound]


def cost(usage: dict, price_in: float, price_out: float) -> float:
    """Dollars for `usage` at prices per million input and output tokens (reasoning is output, and already counted
    in completion tokens). cost({"prompt": 10**6, "completion": 2 * 10**6, "reasoning": 0}, 0.5, 2.0) == 4.5"""
    return (usage["prompt"] * price_in + usage["completion"] * price_out) / 1e6


def score_replies(task, examples: list[dict], prompts: list[str], replies: dict, samples: int):
    """(scored Samples in problem-major order, {id(sample): usage}) for every (problem, sample) reply, each rebuilt
    into r1lab's format and scored by the task's verifier as evaluation scores completions."""
    from r1lab.evaluation.evaluate import score_sample

    out, usage = [], {}
    for p, example in enumerate(examples):
        for j in range(samples):
            reply = replies[p, j]
            s = score_sample(task, example, p, prompts[p], rebuild(reply), reply.usage["completion"],
                             reply.finish_reason or "")
            out.append(s)
            usage[id(s)] = reply.usage  # subtle: by identity; the samples live as long as the dict is used
    return out, usage
