"""The phrase table: a learned vector per taxonomy label, added to its phrase's mean token embedding.

A phrase in a video slot is the mean of its words' embeddings plus its label's row, so that phrases sharing
a word ("long hair", "wavy hair") can move apart and still carry their words. The rows start at zero (the
plain token mean) and train with the LLM in stage 0; stages 1-3 read them for the slot loss's targets.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from favchat.data.taxonomy import LABELS
from favchat.recipes.tiny_demo.reader import phrase_token_ids

FILE = "phrase_table.safetensors"  # beside the model's weights in a checkpoint folder


class PhraseTable(nn.Module):
    """``weight`` (labels, d_llm); the buffer ``token_ids`` holds each label phrase's token ids (-1 padded),
    by which a slot finds its label's row."""

    max_tokens = 16

    def __init__(self, dim: int, tokenizer=None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(len(LABELS), dim))
        self.register_buffer("token_ids", torch.full((len(LABELS), self.max_tokens), -1, dtype=torch.long))
        if tokenizer is not None:
            self.set_phrases(tokenizer)

    @torch.no_grad()
    def set_phrases(self, tokenizer) -> None:
        self.token_ids.fill_(-1)
        for row, label in enumerate(LABELS):
            ids = phrase_token_ids(tokenizer, label.phrase)
            if len(ids) > self.max_tokens:
                raise ValueError(f"{label.phrase!r} is {len(ids)} tokens, over the phrase table's {self.max_tokens}")
            self.token_ids[row, :len(ids)] = torch.tensor(ids)

    def forward(self, slot_ids: torch.Tensor, slot_mask: torch.Tensor) -> torch.Tensor:
        """(B, N_q, P) token ids and mask → (B, N_q, dim): each filled slot's row, zero for an empty slot."""
        mask = slot_mask.bool()
        filled = mask.any(-1)
        ids = torch.where(mask, slot_ids, -1)[..., :self.max_tokens]
        ids = F.pad(ids, (0, self.max_tokens - ids.shape[-1]), value=-1)
        match = (ids.unsqueeze(-2) == self.token_ids).all(-1)  # (B, N_q, labels)
        if not torch.equal(match.any(-1), filled):
            raise ValueError("a video slot holds a phrase that is not a taxonomy label's, or the phrase table has "
                             "no phrases (set_phrases)")
        return F.embedding(match.float().argmax(-1), self.weight) * filled.unsqueeze(-1).to(self.weight.dtype)

    def save(self, folder: str | Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / FILE))

    @classmethod
    def load(cls, folder: str | Path) -> PhraseTable:
        path = Path(folder) / FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no phrase table (the recipe's stage 0 writes one beside its model)")
        state = load_file(str(path))
        table = cls(state["weight"].shape[1])
        table.load_state_dict(state)
        return table


def slot_vectors(embeddings: nn.Module, table: PhraseTable, slot_ids: torch.Tensor,
                 slot_mask: torch.Tensor) -> torch.Tensor:
    """Phrases as video tokens: (B, N_q, P) token ids → (B, N_q, d_llm), each slot the mean of its phrase's
    token embeddings (``embeddings``: the LLM's input embeddings) plus its label's row; zero for an empty slot.
    The embeddings and the table get the gradient."""
    e = embeddings(slot_ids)  # (B, N_q, P, d_llm)
    m = slot_mask.to(e.dtype).unsqueeze(-1)
    slots = (e * m).sum(2) / m.sum(2).clamp_min(1)  # (B, N_q, d_llm)
    return slots + table(slot_ids, slot_mask).to(slots.dtype)
