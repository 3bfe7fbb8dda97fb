"""Distillation from a teacher behind an OpenAI-compatible chat API (`r1lab distill --teacher-url`): the client.

    teacher = Teacher("https://api.deepseek.com", "deepseek-reasoner", api_key=os.environ.get("OPENAI_API_KEY"))
    reply = teacher.chat(task.messages(example), {"temperature": 0.6, "max_tokens": 32768}, seed=0)
    completion = replies.rebuild(reply)   # "reasoning</think> <answer>answer</answer>", what the verifier scores

The URL is the API's base URL as the openai client takes it (`base_url`): requests go to URL + "/chat/completions",
so it usually ends in /v1 (http://127.0.0.1:8000/v1 for `r1lab serve` and vLLM; https://api.deepseek.com for
DeepSeek, which also answers under /v1). One request per (problem, sample): the task's chat messages
(task.messages(example, template): the R1 system prompt then the question, or the short question alone) with model,
temperature, top_p, max_tokens, n=1 and the seed replies.request_seed(seed, row) (servers that honour seeds, r1lab
serve and vLLM, reproduce).

Retries (Teacher.chat): HTTP 408, 409, 429 and 5xx, connection errors, timeouts and malformed replies are retried,
at most max_retries times, after backoff_delay(); any other status (400, 401, 403, 404...) is a TeacherError at once.
The API key goes out as `Authorization: Bearer KEY` and nowhere else: it is not part of the journal's settings, and
an error message that a server echoes it into has it replaced by "***".

How a reply becomes a completion (rebuild), and what a run keeps of it, are the pure rules in
r1lab/evaluation/replies.py; the journal that makes a run resumable is r1lab/evaluation/journal.py.
"""
from __future__ import annotations

import http.client
import json
import math
import random
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from r1lab.evaluation.replies import BadReply, Reply, add_usage, cost, error_text, models_template, parse_reply

MAX_BACKOFF = 60.0  # seconds: the longest wait between two attempts, a server's Retry-After included
MAX_REPLY_BYTES = 64 * 2 ** 20
RETRIED = (408, 409, 429)  # and every 5xx: what the openai client retries


class TeacherError(Exception):
    """A request the teacher will not answer: a status that is not retried, or the retries spent."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


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


class _Stopped(Exception):
    """A job not sent because another one failed (request_all)."""


def request_all(teacher: Teacher, jobs, params: dict, journal, concurrency: int, on_reply=None) -> TeacherError | None:
    """Send every job (problem, sample, messages, seed), at most `concurrency` at once, appending each reply to the
    journal as it arrives (from this thread only). Returns None, or the first pair's TeacherError; the jobs not yet
    started are then cancelled, and those in flight still journaled."""
    stop = threading.Event()

    def send(messages, seed):
        # subtle: set by the worker that failed, so that no worker starts another request: cancelling from this
        # thread came too late when a worker picked the next job first (4 requests after a 401, once in CI)
        if stop.is_set():
            raise _Stopped
        try:
            return teacher.chat(messages, params, seed)
        except TeacherError:
            stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="teacher")
    futures = {pool.submit(send, messages, seed): (p, j) for p, j, messages, seed in jobs}
    error = None
    try:
        for future in as_completed(futures):
            if future.cancelled():
                continue
            p, j = futures[future]
            try:
                reply = future.result()
            except _Stopped:
                continue
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
