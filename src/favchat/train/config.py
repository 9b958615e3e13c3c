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
    """The model a run starts from when it has no init_from checkpoint."""

    preset: str = "tiny"
    """A preset name (FaVChatConfig.from_preset: tiny, smollm2, paper, qwen3-8b)."""
    overrides: dict[str, object] = field(default_factory=dict)
    """FaVChatConfig fields replacing the preset's (e.g. --model.overrides.num_query_tokens 16)."""


@dataclass
class DataSection:
    """The training data."""

    train_manifest: str = ""
    """JSONL manifest (docs/manifest.md); the run reads its train split."""
    val_manifest: str | None = None
    """Manifest of the val split (None: train_manifest's)."""
    num_workers: int = 0
    """DataLoader worker processes that decode the videos."""
    on_error: Literal["raise", "skip"] = "raise"
    """What a video that fails to decode does: stop the run naming it, or skip it (counted in the log)."""
    cache_videos: bool = False
    """Keep each clip's decoded frames in memory: decode once, not once per sample."""


@dataclass
class LoraSection:
    """LoRA on the LLM; a setting left empty is the preset's ``lora_defaults`` (model/presets.py), and one that
    differs from the preset's is logged."""

    stages: list[int] = field(default_factory=lambda: [3])
    """Stages whose LLM trains through LoRA."""
    r: int | None = None
    """LoRA rank (empty: the preset's)."""
    alpha: int | None = None
    """LoRA alpha, the update scaled by alpha / r (empty: the preset's)."""
    dropout: float | None = None
    """Dropout on the LoRA branch (empty: the preset's)."""
    target_modules: list[str] | None = None
    """The LLM's linear layers that get LoRA (empty: the preset's)."""


@dataclass
class OptimSection:
    """AdamW and its learning-rate schedule."""

    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after the warmup."""
    warmup_steps: int = 0
    """Linear warmup steps."""
    max_steps: int = 100
    """Optimizer steps of the run."""
    batch_size: int = 4
    """Samples per process per forward pass."""
    grad_accum: int = 1
    """Forward passes per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0: off)."""


@dataclass
class TrainConfig:
    """One stage of the progressive supervised training (docs/design.md §2)."""

    stage: int = 1
    """The stage: 1 video-summary, 2 QA, 3 emotion QA; 0 a recipe's reader stage for an LLM built from scratch."""
    output_dir: str = "runs/stage1"
    """Where checkpoints, metrics.csv, config.yaml and final/ go."""
    init_from: str | None = None
    """The previous stage's final/ checkpoint; required for stages 2 and 3 (None: a fresh model)."""
    seed: int = 0
    """Seed of the initialisation and the data order."""
    model: ModelSection = field(default_factory=ModelSection)
    """The model a run without init_from starts from."""
    data: DataSection = field(default_factory=DataSection)
    """The training data."""
    schedule: dict[int, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_SCHEDULE.items()})
    """Per stage, the model components that train (all others are frozen); docs/design.md §2 by default."""
    lora: LoraSection = field(default_factory=LoraSection)
    """LoRA on the LLM."""
    optim: OptimSection = field(default_factory=OptimSection)
    """The optimizer and schedule."""
    precision: Literal["no", "bf16", "fp16"] = "no"
    """Mixed precision (accelerate's)."""
    activation_checkpointing: bool = False
    """Recompute the blocks' activations in the backward pass (less memory, more time)."""
    deterministic: bool = False
    """Deterministic kernels only (train/determinism.py): on a GPU, runs with one seed and resumed runs then train
    the same weights; slower. On a CPU they do already."""
    cache_frozen_towers: bool = False
    """Keep the frozen towers' states of each clip in memory across steps (train/feature_cache.py): the same
    training, less time when clips repeat; not under FSDP / ZeRO-3."""
    log_every: int = 10
    """Optimizer steps between log rows."""
    save_every: int = 50
    """Optimizer steps between checkpoints; the last step always saves."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the oldest are deleted)."""
    tensorboard: bool = True
    """Also log to TensorBoard (when installed)."""

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
        if self.log_every < 1 or self.save_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("log_every, save_every and keep_checkpoints must be >= 1")
        if not self.data.train_manifest:
            raise ValueError("data.train_manifest is required")

    @property
    def trainable(self) -> list[str]:
        return self.schedule[self.stage]

    @property
    def use_lora(self) -> bool:
        return self.stage in self.lora.stages and "language_model" in self.trainable


@dataclass
class FacePretrainConfig:
    """The facial encoder's task pretraining on a manifest's labels (favchat.train.face_pretrain)."""

    output_dir: str = "runs/face_pretrain"
    """Where final/, report.json, metrics.csv and config.yaml go."""
    init_from: str | None = None
    """A FaVChat checkpoint to start from (None: a fresh model from model, its pretrained parts loaded)."""
    seed: int = 0
    """Seed of the head's initialisation and the data order."""
    model: ModelSection = field(default_factory=ModelSection)
    """The model a run without init_from starts from."""
    data: DataSection = field(default_factory=DataSection)
    """The training data (its train split; the report reads the val split)."""
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=1e-3, weight_decay=0.01, max_steps=200,
                                                                     batch_size=32, warmup_steps=10))
    """The optimizer and schedule."""
    eval_clips: int = 200
    """Val clips the report reads (0: no evaluation)."""
    log_every: int = 10
    """Optimizer steps between log rows."""

    def __post_init__(self) -> None:
        if self.log_every < 1:
            raise ValueError("log_every must be >= 1")
        if not self.data.train_manifest:
            raise ValueError("data.train_manifest is required")
