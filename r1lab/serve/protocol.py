"""OpenAI request bodies, their checks, and OpenAI-shaped errors.

Every client mistake is an `ApiError` (4xx) with OpenAI's body {"error": {"message", "type", "param", "code"}}.
OpenAI fields this server does not implement are rejected when set to anything but their default, so that a client
never silently gets less than it asked for; other unknown fields are ignored.

Every value that reaches the engine is bounded here, so that no request can break the decoding step it shares with
others: counts (tokens, top_k, n) are at most MAX_COUNT, seeds are int64 (OpenAI's type; torch.Generator takes
them), floats are finite (top_p > 0 even in float32), stop strings are few and short, and a body of more than
MAX_JSON_CONTAINERS objects and arrays is refused before it is parsed. The server then checks what depends on the
model (the context, the vocabulary, the batch size).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

# field -> the values that mean "off", accepted and ignored
UNSUPPORTED = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "suffix": (None, ""), "logit_bias": (None, {}), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "tools": (None, []), "functions": (None, []), "response_format": (None, {"type": "text"}),
}
MAX_COUNT = 2 ** 31 - 1  # tokens, top_k, n: beyond any context or vocabulary, and an int32 everywhere
INT64 = 2 ** 63
MIN_TOP_P = 1e-30  # a smaller one is 0 in float32 (the engine's), which would mask every token
UNION_TAGS = {"str", "int", "float", "bool", "none", "TextPart", "text", "texts", "ids", "batch"}
MAX_STOPS, MAX_STOP_CHARS = 4, 256  # OpenAI's 4; each stop check decodes ~4 tokens per stop character
# Parsing and validating costs ~2.5 us per JSON object or array (a Python object each) and holds the GIL, so a 4 MB
# body of tiny objects would stall the event loop for 0.3 s; a real request has a few per message.
MAX_JSON_CONTAINERS = 10_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(errors: list[dict]) -> ApiError:
    """The first pydantic/FastAPI validation error as a 400 (FastAPI's default would be a 422 of its own shape)."""
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] == "json_invalid":  # the message gives a position only, never the input
        return ApiError(400, f"We could not parse the JSON body of your request ({first.get('msg', '')}). The "
                             "OpenAI API expects a JSON payload.", code="invalid_json")
    loc = []
    for x in first.get("loc", ()):
        if isinstance(x, str) and (x in UNION_TAGS or "[" in x):
            break  # pydantic names the member of a union it tried ("stop.list[str].0"); the field is the param
        loc.append(str(x))
    param = ".".join(loc) or None
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)


def too_many_containers(body: bytes, limit: int = MAX_JSON_CONTAINERS) -> bool:
    """Whether the JSON text `body` opens more than `limit` objects and arrays (brackets inside strings do not count).

    A count of every bracket settles most bodies; only past `limit` are the ones inside strings told apart, by the
    parity of the quotes before each bracket once escapes are gone (vectorised: ~20 ms for 4 MB, whatever the shape).

    >>> too_many_containers(rb'{"a": [1, {"b": "[\\"[[["}]}', limit=3), too_many_containers(b'[[[]]]', limit=2)
    (False, True)
    """
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    # subtle: escaped backslashes first, so that in \\" the quote still ends the string
    b = np.frombuffer(body.replace(b"\\\\", b"").replace(b'\\"', b""), dtype=np.uint8)
    outside = (np.cumsum(b == ord('"'), dtype=np.int32) & 1) == 0
    return int(np.count_nonzero(((b == ord("{")) | (b == ord("["))) & outside)) > limit


NULL_IS_DEFAULT = ("n", "temperature", "top_p", "top_k", "stream", "min_thinking_tokens", "num_ignore")


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """Fields shared by /v1/chat/completions and /v1/completions."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    model: str
    n: int = Field(1, ge=1, le=MAX_COUNT)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, ge=MIN_TOP_P, le=1)
    top_k: int = Field(0, ge=-1, le=MAX_COUNT)  # extension (as in vLLM); 0 or -1: off
    max_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # s1 budget forcing (extension; see r1lab.engine.forcing.budget_forcer)
    max_thinking_tokens: int | None = Field(None, ge=0, le=MAX_COUNT)
    min_thinking_tokens: int = Field(0, ge=0, le=MAX_COUNT)
    num_ignore: int = Field(0, ge=0, le=MAX_COUNT)
    thinking_end: str | None = Field(None, min_length=1, max_length=MAX_STOP_CHARS)  # what max_thinking forces

    @model_validator(mode="before")
    @classmethod
    def _null_is_the_default(cls, data):
        """The openai SDK sends a parameter given as None as JSON null (its types are Optional); as in vLLM, null asks
        for the default."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k not in NULL_IS_DEFAULT}
        return data

    def check(self) -> None:
        """What one field's type cannot say, as an ApiError naming the parameter."""
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "stream_options is only allowed with stream: true", "stream_options")
        for name, off in UNSUPPORTED.items():
            if (self.model_extra or {}).get(name) not in off:
                raise ApiError(400, f"{name} is not supported by this server", name)
        stops = self.stop_list()
        if len(stops) > MAX_STOPS or any(not 0 < len(s) <= MAX_STOP_CHARS for s in stops):
            raise ApiError(400, f"stop: up to {MAX_STOPS} non-empty strings of at most {MAX_STOP_CHARS} characters",
                           "stop")
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ApiError(400, "min_thinking_tokens must not exceed max_thinking_tokens", "min_thinking_tokens")
        if self.thinking_end is not None and (self.max_thinking_tokens is None
                                              or not self.thinking_end.endswith("</think>")):
            raise ApiError(400, "thinking_end is the text forced at max_thinking_tokens: it needs max_thinking_tokens "
                                "and must end with </think>", "thinking_end")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def forces_thinking(self) -> bool:
        return self.max_thinking_tokens is not None or self.min_thinking_tokens > 0 or self.num_ignore > 0


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    reasoning_content: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_COUNT)  # OpenAI's newer max_tokens; wins if both


def _prompt_kind(v) -> str:
    first = v[0] if isinstance(v, list) and v else None
    return "text" if isinstance(v, str) else "texts" if isinstance(first, str) else "batch" if isinstance(
        first, list) else "ids"


class CompletionRequest(Sampling):
    # subtle: tagged by the first element, so one pass validates it; a plain union tried every member, collecting
    # an error per element (0.8 s for a million token ids)
    prompt: Annotated[Union[Annotated[str, Tag("text")], Annotated[list[str], Tag("texts")],
                            Annotated[list[int], Tag("ids")], Annotated[list[list[int]], Tag("batch")]],
                      Discriminator(_prompt_kind)]
    max_tokens: int | None = Field(16, ge=1, le=MAX_COUNT)  # OpenAI's default for this endpoint
