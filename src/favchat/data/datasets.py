"""Torch datasets and the collator for the three training stages and DE-GRPO, read from manifests.

    proc = FaVChatProcessor.from_config(cfg)
    ds = QADataset("data/facesynth/manifest.jsonl", proc.load_video, split="train", on_error="skip")
    dl = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=Collator(proc))
    for batch in dl:
        out = model(**batch["inputs"])            # input_ids, labels (answer tokens only), pixel values, ...
        n_bad += len(batch["skipped"])            # clips that failed to decode in this batch

- ``SummaryDataset`` (stage 1): one sample per clip with a summary; the question is one of a few
  description requests, fixed per clip; the answer is the summary.
- ``QADataset`` (stage 2): one sample per QA pair.
- ``EmotionQADataset`` (stage 3): the emotion-intensive QA: emotion questions, plus every QA pair whose
  answer asserts or denies an emotion label (read through the taxonomy's lexicon).
- ``RLDataset`` (DE-GRPO): one sample per clip with a question and the ground-truth labels by group;
  the reward scores a response against ``labels``.

``__getitem__`` decodes the video with ``load_video(path, frame_range)`` (``FaVChatProcessor.load_video``
or any callable with that signature), so decoding runs in DataLoader workers. A video that fails to
decode is never replaced by another sample: ``on_error="raise"`` raises ``SampleError`` naming the sample
and the file; ``on_error="skip"`` logs a warning, counts it (``dataset.num_skipped``, in the process that
decoded it) and yields a ``Skipped`` marker that the collator drops and reports in ``batch["skipped"]``
(the count that survives DataLoader workers).
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from favchat.data.manifest import Clip, read_manifest
from favchat.data.taxonomy import GROUPS, LABELS_BY_GROUP, mentioned_labels
from favchat.data.video import VideoDecodeError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")
SUMMARY_PROMPTS = (
    "Describe the person in the video in detail.",
    "Summarise this facial video: the person's appearance, actions and emotion.",
    "What does the person look like, what do they do, and how do they feel?",
)
RL_PROMPT = "Describe the person's appearance, actions and emotion in this video."

Source = str | os.PathLike | Sequence[Clip] | Sequence[str | os.PathLike]


class SampleError(RuntimeError):
    """A sample whose video could not be loaded; the message names the sample id and the file."""


@dataclass(frozen=True)
class Skipped:
    """Marker for a sample dropped under ``on_error="skip"``."""

    id: str
    video: str
    error: str


@dataclass(frozen=True)
class _Sample:
    id: str
    clip: Clip
    question: str
    answer: str | None
    qa_type: str


def load_clips(source: Source, split: str | None = None, check_videos: bool = True) -> list[Clip]:
    """Clips from one manifest path, several, or an already-read list of ``Clip``."""
    if isinstance(source, (str, os.PathLike)):
        return read_manifest(source, check_videos=check_videos, split=split)
    items = list(source)
    if all(isinstance(c, Clip) for c in items):
        return [c for c in items if split is None or c.split == split]
    if all(isinstance(p, (str, os.PathLike)) for p in items):
        return [c for p in items for c in read_manifest(p, check_videos=check_videos, split=split)]
    raise TypeError("source must be a manifest path, a list of manifest paths, or a list of Clip")


def load_clip_video(load_video: Callable[..., Any], clip: Clip, what: str) -> Any:
    """``load_video`` on the clip's file and frame range. A video that does not decode raises ``SampleError``
    naming ``what`` and the file; other errors are bugs, not bad files: they propagate as they are."""
    try:
        return load_video(str(clip.video_path), clip.frame_range)
    except (VideoDecodeError, OSError) as e:
        raise SampleError(f"{what}: cannot load video {clip.video_path}: {e}") from e


class _ClipDataset(Dataset, abc.ABC):
    """Shared machinery: a list of samples, video loading, the error policy."""

    def __init__(self, source: Source, load_video: Callable[..., Any], split: str | None = None,
                 on_error: str = "raise", check_videos: bool = True):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if not callable(load_video):
            raise TypeError("load_video must be callable: load_video(path, frame_range) -> video inputs "
                            "(e.g. FaVChatProcessor.load_video)")
        self.load_video, self.on_error = load_video, on_error
        self.clips = load_clips(source, split, check_videos)
        self.samples: list[_Sample] = [s for c in self.clips for s in self._samples_of(c)]
        self.num_skipped = 0

    @abc.abstractmethod
    def _samples_of(self, clip: Clip) -> list[_Sample]:
        """The samples one clip gives (each subclass's own rule)."""

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, idx: int) -> dict[str, Any] | Skipped:
        s = self.samples[idx]
        try:
            video = load_clip_video(self.load_video, s.clip, f"sample {s.id}")
        except SampleError as e:
            if self.on_error == "raise":
                raise
            self.num_skipped += 1
            log.warning("skipped %s (skipped so far in this process: %d)", e, self.num_skipped)
            return Skipped(s.id, str(s.clip.video_path), str(e.__cause__))
        return sample_item(s, video)


