"""Shared builders for the model tests: tiny presets, a processor, and batches from synthetic frames."""

from __future__ import annotations

import numpy as np
import torch

from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

QUESTIONS = ["Does the person smile?", "What colour is the hair of the person in the video?"]
ANSWERS = ["Yes, the person smiles.", "Brown."]


def tiny(seed: int = 0, **overrides) -> tuple[FaVChatForConditionalGeneration, FaVChatProcessor]:
    cfg = FaVChatConfig.from_preset("tiny", **overrides)
    torch.manual_seed(seed)
    model = FaVChatForConditionalGeneration(cfg).eval()
    return model, FaVChatProcessor.from_config(cfg)


def frames(n: int = 12, size: int = 40, seed: int = 0) -> np.ndarray:
    """A moving random texture: (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size, 2 * size, 3), dtype=np.uint8)
    return np.stack([base[:, i:i + size] for i in range(n)])


def batch(processor: FaVChatProcessor, answers: bool = True, n: int = 2, **kw):
    videos = [frames(seed=i) for i in range(n)]
    return processor(videos, QUESTIONS[:n], ANSWERS[:n] if answers else None, **kw)
