"""Answer generation for the evaluation: the ``Predictor`` protocol, the checkpoint-backed predictor, and
a resumable predictions JSONL.

Everything that scores answers takes a ``Predictor`` — any callable ``(video, question) -> answer`` — so the
metric, judge and report code runs (and is tested) without a model. ``ModelPredictor`` wraps a FaVChat
checkpoint through the model package's public API.

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
        self._video: tuple[VideoRef, Any, Any] | None = None  # the last video asked about: frames, tower states

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
        import torch

        if self.model is None:
            self.load()
        # The questions about one video come in a row: its frames and tower states are kept for the next one.
        if self._video is None or self._video[0] != video:
            frames = self.processor.load_video(video.path, frame_range=video.frame_range)
            self._video = (video, frames, None)
        _, frames, features = self._video
        batch = self.processor(videos=[frames], questions=[question]).to(self.device)
        with torch.inference_mode():
            if features is None:
                features = self.model.encode_video(batch["general_pixel_values"], batch.get("face_pixel_values"))
                self._video = (video, frames, features)
            new_ids = self.model.generate(**batch, video_features=features, max_new_tokens=self.max_new_tokens,
                                          do_sample=False)  # (1, L)
        return self.processor.batch_decode(new_ids, skip_special_tokens=True)[0].strip()


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
            desc: str = "predict", progress: bool = True) -> dict[str, dict[str, Any]]:
    """Answer every request, appending to ``path`` as it goes; ids already in ``path`` are not asked again."""
    from tqdm.auto import tqdm

    ids = [r.id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate request ids")
    with ManifestWriter(path) as w:
        todo = [r for r in requests if r.id not in w]
        if len(todo) < len(requests):
            log.info("%s: %d of %d answers resumed from %s", desc, len(requests) - len(todo), len(requests), path)
        for r in tqdm(todo, desc=desc, disable=not progress):
            answer = predictor(r.video, r.question)
            if not isinstance(answer, str):
                raise TypeError(f"the predictor returned {type(answer).__name__}, expected str")
            w.add({"id": r.id, "question": r.question, "answer": answer, **r.extra})
    done = read_predictions(path)
    return {i: done[i] for i in ids}
