"""Helpers for reading data sets in the layout their authors distribute (docs/datasets.md): what a folder
holds (for error messages), which known set a folder looks like (so pointing one set's command at another
set's folder says so), and finding a clip by name as a video file or a frame folder.
"""

from __future__ import annotations

import os
from pathlib import Path

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")

# Files or folders that only one set's download has near its root, to name the set a wrong root belongs to.
SET_MARKERS: dict[str, tuple[str, ...]] = {
    "DFEW": ("EmoLabel_DataSplit", "Clip/clip_224x224"),
    "MAFW": (Path("Labels", "single_label.txt").as_posix(), "split/single", "Train & Test Set"),
    "YouTube Faces": ("frame_images_DB", "aligned_images_DB", "meta_data/meta_and_splits.mat", "splits.txt"),
    "CelebV-HQ": ("celebvhq_info.json",),
    "DFEC": ("test.json",),
    "EMER": ("gt-eng.csv", "final-EMER-reason.csv", "dataset-v1", "dataset-v2"),
}


def describe_folder(path: str | os.PathLike, limit: int = 8) -> str:
    """What a folder holds, for an error message: ``"a.csv, clips/, ... (12 entries)"``, or why there is nothing."""
    p = Path(path)
    if not p.exists():
        return "it does not exist"
    if not p.is_dir():
        return "it is a file, not a folder"
    entries = sorted(p.iterdir())
    if not entries:
        return "it is empty"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f" ... ({len(entries)} entries)" if len(entries) > limit else ""
    return "it holds " + ", ".join(names) + more


def looks_like(path: str | os.PathLike, expected: str) -> str:
    """`` (it looks like a MAFW folder: it has split/single)`` when ``path`` carries another known
    set's marker than ``expected``'s, else ``""``. A file is judged by its name and its folder's markers."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    for name, markers in SET_MARKERS.items():
        if name == expected:
            continue
        for m in markers:
            if p.name == Path(m).name and p.is_file() or (folder / m).exists():
                return f" (it looks like a {name} folder: it has {m})"
    return ""


def find_clip(folder: Path, name: str) -> Path | None:
    """The video of clip ``name`` in ``folder``: ``name`` itself (a file, or a frame folder), else ``name`` with a
    video extension, else a frame folder named ``name`` without its extension; None when there is none."""
    p = folder / name
    if p.is_file() or p.is_dir():
        return p
    stem = folder / Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTS else p
    for ext in VIDEO_EXTS:
        if (q := stem.with_name(stem.name + ext)).is_file():
            return q
    return stem if stem.is_dir() else None


def first_existing(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first of ``root / c`` that exists."""
    return next((root / c for c in candidates if (root / c).exists()), None)
