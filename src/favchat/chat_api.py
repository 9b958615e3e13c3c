"""A client for any OpenAI-compatible chat endpoint, shared by the dataset pipeline and the judge.

What it adds to the ``openai`` client:
- an on-disk cache keyed by a hash of (model, messages, parameters): a rerun never pays twice;
- retries with exponential backoff on timeouts, connection errors, 429 and 5xx;
- validation of the reply text: a reply that the caller's ``parse`` rejects (raises ``ValueError``)
  is asked again at once (the endpoint is healthy, so no backoff) and never cached;
- a concurrency limit (``map`` runs requests on a thread pool, with a progress bar);
- token and cost accounting.

Configuration comes from a ``ChatAPIConfig`` (base URL, model, key). The key is never stored in a
config file: it is read from the environment variable named by ``api_key_env``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
Messages = list[dict[str, Any]]


@dataclass
class ChatAPIConfig:
    """Where and how to call an OpenAI-compatible chat endpoint."""

    base_url: str | None = None  # e.g. http://localhost:8000/v1; None = the openai client's default
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    timeout_s: float = 60.0
    max_retries: int = 5  # per request, transient errors and rejected replies together
    backoff_s: float = 1.0  # first wait; doubles each retry, with jitter
    max_backoff_s: float = 30.0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int | None = None
    cache_dir: str | None = None  # None: no cache
    usd_per_1k_prompt: float = 0.0
    usd_per_1k_completion: float = 0.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")

    @classmethod
    def from_env(cls, prefix: str = "FAVCHAT_API_", **overrides: Any) -> ChatAPIConfig:
        """Fill base URL and model from ``{prefix}BASE_URL`` / ``{prefix}MODEL`` when set."""
        env = {k: os.environ[prefix + k.upper()] for k in ("base_url", "model") if prefix + k.upper() in os.environ}
        return cls(**{**env, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class Usage:
    calls: int = 0  # requests that reached the endpoint (retries included)
    cached: int = 0  # requests answered from the cache
    failed: int = 0  # requests given up after all retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0


@dataclass
class ChatResult(Generic[T]):
    text: str
    value: T | None = None  # what ``parse`` returned
    cached: bool = False
    attempts: int = 0


@dataclass
class ChatFailure:
    error: str
    attempts: int = 0


class ChatAPIError(RuntimeError):
    pass


def request_key(model: str, messages: Messages, params: dict[str, Any]) -> str:
    blob = json.dumps({"model": model, "messages": messages, "params": params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class DiskCache:
    """One JSON file per key under ``root/ab/abcdef....json``, written atomically."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self._path(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)


def _is_transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | openai.RateLimitError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


class ChatClient:
    """Cached, retrying, rate-limited chat completions; thread-safe."""

    def __init__(self, config: ChatAPIConfig, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.config = config
        self._sleep = sleep
        key = os.environ.get(config.api_key_env) or "not-needed"  # local servers accept any key
        # Retries are ours (they also cover rejected replies), so the client's own are off.
        self._client = openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=0)
        self.cache = DiskCache(config.cache_dir) if config.cache_dir else None
        self.usage = Usage()
        self._lock = threading.Lock()

    def _params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        p: dict[str, Any] = {"temperature": self.config.temperature}
        if self.config.max_tokens is not None:
            p["max_tokens"] = self.config.max_tokens
        p.update(overrides)
        return p

    def complete(
        self, messages: Messages, parse: Callable[[str], T] | None = None, **params: Any
    ) -> ChatResult[T]:
        """One chat completion. ``parse`` turns the reply into a value or raises ``ValueError`` to retry.

        Raises ``ChatAPIError`` after ``max_retries`` retries, or at once on a non-transient error
        (a 400, a wrong key, an unknown model).
        """
        import openai

        params = self._params(params)
        key = request_key(self.config.model, messages, params)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            try:
                value = parse(hit["text"]) if parse else None
            except ValueError:
                value = None  # a parser that changed since; ask again below
            else:
                with self._lock:
                    self.usage.cached += 1
                return ChatResult(hit["text"], value, cached=True, attempts=0)
        last = "no attempt"
        for attempt in range(1, self.config.max_retries + 2):
            rejected = False
            try:
                resp = self._client.chat.completions.create(model=self.config.model, messages=messages, **params)
            except openai.OpenAIError as exc:
                with self._lock:
                    self.usage.calls += 1
                if not _is_transient(exc):
                    with self._lock:
                        self.usage.failed += 1
                    raise ChatAPIError(f"{type(exc).__name__}: {exc}") from exc
                last = f"{type(exc).__name__}: {exc}"
            else:
                self._account(resp)
                text = (resp.choices[0].message.content or "") if resp.choices else ""
                try:
                    value = parse(text) if parse else None
                except ValueError as exc:
                    last, rejected = f"rejected reply: {exc}", True
                else:
                    if self.cache is not None:
                        self.cache.put(key, {"text": text, "model": self.config.model})
                    return ChatResult(text, value, cached=False, attempts=attempt)
            if attempt <= self.config.max_retries and not rejected:  # a rejected reply is asked again at once
                wait = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** (attempt - 1))
                log.debug("retry %d after %s (waiting %.2fs)", attempt, last, wait)
                self._sleep(wait * (0.5 + random.random() / 2))
        with self._lock:
            self.usage.failed += 1
        raise ChatAPIError(f"gave up after {self.config.max_retries + 1} attempts; last error: {last}")

    def _account(self, resp: Any) -> None:
        u = getattr(resp, "usage", None)
        pt = int(getattr(u, "prompt_tokens", 0) or 0)
        ct = int(getattr(u, "completion_tokens", 0) or 0)
        with self._lock:
            self.usage.calls += 1
            self.usage.prompt_tokens += pt
            self.usage.completion_tokens += ct
            self.usage.usd += pt / 1000 * self.config.usd_per_1k_prompt + ct / 1000 * self.config.usd_per_1k_completion

    def map(
        self,
        requests: Sequence[Messages],
        parse: Callable[[str], T] | None = None,
        desc: str = "chat",
        progress: bool = True,
        **params: Any,
    ) -> list[ChatResult[T] | ChatFailure]:
        """Run many requests with at most ``concurrency`` in flight; failures come back as ``ChatFailure``."""
        from tqdm.auto import tqdm

        def one(msgs: Messages) -> ChatResult[T] | ChatFailure:
            try:
                return self.complete(msgs, parse=parse, **params)
            except ChatAPIError as exc:
                return ChatFailure(str(exc))

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            it = pool.map(one, requests)
            return list(tqdm(it, total=len(requests), desc=desc, disable=not progress))


def image_data_url(rgb: Any, fmt: str = ".jpg", quality: int = 85) -> str:
    """An RGB uint8 array (H, W, 3) as a ``data:`` URL for a vision chat message."""
    import base64

    import cv2
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(rgb)[..., ::-1])  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(fmt, arr, [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == ".jpg" else [])
    if not ok:
        raise ValueError("could not encode the frame")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode()}"

