"""Answer generation for the evaluation: the ``Predictor`` protocol, the checkpoint-backed predictor, and
a resumable predictions JSONL.

Everything that scores answers takes a ``Predictor`` — any callable ``(video, question) -> answer`` — so the
metric, judge and report code runs (and is tested) without a model. ``ModelPredictor`` wraps a FaVChat
checkpoint through the model package's public API; it also answers a batch of questions about one or more
videos at once (``answer_batch``), which ``predict`` uses when a predictor has it.

Predictions are appended to a JSONL file as they are produced (one ``{"id", "question", "answer", ...}``
line each, written crash-safe by ``ManifestWriter``); a rerun skips the ids already in the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from favchat.data.manifest import ManifestWriter, iter_lines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRef:
    """A clip to answer about: a video file and an optional ``[start, end)`` frame range."""

    path: Path
    frame_range: tuple[int, int] | None = None


class Predictor(Protocol):
    def __call__(self, video: VideoRef, question: str) -> str: ...


@dataclass
class Request:
    """One question to ask; ``extra`` is copied into the prediction line (e.g. the gold class)."""

    id: str
    video: VideoRef
    question: str
    extra: dict[str, Any] = field(default_factory=dict)


class ModelPredictor:
    """Greedy answers from a FaVChat checkpoint (``FaVChatForConditionalGeneration`` + ``FaVChatProcessor``).

    ``num_frames`` overrides the processor's general and facial frame counts (the Fig. 8 sweep). Runs on
    CUDA when available.
    """

    def __init__(self, checkpoint: str | os.PathLike, num_frames: int | None = None, max_new_tokens: int = 256,
                 device: str | None = None):
        self.path = Path(checkpoint)
        if not self.path.is_dir():
            raise FileNotFoundError(f"checkpoint folder not found: {self.path}")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames, self.max_new_tokens, self.device_name = num_frames, max_new_tokens, device
        self.model: Any = None
        self.processor: Any = None
        self._states: dict[VideoRef, Any] = {}  # the last batch's videos and their tower states

    def load(self) -> None:
        """Load the checkpoint; done on the first question, so a fully resumed run never loads the model."""
        import torch

        from favchat import FaVChatForConditionalGeneration, FaVChatProcessor

        self.device = torch.device(self.device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = FaVChatForConditionalGeneration.from_pretrained(self.path).to(self.device).eval()
        n = self.num_frames
        frames = {} if n is None else {"num_general_frames": n, "num_face_frames": n}
        self.processor = FaVChatProcessor.from_pretrained(self.path, **frames)

    def __call__(self, video: VideoRef, question: str) -> str:
        return self.answer_batch([(video, question)])[0]

    def answer_batch(self, items: Sequence[tuple[VideoRef, str]]) -> list[str]:
        """Greedy answers to (video, question) pairs, generated as one left-padded batch. The videos not in the
        previous batch are encoded together, once each; their tower states are kept for the next batch (whose
        first questions are often about this batch's last video)."""
        import torch

        from favchat.model.modeling import VideoFeatures

        if self.model is None:
            self.load()
        videos = list(dict.fromkeys(v for v, _ in items))
        new = [v for v in videos if v not in self._states]
        states = {v: self._states[v] for v in videos if v in self._states}
        if new:
            frames = [self.processor.load_video(v.path, frame_range=v.frame_range) for v in new]
            pixels = self.processor.video_processor(frames).to(self.device)
            with torch.inference_mode():
                encoded = self.model.encode_video(pixels["general_pixel_values"], pixels.get("face_pixel_values"))
            states |= {v: encoded.row(i) for i, v in enumerate(new)}
        self._states = states
        batch = self.processor(videos=None, questions=[q for _, q in items]).to(self.device)
        with torch.inference_mode():
            new_ids = self.model.generate(**batch, video_features=VideoFeatures.cat([states[v] for v, _ in items]),
                                          max_new_tokens=self.max_new_tokens, do_sample=False)  # (n, L)
        return [a.strip() for a in self.processor.batch_decode(new_ids, skip_special_tokens=True)]


def read_predictions(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Prediction lines by id; a malformed line is an error naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    out: dict[str, dict[str, Any]] = {}
    for ln, line in iter_lines(path):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{ln}: malformed JSON ({e.msg})") from e
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("answer"), str):
            raise ValueError(f"{path}:{ln}: a prediction needs string fields 'id' and 'answer'")
        if d["id"] in out:
            raise ValueError(f"{path}:{ln}: duplicate prediction id {d['id']!r}")
        out[d["id"]] = d
    return out


def predict(predictor: Predictor, requests: Sequence[Request], path: str | os.PathLike,
            desc: str = "predict", progress: bool = True, batch_size: int = 32) -> dict[str, dict[str, Any]]:
    """Answer every request, appending to ``path`` as it goes; ids already in ``path`` are not asked again.
    A predictor with ``answer_batch([(video, question), ...])`` gets the requests ``batch_size`` at a time, in
    order (questions about the same video come in a row in every evaluation here: its tower states are computed
    once)."""
    from tqdm.auto import tqdm

    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate request ids")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    answer_batch = getattr(predictor, "answer_batch", None)
    size = batch_size if answer_batch else 1
    with ManifestWriter(path) as w:
        todo = [r for r in requests if r.id not in w]
        if len(todo) < len(requests):
            log.info("%s: %d of %d answers resumed from %s", desc, len(requests) - len(todo), len(requests), path)
        with tqdm(total=len(todo), desc=desc, disable=not progress) as bar:
            for start in range(0, len(todo), size):
                run = todo[start:start + size]
                answers = (answer_batch([(r.video, r.question) for r in run]) if answer_batch
                           else [predictor(run[0].video, run[0].question)])
                if len(answers) != len(run):
                    raise ValueError(f"the predictor gave {len(answers)} answers to {len(run)} questions")
                for r, answer in zip(run, answers, strict=True):
                    if not isinstance(answer, str):
                        raise TypeError(f"the predictor returned {type(answer).__name__}, expected str")
                    w.add({"id": r.id, "question": r.question, "answer": answer, **r.extra})
                bar.update(len(run))
    done = read_predictions(path)
    return {i: done[i] for i in ids}
