"""Plots of the RL stage: reward curves per round (paper Fig. 7) and a DE-GRPO vs GRPO comparison."""

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


def plot_comparison(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], out_png: str | Path,
                    ylabel: str = "held-out reward", title: str = "DE-GRPO vs GRPO") -> Path:
    """``curves``: run name -> (steps, values)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for name, (xs, ys) in curves.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)
