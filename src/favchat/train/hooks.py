"""What a recipe may change in a training stage; the defaults are the paper's stage.

``favchat.train.trainer.train(cfg, hooks=...)`` calls them in this order: ``dataset`` (the samples), ``setup``
(after the model is built and frozen: the collate function, and ``module``: extra weights that train with the
model's), then ``forward`` at every step (the outputs, the loss to minimise and extra figures to log), and
``export`` once at the end, beside ``final/``'s model. ``favchat.recipes.tiny_demo`` is an example.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


class StageHooks:
    # Extra trainable weights (set by ``setup``): optimised after the model's parameters, kept in the run's
    # checkpoints; the trainer replaces it by its prepared (possibly wrapped) version.
    module: nn.Module | None = None

    def dataset(self, cfg: Any, load_video: Callable[..., Any]) -> torch.utils.data.Dataset | None:
        """The stage's training samples; None: the stage's own (summaries, QA pairs, emotion QA)."""
        return None

    def setup(self, model: nn.Module, processor: Any) -> Callable[[list], dict[str, Any]] | None:
        """The collate function (None: ``favchat.data.datasets.Collator``); may set ``module``."""
        return None

    def forward(self, model: nn.Module, inputs: dict[str, Any],
                batch: dict[str, Any]) -> tuple[Any, torch.Tensor, dict[str, torch.Tensor]]:
        """One step's (model outputs, loss to minimise, extra scalars to log); ``inputs`` are on the device."""
        outputs = model(**inputs)
        return outputs, outputs.loss, {}

    def export(self, folder: Path) -> None:
        """Write what the recipe keeps beside the final model (``folder`` holds it already)."""
