"""Plots of the RL stage: reward curves per round (paper Fig. 7), of one run or of several side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from favchat.plotting import pyplot, save_figure
from favchat.train.metrics_log import read_metrics


def plot_round_curves(metrics_csv: str | Path, out_png: str | Path, key: str = "facial_reward") -> Path:
    """One line per round of ``key`` against the step inside the round, as in the paper's Fig. 7 (the facial
    reward of the sampled responses at uniform λ, whatever reward trains)."""
    rows = [r for r in read_metrics(metrics_csv) if key in r and "round" in r]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for rnd in sorted({int(r["round"]) for r in rows}):
        pts = [r for r in rows if int(r["round"]) == rnd]
        first = pts[0]["step"]
        ax.plot([r["step"] - first for r in pts], [r[key] for r in pts], label=f"round {rnd + 1}")
    ax.set_xlabel("step in round")
    ax.set_ylabel(key)
    ax.set_title(f"{key} per round")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7)
    return save_figure(fig, out_png)


def plot_round_panels(curves: Mapping[str, Sequence[Sequence[float]]], out_png: str | Path,
                      ylabel: str = "facial reward") -> Path:
    """Fig. 7 for several runs side by side: ``curves`` maps a run's name to its per-round value lists (one
    value per step of the round); one panel per run, one line per round."""
    plt = pyplot()
    names = list(curves)
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 3.0), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        for k, ys in enumerate(curves[name]):
            ax.plot(range(1, len(ys) + 1), list(ys), label=f"round {k + 1}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step in round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(ylabel)
    return save_figure(fig, out_png)
