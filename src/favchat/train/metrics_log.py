"""Training logs: ``metrics.csv`` (an accelerate tracker, beside TensorBoard's when installed), and PNG curves."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker

log = logging.getLogger("favchat.train")


class CSVTracker(GeneralTracker):
    """accelerate's tracker interface over ``metrics.csv``: one row per logged step (a resumed run keeps
    appending to the same file), each row also logged to the console unless the call says ``console=False``
    (``accelerator.log(..., log_kwargs={"csv": {"console": False}})``). accelerate calls it on the main
    process only."""

    name = "csv"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._fields: list[str] | None = None

    @property
    def tracker(self) -> CSVTracker:
        return self

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        pass  # the loops write their config themselves (favchat.train.toolkit.save_config)

    def log(self, values: dict[str, Any], step: int | None = None, console: bool = True, **kwargs: Any) -> None:
        row = {"step": step, **values}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._fields is None and self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)
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
        if console:
            log.info("step %s | %s", step, " | ".join(f"{k} {_fmt(v)}" for k, v in values.items()))


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
