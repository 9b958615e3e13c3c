"""The recipe's stages as trainer hooks: stage 0 (the reader) and stages 1-3 with the slot loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from favchat.data.datasets import Collator, Skipped
from favchat.data.taxonomy import features_to_phrases
from favchat.recipes.tiny_demo.phrase_table import PhraseTable, slot_vectors
from favchat.recipes.tiny_demo.reader import LabelReadingDataset, encode_phrases
from favchat.recipes.tiny_demo.slot_loss import slot_loss
from favchat.train.config import TrainConfig
from favchat.train.hooks import StageHooks


@dataclass
class PhraseCollator(Collator):
    """The batch of ``Collator`` plus each sample's label phrases as ``phrase_ids`` / ``phrase_mask`` (B, N_q, P):
    stage 0's phrases (``LabelReadingDataset``) or, for a sample with a video, the clip's label phrases."""

    num_slots: int = 8

    def __call__(self, items: list[dict[str, Any] | Skipped]) -> dict[str, Any]:
        batch = super().__call__(items)
        ok = [it for it in items if not isinstance(it, Skipped)]
        if ok:
            phrases = [it["phrases"] if "phrases" in it else
                       [p for ps in features_to_phrases(it["labels"]).values() for p in ps] for it in ok]
            batch["phrase_ids"], batch["phrase_mask"] = encode_phrases(self.processor.tokenizer, phrases,
                                                                       self.num_slots)
        return batch


class ReaderStage(StageHooks):
    """Stage 0: the LLM and the phrase table learn to answer from the label phrases in the video slots."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def dataset(self, cfg: TrainConfig, load_video: Callable[..., Any]) -> LabelReadingDataset:
        return LabelReadingDataset(cfg.data.train_manifest, load_video, split="train", on_error=cfg.data.on_error)

    def setup(self, model: nn.Module, processor: Any) -> PhraseCollator:
        self.embeddings = model.get_input_embeddings()
        init = self.cfg.init_from
        self.module = (PhraseTable.load(init) if init and (Path(init) / "phrase_table.safetensors").is_file()
                       else PhraseTable(self.embeddings.weight.shape[1], processor.tokenizer))
        self.module.to(self.embeddings.weight.device).requires_grad_(True)
        return PhraseCollator(processor, num_slots=model.config.num_query_tokens)

    def forward(self, model, inputs, batch):
        device = self.embeddings.weight.device
        video = slot_vectors(self.embeddings, self.module, batch["phrase_ids"].to(device),
                             batch["phrase_mask"].to(device))  # (B, N_q, d_llm)
        outputs = model(**inputs, video_embeds=video)
        return outputs, outputs.loss, {}

    def export(self, folder: Path) -> None:
        self.module.save(folder)


class SlotLossStage(StageHooks):
    """Stages 1-3: the LM loss plus ``weight`` times the slot loss toward the clip's label phrases, whose
    vectors are those stage 0's reader saw (the phrase table of ``init_from``, frozen here)."""

    def __init__(self, cfg: TrainConfig, weight: float):
        self.cfg, self.weight = cfg, weight

    def setup(self, model: nn.Module, processor: Any) -> PhraseCollator:
        self.embeddings = model.get_input_embeddings()
        self.table = PhraseTable.load(self.cfg.init_from).to(self.embeddings.weight.device).requires_grad_(False)
        return PhraseCollator(processor, num_slots=model.config.num_query_tokens)

    def forward(self, model, inputs, batch):
        outputs = model(**inputs)
        device = self.embeddings.weight.device
        ids, mask = batch["phrase_ids"].to(device), batch["phrase_mask"].to(device)
        with torch.no_grad():
            targets = slot_vectors(self.embeddings, self.table, ids, mask)  # (B, N_q, d_llm)
        loss = slot_loss(outputs.video_hidden_states, targets, mask.bool().any(-1), ids)
        return outputs, outputs.loss + self.weight * loss, {"slot_loss": loss}

    def export(self, folder: Path) -> None:
        self.table.save(folder)


def stage_hooks(cfg: TrainConfig) -> StageHooks | None:
    """The hooks of one of the recipe's stages: the reader in stage 0, the slot loss in a stage that weighs it."""
    if cfg.stage == 0:
        return ReaderStage(cfg)
    weight = getattr(cfg, "slot_loss_weight", 0.0)
    return SlotLossStage(cfg, weight) if weight > 0 else None


