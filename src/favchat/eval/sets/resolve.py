"""Which reader applies to the root or file a user points ``favchat eval`` at: the set's layout as distributed
when its marker files are there, else the generic layouts of ``favchat.eval.benchmarks`` (docs/evaluation.md).
Each function returns the samples and a line saying what was read, for the report.
"""

from __future__ import annotations

import os
from pathlib import Path

from favchat.data.layout import first_existing
from favchat.eval import benchmarks
from favchat.eval.benchmarks import BenchmarkError, Pair, Sample
from favchat.eval.sets import dfec, dfew, emer, mafw, ytf

FOLDS = (1, 2, 3, 4, 5)


def parse_fold(text: str | int | None) -> int | str | None:
    """``"1"``..``"5"`` -> the fold number; ``"all"`` -> ``"all"``; None stays None."""
    if text is None or text == "all":
        return text
    if str(text).isdigit() and int(text) in FOLDS:
        return int(text)
    raise ValueError(f"fold must be 1..5 or 'all', got {text!r}")


def _generic_root(root: Path, classes: tuple[str, ...]) -> bool:
    """True when ``root`` is in the generic class-folder layout (fold folders or class-named folders)."""
    subdirs = [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return any(n.startswith("fold_") for n in subdirs) or any(benchmarks.class_of(n, classes) for n in subdirs)


def emotion_folds(name: str, root: str | os.PathLike, fold: int | str | None = None,
                  labels: str | os.PathLike | None = None, clips: str = "auto") -> tuple[dict[int, list[Sample]], str]:
    """DFEW's or MAFW's test clips by fold.

    Args:
        name: ``dfew`` or ``mafw``.
        root: the set's folder as distributed, or a folder in the generic class-folder layout.
        fold: 1..5, or ``all`` for the five folds (the paper's protocol: the mean over the folds' test sets); with
            class folders, ``<root>/fold_<k>/``; None: the whole class-folder tree (generic layout only).
        labels: a generic label CSV (``video,label``) instead of the set's own files.
        clips: DFEW only: ``original``, ``clip_224x224``, ``clip_224x224_16f`` or ``auto``.
    """
    root = Path(root)
    classes = benchmarks.DATASET_CLASSES[name]
    folds = list(FOLDS) if fold == "all" else [fold]
    official = dfew.is_dfew(root) if name == "dfew" else mafw.is_mafw(root)
    if labels is None and (official or not _generic_root(root, classes)):
        if fold is None and official:
            raise BenchmarkError(f"{root}: {name.upper()} as distributed has 5 folds: pass --fold 1..5, or --fold all "
                                 "for the mean over the five folds' test sets (the paper's protocol)")
        folds = folds if fold is not None else [1]  # not the set's layout: the reader names what is missing
        if name == "dfew":
            out = {k: dfew.load_dfew(root, k, clips) for k in folds}
            return out, f"DFEW as distributed: {dfew.test_dir(root)}/set_k.csv, clips in {dfew.clip_folder(root, clips)}"
        out = {k: mafw.load_mafw(root, k) for k in folds}
        return out, f"MAFW as distributed: {first_existing(root, mafw.SPLIT_DIRS)}/set_k/test.txt, clips in {root / 'clips'}"
    if labels is not None:
        return {fold if isinstance(fold, int) else 1: benchmarks.load_emotion_folder(root, classes, None, labels)}, \
            f"{root} (label CSV {labels})"
    if fold is None:
        return {1: benchmarks.load_emotion_folder(root, classes)}, f"{root} (class folders)"
    return {k: benchmarks.load_emotion_folder(root, classes, k) for k in folds}, f"{root} (class folders, fold_k/)"


def caption_samples(path: str | os.PathLike, question: str,
                    videos_root: str | os.PathLike | None = None) -> tuple[list[Sample], str]:
    """DFEC's ``test.json`` (a ``.json`` file, or any file holding a JSON array) or a generic ``annotations.jsonl``."""
    path = Path(path)
    if path.is_file() and (path.suffix.lower() == ".json" or dfec.is_json_array(path)):
        return dfec.load_dfec(path, question, videos_root), f"{path} (DFEC test.json)"
    return benchmarks.load_caption_set(path, question), f"{path} (annotations JSONL)"


def emer_samples(path: str | os.PathLike, question: str,
                 videos: str | os.PathLike | None = None) -> tuple[list[Sample], str]:
    """EMER's CSV (either version) or a generic ``annotations.jsonl``."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        samples = emer.load_emer_csv(path, question, videos)
        return samples, f"{path} (EMER {samples[0].meta['version']} CSV)"
    return benchmarks.load_emer(path, question), f"{path} (annotations JSONL)"


def ytf_pairs(root: str | os.PathLike, pairs: str | os.PathLike | None = None,
              images: str = "auto") -> tuple[list[Pair], str]:
    """YouTube Faces as distributed (frame folders), or a folder of pair videos with ``splits.txt``/``pairs.csv``."""
    root = Path(root)
    if ytf.is_ytf(root):
        out = ytf.load_ytf(root, pairs, images)
        used = Path(pairs) if pairs else first_existing(root, ytf.PAIR_FILES)
        return out, f"YouTube Faces: frames in {ytf.images_folder(root, images)}, pairs {used}"
    generic = root.is_dir() and (pairs is not None or any((root / n).is_file() for n in ("splits.txt", "pairs.csv")))
    if not generic:
        ytf.images_folder(root, images)  # raises, naming the frame folders it expected and what is there
    return benchmarks.load_pairs(root, pairs), f"{root} (pair videos)"
