"""The FaVChat model: configuration, vision towers, prompt-query levels, the model, its processor, presets.

Import from the submodules (``favchat.model.modeling`` ...) or the package root (``from favchat import
FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor``); see docs/model.md. ``load_tower`` (from
``favchat.model.checkpoints``) builds the paper's backbones from their released checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from favchat.model.checkpoints import load_tower

__all__ = ["load_tower"]


def __getattr__(name: str) -> Any:
    # Lazily, so that importing a torch-free submodule (``components``) imports no torch.
    if name == "load_tower":
        from favchat.model.checkpoints import load_tower

        return load_tower
    raise AttributeError(f"module 'favchat.model' has no attribute {name!r}")
