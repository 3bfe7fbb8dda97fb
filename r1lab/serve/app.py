"""The FastAPI app: GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /health.

    app = create_app(Engine(model, tokenizer), "my-model", max_concurrency=64, api_key="sk-...")
    uvicorn.run(app, port=8000)

Handlers run on the asyncio event loop; they validate a request, render and tokenize its prompt (on a tokenizer
thread, so a long prompt never stalls other requests), submit one completion per choice to the Scheduler (the engine
thread) and turn its per-step token events into OpenAI JSON or server-sent events. A request holds one of
`max_concurrency` slots from submission until its response is finished or its client goes away; then Job.close()
cancels what is still running in the engine batch.

Hostile input: a body over `max_request_bytes` is a 413 (from Content-Length, or counted while reading); the JSON
parser (pydantic's) refuses invalid UTF-8, lone surrogates, nesting deeper than 200 and integers over 4300 digits;
a prompt longer than context x max_token_chars characters is refused before it is rendered or tokenized. Every
client mistake is a 4xx in OpenAI's shape, and even a bug answers a 500 in that shape with the keep-alive
connection intact (Guard). With an API key, every route but /health needs `Authorization: Bearer KEY`.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from r1lab.engine import GOLDEN, SamplingParams
from r1lab.engine.forcing import budget_forcer
from r1lab.serve.protocol import (MAX_JSON_CONTAINERS, ApiError, ChatRequest, CompletionRequest, error_body,
                                  too_many_containers, validation_error)
from r1lab.serve.scheduler import Busy, EngineFailure, Scheduler
from r1lab.serve.text import (WAIT, CompletionText, chat_prompt_ids, opens_thinking, reasoning_tokens,
                              think_end_token)
from r1lab.tasks.format import THINK_END

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # engine -> OpenAI finish_reason
DONE = "data: [DONE]\n\n"
MAX_REQUEST_BYTES = 4 * 2 ** 20  # a 100k-token prompt is ~0.5 MB of text
log = logging.getLogger("r1lab.serve")


def create_app(engine, model_name: str, max_concurrency: int = 64, threads: int | None = None,
               api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
               template: str | None = None) -> FastAPI:
    """template: the prompt template the model was trained on (r1lab.model.load.trained_template), which /v1/models
    reports as `r1lab_template` when known, so that a client (r1lab distill) can send the chat turns it expects."""
    server = Server(engine, model_name, Scheduler(engine, max_concurrency, threads))

    @asynccontextmanager
    async def lifespan(app):
        server.scheduler.start(asyncio.get_running_loop())
        yield
        server.scheduler.stop()
        server.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="r1lab", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(Guard, api_key=api_key)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return ErrorResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # unknown route, wrong method
        return ErrorResponse(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code)

    @app.get("/v1/models")
    async def models():
        card = {"id": model_name, "object": "model", "created": server.created, "owned_by": "r1lab",
                "max_model_len": engine.max_positions}
        return {"object": "list", "data": [card | ({"r1lab_template": template} if template else {})]}

    @app.get("/health")
    async def health():
        s = server.scheduler
        return {"status": "ok", "requests": s.jobs, "rows": s.rows, "cancelled": s.cancelled, "failed": s.failed,
                "steps": s.steps, "tokens": s.tokens}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.complete(await parse(request, ChatRequest, max_request_bytes), request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await server.complete(await parse(request, CompletionRequest, max_request_bytes), request, chat=False)

    return app


def sse_line(obj) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


class ErrorResponse(JSONResponse):
    """JSON with non-ASCII escaped, so that no message (an exception's repr included) can fail to encode."""

    def render(self, content) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode()


async def parse(request: Request, model, max_bytes: int):
    """The JSON body as `model`, whatever the Content-Type says (curl -d sends form-encoded); 413 past max_bytes."""
    too_large = ApiError(413, f"The request body is larger than this server's limit of {max_bytes} bytes.",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 15 or int(declared) > max_bytes):
        raise too_large  # before reading a byte; uvicorn discards the body and keeps the connection
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    if too_many_containers(body):
        raise ApiError(400, f"The JSON body has more than {MAX_JSON_CONTAINERS} objects and arrays.")
    try:
        req = model.model_validate_json(body)
    except ValidationError as e:
        raise validation_error(e.errors()) from None
    req.check()
    return req


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: the API key, and a 500 in OpenAI's shape for any exception a handler lets out.

    subtle: not an app.exception_handler(Exception): Starlette re-raises after such a handler answers, and uvicorn
    then closes the connection, so a keep-alive client's next request failed too."""

    def __init__(self, app, api_key: str | None = None):
        self.app = app
        # compared as digests in constant time, so neither the key nor its length leaks through timing
        self.key = hashlib.sha256(f"Bearer {api_key}".encode()).digest() if api_key else None

    def authorized(self, scope) -> bool:
        if self.key is None or scope["path"] == "/health":
            return True
        got = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        return hmac.compare_digest(hashlib.sha256(got).digest(), self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self.authorized(scope):
            body = error_body("Incorrect or missing API key: send the header `Authorization: Bearer KEY`.",
                              "invalid_request_error", None, "invalid_api_key")
            return await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except ClientDisconnect:  # gone while sending its body: nobody to answer
            pass
        except Exception as e:
            log.exception("request failed")
            if not started:  # once a stream has started, closing the connection is all that is left
                await send_json(send, 500, error_body(f"internal error: {e!r}", "internal_server_error"))


class Server:
    def __init__(self, engine, model_name: str, scheduler: Scheduler):
        self.engine, self.model_name, self.scheduler = engine, model_name, scheduler
        tok = self.tokenizer = engine.tokenizer
        self.created = int(time.time())
        self.think_end_id = think_end_token(tok)
        self.wait_ids = tok(WAIT, add_special_tokens=False)["input_ids"]
        self.max_n = engine.max_batch_size
        # A token decodes to at most this many characters: a vocabulary entry is spelled with at least as many
        # characters as its text has (byte-level BPE spells each byte as one character, SentencePiece a space as
        # "▁", WordPiece adds "##"), +1 for a space a decoder may put between tokens. So a text longer than
        # context x max_token_chars cannot fit, and is refused before it is rendered or tokenized. subtle: this
        # assumes lossless tokenization; one that turned a long unknown run into one <unk> would break it.
        self.max_token_chars = max(map(len, tok.get_vocab())) + 1
        # prompts are rendered and tokenized here, off the event loop; two at a time bounds their memory
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="r1lab-tokenize")

    async def complete(self, req, request: Request, chat: bool):
        if req.model != self.model_name:
            shown = req.model if len(req.model) <= 64 else req.model[:64] + "..."
            raise ApiError(404, f"The model `{shown}` does not exist.", "model", "model_not_found")
        if chat and req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        prompts = await asyncio.get_running_loop().run_in_executor(self.pool, self._prompts, req, chat)
        specs = self._specs(req, prompts, chat)
        try:
            job = self.scheduler.submit(specs)
        except Busy as e:
            raise ApiError(429, str(e), None, "rate_limit_exceeded", "rate_limit_error") from None
        stop = req.stop_list()
        opened = chat and opens_thinking(self.tokenizer, prompts[0])  # a chat request renders one prompt
        choices = [CompletionText(self.tokenizer, stop, split=chat, opened=opened) for _ in specs]
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": self.model_name, "system_fingerprint": None}
        n_prompt = sum(len(p) for p in prompts)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return JobResponse(self._stream(job, choices, head, chat, n_prompt, include_usage), job)
        try:
            if not await self._collect(job, choices, request):
                return Response(status_code=499)  # the client closed the request; nobody reads this
        finally:
            job.close()
        obj = "chat.completion" if chat else "text_completion"
        return {**head, "object": obj, "choices": [self._final_choice(i, c, chat) for i, c in enumerate(choices)],
                "usage": self._usage(n_prompt, choices, chat)}

    # -- requests to engine inputs --------------------------------------------------------------------------------

    def _prompts(self, req, chat: bool) -> list[list[int]]:
        """The request's prompts as token ids, each checked against the context; runs on the tokenizer pool."""
        prompt = getattr(req, "prompt", None)
        if not chat and (isinstance(prompt, str) or (prompt and isinstance(prompt[0], int))):
            prompt = [prompt]
        if (1 if chat else len(prompt)) * req.n > self.max_n:
            raise ApiError(400, f"n: at most {self.max_n} completions per request (n x number of prompts)", "n")
        if chat:
            self._check_chars(sum(len(m.text()) + len(m.reasoning_content or "") for m in req.messages), "messages")
            return [self._chat_prompt(req.messages)]
        if not prompt or any(not p for p in prompt):
            raise ApiError(400, "prompt: empty", "prompt")
        for p in prompt:
            if isinstance(p, str):
                self._check_chars(len(p), "prompt")
            else:
                self._check_tokens(len(p), "prompt")
        out = [self.engine.encode(p) if isinstance(p, str) else list(p) for p in prompt]
        vocab = len(self.tokenizer)
        if any(not 0 <= t < vocab for ids in out for t in ids):
            raise ApiError(400, f"prompt: token ids must be in [0, {vocab})", "prompt")
        return out

    def _check_chars(self, chars: int, param: str) -> None:
        limit = self.engine.max_positions
        if limit is not None and chars > limit * self.max_token_chars:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you sent {chars} "
                                f"characters of {param}, more than {limit} tokens can hold (a token here is at most "
                                f"{self.max_token_chars} characters). Please reduce the length of the {param}.",
                           param, "context_length_exceeded")

    def _check_tokens(self, tokens: int, param: str) -> None:
        limit = self.engine.max_positions
        if limit is not None and tokens >= limit:
            raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you sent {tokens} "
                                f"tokens of {param}, which leaves no room for the completion. Please reduce the "
                                f"length of the {param}.", param, "context_length_exceeded")

    def _chat_prompt(self, messages) -> list[int]:
        if not self.tokenizer.chat_template:
            raise ApiError(400, "this model has no chat template; use /v1/completions", "messages")
        rendered = []
        for m in messages:
            msg = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            if m.role == "assistant" and m.reasoning_content:
                msg["reasoning_content"] = m.reasoning_content
            rendered.append(msg)
        return chat_prompt_ids(self.tokenizer, rendered)

    def _specs(self, req, prompts: list[list[int]], chat: bool) -> list[tuple]:
        """(prompt_ids, SamplingParams, forced hook, seed) per completion; choice k of a request with seed s uses
        s + k * GOLDEN, as row k of Engine.generate does, so a served choice reproduces an offline one."""
        limit, specs = self.engine.max_positions, []
        for ids in prompts:
            max_tokens = req.max_tokens
            if limit is not None:
                room = limit - len(ids)
                if room < 1 or (max_tokens is not None and max_tokens > room):
                    asked = f"{len(ids) + (max_tokens or 1)} tokens ({len(ids)} in the prompt, " \
                            f"{max_tokens or 1} for the completion)"
                    raise ApiError(400, f"This model's maximum context length is {limit} tokens. However, you "
                                        f"requested {asked}. Please reduce the length of the prompt or max_tokens.",
                                   "max_tokens" if room >= 1 else "messages" if chat else "prompt",
                                   "context_length_exceeded")
                max_tokens = max_tokens or room
            params = SamplingParams(temperature=req.temperature, top_p=req.top_p, top_k=max(req.top_k, 0),
                                    max_new_tokens=max_tokens or 256, stop=req.stop_list(), **self._budget(req))
            for _ in range(req.n):
                k = len(specs)
                seed = None if req.seed is None else (req.seed + k * GOLDEN) % 2 ** 63
                specs.append((ids, params, self._forcer(req), seed))
        return specs

    def _forcer(self, req):
        """The forced-token hook of a request that shapes its thinking (budget_forcer), or None. Where this
        tokenizer spells </think> in several tokens (Qwen2.5's, Llama 3's) a budget alone is the engine's own
        (_budget); "Wait" for min_thinking_tokens / num_ignore replaces one sampled </think>, so it needs one."""
        if not req.forces_thinking() or self._budget(req):
            return None
        if self.think_end_id is None:
            field = "min_thinking_tokens" if req.min_thinking_tokens else "num_ignore"
            raise ApiError(400, f"{field} replaces the model's {THINK_END} by \"Wait\", which needs {THINK_END} to be "
                                "one token; this model's tokenizer spells it in several (max_thinking_tokens alone "
                                "works)", field)
        close = None
        if req.thinking_end is not None:
            close = self.tokenizer(req.thinking_end, add_special_tokens=False)["input_ids"]
        if close is not None and close[-1] != self.think_end_id:
            raise ApiError(400, f"thinking_end must end with this model's {THINK_END} token", "thinking_end")
        return budget_forcer(self.think_end_id, self.wait_ids, req.max_thinking_tokens, req.min_thinking_tokens,
                             req.num_ignore, close)

    def _budget(self, req) -> dict:
        """SamplingParams fields for the engine's thinking budget (engine.forcing.thinking_budget, which matches a
        several-token </think>): a request that asks max_thinking_tokens alone of such a tokenizer; else {}."""
        if self.think_end_id is not None or req.max_thinking_tokens is None or req.min_thinking_tokens or \
                req.num_ignore:
            return {}
        return {"max_thinking_tokens": req.max_thinking_tokens, "thinking_end": req.thinking_end or THINK_END}

    # -- engine events to responses -------------------------------------------------------------------------------

    async def _collect(self, job, choices: list[CompletionText], request: Request) -> bool:
        """Feed every event to its choice; False when the client went away first (checked twice a second)."""
        checked = time.monotonic()
        while job.open:
            try:
                batch = job.take(await asyncio.wait_for(job.queue.get(), 0.5))
            except asyncio.TimeoutError:  # not the builtin before Python 3.11
                batch = []
            except EngineFailure as e:
                raise ApiError(500, str(e), type="internal_server_error") from None
            for i, events in batch:
                choices[i].push(events)
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if await request.is_disconnected():
                    return False
        return True

    async def _stream(self, job, choices: list[CompletionText], head: dict, chat: bool, n_prompt: int,
                      include_usage: bool):
        head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def sse(index, finish=None, **delta):
            choice = {"index": index, "delta": delta} if chat else {"index": index, "text": delta.get("content", "")}
            return sse_line({**head, "choices": [{**choice, "logprobs": None, "finish_reason": finish}]})

        if chat:
            yield "".join(sse(i, role="assistant", content="") for i in range(len(choices)))
        try:
            async for batch in job.events():
                parts = []
                for i, events in batch:
                    r, c = choices[i].push(events)
                    parts += [sse(i, reasoning_content=r)] if r else []
                    parts += [sse(i, content=c)] if c else []
                    if choices[i].completion is not None:
                        parts.append(sse(i, FINISH[choices[i].completion.finish_reason]))
                if parts:
                    yield "".join(parts)
        except EngineFailure as e:
            yield sse_line(error_body(str(e), "internal_server_error")) + DONE
            return
        if include_usage:
            yield sse_line({**head, "choices": [], "usage": self._usage(n_prompt, choices, chat)})
        yield DONE

    def _final_choice(self, i: int, c: CompletionText, chat: bool) -> dict:
        out = {"index": i, "logprobs": None, "finish_reason": FINISH[c.completion.finish_reason]}
        if chat:
            out["message"] = {"role": "assistant", "content": c.content, "reasoning_content": c.reasoning}
        else:
            out["text"] = c.content
        return out

    def _usage(self, n_prompt: int, choices: list[CompletionText], chat: bool) -> dict:
        n_completion = sum(len(c.completion.token_ids) for c in choices)
        usage = {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}
        if chat:
            usage["completion_tokens_details"] = {"reasoning_tokens": sum(self._reasoning_tokens(c) for c in choices)}
        return usage

    def _reasoning_tokens(self, c: CompletionText) -> int:
        if c.splitter is None:  # a reply that never thought (neither its prompt nor the reply opened <think>)
            return 0
        if self.think_end_id is not None:
            return reasoning_tokens(c.completion.token_ids, self.think_end_id)
        # a multi-token tag: an estimate, capped (partial UTF-8 bytes decode to U+FFFD, which re-encodes longer)
        return min(len(self.tokenizer(c.reasoning, add_special_tokens=False)["input_ids"]),
                   len(c.completion.token_ids))


class JobResponse(StreamingResponse):
    """Server-sent events that close their job however the response ends (finished, client gone, error)."""

    def __init__(self, body, job):
        super().__init__(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.job = job

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.close()
