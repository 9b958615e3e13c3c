"""Training logs on rank 0: the console, a CSV file and (when installed) TensorBoard, plus PNG curves."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("favchat.train")


class MetricsLogger:
    """Appends one row per logged step to ``metrics.csv``; a resumed run keeps appending to the same file."""

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.csv"
        self._fields: list[str] | None = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                log.info("tensorboard is not installed; logging to %s only", self.path)
            else:
                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def log(self, step: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **row}
        if self._fields is None:
            self._fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self._fields)
        new = [k for k in row if k not in self._fields]
        if new:  # a row with columns the earlier ones lacked (RL: held-out rows, then training rows) widens the file
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))[1:]
            self._fields += new
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerows([self._fields, *(r + [""] * len(new) for r in rows)])
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self._fields])
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
        log.info("step %d | %s", step, " | ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != "step"))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def plot_curves(csv_paths: dict[str, str | Path], out_png: str | Path, keys: tuple[str, ...] = ("loss", "w_g", "w_f"),
                title: str = "training curves") -> Path:
    """One panel per key; one line per run (e.g. per stage), x = step."""
    from favchat.plotting import pyplot, save_figure

    plt = pyplot()

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, p in csv_paths.items():
            rows = [r for r in read_metrics(p) if key in r]
            if rows:
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, out_png)
