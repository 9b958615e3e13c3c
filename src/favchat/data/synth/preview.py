"""A PNG contact sheet of FaceSynth clips: a few frames per clip beside its labels, for a person to check
that what the ground truth says is what the pixels show."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from favchat.data.manifest import Clip

_TILE = 128  # frames are shown at this size (nearest-neighbour, so pixels stay honest)


def _text_panel(lines: list[str], width: int, height: int) -> np.ndarray:
    panel = np.full((height, width, 3), 255, np.uint8)
    for k, line in enumerate(lines[: height // 14]):
        cv2.putText(panel, line, (4, 13 + 14 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def _wrap(words: list[str], width_chars: int) -> list[str]:
    lines, cur = [], ""
    for w in words:
        if cur and len(cur) + len(w) + 2 > width_chars:
            lines.append(cur)
            cur = ""
        cur = f"{cur}, {w}" if cur else w
    return lines + ([cur] if cur else [])


def contact_sheet(items: list[tuple[Clip, np.ndarray]], path: str | Path, frames_per_clip: int = 5) -> Path:
    """Write one row per clip: ``frames_per_clip`` frames spread over the clip (event frames marked with the
    active labels) and a panel with the clip's labels. ``items``: (clip, frames (T, H, W, 3) uint8 RGB)."""
    if not items:
        raise ValueError("no clips to preview")
    rows = []
    for clip, frames in items:
        t = len(frames)
        idx = np.linspace(0, t - 1, frames_per_clip).round().astype(int)
        tiles = []
        for i in idx:
            tile = cv2.resize(frames[i], (_TILE, _TILE), interpolation=cv2.INTER_NEAREST)
            active = [e.label for e in clip.events if e.start <= i < e.end]
            cap = np.full((16, _TILE, 3), 240, np.uint8)
            cv2.putText(cap, f"f{i} " + ",".join(active)[:24], (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (0, 0, 0), 1,
                        cv2.LINE_AA)
            tiles.append(np.concatenate([tile, cap], 0))
        strip = np.concatenate(tiles, 1)
        lines = [f"{clip.id} [{clip.split}] {clip.identity}"]
        for g, names in clip.labels.items():
            lines += _wrap(names or ["-"], 44 - len(g))
            lines[-len(_wrap(names or ["-"], 44 - len(g)))] = f"{g}: " + lines[-len(_wrap(names or ["-"], 44 - len(g)))]
        rows.append(np.concatenate([strip, _text_panel(lines, 330, strip.shape[0])], 1))
    sheet = np.concatenate(rows, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write the contact sheet {path}")
    return path
