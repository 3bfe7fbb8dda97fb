"""OpenAI request bodies, their checks, and OpenAI-shaped errors.

Every client mistake is an `ApiError` (4xx) with OpenAI's body {"error": {"message", "type", "param", "code"}}.
OpenAI fields this server does not implement are rejected when set to anything but their default, so that a client
never silently gets less than it asked for; other unknown fields are ignored.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# field -> the values that mean "off", accepted and ignored
UNSUPPORTED = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "suffix": (None, ""), "logit_bias": (None, {}), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "tools": (None, []), "functions": (None, []), "response_format": (None, {"type": "text"}),
}


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
    if first["type"] == "json_invalid":
        return ApiError(400, "We could not parse the JSON body of your request. The OpenAI API expects a JSON "
                             "payload.", code="invalid_json")
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param)


class StreamOptions(BaseModel):
    include_usage: bool = False


class Sampling(BaseModel):
    """Fields shared by /v1/chat/completions and /v1/completions."""
    model_config = ConfigDict(extra="allow")

    model: str
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=-1)  # extension (as in vLLM); 0 or -1: off
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # s1 budget forcing (extension; see r1lab.engine.forcing.budget_forcer)
    max_thinking_tokens: int | None = Field(None, ge=0)
    min_thinking_tokens: int = Field(0, ge=0)
    num_ignore: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self):
        for name, off in UNSUPPORTED.items():
            if (self.model_extra or {}).get(name) not in off:
                raise ValueError(f"{name} is not supported by this server")
        stops = self.stop_list()
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: up to 4 non-empty strings")
        if self.max_thinking_tokens is not None and self.min_thinking_tokens > self.max_thinking_tokens:
            raise ValueError("min_thinking_tokens must not exceed max_thinking_tokens")
        return self

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
    max_completion_tokens: int | None = Field(None, ge=1)  # OpenAI's newer name for max_tokens; wins if both


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for this endpoint