def sample_item(s: _Sample, video: Any) -> dict[str, Any]:
    return {"id": s.id, "clip_id": s.clip.id, "video": video, "question": s.question, "answer": s.answer,
            "qa_type": s.qa_type, "labels": {g: list(s.clip.labels.get(g, [])) for g in GROUPS}}


def summary_samples(clip: Clip) -> list[_Sample]:
    if not clip.summary:
        return []
    prompt = SUMMARY_PROMPTS[sum(map(ord, clip.id)) % len(SUMMARY_PROMPTS)]  # fixed per clip, varied across
    return [_Sample(f"{clip.id}#summary", clip, prompt, clip.summary, "description")]


class SummaryDataset(_ClipDataset):
    """Stage 1: video → summary. Clips without a summary are left out."""

    def _samples_of(self, clip: Clip) -> list[_Sample]:
        return summary_samples(clip)


class QADataset(_ClipDataset):
    """Stage 2: one sample per QA pair; ``qa_types`` keeps only those types (None: all)."""

    def __init__(self, source: Source, load_video: Callable[..., Any], split: str | None = None,
                 on_error: str = "raise", check_videos: bool = True, qa_types: Sequence[str] | None = None):
        self.qa_types = None if qa_types is None else set(qa_types)
        super().__init__(source, load_video, split, on_error, check_videos)

    def _keep(self, qa_type: str, answer: str) -> bool:
        return self.qa_types is None or qa_type in self.qa_types

    def _samples_of(self, clip: Clip) -> list[_Sample]:
        return [_Sample(f"{clip.id}#qa{k}", clip, q.question, q.answer, q.type)
                for k, q in enumerate(clip.qa) if self._keep(q.type, q.answer)]


_EMOTIONS = frozenset(LABELS_BY_GROUP["emotion"])


class EmotionQADataset(QADataset):
    """Stage 3: emotion questions, and any QA pair whose answer asserts or denies an emotion label (so a
    yes/no question about an emotion comes with its "no" answers too, not only its "yes" ones)."""

    def _keep(self, qa_type: str, answer: str) -> bool:
        asserted, denied = mentioned_labels(answer)
        return qa_type == "emotion" or bool((asserted | denied) & _EMOTIONS)


class RLDataset(_ClipDataset):
    """DE-GRPO: one sample per clip: an open question (the clip's own description question when it has one)
    and the ground-truth labels by group in ``labels``; ``answer`` is the reference summary (may be None)."""

    def _samples_of(self, clip: Clip) -> list[_Sample]:
        if not any(clip.labels.get(g) for g in GROUPS):
            return []
        q = next((q.question for q in clip.qa if q.type == "description"), RL_PROMPT)
        return [_Sample(f"{clip.id}#rl", clip, q, clip.summary, "description")]


