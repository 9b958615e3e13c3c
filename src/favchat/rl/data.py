"""The RL pool: (clip, question, ground-truth labels) samples read from a manifest.

A clip's QA pair becomes an RL sample when its question asks for facial facets the reward can score:
``attribute`` questions are scored on the appearance labels, ``action`` on the actions, ``emotion`` on
the emotion, ``description`` on all three. A narrow question ("What colour is the hair?") is scored
only on the clip's labels that its reference answer mentions (through the taxonomy lexicon), so the
reward does not ask for facets the question never asked about; when the answer mentions none, the
group's labels all count. Yes/no and temporal questions have no label-set answer and are skipped, and so are
the types left out of ``types``. A clip with no question of the kept types gets one sample with
:data:`DEFAULT_QUESTION` over all labels when descriptions are kept.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from favchat.data.manifest import Clip, read_manifest
from favchat.data.taxonomy import GROUPS, mentioned_labels

DEFAULT_QUESTION = "Describe the person's appearance, actions and emotion in the video."
QA_GROUPS: dict[str, tuple[str, ...]] = {
    "attribute": ("appearance",),
    "action": ("action",),
    "emotion": ("emotion",),
    "description": GROUPS,
}


@dataclass(frozen=True)
class RLSample:
    clip: Clip
    question: str
    labels: dict[str, list[str]]  # group -> taxonomy names (groups the question does not ask about: [])


def samples_from_clips(clips: list[Clip], types: Sequence[str] = tuple(QA_GROUPS)) -> list[RLSample]:
    bad = sorted(set(types) - set(QA_GROUPS))
    if bad:
        raise ValueError(f"question types {bad} have no label-set answer; use any of {list(QA_GROUPS)}")
    out: list[RLSample] = []
    for clip in clips:
        made = 0
        for qa in clip.qa:
            groups = QA_GROUPS.get(qa.type)
            if groups is None or qa.type not in types:
                continue
            asked = {g: list(clip.labels.get(g, [])) if g in groups else [] for g in GROUPS}
            if qa.type != "description":
                said, _ = mentioned_labels(qa.answer)
                asked = {g: [n for n in names if n in said] or names for g, names in asked.items()}
            out.append(RLSample(clip, qa.question, asked))
            made += 1
        if not made and "description" in types:
            out.append(RLSample(clip, DEFAULT_QUESTION, {g: list(clip.labels.get(g, [])) for g in GROUPS}))
    return out


def load_pool(manifest: str | Path, split: str | None = None, fraction: float = 1.0, seed: int = 0,
              types: Sequence[str] = tuple(QA_GROUPS)) -> list[RLSample]:
    """RL samples of a manifest (validated by ``read_manifest``); ``fraction`` < 1 keeps a seeded subset."""
    clips = read_manifest(manifest, check_videos=True, split=split)
    samples = samples_from_clips(clips, types)
    if not samples:
        raise ValueError(f"manifest {manifest} (split={split}) yields no RL samples of types {list(types)}")
    return subset(samples, fraction, seed)


def subset(samples: list[RLSample], fraction: float, seed: int = 0) -> list[RLSample]:
    """A seeded random ``fraction`` of the samples (at least one); all of them when fraction is 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(samples)
    return random.Random(seed).sample(samples, max(1, round(fraction * len(samples))))


class VideoLRU:
    """Decoded clips of the RL pool, at most ``size`` of them (the least recently used leaves first; 0 keeps
    none). The paper's 8 + 16 frames at 224 px are ~3.6 MB a clip, so a 10K pool does not fit whole."""

    def __init__(self, load_video: Callable[..., Any], size: int):
        self.load_video, self.size = load_video, size
        self._clips: OrderedDict[tuple, Any] = OrderedDict()

    @staticmethod
    def key(sample: RLSample) -> tuple:
        return str(sample.clip.video_path), sample.clip.frame_range and tuple(sample.clip.frame_range)

    def __len__(self) -> int:
        return len(self._clips)

    def get(self, sample: RLSample) -> Any | None:
        video = self._clips.get(self.key(sample))
        if video is not None:
            self._clips.move_to_end(self.key(sample))
        return video

    def put(self, sample: RLSample, video: Any) -> None:
        if self.size <= 0:
            return
        self._clips[self.key(sample)] = video
        self._clips.move_to_end(self.key(sample))
        while len(self._clips) > self.size:
            self._clips.popitem(last=False)

    def __call__(self, sample: RLSample) -> Any:
        video = self.get(sample)
        if video is None:
            video = self.load_video(sample.clip.video_path, sample.clip.frame_range)
            self.put(sample, video)
        return video


class PoolVideos(torch.utils.data.Dataset):
    """Item i: (i, the decoded video of pool sample i), for a DataLoader whose workers decode the next batches
    while the trainer works on this one. A worker reads the cache as it was when the workers started (fork)
    and decodes the rest; the trainer stores what comes back (``VideoLRU.put``)."""

    def __init__(self, pool: Sequence[RLSample], cache: VideoLRU):
        self.pool, self.cache = pool, cache

    def __len__(self) -> int:
        return len(self.pool)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        sample = self.pool[i]
        video = self.cache.get(sample)
        return i, video if video is not None else self.cache.load_video(sample.clip.video_path, sample.clip.frame_range)
