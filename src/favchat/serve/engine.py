"""The model behind ``favchat serve``: one thread runs it, requests wait in line in front of it, and the towers'
states of recent videos are kept by content hash.

A request (``Engine.submit``) becomes a ``Job``: fetch the video's bytes and hash them; take the towers' states
from the cache, or decode the video (one decoding thread) and run the towers (the model thread); then generate
on the model thread, token by token, into the job's event queue. The model thread is the only one that touches
the model, so requests never run it at once; a job that is cancelled (its client left) stops at the next token,
or never starts if it was still waiting.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from favchat.serve.errors import APIError
from favchat.serve.settings import MiB, ServeConfig
from favchat.serve.videos import VideoBlob, as_file, check_video, fetch_video, preview_frames, unreadable

log = logging.getLogger(__name__)


@dataclass
class EncodedVideo:
    """One video's towers' states (``VideoFeatures``, batch 1, on the model's device) and what the page shows."""

    features: Any
    face_source: str  # "detector" | "full_frame"
    nbytes: int


class FeatureCache:
    """Least-recently-used ``EncodedVideo`` by content hash, bounded by the bytes of the tensors it holds.
    Used from the event loop's thread only."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, EncodedVideo] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> EncodedVideo | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: str, entry: EncodedVideo) -> None:
        if key in self._entries or entry.nbytes > self.max_bytes:
            return
        while self.bytes + entry.nbytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += entry.nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def stats(self) -> dict[str, Any]:
        return {"videos": len(self), "mib": round(self.bytes / MiB, 3), "max_mib": round(self.max_bytes / MiB, 3),
                "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


@dataclass
class Sampling:
    max_tokens: int
    temperature: float  # 0: greedy
    top_p: float
    seed: int | None


@dataclass
class Prompt:
    inputs: dict[str, torch.Tensor]  # the processor's text inputs: input_ids, attention_mask, question_ids/mask
    tokens: int  # prompt length, the N_q video tokens included


@dataclass
class Finish:
    completion_tokens: int
    reason: str  # "stop" (end of answer) | "length" (max_tokens reached)


@dataclass
class Job:
    """One answer in the making. Its events, in order: ("text", piece)..., ("weights", (w_g, w_f)), then
    ("done", Finish) or ("error", APIError), then ("end", None)."""

    id: str
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    ready: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    stop: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None

    def cancel(self) -> None:
        """Stop wherever it is: at the next token when generating, before starting when waiting."""
        self.stop.set()
        if self.task is not None:
            self.task.cancel()


class _Tokens:
    """A transformers streamer (``put``/``end``) that turns new token ids into text pieces for ``emit``."""

    def __init__(self, tokenizer, emit: Callable[[str, Any], None]):
        self.tokenizer, self.emit = tokenizer, emit
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate passes the prompt first (empty here: it generates from embeddings)
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        # A character split over tokens decodes to U+FFFD until its last byte arrives.
        if (final or not text.endswith("\ufffd")) and text.startswith(self.sent) and len(text) > len(self.sent):
            self.emit("text", text[len(self.sent):])
            self.sent = text


class _Stop:
    """A stopping criterion: every sequence is done once the job is cancelled."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Engine:
    """The loaded checkpoint, the model thread, the cache and the admission count. Create it and call its async
    methods from one event loop."""

    def __init__(self, config: ServeConfig):
        from favchat import FaVChatForConditionalGeneration, FaVChatProcessor

        self.config = config
        self.processor = FaVChatProcessor.from_pretrained(config.model)
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = FaVChatForConditionalGeneration.from_pretrained(config.model).to(self.device).eval()
        # The model thread decodes answers with a tokenizer of its own while the event loop's thread tokenizes
        # prompts: a fast tokenizer is not made to be shared between threads.
        self._decoder = copy.deepcopy(self.processor.tokenizer)
        eos = self.model.language_model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.context_length = getattr(self.model.config.text_config, "max_position_embeddings", None)
        self.roots = [os.path.realpath(r) for r in config.allowed_roots]
        self.cache = FeatureCache(int(config.cache_mb * MiB))
        self.counts: Counter[str] = Counter()
        self.pending = 0
        self.tokens_generated = 0
        self._service_s = 1.0  # running mean of a request's time in the server, for Retry-After
        # One thread owns the model (requests run it one at a time, in arrival order); one decodes videos, in
        # parallel with the model (the face detectors are not known to be safe to share between threads).
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="favchat-model")
        self._decode_thread = ThreadPoolExecutor(1, thread_name_prefix="favchat-decode")
        self._loading: dict[str, asyncio.Future] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="favchat-serve-")
        self.tmp = Path(self._tmp.name)
        self._warm_up()

    def _warm_up(self) -> None:
        """Decode, encode and answer once, so the first client does not wait for libraries' lazy start-up."""
        import numpy as np

        from favchat.data.video import write_video

        path = write_video(self.tmp / "warm-up.mp4", np.zeros((4, 64, 64, 3), np.uint8))
        video = self._towers(self.processor.load_video(path))
        path.unlink()
        self._generate(video, self.prompt("Hello?", [], 2), Sampling(2, 0.0, 1.0, 0), threading.Event(),
                       lambda kind, value: None)
        self.tokens_generated = 0

    def close(self) -> None:
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        self._decode_thread.shutdown(wait=False, cancel_futures=True)
        self._tmp.cleanup()

    # ------------------------------------------------------------------ requests
    def prompt(self, question: str, history: list[tuple[str, str]], max_tokens: int) -> Prompt:
        """The text inputs of a question (checked: a clear 400 before the request waits for anything)."""
        try:
            batch = self.processor(videos=None, questions=[question], history=[history])
        except ValueError as e:
            raise APIError(400, str(e), "invalid_messages", "messages") from None
        tokens = batch["input_ids"].shape[1]
        if self.context_length and tokens + max_tokens > self.context_length:
            raise APIError(400, f"the conversation is {tokens} tokens and max_tokens {max_tokens}: over the model's "
                           f"context of {self.context_length} tokens", "context_length_exceeded", "messages")
        return Prompt(dict(batch), tokens)

    def admit(self) -> None:
        """Count a request in, or refuse it with 503 and Retry-After when ``max_pending`` are in already."""
        if self.pending >= self.config.max_pending:
            self.counts["busy"] += 1
            retry = max(1, math.ceil(self._service_s))
            raise APIError(503, f"the server is busy ({self.pending} requests in hand); retry in {retry} s",
                           "server_busy", headers={"Retry-After": str(retry)})
        self.pending += 1

    def submit(self, job_id: str, url: str, prompt: Prompt, sampling: Sampling) -> Job:
        """Admit (or 503) and start answering; ``job.ready`` resolves once the video is encoded (or fails with the
        request's APIError), then the events flow."""
        self.admit()
        job = Job(job_id)
        job.ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # a client that left never reads it
        started = time.monotonic()
        job.task = asyncio.create_task(self._run(job, url, prompt, sampling))
        # A done-callback, not a finally: it runs even for a task cancelled before it started.
        job.task.add_done_callback(lambda task: self._finished(job, task, started))
        return job

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Admit a request handled in one coroutine (the page's frames)."""
        self.admit()
        started = time.monotonic()
        try:
            yield
        finally:
            self._release(started)

    def _release(self, started: float) -> None:
        self.pending -= 1
        self._service_s = 0.8 * self._service_s + 0.2 * (time.monotonic() - started)

    def _finished(self, job: Job, task: asyncio.Task, started: float) -> None:
        self._release(started)
        if task.cancelled():
            self.counts["cancelled"] += 1
            job.stop.set()
        if not job.ready.done():
            job.ready.cancel()
        job.events.put_nowait(("end", None))

    async def _run(self, job: Job, url: str, prompt: Prompt, sampling: Sampling) -> None:
        loop = asyncio.get_running_loop()

        def emit(kind: str, value: Any) -> None:  # from the model thread
            loop.call_soon_threadsafe(job.events.put_nowait, (kind, value))

        try:
            blob = await self.fetch(url)
            video, cached = await self.encoded(blob)
            job.ready.set_result({"sha256": blob.sha256, "cached": cached, "face_source": video.face_source})
            work = self._model_thread.submit(self._generate, video, prompt, sampling, job.stop, emit)
            try:
                finish = await asyncio.shield(asyncio.wrap_future(work))
            except asyncio.CancelledError:
                # Its client left. A generation under way stops at its next token (job.stop is set); the request
                # stays counted in `pending` until then, so the count never hides work the model is still doing.
                if not work.cancel():
                    running = asyncio.wrap_future(work)
                    await asyncio.wait([running])
                    running.exception()  # retrieved: the client that would have read it is gone
                raise
            if job.stop.is_set():  # its client left during the last token
                self.counts["cancelled"] += 1
            else:
                self.counts["answered"] += 1
                job.events.put_nowait(("done", finish))
        except Exception as e:
            error = e if isinstance(e, APIError) else _internal(e)
            self.counts["bad_request" if error.status < 500 else "failed"] += 1
            if job.ready.done():
                job.events.put_nowait(("error", error))
            else:
                job.ready.set_exception(error)

    async def fetch(self, url: str) -> VideoBlob:
        return await asyncio.to_thread(fetch_video, url, self.config, self.roots)

    async def encoded(self, blob: VideoBlob) -> tuple[EncodedVideo, bool]:
        """The towers' states of a video, and whether they came from the cache. Requests for a video being
        encoded wait for that encoding; it runs as a task of its own, so a client that leaves does not stop
        it for the others."""
        if (hit := self.cache.get(blob.sha256)) is not None:
            return hit, True
        future = self._loading.get(blob.sha256)
        if future is None:
            future = asyncio.ensure_future(self._encode(blob))
            self._loading[blob.sha256] = future
            future.add_done_callback(lambda f: (self._loading.pop(blob.sha256, None),
                                                f.cancelled() or f.exception()))  # exception: retrieved
        return await asyncio.shield(future), False

    async def _encode(self, blob: VideoBlob) -> EncodedVideo:
        loop = asyncio.get_running_loop()
        inputs = await loop.run_in_executor(self._decode_thread, self._decode, blob)
        video = await loop.run_in_executor(self._model_thread, self._towers, inputs)
        self.cache.put(blob.sha256, video)
        return video

    def _decode(self, blob: VideoBlob):
        with as_file(blob, self.tmp) as path:
            check_video(path, self.config)
            try:
                return self.processor.load_video(path)
            except Exception as e:  # untrusted bytes: any decoder failure is the video's fault
                raise unreadable(path, e) from None

    async def frames(self, url: str) -> dict[str, Any]:
        """A few frames of a video for the page, and its size, length and hash (``preview_frames``)."""
        blob = await self.fetch(url)

        def run() -> dict[str, Any]:
            with as_file(blob, self.tmp) as path:
                info = check_video(path, self.config)
                frames = preview_frames(path, info, self.config.preview_frames)
            return {"sha256": blob.sha256, "frames": frames, "num_frames": info.num_frames, "fps": info.fps,
                    "width": info.width, "height": info.height, "duration_s": info.num_frames / info.fps}

        result = await asyncio.get_running_loop().run_in_executor(self._decode_thread, run)
        return result | {"cached": blob.sha256 in self.cache}

    # ------------------------------------------------------------------ on the model thread
    @torch.inference_mode()
    def _towers(self, inputs) -> EncodedVideo:
        general, face = self.processor.pixel_values([inputs])
        features = self.model.encode_video(general.to(self.device), face.to(self.device))
        nbytes = sum(t.numel() * t.element_size() for states in (features.general, features.face) if states
                     for t in states.values())
        return EncodedVideo(features, inputs.face_source, nbytes)

    @torch.inference_mode()
    def _generate(self, video: EncodedVideo, prompt: Prompt, sampling: Sampling, stop: threading.Event,
                  emit: Callable[[str, Any], None]) -> Finish:
        if stop.is_set():  # its client left while it waited
            return Finish(0, "stop")
        inputs = {k: v.to(self.device) for k, v in prompt.inputs.items()}
        # Every request draws from its own seed, so one client's sampling does not depend on another's.
        torch.manual_seed(sampling.seed if sampling.seed is not None else secrets.randbits(63))
        sample = sampling.temperature > 0
        streamer = _Tokens(self._decoder, emit)
        from transformers import StoppingCriteriaList

        ids = self.model.generate(**inputs, video_features=video.features, max_new_tokens=sampling.max_tokens,
                                  do_sample=sample, temperature=sampling.temperature if sample else 1.0,
                                  top_p=sampling.top_p if sample else 1.0, streamer=streamer,
                                  stopping_criteria=StoppingCriteriaList([_Stop(stop)]))
        n = ids.shape[1]
        self.tokens_generated += n  # written by this thread only
        if not stop.is_set():
            # The adapters' weights for this question (Eq. 6): the prompt-guided levels again, on the cached states
            # (generate does not return them), after the answer so that they do not delay its first token.
            _, weights = self.model.video_tokens(video.features, inputs["question_ids"], inputs["question_mask"])
            emit("weights", tuple(weights[0].float().tolist()))
        at_limit = n >= sampling.max_tokens and (n == 0 or int(ids[0, -1]) not in self.eos_ids)
        return Finish(n, "length" if at_limit else "stop")

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        import resource

        memory = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if self.device.type == "cuda":
            memory["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(self.device) / MiB, 1)
        return {"pending": self.pending, "max_pending": self.config.max_pending, "requests": dict(self.counts),
                "tokens_generated": self.tokens_generated, "cache": self.cache.stats(), "memory": memory,
                "device": str(self.device)}


def _internal(error: Exception) -> APIError:
    log.error("request failed", exc_info=error)
    return APIError(500, "the server failed to answer this request (the error is in its log)", "internal_error")
