"""DFEW as distributed: ``Clip/`` and ``EmoLabel_DataSplit/`` (7 classes, 5 folds).

    DFEW/
      Clip/original/00001.mp4 ...            # 16,372 clips
      Clip/clip_224x224/00001/ ...           # or face-aligned frame folders (read as videos)
      EmoLabel_DataSplit/test(single-labeled)/set_1.csv ... set_5.csv   # README: test(single_labeled)
                                                                          # video_name,label  (1..7)

Labels 1..7 are Happy, Sad, Neutral, Angry, Surprise, Disgust, Fear (``DFEW_CLASSES``); ``video_name`` is an
integer, zero-padded to 5 digits in the clip names. The paper reports UAR/WAR over the five folds' test sets.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from favchat.data.layout import describe_folder, find_clip, looks_like
from favchat.eval.benchmarks import DFEW_CLASSES, BenchmarkError, Sample, checked
from favchat.eval.predict import VideoRef

log = logging.getLogger(__name__)

SPLIT_ROOT = "EmoLabel_DataSplit"
TEST_DIRS = ("test(single-labeled)", "test(single_labeled)")  # the download's spelling, the README's
CLIP_DIRS = ("original", "clip_224x224", "clip_224x224_16f")  # videos first, then the frame folders
FOLDS = (1, 2, 3, 4, 5)
TEST_SIZES = {1: 2341}  # the released fold-1 test set, to notice a partial copy


def is_dfew(root: str | os.PathLike) -> bool:
    """True when ``root`` has DFEW's label folder (the reader below applies, not the generic layouts)."""
    return (Path(root) / SPLIT_ROOT).is_dir()


def test_dir(root: Path) -> Path:
    """``EmoLabel_DataSplit/test(single-labeled)`` (or the README's ``test(single_labeled)``)."""
    labels = root / SPLIT_ROOT
    if not labels.is_dir():
        raise BenchmarkError(f"expected DFEW's label folder {labels}/{TEST_DIRS[0]}/set_1.csv, but {root} has no "
                             f"{SPLIT_ROOT}/ ({describe_folder(root)}){looks_like(root, 'DFEW')}")
    for name in TEST_DIRS:
        if (labels / name).is_dir():
            return labels / name
    raise BenchmarkError(f"expected {labels}/{TEST_DIRS[0]}/ (or {TEST_DIRS[1]}/) with set_1.csv ... set_5.csv, "
                         f"but {describe_folder(labels)}")


def clip_folder(root: str | os.PathLike, clips: str = "auto") -> Path:
    """``Clip/<clips>``; ``auto``: the first of ``original`` (videos), ``clip_224x224``, ``clip_224x224_16f``."""
    base = Path(root) / "Clip"
    names = CLIP_DIRS if clips == "auto" else (clips,)
    if clips not in ("auto", *CLIP_DIRS):
        raise BenchmarkError(f"clips must be auto or one of {CLIP_DIRS}, got {clips!r}")
    for name in names:
        if (base / name).is_dir():
            return base / name
    want = " or ".join(f"{base / n}/" for n in names)
    raise BenchmarkError(f"expected DFEW's clips in {want}, but for {base}: {describe_folder(base)}")


def load_dfew(root: str | os.PathLike, fold: int, clips: str = "auto") -> list[Sample]:
    """The test clips of one DFEW fold with their classes.

    Args:
        root: the DFEW folder, holding ``Clip/`` and ``EmoLabel_DataSplit/``.
        fold: 1..5, the ``set_<fold>.csv`` of the single-labeled test split.
        clips: which clips to read from ``Clip/``: ``original`` (videos), ``clip_224x224`` (face-aligned frame
            folders), ``clip_224x224_16f`` (16 frames per clip), or ``auto`` (the first present, in that order).
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"DFEW folder not found: {root}")
    if fold not in FOLDS:
        raise BenchmarkError(f"DFEW has folds 1..5, got {fold}")
    path = test_dir(root) / f"set_{fold}.csv"
    if not path.is_file():
        raise BenchmarkError(f"expected DFEW's fold file {path}, but {describe_folder(path.parent)}")
    videos = clip_folder(root, clips)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if head[:2] != ["video_name", "label"]:
        raise BenchmarkError(f"{path}: expected the header 'video_name,label' (DFEW's fold files), got {rows[0] if rows else 'an empty file'}")
    samples, problems = [], []
    for ln, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        name, label = (row + ["", ""])[:2]
        if not name.strip().isdigit():
            problems.append(f"line {ln}: video_name must be DFEW's clip number, got {name!r}")
            continue
        if not label.strip().isdigit() or not 1 <= int(label) <= len(DFEW_CLASSES):
            order = ", ".join(f"{k}={c}" for k, c in enumerate(DFEW_CLASSES, 1))
            problems.append(f"line {ln}: unknown label {label!r} (DFEW's labels are 1..7: {order})")
            continue
        clip = f"{int(name):05d}"
        video = find_clip(videos, clip)
        if video is None:
            problems.append(f"line {ln}: no clip {clip} in {videos} (looked for {clip}.mp4 and a folder {clip}/)")
            continue
        samples.append(Sample(id=clip, video=VideoRef(video), label=DFEW_CLASSES[int(label) - 1], meta={"fold": fold}))
    checked(path, samples, problems, TEST_SIZES.get(fold))
    log.info("DFEW fold %d: %d test clips from %s, clips in %s", fold, len(samples), path, videos)
    return samples
