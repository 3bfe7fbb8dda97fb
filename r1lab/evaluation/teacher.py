"""Distillation from a teacher behind an OpenAI-compatible chat API (`r1lab distill --teacher-url`): the client and the
pure rules that turn a reply into an r1lab completion.

    teacher = Teacher("https://api.deepseek.com", "deepseek-reasoner", api_key=os.environ.get("OPENAI_API_KEY"))
    reply = teacher.chat(task.messages(example), {"temperature": 0.6, "max_tokens": 32768}, seed=0)
    completion = rebuild(reply)   # "reasoning</think> <answer>answer</answer>": what the verifier scores, sft trains

The URL is the API's base URL as the openai client takes it (`base_url`): requests go to URL + "/chat/completions",
so it usually ends in /v1 (http://127.0.0.1:8000/v1 for `r1lab serve` and vLLM; https://api.deepseek.com for
DeepSeek, which also answers under /v1). One request per (problem, sample): the task's chat messages
(task.messages(example, template): the R1 system prompt then the question, or the short question alone) with model,
temperature, top_p, max_tokens, n=1 and the seed request_seed(seed, row) (servers that honour seeds, r1lab serve and
vLLM, reproduce).

A reply is read by one rule (split_reply, rebuild):
- reasoning: `reasoning_content` (DeepSeek's API, r1lab serve), else `reasoning` (recent vLLM), else the text before
  </think> in `content` (a server without a reasoning parser; a leading <think> dropped); "" when there is none.
  Without a parser, a reply cut off by max_tokens (finish_reason "length") before any </think> or <answer> is all
  reasoning: the chat template opened <think> (R1's and r1lab's do) and the teacher never closed it.
- answer: from `content` (what follows that </think> when inline): the last complete <answer>X</answer> when there is
  one (vLLM keeps the tags), else the whole content without answer tags, stripped (DeepSeek and r1lab serve send the
  bare answer).
- completion: render_completion(reasoning, answer), tasks/format.py's one format, so a student learns exactly the
  format its rewards check. With no answer (empty content: the teacher ran out of tokens while thinking) it is the
  reasoning alone, which every verifier reads as a completion cut off while thinking: wrong.

Retries (Teacher.chat): HTTP 408, 409, 429 and 5xx, connection errors, timeouts and malformed replies are retried,
at most max_retries times, after backoff_delay(); any other status (400, 401, 403, 404...) is a TeacherError at once.
The API key goes out as `Authorization: Bearer KEY` and nowhere else: it is not part of the journal's settings, and
an error message that a server echoes it into has it replaced by "***".

The journal that makes a run resumable is r1lab/evaluation/journal.py.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import math
import random
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from r1lab.jsonl import parse_line
from r1lab.tasks.common import TEMPLATES
from r1lab.tasks.format import ANSWER_START, THINK_END, THINK_START, parse_completion, render_completion

MAX_BACKOFF = 60.0  # seconds: the longest wait between two attempts, a server's Retry-After included
MAX_REPLY_BYTES = 64 * 2 ** 20
RETRIED = (408, 409, 429)  # and every 5xx: what the openai client retries
GOLDEN = 0x9E3779B97F4A7C15  # r1lab.engine.engine.GOLDEN, the engine's row-seed rule (not imported: it pulls torch)
USAGE = ("prompt", "completion", "reasoning")  # token counts kept per reply; reasoning is part of completion


class TeacherError(Exception):
    """A request the teacher will not answer: a status that is not retried, or the retries spent."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class BadReply(ValueError):
    """A 2xx reply that is not a chat completion r1lab can read."""


@dataclass(frozen=True)
class Reply:
    """One chat completion as the server sent it."""
    reasoning: str | None  # reasoning_content, else reasoning; None when the server sent neither
    content: str  # "" for null
    finish_reason: str | None
    usage: dict  # {"prompt", "completion", "reasoning"}: token counts, 0 where the server reported none


