"""Stage 0's data: the clip's label phrases in the video slots instead of its video (nothing is decoded)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from favchat.data.datasets import QADataset, _Sample, sample_item, summary_samples
from favchat.data.manifest import Clip
from favchat.data.taxonomy import BY_NAME, GROUPS


def label_phrases(clip: Clip) -> list[str]:
    """The clip's labels as taxonomy phrases: appearance, then the actions in the order their events start
    (label order for actions without an event), then the emotion."""
    start = {}
    for e in clip.events:
        start.setdefault(e.label, e.start)
    actions = sorted(clip.labels.get("action", []), key=lambda a: start.get(a, float("inf")))
    names = [*clip.labels.get("appearance", []), *actions, *clip.labels.get("emotion", [])]
    return [BY_NAME[n].phrase for n in names]


class LabelReadingDataset(QADataset):
    """Every summary and QA pair of a clip with the clip's label phrases (``label_phrases``) instead of its
    video; the trainer's hook puts one phrase in each video slot. Each sample shows its phrases in its own
    fixed order (seeded by the sample id), so the LLM learns to read them as a set, in any slot. ``qa_types``
    keeps only those QA types (the summary always stays). Clips without labels are left out."""

    def _samples_of(self, clip: Clip) -> list[_Sample]:
        if not any(clip.labels.get(g) for g in GROUPS):
            return []
        return summary_samples(clip) + super()._samples_of(clip)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        s = self.samples[idx]
        phrases = label_phrases(s.clip)
        random.Random(s.id).shuffle(phrases)
        return sample_item(s, None) | {"phrases": phrases}


def phrase_token_ids(tokenizer, phrase: str) -> list[int]:
    """A label phrase's token ids as it reads inside a sentence (after a space)."""
    return tokenizer(" " + phrase, add_special_tokens=False)["input_ids"]


def encode_phrases(tokenizer, phrases: Sequence[Sequence[str]], num_slots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Phrases for the ``num_slots`` video slots, one per slot: → ids (B, N_q, P) and mask (B, N_q, P) (zero for
    padding and for empty slots). A sample with more phrases than slots keeps its first ``num_slots``."""
    ids = [[phrase_token_ids(tokenizer, p) for p in ps[:num_slots]] for ps in phrases]
    width = max([1] + [len(t) for sample in ids for t in sample])
    slot_ids = torch.full((len(ids), num_slots, width), tokenizer.pad_token_id, dtype=torch.long)
    slot_mask = torch.zeros_like(slot_ids)
    for b, sample in enumerate(ids):
        for k, t in enumerate(sample):
            slot_ids[b, k, :len(t)] = torch.tensor(t, dtype=torch.long)
            slot_mask[b, k, :len(t)] = 1
    return slot_ids, slot_mask
