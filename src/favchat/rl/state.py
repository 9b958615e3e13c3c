"""Per-sample DE-GRPO state: recurrent utility h (Eq. 11), removal round, decay flags and counts, visits.

One row per sample of the RL pool, indexed by the sample's position in the dataset. Stored as float64
/ int64 CPU tensors so that saving and restoring is bit-exact whatever the policy's device and dtype.
Under many processes every rank keeps the full table: the trainer gathers the rows each rank updated
and applies them everywhere (see ``RLTrainer._sync_state``), so the tables stay identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NOT_REMOVED = -1


@dataclass
class SampleState:
    h: torch.Tensor  # (S,) float64, recurrent utility, h^(0) = h0
    removed_round: torch.Tensor  # (S,) int64, round at which the sample left the pool; -1 while in it
    decayed: torch.Tensor  # (S,) bool, rewards decayed at the sample's last visit
    times_decayed: torch.Tensor  # (S,) int64, at how many of its visits the rewards were decayed
    visits: torch.Tensor  # (S,) int64, how many batches the sample has been in

    @classmethod
    def create(cls, num_samples: int, h0: float = 0.5) -> SampleState:
        if num_samples <= 0:
            raise ValueError(f"the RL pool is empty (num_samples={num_samples})")
        return cls(
            h=torch.full((num_samples,), float(h0), dtype=torch.float64),
            removed_round=torch.full((num_samples,), NOT_REMOVED, dtype=torch.int64),
            decayed=torch.zeros(num_samples, dtype=torch.bool),
            times_decayed=torch.zeros(num_samples, dtype=torch.int64),
            visits=torch.zeros(num_samples, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return self.h.numel()

    def active(self) -> torch.Tensor:
        """Indices (long) of the samples still in the pool."""
        return torch.nonzero(self.removed_round == NOT_REMOVED).flatten()

    def update(self, idx: torch.Tensor, h: torch.Tensor, remove: torch.Tensor, decay: torch.Tensor,
               round_idx: int) -> None:
        """Write the new h, removal and decay of the samples ``idx`` (all (B,))."""
        idx = idx.cpu().long()
        self.h[idx] = h.detach().cpu().to(torch.float64)
        self.decayed[idx] = decay.cpu().bool()
        self.times_decayed.index_add_(0, idx, decay.cpu().long())  # a sample twice in a batch counts twice
        rm = idx[remove.cpu().bool()]
        self.removed_round[rm] = round_idx
        self.visits.index_add_(0, idx, torch.ones_like(idx))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"h": self.h.clone(), "removed_round": self.removed_round.clone(), "decayed": self.decayed.clone(),
                "times_decayed": self.times_decayed.clone(), "visits": self.visits.clone()}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> SampleState:
        missing = {"h", "removed_round", "decayed", "times_decayed", "visits"} - set(sd)
        if missing:
            raise ValueError(f"sample-state checkpoint lacks {sorted(missing)}")
        return cls(**{k: sd[k].clone() for k in ("h", "removed_round", "decayed", "times_decayed", "visits")})

    def histogram(self, bins: int = 10) -> list[int]:
        """Counts of h in ``bins`` equal bins over [0, 1] (for the step log)."""
        return torch.histc(self.h.float(), bins=bins, min=0.0, max=1.0).long().tolist()