# --- pure rules ---------------------------------------------------------------------------------------------------

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
        opened = cut and ANSWER_START not in content  # cut off in a <think> the chat template opened
        if closed or lead.startswith(THINK_START) or opened:  # inline thinking; unclosed: cut off while thinking
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


def backoff_delay(attempt: int, base: float, retry_after: float | None = None, jitter: float = 0.5) -> float:
    """Seconds before attempt+1 (attempt 0 failed first): base * 2**attempt times a factor 0.5 + jitter, jitter drawn
    in [0, 1); at least the server's Retry-After; at most MAX_BACKOFF.

    >>> backoff_delay(3, 1.0), backoff_delay(3, 1.0, jitter=0.0), backoff_delay(0, 0.01, 2.0), backoff_delay(9, 1.0)
    (8.0, 4.0, 2.0, 60.0)
    """
    delay = base * 2.0 ** min(attempt, 64) * (0.5 + jitter)
    return min(MAX_BACKOFF, max(delay, retry_after or 0.0))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date; None when absent or unreadable.

    >>> parse_retry_after("2"), parse_retry_after("soon"), parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    (2.0, None, 6.0)
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def request_seed(seed: int, row: int) -> int:
    """The seed of row p*K + j (problem p, sample j), by the engine's rule for the rows of one generate() call.

    >>> request_seed(0, 0), request_seed(5, 0), request_seed(0, 1) == GOLDEN % 2 ** 63
    (0, 5, True)
    """
    return (seed + row * GOLDEN) % 2 ** 63


def endpoint(url: str) -> str:
    """URL + "/chat/completions", the openai client's base_url rule; ValueError for anything but http(s)://HOST...
    without credentials or a query (a key belongs in the environment, and the URL is written to the journal).

    >>> endpoint("http://127.0.0.1:8000/v1/")
    'http://127.0.0.1:8000/v1/chat/completions'
    """
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as e:
        raise ValueError(f"--teacher-url {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--teacher-url {url!r}: expected http(s)://HOST[:PORT]/PATH, the API's base URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("--teacher-url must hold no credentials, query or fragment: the API key goes in the "
                         "environment (--api-key-env)")
    return url.rstrip("/") + "/chat/completions"


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


# --- the client ---------------------------------------------------------------------------------------------------

