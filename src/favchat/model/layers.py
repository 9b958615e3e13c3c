"""Attention building blocks shared by the vision towers and the prompt-query levels.

Both blocks are transformers' ``GradientCheckpointingLayer``s: ``model.activation_checkpointing_enable()``
recomputes them in the backward pass. All attention goes through ``F.scaled_dot_product_attention`` (flash/memory-efficient kernels on CUDA,
works on the meta device for shape inspection). Boolean masks mean True = may attend.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer


class Attention(nn.Module):
    """Multi-head attention; ``kv_dim`` lets keys/values come from a stream of another width."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim or dim, dim)
        self.v_proj = nn.Linear(kv_dim or dim, dim)
        self.o_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None,
                kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        kv = x if kv is None else kv
        b, n, d = x.shape
        h = self.num_heads
        q = self.q_proj(x).view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d/h)
        k = self.k_proj(kv).view(b, kv.shape[1], h, d // h).transpose(1, 2)  # (B, h, S, d/h)
        v = self.v_proj(kv).view(b, kv.shape[1], h, d // h).transpose(1, 2)
        mask = None if kv_mask is None else kv_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, N, d/h)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class SelfAttentionBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + MHA(LN x), then + FFN(LN x)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = FeedForward(dim, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), kv_mask=mask)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(GradientCheckpointingLayer):
    """docs/design.md Eq. 4: ``Z = Q + MHA(LN(Q), LN(KV))``, output ``Z + FFN(LN(Z))`` (pre-norm)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_kv = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm_ffn = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, hidden)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        z = q + self.attn(self.norm_q(q), self.norm_kv(kv), kv_mask=kv_mask)  # (B, n_q, d)
        return z + self.ffn(self.norm_ffn(z))
