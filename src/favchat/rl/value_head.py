"""The value head V_φ of DE-GRPO (Eq. 13): the expected reward of a sample from its prompt and video.

Input: the LLM's last hidden states over the prompt (which holds the projected video tokens), mean-
pooled over the prompt's non-padding positions and detached, so the critic's MSE never pulls on the
policy. Output: one scalar per sample, trained by MSE to the group's mean reward (``de_grpo.value_loss``).
"""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    def __init__(self, hidden_size: int, inner: int = 128):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, inner), nn.GELU(), nn.Linear(inner, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden: (B, L, D) prompt hidden states; mask: (B, L) 1 on real tokens -> (B,) values."""
        m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (hidden.detach() * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
        x = self.norm(pooled.to(self.norm.weight.dtype))
        return self.mlp(x).squeeze(-1)  # (B,)
