"""The supervised training config (stages 1–3 of the progressive paradigm, paper §2.3, docs/design.md §2).

The freezing schedule is data: ``schedule[stage]`` names the model components that train in that
stage; every other parameter is frozen. Components are the model's submodule names.

Stage 0 is not in the paper: it trains only the LLM, for an LLM built from scratch, on a recipe's data
(``favchat.recipes.tiny_demo``: the clip's labels as phrases in the video slots), standing in for the
pretraining that the paper's Qwen2.5-7B-Instruct already has. A pretrained LLM skips it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from favchat.model.components import COMPONENTS

# docs/design.md §2, and stage 0 (above).
DEFAULT_SCHEDULE: dict[int, list[str]] = {
    0: ["language_model"],
    1: ["general_encoder", "face_encoder", "low_level", "general_adapter", "face_adapter", "static_weights",
        "projector", "text_proj"],
    2: ["general_encoder", "face_encoder", "low_level", "general_qformer", "face_qformer", "projector", "text_proj"],
    3: ["general_adapter", "face_adapter", "static_weights", "general_qformer", "face_qformer", "projector",
        "language_model"],
}
STAGE_TASK = {0: "a recipe's reader data", 1: "summary", 2: "qa", 3: "emotion_qa"}


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
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


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

    @property
    def trainable(self) -> list[str]:
        return self.schedule[self.stage]

    @property
    def use_lora(self) -> bool:
        return self.stage in self.lora.stages and "language_model" in self.trainable
