"""Paired comparison of two models asked the same questions: the accuracy difference over training seeds, its
confidence interval by resampling the test clips, and an exact sign test over the questions they answer apart.

Both models answer every question of the same test clips once per training seed; ``a[s][q]`` is whether model
a answered question q right with seed s. The difference is the mean over seeds of the per-seed accuracy
differences. Its interval resamples whole clips (the questions of a clip are not independent), the same clips
for every seed, so it covers the spread of the test set; the seeds' spread is reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` against ``losses`` under p = 1/2 (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired_difference(a: Sequence[dict[str, bool]], b: Sequence[dict[str, bool]], cluster: Callable[[str], str],
                      resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, object]:
    """Accuracy of a minus that of b: ``diff`` (mean over seeds), ``ci`` (the ``level`` percentile interval of
    ``resamples`` clip resamples), ``per_seed``, ``wins`` / ``losses`` (questions a answered right and b wrong /
    the reverse, over all seeds) with the sign test's ``p``, and ``n`` (questions per seed)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"both models need the same seeds (at least one), got {len(a)} and {len(b)}")
    ids = sorted(a[0])
    for s, (x, y) in enumerate(zip(a, b, strict=True)):
        if set(x) != set(ids) or set(y) != set(ids):
            raise ValueError(f"seed {s}: the two models did not answer the same questions")
    clips = sorted({cluster(q) for q in ids})
    where = {c: i for i, c in enumerate(clips)}
    idx = np.array([where[cluster(q)] for q in ids])
    count = np.bincount(idx, minlength=len(clips)).astype(float)  # (C,) questions per clip
    diff = np.array([[x[q] - y[q] for q in ids] for x, y in zip(a, b, strict=True)], dtype=float)  # (S, Q)
    per_clip = np.stack([np.bincount(idx, weights=d, minlength=len(clips)) for d in diff])  # (S, C)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(clips), np.full(len(clips), 1 / len(clips)), size=resamples)  # (R, C)
    boot = ((weights @ per_clip.T) / (weights @ count)[:, None]).mean(1)  # (R,)
    tail = (1 - level) / 2
    wins = int((diff > 0).sum())
    losses = int((diff < 0).sum())
    return {"diff": float(diff.mean()), "ci": [float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))],
            "per_seed": [float(d.mean()) for d in diff], "wins": wins, "losses": losses,
            "p": sign_test(wins, losses), "n": len(ids)}
