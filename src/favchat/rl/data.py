"""The RL pool: (clip, question, ground-truth labels) samples read from a manifest.

A clip's QA pair becomes an RL sample when its question asks for facial facets the reward can score:
``attribute`` questions are scored on the appearance labels, ``action`` on the actions, ``emotion`` on
the emotion, ``description`` on all three. A narrow question ("What colour is the hair?") is scored
only on the clip's labels that its reference answer mentions (through the taxonomy lexicon), so the
reward does not ask for facets the question never asked about; when the answer mentions none, the
group's labels all count. Yes/no and temporal questions have no label-set answer and are skipped. A clip with none of those gets one sample with :data:`DEFAULT_QUESTION` over all labels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

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


def samples_from_clips(clips: list[Clip]) -> list[RLSample]:
    out: list[RLSample] = []
    for clip in clips:
        made = 0
        for qa in clip.qa:
            groups = QA_GROUPS.get(qa.type)
            if groups is None:
                continue
            asked = {g: list(clip.labels.get(g, [])) if g in groups else [] for g in GROUPS}
            if qa.type != "description":
                said, _ = mentioned_labels(qa.answer)
                asked = {g: [n for n in names if n in said] or names for g, names in asked.items()}
            out.append(RLSample(clip, qa.question, asked))
            made += 1
        if not made:
            out.append(RLSample(clip, DEFAULT_QUESTION, {g: list(clip.labels.get(g, [])) for g in GROUPS}))
    return out


def load_pool(manifest: str | Path, split: str | None = None, fraction: float = 1.0, seed: int = 0) -> list[RLSample]:
    """RL samples of a manifest (validated by ``read_manifest``); ``fraction`` < 1 keeps a seeded subset."""
    clips = read_manifest(manifest, check_videos=True, split=split)
    samples = samples_from_clips(clips)
    if not samples:
        raise ValueError(f"manifest {manifest} (split={split}) yields no RL samples")
    return subset(samples, fraction, seed)


def subset(samples: list[RLSample], fraction: float, seed: int = 0) -> list[RLSample]:
    """A seeded random ``fraction`` of the samples (at least one); all of them when fraction is 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(samples)
    return random.Random(seed).sample(samples, max(1, round(fraction * len(samples))))
