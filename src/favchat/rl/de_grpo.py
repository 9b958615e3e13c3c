"""The equations of DE-GRPO (paper §2.2, App. D; docs/design.md §3), one small pure function each.

Shapes: B samples (prompts) per batch, G responses per sample, T completion tokens, N = B·G.

- :func:`preference_pairs`                        pairs (w, l) with R_w > R_l + ε
- :func:`separability`           Eq. 8            D_i = mean over pairs of R_w − R_l (0 without pairs)
- :func:`gradient_sensitivity`   Eq. 9            G_i = mean over pairs of ‖g(o_w) − g(o_l)‖₂
- :func:`utility`                Eq. 10           U_i = D̃_i · G̃_i (min–max over the batch)
- :func:`recurrent_state`        Eq. 11           h ← β h + (1 − β) σ((U − δ)/τ)
- :func:`filter_decay`           Eq. 12           remove (h < τ_low), decay (h > τ_high)
- :func:`advantages`             Eq. 13           A = h · g · (R − V) / (std R + ε)
- :func:`policy_loss`            Eq. 14–16        clipped surrogate + β_KL · k3 KL, per response then mean

Design choices the paper leaves open (also in docs/de_grpo.md):
- min–max normalisation of a batch whose values are all equal gives 1 where the value is positive and
  0 where it is zero (nothing to rank; a positive signal is kept, no signal stays 0);
- the decay ``R ← γR`` scales the sample's reward and its baseline alike and keeps the undecayed group
  spread as the normaliser, so a decayed sample's advantages are exactly γ times smaller (dividing by
  the decayed spread would cancel the decay);
- the advantage's group std has a floor (``RLConfig.adv_std_floor``), the same for GRPO's group-normalised
  advantage: see :func:`advantages`;
- the group standard deviation is the unbiased one, as in TRL's GRPOTrainer, so that with h ≡ 1,
  no decay and V = group mean the advantage is TRL's.
"""

from __future__ import annotations

import torch