class _Retry(Exception):
    """One failed attempt that is worth another."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after, self.status = retry_after, status


class Teacher:
    """A chat-completions client on the standard library (http.client), safe to call from many threads at once: one
    connection per request, `timeout` seconds for each (to connect, to wait, and to read the whole reply)."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 600.0,
                 max_retries: int = 5, backoff: float = 1.0):
        self.url, self.model = endpoint(url), model
        parts = urlsplit(self.url)
        self.https, self.host, self.port, self.path = parts.scheme == "https", parts.hostname, parts.port, parts.path
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "r1lab"}
        if api_key:
            if not (api_key.isascii() and api_key.isprintable()) or any(c.isspace() for c in api_key):
                raise ValueError("the API key holds characters an HTTP header cannot carry")
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._secret = api_key or None
        self._ssl = ssl.create_default_context() if self.https else None
        self._rng = random.Random()

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def chat(self, messages: list[dict], params: dict, seed: int | None = None) -> Reply:
        """One chat completion (n=1) of `messages` with `params` (temperature, top_p, max_tokens...), retried as the
        module docstring says; TeacherError when it cannot be had."""
        body = {"model": self.model, "messages": messages, **params, "n": 1}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(data)
            except _Retry as e:
                last = e
            except TeacherError as e:
                raise TeacherError(self.scrub(str(e)), e.status) from None
            if attempt < self.max_retries:
                time.sleep(backoff_delay(attempt, self.backoff, last.retry_after, self._rng.random()))
        raise TeacherError(self.scrub(f"gave up after {self.max_retries + 1} attempts; the last: {last}"), last.status)

    def served_template(self, timeout: float = 30.0) -> str | None:
        """models_template of the server's GET /models, beside the chat endpoint. One attempt within `timeout`
        seconds (at most the client's), not retried: a server without the route, or one that is down, gives None,
        and the chat requests that follow are retried as usual."""
        timeout = min(timeout, self.timeout)
        conn = self._connection(timeout)
        try:
            conn.request("GET", self.path.removesuffix("/chat/completions") + "/models", headers=self.headers)
            resp = conn.getresponse()
            body = _read(resp, time.monotonic() + timeout)
        except (OSError, http.client.HTTPException):  # refused, reset, timed out, TLS refused, too large
            return None
        finally:
            conn.close()
        return models_template(body, self.model) if 200 <= resp.status < 300 else None

    def _connection(self, timeout: float):
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _post(self, data: bytes) -> Reply:
        """One attempt: the Reply, _Retry, or TeacherError."""
        deadline = time.monotonic() + self.timeout
        conn = self._connection(self.timeout)
        try:
            conn.request("POST", self.path, data, self.headers)
            resp = conn.getresponse()
            body = _read(resp, deadline)
        except ssl.SSLCertVerificationError as e:
            raise TeacherError(f"{self.url}: {e.verify_message or e}") from None
        except TimeoutError:
            raise _Retry(f"no reply within the timeout of {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:  # refused, reset, closed without a reply, cut short
            raise _Retry(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None
        finally:
            conn.close()
        if 200 <= resp.status < 300:
            try:
                return parse_reply(body)
            except BadReply as e:
                raise _Retry(f"a malformed reply from {self.url}: {e}", status=resp.status) from None
        message = f"HTTP {resp.status} from {self.url}: {error_text(body)}"
        if resp.status in RETRIED or resp.status >= 500:
            raise _Retry(message, parse_retry_after(resp.getheader("Retry-After")), resp.status)
        if resp.status == 404:
            message += " (is the URL the API's base URL, usually ending in /v1, and the model one it serves?)"
        raise TeacherError(message, resp.status)


def _read(resp, deadline: float) -> bytes:
    """The whole body, within the deadline and MAX_REPLY_BYTES."""
    chunks, size = [], 0
    while chunk := resp.read(1 << 16):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise http.client.HTTPException(f"a reply over {MAX_REPLY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)


def request_all(teacher: Teacher, jobs, params: dict, journal, concurrency: int, on_reply=None) -> TeacherError | None:
    """Send every job (problem, sample, messages, seed), at most `concurrency` at once, appending each reply to the
    journal as it arrives (from this thread only). Returns None, or the first pair's TeacherError; the jobs not yet
    started are then cancelled, and those in flight still journaled."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher")
    futures = {pool.submit(teacher.chat, messages, params, seed): (p, j) for p, j, messages, seed in jobs}
    error = None
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            p, j = futures[future]
            try:
                reply = future.result()
            except TeacherError as e:
                if error is None:
                    error = TeacherError(f"problem {p}, sample {j}: {e}", e.status)
                    for f in futures:
                        f.cancel()
                continue
            journal.append(p, j, reply)
            if on_reply is not None:
                on_reply(reply)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # subtle: after Ctrl-C, no new request starts
    return error


# --- records ------------------------------------------------------------------------------------------------------

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


class Progress:
    """The bar on stderr: samples done, completion tokens/s of this run, and the cost of every reply so far."""

    def __init__(self, total: int, replies, price_in: float, price_out: float):
        from tqdm import tqdm

        self.usage = add_usage(r.usage for r in replies)
        self.price_in, self.price_out = price_in, price_out
        self.tokens, self.t0 = 0, time.perf_counter()
        self.bar = tqdm(total=total, initial=len(replies), desc="distill", unit="sample", file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5)
        self._show()

    def _show(self) -> None:
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{rate:.0f} tok/s, ${cost(self.usage, self.price_in, self.price_out):.4f}",
                                 refresh=False)

    def update(self, reply: Reply) -> None:
        self.usage = add_usage([self.usage, reply.usage])
        self.tokens += reply.usage["completion"]
        self._show()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
