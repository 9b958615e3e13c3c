"""The slot loss: the video tokens should carry the clip's label phrases, one per token, in any order."""

from __future__ import annotations

import torch


def slot_loss(tokens: torch.Tensor, targets: torch.Tensor, present: torch.Tensor, phrase_ids: torch.Tensor,
              temperature: float = 0.2) -> torch.Tensor:
    """Hungarian-matched loss between the video tokens (B, N_q, D) and the clip's phrases: ``targets``
    (B, N_q, D) holds the phrases' vectors in any order, ``present`` (B, N_q) marks the slots that hold one
    and ``phrase_ids`` (B, N_q, P) their token ids, which tell phrases apart; the other tokens should be
    empty (zero).

    Each token is classified among the batch's distinct phrases and the empty slot by its negative squared
    distance to each (divided by ``temperature`` times the phrases' mean squared norm), and the tokens are
    matched to the targets by a minimum-cost assignment per sample (on that cross-entropy). The loss is the
    matched pairs' cross-entropy plus their squared distance over the phrases' mean squared norm (the class
    says *which* phrase, the distance puts the token where the reader saw it), each averaged over the pairs
    with a phrase and, apart, over the pairs with an empty slot, so the few phrases of a clip are not
    outweighed by its empty slots. A batch whose clips have no labels has nothing to match: zero."""
    from scipy.optimize import linear_sum_assignment

    tokens, targets = tokens.float(), targets.float().to(tokens.device)
    present, phrase_ids = present.to(tokens.device), phrase_ids.to(tokens.device)
    if not present.any():
        return tokens.square().sum(-1).mean() * 0
    protos, cls = torch.unique(phrase_ids[present], dim=0, return_inverse=True)  # the batch's distinct phrases
    table = torch.zeros(len(protos) + 1, tokens.shape[-1], dtype=tokens.dtype, device=tokens.device)
    table[cls + 1] = targets[present]  # class 0: the empty slot
    classes = torch.zeros(present.shape, dtype=torch.long, device=tokens.device)
    classes[present] = cls + 1
    scale = targets[present].square().sum(-1).mean().clamp_min(1e-8)
    dist = (tokens.unsqueeze(-2) - table).square().sum(-1) / scale  # (B, N_q, C)
    logp = torch.log_softmax(-dist / temperature, -1)
    # cost[b, i, j]: token i carrying target j
    cost = -logp.gather(2, classes.unsqueeze(1).expand(-1, tokens.shape[1], -1))
    rows = torch.stack([torch.as_tensor(linear_sum_assignment(c.numpy())[1]) for c in cost.detach().cpu()])
    rows = rows.to(tokens.device)  # rows[b, i]: the target matched to token i
    matched = classes.gather(1, rows)  # (B, N_q) the class each token should carry
    err = cost.gather(2, rows.unsqueeze(-1)).squeeze(-1) + dist.gather(2, matched.unsqueeze(-1)).squeeze(-1)
    full = matched > 0
    return sum(err[m].mean() for m in (full, ~full) if m.any())