class MemoizedLoader:
    """A ``load_video`` that decodes each (file, frame range) once and keeps its frames in memory, for
    training that sees every clip several times (a clip's QA pairs, the epochs). The memory is per
    process: with DataLoader workers each worker fills its own, for one epoch. About 0.2 MB per clip at
    64 px with 8 + 8 frames; the frames are shared, not copied, so nothing may modify them. ``store``: the dict
    that keeps them (``VideoCache`` hands loaders a shared one); a new one by default."""

    def __init__(self, load_video: Callable[..., Any], store: dict | None = None):
        self.load_video = load_video
        self._frames: dict[tuple[str, tuple[int, int] | None], Any] = {} if store is None else store

    def __len__(self) -> int:
        return len(self._frames)

    def __call__(self, path: str | os.PathLike, frame_range: tuple[int, int] | None = None) -> Any:
        key = (str(path), None if frame_range is None else tuple(frame_range))
        if key not in self._frames:  # a failure raises and is not remembered
            self._frames[key] = self.load_video(path, frame_range)
        return self._frames[key]


class VideoCache:
    """Decoded clips kept across the runs of one process (``favchat demo``: the facial encoder's pretraining and
    stages 1-3). ``loader(processor)`` shares the frames of every earlier loader whose processor had the same
    settings (frames, sizes, face detector), so each clip is decoded, and its face found, once.

    It also keeps the states of a frozen tower per clip (``tower_states``, for the trainer's frozen-tower
    cache), so that a stage whose frozen tower has the weights an earlier stage's had (the demo's facial
    encoder in stages 1-3) reads them instead of computing them again. One tower's states per stream are
    kept: a tower with other weights replaces the stream's earlier states."""

    def __init__(self) -> None:
        self._stores: dict[str, dict] = {}
        self._towers: dict[str, tuple[str, dict]] = {}  # stream -> (the tower's key, states by clip id)

    def loader(self, processor) -> MemoizedLoader:
        key = json.dumps(processor.settings(), sort_keys=True)
        return MemoizedLoader(processor.load_video, self._stores.setdefault(key, {}))

    def tower_states(self, stream: str, tower, processor, manifest: str) -> dict:
        """The store of ``tower``'s states by clip id of ``manifest``: the one an earlier run filled if the tower's
        weights and buffers, the processor's settings and the manifest are the same, else a new, empty one."""
        import hashlib

        digest = hashlib.sha256(json.dumps([processor.settings(), str(manifest)], sort_keys=True).encode())
        for name, t in tower.state_dict().items():
            digest.update(name.encode())
            digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        key = digest.hexdigest()
        if self._towers.get(stream, ("",))[0] != key:
            self._towers[stream] = (key, {})
        return self._towers[stream][1]


@dataclass
class Collator:
    """Batches dataset items with ``processor(videos=, questions=, answers=)``.

    Returns ``{"inputs": <processor output>, "ids", "clip_ids", "questions", "answers", "qa_types",
    "gt_labels", "skipped"}``; ``inputs`` is None when every item of the batch was skipped. ``with_answers=False``
    (generation, RL) leaves the answers out of the processor call. Items without a video (``video`` None: a
    recipe's text-only samples) give text-only inputs.
    """

    processor: Callable[..., Any]
    with_answers: bool = True

    def __call__(self, items: list[dict[str, Any] | Skipped]) -> dict[str, Any]:
        ok = [it for it in items if not isinstance(it, Skipped)]
        skipped = [it for it in items if isinstance(it, Skipped)]
        batch: dict[str, Any] = {
            "ids": [it["id"] for it in ok], "clip_ids": [it["clip_id"] for it in ok],
            "questions": [it["question"] for it in ok],
            "answers": [it["answer"] for it in ok], "qa_types": [it["qa_type"] for it in ok],
            "gt_labels": [it["labels"] for it in ok], "skipped": skipped, "inputs": None,
        }
        if ok:
            if self.with_answers and any(a is None for a in batch["answers"]):
                raise ValueError("with_answers=True but some samples have no answer (use with_answers=False)")
            text_only = ok[0]["video"] is None
            batch["inputs"] = self.processor(videos=None if text_only else [it["video"] for it in ok],
                                             questions=batch["questions"],
                                             answers=batch["answers"] if self.with_answers else None)
        return batch
