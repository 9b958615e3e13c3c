"""The three prompt-query levels of FaVChat (docs/design.md §1), each a module of width d.

- ``TextProjection``: ``T = LN(W_t · E_llm[q])`` (the embedding lookup happens in the model, frozen).
  ``LearnedPrompt`` replaces it in the prompt-agnostic ablation: ``T`` is then learned tokens, the same for
  every question.
- ``LowLevelChain`` (Eq. 1–4): ``F̂_i = LN(F_i W_i + b_i)``; ``M_1 = Block(T, F̂_1)``,
  ``M_i = Block(M_{i−1}, F̂_i)``; returns ``M_L`` and ``F̂_L``. With ``use_m_chain=False`` it is the
  ablation: one Eq. 4 block of ``T`` over the last block's tokens, no chain.
- ``PromptQFormer`` (mid level, InstructBLIP-style): learned queries and text tokens share self-attention,
  only the queries cross-attend to the memory, queries and text have separate FFNs.
- ``WeightAdapter`` (Eq. 5): ``a(Z, T) = w₂ᵀ GELU(W₁ [z̄ ; t̄ ; z̄ ⊙ t̄] + b₁) + b₂``, one scalar per sample.
- ``Projector``: ``d → d_llm``, two linear layers with GELU.

Text positions are padded per batch: ``text_mask`` (B, n_t) marks real tokens, and every level masks
padding (attention keys, memory, pooling) so a padded batch computes what single samples do.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from favchat.model.layers import Attention, CrossAttentionBlock, FeedForward


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, N, d) → (B, d), averaging the positions where mask is 1."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextProjection(nn.Module):
    """W_t and the LayerNorm of ``T = LN(W_t · E_llm[q])``."""

    def __init__(self, llm_dim: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.proj = nn.Linear(llm_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, question_embeds: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(question_embeds))  # (B, n_t, d)


class LearnedPrompt(nn.Module):
    """The prompt-agnostic ablation's ``T``: ``num_tokens`` learned tokens that every level reads where it would
    read the question (the chain's start, the Q-Formers' text, the adapters' t̄), whatever was asked."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(num_tokens, dim))

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.tokens.expand(batch_size, -1, -1)  # (B, n_p, d)


class LowLevelChain(nn.Module):
    """Eq. 1–4 over the selected blocks (``use_m_chain``) or the single cross-attention ablation."""

    def __init__(self, block_dims: list[int], dim: int, num_heads: int, hidden: int, use_m_chain: bool,
                 eps: float = 1e-6):
        """``block_dims``: widths of the blocks the chain reads (only the last one for the ablation)."""
        super().__init__()
        if not use_m_chain and len(block_dims) != 1:
            raise ValueError("without the M chain the low level reads exactly one block (the last)")
        self.use_m_chain = use_m_chain
        # Eq. 1: one projection + LN per selected block
        self.proj = nn.ModuleList(nn.Linear(c, dim) for c in block_dims)
        self.norm = nn.ModuleList(nn.LayerNorm(dim, eps=eps) for _ in block_dims)
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads, hidden, eps) for _ in block_dims)

    def forward(self, text: torch.Tensor, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """text (B, n_t, d); feats: the selected blocks' tokens (B, N_i, C_i) → (M_L (B, n_t, d), F̂_L (B, N_L, d))."""
        m = text  # Eq. 2 starts from T
        f_hat = text
        for proj, norm, block, f in zip(self.proj, self.norm, self.blocks, feats, strict=True):
            f_hat = norm(proj(f))  # Eq. 1: (B, N_i, d)
            m = block(m, f_hat)  # Eq. 2/3 (Eq. 4 block)
        return m, f_hat


class QFormerLayer(GradientCheckpointingLayer):
    """One layer; ``text_ffn=False`` for the last layer, whose text states nothing reads (an unused FFN
    would get no gradient, and distributed training rejects parameters without one)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float = 1e-6, text_ffn: bool = True):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim, eps=eps)
        self.self_attn = Attention(dim, num_heads)
        self.norm_cross_q = nn.LayerNorm(dim, eps=eps)
        self.norm_cross_kv = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = Attention(dim, num_heads)
        self.norm_ffn_query = nn.LayerNorm(dim, eps=eps)
        self.ffn_query = FeedForward(dim, hidden)
        self.norm_ffn_text = nn.LayerNorm(dim, eps=eps) if text_ffn else None
        self.ffn_text = FeedForward(dim, hidden) if text_ffn else None

    def forward(self, queries: torch.Tensor, text: torch.Tensor, self_mask: torch.Tensor,
                memory: torch.Tensor, memory_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        n_q = queries.shape[1]
        x = torch.cat([queries, text], 1)  # (B, N_q + n_t, d)
        x = x + self.self_attn(self.norm_self(x), kv_mask=self_mask)  # queries and text share self-attention
        q, t = x[:, :n_q], x[:, n_q:]
        q = q + self.cross_attn(self.norm_cross_q(q), self.norm_cross_kv(memory), kv_mask=memory_mask)
        q = q + self.ffn_query(self.norm_ffn_query(q))  # (B, N_q, d)
        if self.ffn_text is not None:
            t = t + self.ffn_text(self.norm_ffn_text(t))  # (B, n_t, d)
        return q, t


class PromptQFormer(nn.Module):
    """Prompt-guided Q-Former: (text T, memory) → Z (B, N_q, d).

    ``memory_dim`` given: the Q-Former owns the projection of a raw tower block to width d (the general
    stream's memory), so the training schedule's "general_qformer" covers it."""

    def __init__(self, num_queries: int, dim: int, num_heads: int, hidden: int, num_layers: int,
                 eps: float = 1e-6, memory_dim: int | None = None):
        super().__init__()
        self.memory_proj = (nn.Sequential(nn.Linear(memory_dim, dim), nn.LayerNorm(dim, eps=eps))
                            if memory_dim is not None else None)
        self.query_tokens = nn.Parameter(torch.zeros(num_queries, dim))
        self.layers = nn.ModuleList(QFormerLayer(dim, num_heads, hidden, eps, text_ffn=i + 1 < num_layers)
                                    for i in range(num_layers))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.memory_proj is None else self.memory_proj(memory)  # (B, S, d)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor | None, memory: torch.Tensor,
                memory_mask: torch.Tensor | None = None, memory_projected: bool = False) -> torch.Tensor:
        if not memory_projected:
            memory = self.project_memory(memory)
        b, n_t = text.shape[:2]
        q = self.query_tokens.to(text.dtype).expand(b, -1, -1)  # (B, N_q, d)
        if text_mask is None:
            text_mask = torch.ones(b, n_t, dtype=torch.bool, device=text.device)
        self_mask = torch.cat([torch.ones(b, q.shape[1], dtype=torch.bool, device=text.device),
                               text_mask.bool()], 1)  # (B, N_q + n_t)
        t = text
        for layer in self.layers:
            q, t = layer(q, t, self_mask, memory, memory_mask)
        return self.norm(q)  # (B, N_q, d)


class WeightAdapter(nn.Module):
    """Eq. 5: a text-conditioned score of one stream's query tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(3 * dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, z: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        z_bar = z.mean(1)  # (B, d)
        t_bar = masked_mean(text, text_mask)  # (B, d)
        return self.fc2(self.act(self.fc1(torch.cat([z_bar, t_bar, z_bar * t_bar], -1)))).squeeze(-1)  # (B,)


class Projector(nn.Sequential):
    def __init__(self, dim: int, llm_dim: int):
        super().__init__(nn.Linear(dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))