def preference_pairs(rewards: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """All pairs (w, l) of one group with ``R_w > R_l + margin``: ``(P, 2)`` long tensor (w, l).

    rewards: (G,)
    """
    diff = rewards.unsqueeze(1) - rewards.unsqueeze(0)  # (G, G): R_w − R_l
    return torch.nonzero(diff > margin)  # (P, 2)


def separability(rewards: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Eq. 8: mean reward gap over the pairs; 0 when there are none. rewards: (G,), pairs: (P, 2)."""
    if pairs.numel() == 0:
        return rewards.new_zeros(())
    return (rewards[pairs[:, 0]] - rewards[pairs[:, 1]]).mean()


def gradient_sensitivity(grads: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Eq. 9: mean L2 distance between the probe gradients of winner and loser; 0 without pairs.

    grads: (G, P') flattened probe gradients g(o_j) of each response; pairs: (P, 2).
    """
    if pairs.numel() == 0:
        return grads.new_zeros(())
    return torch.linalg.vector_norm(grads[pairs[:, 0]] - grads[pairs[:, 1]], dim=-1).mean()


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Min–max normalisation to [0, 1] over a batch (B,); a constant batch maps to (x > 0)."""
    lo, hi = x.min(), x.max()
    if hi > lo:
        return (x - lo) / (hi - lo)
    return (x > 0).to(x.dtype)


def utility(d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. 10: ``U = minmax(D) · minmax(G)``. d, g: (B,) -> (B,) in [0, 1]."""
    return minmax(d) * minmax(g)


def recurrent_state(h: torch.Tensor, u: torch.Tensor, beta: float, tau: float,
                    delta: torch.Tensor | float | None = None) -> torch.Tensor:
    """Eq. 11: ``h ← β h + (1 − β) σ((U − δ)/τ)``, δ the batch mean of U unless given (e.g. a global
    mean across processes). h, u: (B,) -> (B,), stays in [0, 1]."""
    if delta is None:
        delta = u.mean()
    return beta * h + (1.0 - beta) * torch.sigmoid((u - delta) / tau)


def filter_decay(h: torch.Tensor, tau_low: float, tau_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 12: (remove, decay) boolean masks (B,): ``h < τ_low`` leaves the pool, ``h > τ_high`` decays."""
    return h < tau_low, h > tau_high


def advantages(rewards: torch.Tensor, h: torch.Tensor, values: torch.Tensor, decay: torch.Tensor,
               gamma: float, eps: float = 1e-4, std_floor: float = 0.0) -> torch.Tensor:
    """Eq. 13: ``A_ij = h_i · γ_i · (R_ij − V_i) / (max(std_j R_ij, floor) + ε)``, γ_i = γ where decayed.

    Unlike GRPO's ``R − mean R``, the critic's ``R − V`` is not 0 when a group's rewards are all equal,
    so a zero spread would turn a small critic error into an advantage of size 1/ε; ``std_floor``
    bounds ``|A|`` by ``h·|R − V|/floor`` (0 gives Eq. 13 as written).

    rewards: (B, G) undecayed; h, values: (B,); decay: (B,) bool -> (B, G).
    """
    scale = h * torch.where(decay, torch.full_like(h, gamma), torch.ones_like(h))  # (B,)
    std = rewards.std(dim=1, keepdim=True).clamp_min(std_floor)  # (B, 1), unbiased as in TRL
    return scale.unsqueeze(1) * (rewards - values.unsqueeze(1)) / (std + eps)  # (B, G)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4, std_floor: float = 0.0) -> torch.Tensor:
    """Vanilla GRPO: ``(R − mean_j R) / (max(std_j R, floor) + ε)`` (floor 0: TRL's). rewards: (B, G) -> (B, G).

    The floor is the one :func:`advantages` uses, so that GRPO and DE-GRPO divide by the same spread: without it
    a group whose rewards differ by 0.01 gets GRPO advantages of size 1 and DE-GRPO ones of size 0.1."""
    std = rewards.std(dim=1, keepdim=True).clamp_min(std_floor)  # (B, 1)
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (std + eps)


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    beta_kl: float = 0.01,
    clip_eps_high: float | None = None,
    kl_is_correction: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 14–16 (the negated objective, to minimise): per token
    ``−min(r A, clip(r, 1−ε, 1+ε) A) + β_KL · k3``, with ``r = exp(logπ − logπ_old)`` and
    ``k3 = exp(logπ_ref − logπ) − (logπ_ref − logπ) − 1``; averaged over each response's tokens, then over
    responses.

    ``kl_is_correction`` multiplies k3 by the importance ratio r (TRL's ``use_bias_correction_kl``: the KL is
    then estimated under the sampling policy when π_old ≠ π).

    logps, old_logps, ref_logps, mask: (N, T); adv: (N,). Returns the loss and detached metrics
    (``kl``: masked mean k3, ``clip_fraction``: share of tokens where the clip is active).
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = mask.to(logps.dtype)
    a = adv.unsqueeze(1)  # (N, 1)
    ratio = torch.exp(logps - old_logps)  # (N, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + eps_high)  # (N, T)
    per_token = -torch.min(ratio * a, clipped * a)  # (N, T)
    kl = torch.zeros_like(logps)
    if beta_kl != 0.0:
        if ref_logps is None:
            raise ValueError("beta_kl != 0 needs reference log-probs")
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # (N, T)
        if kl_is_correction:
            kl = kl * ratio
        per_token = per_token + beta_kl * kl
    loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    n_tok = mask.sum().clamp(min=1.0)
    is_clipped = ((ratio < 1 - clip_eps) & (a < 0)) | ((ratio > 1 + eps_high) & (a > 0))
    metrics = {
        "kl": ((kl * mask).sum() / n_tok).detach(),
        "clip_fraction": ((is_clipped.to(mask.dtype) * mask).sum() / n_tok).detach(),
    }
    return loss, metrics


def value_loss(values: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """MSE of the value head V_φ(x_i) (B,) to the group's mean reward (B, G) -> scalar."""
    return torch.mean((values - rewards.mean(dim=1).detach().to(values.dtype)) ** 2)
