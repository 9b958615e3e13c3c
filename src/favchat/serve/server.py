"""The HTTP side of ``favchat serve``: an OpenAI-compatible API and the web page, on FastAPI and uvicorn.

    favchat serve --model runs/demo/stage3/final --allowed_roots runs/demo/data/videos

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``, the page at ``/`` and the page's
helpers ``GET /v1/favchat/videos`` (the videos under the allowed roots) and ``POST /v1/favchat/frames`` (a few
frames of a video). Every error is a 4xx/5xx in the OpenAI error shape; a stack trace goes to the log only.
docs/serve.md has the protocol, the limits and examples.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from favchat.serve.engine import Engine, Job, Prompt, Sampling
from favchat.serve.errors import APIError, error_body
from favchat.serve.protocol import Header, conversation, extension, parse_request, usage
from favchat.serve.settings import MiB, ServeConfig
from favchat.serve.videos import list_videos

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
T = TypeVar("T")
# The page loads nothing from elsewhere; frames arrive as data: URLs.
PAGE_POLICY = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class JobStream(StreamingResponse):
    """A stream of a job's events that cancels the job however the response ends (done, client gone, error)."""

    def __init__(self, job: Job, content: AsyncIterator[str]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (read on to a bound, so the client sees the answer)."""
    declared = request.headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_big = True
        if too_big:
            if size > max(2 * limit, 64 * MiB):
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise APIError(413, f"the request body is over the limit of {limit / MiB:.1f} MiB (a video of at most "
                       f"{limit / MiB * 3 / 4:.0f} MiB, base64-encoded)", "request_too_large")
    return b"".join(chunks)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, or ``ClientGone`` as soon as the client closes the connection."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    work = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        raise ClientGone
    return work.result()


def create_app(config: ServeConfig, engine: Engine) -> FastAPI:
    app = FastAPI(title="FaVChat", docs_url=None, redoc_url=None, openapi_url=None)
    key = config.api_key
    started = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), error.status, headers=error.headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        return Response(status_code=499)  # nobody reads it; nginx's code for this case, in the access log

    @app.exception_handler(404)
    @app.exception_handler(405)
    async def no_route(request: Request, error: Exception) -> JSONResponse:
        status = getattr(error, "status_code", 404)
        what = "no such route" if status == 404 else "method not allowed"
        return JSONResponse(error_body(status, f"{what}: {request.method} {request.url.path}"), status)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse(error_body(500, "the server failed to answer (the error is in its log)",
                                       "internal_error"), 500)

    async def authorize(request: Request) -> None:
        if key is None:
            return
        sent = request.headers.get("authorization", "")
        if not sent:
            raise APIError(401, "this server needs an API key: send 'Authorization: Bearer KEY'", "missing_api_key")
        if not secrets.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            raise APIError(401, "the API key is not valid", "invalid_api_key")

    api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
    model_card = {"id": config.served_name, "object": "model", "created": started, "owned_by": "favchat",
                  "max_model_len": engine.context_length}

    @api.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card]}

    @api.get("/models/{name:path}")
    async def model(name: str) -> dict[str, Any]:
        if name != config.served_name:
            raise APIError(404, f"no model {name!r} here; this server serves {config.served_name!r}",
                           "model_not_found", "model")
        return model_card

    @api.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        # Parsing a body with a video in it takes a while: off the event loop, which streams the other answers.
        req = await asyncio.to_thread(parse_request, await read_body(request, config.max_body_bytes))
        if req.model != config.served_name:
            raise APIError(404, f"no model {req.model!r} here; this server serves {config.served_name!r}",
                           "model_not_found", "model")
        conv = conversation(req.messages)
        max_tokens = req.max_completion_tokens or req.max_tokens or config.default_max_tokens
        if max_tokens > config.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is over this server's limit of {config.max_tokens}",
                           "max_tokens_too_large", "max_tokens")
        sampling = Sampling(max_tokens, config.temperature if req.temperature is None else req.temperature,
                            1.0 if req.top_p is None else req.top_p, req.seed)
        prompt = engine.prompt(conv.question, conv.history, max_tokens)
        header = Header(f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), config.served_name)
        job = engine.submit(header.id, conv.video_url, prompt, sampling)
        try:
            video = await until_disconnect(request, job.ready)
        except BaseException:
            job.cancel()
            raise
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return JobStream(job, events(job, header, video, prompt, include_usage))
        try:
            text, finish, weights = await until_disconnect(request, collect(job))
        finally:
            job.cancel()
        return JSONResponse(header.completion(text, finish.reason, usage(prompt.tokens, finish.completion_tokens),
                                              extension(weights, video)))

    @api.get("/favchat/videos")
    async def videos() -> dict[str, Any]:
        paths = await asyncio.to_thread(list_videos, engine.roots)
        roots = [Path(r) for r in config.allowed_roots]
        return {"data": [{"url": p.absolute().as_uri(), "name": _relative(p, roots)} for p in paths]}

    @api.post("/favchat/frames")
    async def frames(request: Request) -> dict[str, Any]:
        body = await read_body(request, config.max_body_bytes)
        try:
            url = (await asyncio.to_thread(json.loads, body))["video_url"]["url"]
        except (ValueError, KeyError, TypeError):
            raise APIError(400, 'the body must be {"video_url": {"url": ...}}', "invalid_request") from None
        with engine.slot():
            return await engine.frames(url)

    app.include_router(api)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.served_name, "auth_required": key is not None, **engine.status()}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def collect(job: Job) -> tuple[str, Any, tuple[float, float] | None]:
    """A job's whole answer: (text, Finish, adapter weights)."""
    pieces, finish, weights = [], None, None
    while (event := await job.events.get())[0] != "end":
        kind, value = event
        if kind == "weights":
            weights = value
        elif kind == "text":
            pieces.append(value)
        elif kind == "done":
            finish = value
        elif kind == "error":
            raise value
    if finish is None:
        raise APIError(503, "the answer was interrupted (the server is shutting down)", "interrupted")
    return "".join(pieces), finish, weights


async def events(job: Job, header: Header, video: dict[str, Any], prompt: Prompt,
                 include_usage: bool) -> AsyncIterator[str]:
    """The job's events as OpenAI chunks: the role at once (the request is in line), the text pieces, the finish
    reason with the ``favchat`` field, the usage when asked, then ``[DONE]``; a later error is an ``error``
    event."""
    yield header.chunk({"role": "assistant", "content": ""})
    weights = None
    while (event := await job.events.get())[0] != "end":
        kind, value = event
        if kind == "weights":
            weights = value
        elif kind == "text":
            yield header.chunk({"content": value})
        elif kind == "done":
            yield header.chunk({}, value.reason, favchat=extension(weights, video))
            if include_usage:
                yield header.chunk(None, usage=usage(prompt.tokens, value.completion_tokens))
            yield "data: [DONE]\n\n"
        elif kind == "error":
            yield f"data: {json.dumps(value.body())}\n\n"


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root.absolute()):
            return str(Path(root.name) / path.relative_to(root.absolute()))
    return path.name


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), made here so the address is known before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def serve(config: ServeConfig) -> int:
    """Load the checkpoint, then serve until interrupted (SIGINT/SIGTERM end it gracefully)."""
    import uvicorn

    engine = Engine(config)
    try:
        sock = listen(config.host, config.port)
    except OSError as e:
        engine.close()
        print(f"favchat serve: cannot listen on {config.host}:{config.port}: {e.strerror}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    print(f"favchat serve: {config.served_name} on {base}/ (OpenAI API: {base}/v1)", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(config, engine), log_config=None, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
    return 0
