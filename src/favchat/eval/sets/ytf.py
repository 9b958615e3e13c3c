"""YouTube Faces as distributed: frame folders and the verification splits.

    YTF/
      frame_images_DB/Aaron_Eckhart/0/0.555.jpg ...        # one folder of frames per video (3,425 videos)
      aligned_images_DB/Aaron_Eckhart/0/aligned_detect_0.555.jpg ...
      meta_data/meta_and_splits.mat    # video_names {3425x1}, Splits [500x3x10]: (index1, index2, same) per fold
      splits.txt                       # or splits_corrected.txt: header line, then
                                       # split number, pair id, first name, second name, ..., is the same

A video name is ``<person>/<n>``, the frame folder under the images folder. ``Splits`` indices are
1-based into ``video_names``. Frame folders are read as videos (``favchat.data.video.FrameFolder``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from favchat.data.layout import describe_folder, first_existing, looks_like
from favchat.eval.benchmarks import BenchmarkError, Pair
from favchat.eval.predict import VideoRef

IMAGE_DIRS = {"frame": "frame_images_DB", "aligned": "aligned_images_DB"}
PAIR_FILES = ("splits.txt", "meta_data/meta_and_splits.mat", "meta_and_splits.mat", "splits_corrected.txt")


def is_ytf(root: str | os.PathLike) -> bool:
    """True when ``root`` holds YouTube Faces' frame folders."""
    return first_existing(Path(root), tuple(IMAGE_DIRS.values())) is not None


def images_folder(root: Path, images: str = "auto") -> Path:
    """``frame_images_DB`` or ``aligned_images_DB``; ``auto``: the first present, in that order."""
    if images not in ("auto", *IMAGE_DIRS):
        raise BenchmarkError(f"images must be auto, frame or aligned, got {images!r}")
    names = tuple(IMAGE_DIRS.values()) if images == "auto" else (IMAGE_DIRS[images],)
    found = first_existing(root, names)
    if found is None:
        raise BenchmarkError(f"expected YouTube Faces' frame folders in {' or '.join(str(root / n) for n in names)}, "
                             f"but {root}: {describe_folder(root)}{looks_like(root, 'YouTube Faces')}")
    return found


def _pairs_from_mat(path: Path) -> list[tuple[int, int, str, str, bool]]:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True)
    except (ValueError, NotImplementedError, OSError) as e:
        raise BenchmarkError(f"{path}: not a readable MATLAB file ({e})") from e
    if "video_names" not in mat or "Splits" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise BenchmarkError(f"{path}: expected YouTube Faces' 'video_names' and 'Splits', found {keys}")
    names = [str(n) for n in mat["video_names"].ravel()]
    splits = mat["Splits"]
    if splits.ndim == 2:  # a single fold, squeezed
        splits = splits[:, :, None]
    if splits.ndim != 3 or splits.shape[1] != 3:
        raise BenchmarkError(f"{path}: Splits must be (pairs, 3, folds), got shape {splits.shape}")
    out = []
    for fold in range(splits.shape[2]):
        for k, (a, b, same) in enumerate(splits[:, :, fold].astype(int)):
            if not (1 <= a <= len(names) and 1 <= b <= len(names)) or same not in (0, 1):
                raise BenchmarkError(f"{path}: Splits[{k}, :, {fold}] = {[a, b, same]}: indices must be 1..{len(names)} "
                                     "into video_names and the flag 0 or 1")
            out.append((fold + 1, k + 1, names[a - 1], names[b - 1], bool(same)))
    return out


def _pairs_from_txt(path: Path) -> list[tuple[int, int, str, str, bool]]:
    out, problems = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for ln, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not any(row) or (ln == 1 and not row[0].isdigit()):
                continue  # blank line or the header
            if len(row) < 5 or not row[0].isdigit() or not row[1].isdigit() or row[-1] not in ("0", "1"):
                problems.append(f"line {ln}: expected 'split number, pair id, first name, second name, ..., "
                                f"same (0/1)', got {row}")
                continue
            out.append((int(row[0]), int(row[1]), row[2], row[3], row[-1] == "1"))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    return out


def load_ytf(root: str | os.PathLike, pairs: str | os.PathLike | None = None, images: str = "auto") -> list[Pair]:
    """The verification pairs of YouTube Faces' splits, each video a frame folder.

    Args:
        root: the YouTube Faces folder, holding ``frame_images_DB/`` (or ``aligned_images_DB/``) and the splits.
        pairs: the pairs file (``splits.txt``, ``splits_corrected.txt`` or ``meta_and_splits.mat``); default: the
            first of ``splits.txt``, ``meta_data/meta_and_splits.mat``, ``meta_and_splits.mat``,
            ``splits_corrected.txt`` under ``root``.
        images: ``frame`` (``frame_images_DB``), ``aligned`` (``aligned_images_DB``), or ``auto`` (the first present).
    """
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"YouTube Faces folder not found: {root}")
    frames = images_folder(root, images)
    path = Path(pairs) if pairs is not None else first_existing(root, PAIR_FILES)
    if path is None or not path.is_file():
        want = str(path) if path is not None else " or ".join(str(root / n) for n in PAIR_FILES)
        raise BenchmarkError(f"expected YouTube Faces' pairs in {want}, but {root}: {describe_folder(root)}")
    rows = _pairs_from_mat(path) if path.suffix.lower() == ".mat" else _pairs_from_txt(path)
    out, missing = [], []
    for fold, k, a, b, same in rows:
        va, vb = frames / a, frames / b
        for name, v in ((a, va), (b, vb)):
            if not v.is_dir():
                missing.append(name)
        out.append(Pair(f"{fold}-{k}", VideoRef(va), VideoRef(vb), same, fold))
    if missing:
        uniq = sorted(set(missing))
        raise BenchmarkError(f"{path}: {len(uniq)} video(s) of the pairs have no frame folder in {frames}, e.g. "
                             f"{uniq[:3]} (expected {frames}/<person>/<n>/ with the frames)")
    if len(out) < 2:
        raise BenchmarkError(f"{path}: need at least 2 pairs, found {len(out)}")
    return out
