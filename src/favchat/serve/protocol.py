"""The OpenAI chat-completions protocol as ``favchat serve`` speaks it: the request, read into a question, the
conversation before it and one video URL; the response object and the stream's chunks.

A request's user content mixes text parts and one video part, in the shape vLLM accepts for video:

    {"role": "user", "content": [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}},
                                 {"type": "text", "text": "What emotion does the person show?"}]}

Every answer carries the extension field ``favchat`` (in the last chunk of a stream, with the finish reason): the adapters' weights
for the question (Eq. 6) and the video's hash and cache state (docs/serve.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from favchat.serve.errors import APIError

# Parameters of the OpenAI API this server cannot honour: refused when set, rather than silently ignored.
UNSUPPORTED = ("stop", "logprobs", "top_logprobs", "tools", "tool_choice", "functions", "function_call",
               "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "audio", "modalities")


class VideoURL(BaseModel):
    url: str


class Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    video_url: VideoURL | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[Part] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields such as user or metadata do not change the answer
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    n: int | None = Field(None, ge=1, le=1)


@dataclass
class Conversation:
    question: str
    history: list[tuple[str, str]]  # earlier (user, assistant) turns
    video_url: str


def parse_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not JSON ({e})", "invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", "invalid_json")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise APIError(400, f"{where}: {first['msg']}", "invalid_request", where or None) from None
    for name in UNSUPPORTED:
        value = data.get(name)
        if value not in (None, False, 0, [], {}) and not (name == "response_format" and value == {"type": "text"}):
            raise APIError(400, f"the parameter {name!r} is not supported by this server", "unsupported_parameter",
                           name)
    return request


def conversation(messages: list[Message]) -> Conversation:
    """User and assistant turns (consecutive messages of one role join), the last a user's, and one video."""
    turns: list[tuple[str, list[str]]] = []
    videos: list[str] = []
    for i, message in enumerate(messages):
        if message.role not in ("user", "assistant"):
            raise APIError(400, f"messages[{i}]: role {message.role!r} is not supported: send user and assistant "
                           "turns (the checkpoint's own system prompt is always used)", "invalid_messages",
                           f"messages[{i}].role")
        content = message.content
        parts = [Part(type="text", text=content)] if isinstance(content, str) else content or []
        texts = []
        for j, part in enumerate(parts):
            where = f"messages[{i}].content[{j}]"
            if part.type == "text":
                if part.text is None:
                    raise APIError(400, f"{where}: a text part needs 'text'", "invalid_messages", where)
                texts.append(part.text)
            elif part.type == "video_url":
                if message.role != "user" or part.video_url is None:
                    raise APIError(400, f"{where}: a video_url part belongs in a user message, as "
                                   '{"type": "video_url", "video_url": {"url": ...}}', "invalid_messages", where)
                videos.append(part.video_url.url)
            else:
                raise APIError(400, f"{where}: content of type {part.type!r} is not supported: send text parts and "
                               "one video_url part", "unsupported_content", where)
        if turns and turns[-1][0] == message.role:
            turns[-1][1].extend(texts)
        else:
            turns.append((message.role, texts))
    if not videos:
        raise APIError(400, 'no video: a user message needs a {"type": "video_url", "video_url": {"url": ...}} part',
                       "missing_video", "messages")
    if len(videos) > 1:
        raise APIError(400, f"{len(videos)} videos in the conversation: the model reads one video per conversation",
                       "too_many_videos", "messages")
    roles = [role for role, _ in turns]
    if roles[0] != "user" or roles[-1] != "user":
        raise APIError(400, "the conversation must start and end with a user turn", "invalid_messages", "messages")
    text = ["\n".join(t).strip() for _, t in turns]
    if not text[-1]:
        raise APIError(400, "the last user turn has no text: ask a question", "invalid_messages", "messages")
    history = [(text[k], text[k + 1]) for k in range(0, len(text) - 1, 2)]
    return Conversation(text[-1], history, videos[0])


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def extension(weights: tuple[float, float] | None, video: dict[str, Any]) -> dict[str, Any]:
    """The ``favchat`` field: the adapters' weights (w_g general, w_f facial) and the video's hash and cache
    state."""
    w = None if weights is None else {"w_g": weights[0], "w_f": weights[1]}
    return {"adapter_weights": w, "video": video}


@dataclass
class Header:
    id: str
    created: int
    model: str

    def completion(self, text: str, reason: str, usage: dict[str, int], favchat: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                             "logprobs": None}],
                "usage": usage, "favchat": favchat}

    def chunk(self, delta: dict[str, Any] | None, reason: str | None = None, **extra: Any) -> str:
        """One server-sent event; ``delta=None``: the usage chunk, which has no choices."""
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"
