"""MAFW as distributed: ``clips/``, ``Labels/`` and the fold lists (11 classes, 5 folds).

    MAFW/clips/00001.mp4 ...                                # 10,045 clips
    MAFW/Labels/single_label.txt                            # 03747.mp4  anger  <zh caption> <en caption>
    MAFW/split/single/no_caption/set_1/{train,test}.txt     # or under MAFW/Train & Test Set/single/no_caption/
                                                            # lines: <clip>.mp4 <label name>

Labels are class names (any case). The two conventions for MAFW's class order (``MAFW_CLASSES``, and
Happiness, Sadness, Neutral, Anger, ... Disappointment) disagree on indices, not on names, so a numeric
label is refused as ambiguous. A fold line without a label takes it from the label file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from favchat.data.layout import describe_folder, find_clip, first_existing, looks_like
from favchat.eval.benchmarks import MAFW_CLASSES, BenchmarkError, Sample, checked
from favchat.eval.predict import VideoRef

log = logging.getLogger(__name__)

SPLIT_DIRS = ("split/single/no_caption", "Train & Test Set/single/no_caption")
LABEL_FILE = Path("Labels", "single_label.txt")
FOLDS = (1, 2, 3, 4, 5)
TEST_SIZES = {1: 1838}  # the released set-1 test list, to notice a partial copy


def is_mafw(root: str | os.PathLike) -> bool:
    """True when ``root`` has MAFW's fold lists or label file."""
    return first_existing(Path(root), (*SPLIT_DIRS, LABEL_FILE.as_posix())) is not None


def _label(text: str, where: str) -> str:
    name = text.strip().lower()
    if name in MAFW_CLASSES:
        return name
    if name.isdigit():
        raise BenchmarkError(f"{where}: numeric label {text!r}: MAFW's two class orders disagree on indices, so "
                             f"this reader takes class names ({', '.join(MAFW_CLASSES)})")
    raise BenchmarkError(f"{where}: unknown label {text!r} (MAFW's classes: {', '.join(MAFW_CLASSES)})")


def read_label_file(path: Path) -> dict[str, str]:
    """MAFW's label file (``LABEL_FILE``): clip name -> class, from lines ``<clip>.mp4 <label> <captions...>``."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise BenchmarkError(f"{path}:{ln}: expected '<clip>.mp4 <label> ...', got {line.strip()!r}")
            out[parts[0]] = _label(parts[1], f"{path}:{ln}")
    return out


def load_mafw(root: str | os.PathLike, fold: int) -> list[Sample]:
    """The test clips of one MAFW fold (single-label, no-caption protocol) with their classes.

    Args:
        root: the MAFW folder, holding ``clips/``, ``Labels/`` and ``split/`` (or ``Train & Test Set/``).
        fold: 1..5, the ``set_<fold>/test.txt`` list.
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"MAFW folder not found: {root}")
    if fold not in FOLDS:
        raise BenchmarkError(f"MAFW has folds 1..5, got {fold}")
    split = first_existing(root, SPLIT_DIRS)
    if split is None:
        raise BenchmarkError(f"expected MAFW's fold lists {root / SPLIT_DIRS[0]}/set_{fold}/test.txt (or under "
                             f"'{SPLIT_DIRS[1]}/'), but {root}: {describe_folder(root)}{looks_like(root, 'MAFW')}")
    path = split / f"set_{fold}" / "test.txt"
    if not path.is_file():
        raise BenchmarkError(f"expected MAFW's fold list {path}, but for {path.parent}: {describe_folder(path.parent)}")
    videos = root / "clips"
    if not videos.is_dir():
        raise BenchmarkError(f"expected MAFW's clips in {videos}/, but {root}: {describe_folder(root)}")
    labels: dict[str, str] | None = None
    samples, problems = [], []
    with open(path, encoding="utf-8-sig") as f:
        lines = [(ln, line.split()) for ln, line in enumerate(f, 1)]
    for ln, parts in lines:
        if not parts:
            continue
        name = parts[0]
        try:
            if len(parts) >= 2:
                label = _label(parts[1], f"line {ln}")
            else:
                if labels is None:
                    if not (root / LABEL_FILE).is_file():
                        raise BenchmarkError(f"line {ln}: no label, and no {root / LABEL_FILE} to take it from")
                    labels = read_label_file(root / LABEL_FILE)
                if name not in labels:
                    raise BenchmarkError(f"line {ln}: no label, and {name} is not in {root / LABEL_FILE}")
                label = labels[name]
        except BenchmarkError as e:
            problems.append(str(e))
            continue
        video = find_clip(videos, name)
        if video is None:
            problems.append(f"line {ln}: no clip {name} in {videos}")
            continue
        samples.append(Sample(id=Path(name).stem, video=VideoRef(video), label=label, meta={"fold": fold}))
    checked(path, samples, problems, TEST_SIZES.get(fold))
    log.info("MAFW fold %d: %d test clips from %s", fold, len(samples), path)
    return samples
