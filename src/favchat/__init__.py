"""FaVChat: hierarchical prompt-query guided facial video understanding with data-efficient GRPO.

The heavy classes are imported lazily so that ``import favchat`` and ``favchat --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "FaVChatConfig": "favchat.model.configuration",
    "FaVChatForConditionalGeneration": "favchat.model.modeling",
    "FaVChatProcessor": "favchat.model.processing",
}

if TYPE_CHECKING:
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.modeling import FaVChatForConditionalGeneration
    from favchat.model.processing import FaVChatProcessor

__all__ = ["FaVChatConfig", "FaVChatForConditionalGeneration", "FaVChatProcessor", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'favchat' has no attribute {name!r}")
