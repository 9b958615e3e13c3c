"""The supervised training config (stages 1–3 of the progressive paradigm, paper §2.3, docs/design.md §2).

The freezing schedule is data: ``schedule[stage]`` names the model components that train in that
stage; every other parameter is frozen. Components are the model's submodule names.

Stage 0 is not in the paper: it trains only the LLM, for an LLM built from scratch (the ``tiny``
preset), and stands in for the pretraining that the paper's Qwen2.5-7B-Instruct already has. The LLM
learns the summaries and QA pairs with the clip's labels as phrases in the video slots, one phrase per
slot, in any order (``LabelReadingDataset``; no video is decoded and no tower runs): it learns the
answers' language *and* to answer from what the slots hold. Stages 1 and 2, which keep the LLM frozen,
then train the visual levels to fill the slots with what the LLM reads. Without it, a from-scratch LLM
learns the answers with uninformative video tokens, i.e. learns to ignore them. A pretrained LLM skips it.
With ``label_slots`` stage 0 gives each label of the training clips a slot of its own instead (the model's
``slot_labels``), filled with the label's phrase when the clip shows it and the answer asserts it; stages 1-3
can then also be told directly what each slot should hold (``slot_loss_weight``). A model with a phrase table
(its config's ``phrase_embeddings``: a learned vector per label added to the phrase's token mean) trains that
table here too (the schedule's ``phrase_embeddings``), and only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from favchat.model.components import COMPONENTS

# docs/design.md §2, and stage 0 (above).
DEFAULT_SCHEDULE: dict[int, list[str]] = {
    0: ["language_model", "phrase_embeddings"],
    1: ["general_encoder", "face_encoder", "low_level", "general_adapter", "face_adapter", "static_weights",
        "projector", "text_proj"],
    2: ["general_encoder", "face_encoder", "low_level", "general_qformer", "face_qformer", "projector", "text_proj"],
    3: ["general_adapter", "face_adapter", "static_weights", "general_qformer", "face_qformer", "projector",
        "language_model"],
}
STAGE_TASK = {0: "summary+qa with label phrases in the video slots", 1: "summary", 2: "qa", 3: "emotion_qa"}


@dataclass
class ModelSection:
    preset: str = "tiny"  # a preset name (FaVChatConfig.from_preset) used when no init checkpoint is given
    overrides: dict[str, object] = field(default_factory=dict)  # FaVChatConfig fields for a fresh model


@dataclass
class DataSection:
    train_manifest: str = ""  # JSONL manifest (favchat.data.manifest); the stage's split is read from it
    val_manifest: str | None = None  # defaults to train_manifest's split=val
    num_workers: int = 0
    on_error: Literal["raise", "skip"] = "raise"  # what a video that fails to decode does
    # keep each clip's decoded frames in memory (datasets.MemoizedLoader): decode once, not once per sample
    cache_videos: bool = False


@dataclass
class LoraSection:
    stages: list[int] = field(default_factory=lambda: [3])  # stages whose LLM trains through LoRA
    # None: the preset's lora_defaults (model/presets.py); a value that differs from the preset's is logged
    r: int | None = None
    alpha: int | None = None
    dropout: float | None = None
    target_modules: list[str] | None = None


@dataclass
class OptimSection:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    max_steps: int = 100  # optimizer steps
    batch_size: int = 4  # per process
    grad_accum: int = 1
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    stage: int = 1
    output_dir: str = "runs/stage1"
    init_from: str | None = None  # the previous stage's checkpoint; required for stages 2 and 3
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    schedule: dict[int, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SCHEDULE.items()})
    lora: LoraSection = field(default_factory=LoraSection)
    optim: OptimSection = field(default_factory=OptimSection)
    precision: Literal["no", "bf16", "fp16"] = "no"
    activation_checkpointing: bool = False
    # deterministic kernels only (train/determinism.py): on a GPU, runs with one seed and resumed runs then
    # train the same weights; slower. On a CPU they do already.
    deterministic: bool = False
    # keep the frozen towers' states of each clip in memory across steps (train/feature_cache.py: same
    # training, less time when clips repeat; memory grows with the clips seen; not under FSDP / ZeRO-3)
    cache_frozen_towers: bool = False
    # Stage 0: give each label of the training clips a video slot of its own (sets the model's slot_labels, in
    # taxonomy order; num_query_tokens must hold them), instead of the clip's phrases in any slot.
    label_slots: bool = False
    # Stages 1-3: weight of the slot loss (0: off, as in the paper; needs labelled clips). With label slots,
    # the video tokens' squared distance to the phrases their slots stand for, empty slots zero; without,
    # the clip's label phrases matched to the tokens in any order (model/modeling.py, set_slot_loss).
    slot_loss_weight: float = 0.0
    # stage 0: Gaussian noise on the phrases in the video slots, its norm this fraction of the phrases' RMS norm, so
    # the reader learns to read phrases the visual levels write only approximately (model forward's slot_noise)
    slot_noise: float = 0.0
    max_new_tokens_eval: int = 32
    log_every: int = 10
    save_every: int = 50  # optimizer steps between checkpoints; the last step always saves
    keep_checkpoints: int = 2
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2, 3):
            raise ValueError(f"stage must be 0, 1, 2 or 3, got {self.stage}")
        for st, comps in self.schedule.items():
            bad = [c for c in comps if c not in COMPONENTS]
            if bad:
                raise ValueError(f"schedule.{st} names unknown components {bad}; known: {list(COMPONENTS)}")
        if self.stage not in self.schedule:
            raise ValueError(f"schedule has no entry for stage {self.stage}")
        if self.stage > 1 and not self.init_from:
            raise ValueError(f"stage {self.stage} starts from the stage-{self.stage - 1} checkpoint: "
                             f"set init_from (e.g. --init_from runs/stage{self.stage - 1}/final)")
        if self.optim.max_steps < 1 or self.optim.batch_size < 1 or self.optim.grad_accum < 1:
            raise ValueError("optim.max_steps, optim.batch_size and optim.grad_accum must be >= 1")
        if not self.data.train_manifest:
            raise ValueError("data.train_manifest is required")
        if self.slot_loss_weight < 0:
            raise ValueError(f"slot_loss_weight must be >= 0, got {self.slot_loss_weight}")
        if self.slot_loss_weight > 0 and self.stage == 0:
            raise ValueError("slot_loss_weight applies to stages 1-3 only (stage 0 puts the phrases in the slots itself)")
        if self.slot_noise < 0:
            raise ValueError(f"slot_noise must be >= 0, got {self.slot_noise}")
        if self.slot_noise > 0 and self.stage != 0:
            raise ValueError("slot_noise perturbs the phrases stage 0 puts in the slots: set it for stage 0 only")
        if self.label_slots and self.stage != 0:
            raise ValueError("label_slots lays out the slots in stage 0; later stages keep the model's layout")

    @property
    def trainable(self) -> list[str]:
        return self.schedule[self.stage]

    @property
    def use_lora(self) -> bool:
        return self.stage in self.lora.stages and "language_model" in self.trainable
