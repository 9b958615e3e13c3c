"""The recipe's stage config: a training stage plus the weight of the recipe's slot loss (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

from favchat.train.config import TrainConfig


@dataclass
class DemoStageConfig(TrainConfig):
    """One stage of the demo's recipe: a training stage (favchat train's fields) plus the slot loss."""

    slot_loss_weight: float = 0.0
    """Stages 1-3: weight of the slot loss toward the clip's label phrases (0: off, as in the paper)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.slot_loss_weight < 0:
            raise ValueError(f"slot_loss_weight must be >= 0, got {self.slot_loss_weight}")
        if self.slot_loss_weight > 0 and self.stage == 0:
            raise ValueError("slot_loss_weight applies to stages 1-3 only (stage 0 puts the phrases in the slots itself)")
