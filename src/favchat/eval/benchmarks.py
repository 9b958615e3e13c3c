"""Loaders for the evaluation benchmarks, each from a documented local layout (docs/evaluation.md).

- DFEW (7 classes, 5 folds) and MAFW (11 classes): class folders ``root/[fold_k/]<class>/*.mp4`` (or frame
  folders), or a label CSV (``video,label``; label as a class name or the data set's 1-based class index).
  The sets as distributed have their own readers (``favchat.eval.sets``, docs/datasets.md).
- DFEC and any caption set: ``annotations.jsonl`` with ``{"id", "video", "caption" | "captions", "question"?}``.
- YouTube Faces pairs: ``splits.txt``/``pairs.csv`` rows ``fold, pair, first, second, ..., same``;
  names resolve to video files under the root.
- EMER: ``annotations.jsonl`` with ``{"id", "video", "reasoning", "question"?}``.
- FaceSynth (or any FaVChat manifest): the clips of one split; their summaries are caption references,
  their QA pairs are judged.

Every loader checks its input and raises ``BenchmarkError`` naming the file, line and problem.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from favchat.data.layout import VIDEO_EXTS, find_clip
from favchat.data.manifest import Clip, iter_lines, read_manifest
from favchat.data.taxonomy import find_mentions
from favchat.eval.predict import VideoRef

log = logging.getLogger(__name__)

# Class lists in each data set's official order (their label files use these 1-based indices).
DFEW_CLASSES: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
MAFW_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
                                 "contempt", "anxiety", "helplessness", "disappointment")
DATASET_CLASSES = {"dfew": DFEW_CLASSES, "mafw": MAFW_CLASSES}

# Data-set class -> taxonomy emotion label, for classes the taxonomy's lexicon covers.
_TAXONOMY_EMOTION = {"happy": "happy", "happiness": "happy", "sad": "sad", "sadness": "sad", "neutral": "neutral",
                     "angry": "anger", "anger": "anger", "surprise": "surprise", "disgust": "disgust",
                     "fear": "fear", "contempt": "contempt"}
# Classes outside the taxonomy: their own words. They win over a taxonomy reading of the same word
# ("anxious" is fear in the taxonomy, anxiety in MAFW).
_EXTRA_TERMS = {"anxiety": ("anxiety", "anxious", "worried", "worry", "nervous", "uneasy", "tense"),
                "helplessness": ("helplessness", "helpless", "powerless", "hopeless", "resigned"),
                "disappointment": ("disappointment", "disappointed", "let down", "dismayed", "discouraged")}
_NEGATION = re.compile(r"\b(no|not|never|without|n't|nor|neither)\b(\W+\w+){0,3}\W*$")


class BenchmarkError(ValueError):
    """A benchmark folder or file that does not follow its documented layout."""


def checked(path: str | os.PathLike, items: list[Any], problems: list[str], released: int | None = None) -> list[Any]:
    """``items`` read from ``path``, after raising one error that lists ``problems`` (or says the file lists
    nothing); warns when the file's count differs from the ``released`` one (a partial copy?)."""
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if not items:
        raise BenchmarkError(f"{path}: no clips listed")
    if released is not None and len(items) != released:
        log.warning("%s lists %d clips; the released file lists %d (a partial copy?)", path, len(items), released)
    return items


@dataclass
class Sample:
    """One evaluation item. ``label``: the gold class (classification); ``references``: gold texts."""

    id: str
    video: VideoRef
    question: str | None = None
    label: str | None = None
    references: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Emotion classification (DFEW, MAFW)


def answer_to_class(text: str, classes: tuple[str, ...] | list[str]) -> str | None:
    """The first class the answer asserts (not negated), through the taxonomy lexicon and the extra terms
    of non-taxonomy classes; None when it names none of them."""
    hits: list[tuple[int, str]] = []
    extra_spans: list[tuple[int, int]] = []
    low = text.lower()
    for cls in classes:
        for term in _EXTRA_TERMS.get(cls, ()):
            for m in re.finditer(rf"(?<![\w-]){re.escape(term)}(?![\w-])", low):
                extra_spans.append((m.start(), m.end()))
                clause = re.split(r"[.,;:!?]|\bbut\b|\band\b|\bwhile\b", low[:m.start()])[-1]
                if not _NEGATION.search(clause):
                    hits.append((m.start(), cls))
    to_class = {_TAXONOMY_EMOTION[c]: c for c in classes if c in _TAXONOMY_EMOTION}
    for m in find_mentions(text):
        if m.negated or m.label not in to_class:
            continue
        if any(s <= m.start < e for s, e in extra_spans):
            continue  # the same words already read as a non-taxonomy class
        hits.append((m.start, to_class[m.label]))
    return min(hits)[1] if hits else None


def class_of(name: str, classes: tuple[str, ...]) -> str | None:
    """A folder name or label-file entry as a class: the class name (any case), its 1-based index, or another
    data set's name for the same emotion ("angry" is MAFW's "anger", "happiness" is DFEW's "happy")."""
    n = name.strip().lower()
    if n in classes:
        return n
    if n.isdigit() and 1 <= int(n) <= len(classes):
        return classes[int(n) - 1]
    same = [c for c in classes if n in _TAXONOMY_EMOTION and _TAXONOMY_EMOTION.get(c) == _TAXONOMY_EMOTION[n]]
    return same[0] if same else None


def _videos_in(folder: Path) -> list[Path]:
    """The video files and frame folders (sub-folders) of a class folder."""
    return sorted(p for p in folder.iterdir() if p.is_dir() or p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def load_emotion_folder(root: str | os.PathLike, classes: tuple[str, ...], fold: int | None = None,
                        labels_csv: str | os.PathLike | None = None) -> list[Sample]:
    """Clips with gold classes from a class-folder layout or a label CSV (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise BenchmarkError(f"benchmark folder not found: {root}")
    if labels_csv is not None:
        return _emotion_from_csv(root, Path(labels_csv), classes)
    base = root / f"fold_{fold}" if fold is not None else root
    if not base.is_dir():
        folds = sorted(p.name for p in root.glob("fold_*") if p.is_dir())
        raise BenchmarkError(f"fold folder not found: {base} (present: {folds or 'none'})")
    subdirs = sorted(p for p in base.iterdir() if p.is_dir())
    unknown = [p.name for p in subdirs if class_of(p.name, classes) is None]
    if unknown:
        raise BenchmarkError(f"{base}: folders that are not classes: {unknown} (classes: {list(classes)})")
    found = {class_of(p.name, classes): p for p in subdirs}
    missing = [c for c in classes if c not in found]
    if missing:
        raise BenchmarkError(f"{base}: missing class folders {missing} (expected one folder per class: {list(classes)})")
    samples = [Sample(id=f"{c}/{v.stem}", video=VideoRef(v), label=c) for c in classes for v in _videos_in(found[c])]
    if not samples:
        raise BenchmarkError(f"{base}: the class folders hold no videos ({', '.join(VIDEO_EXTS)})")
    empty = [c for c in classes if not any(s.label == c for s in samples)]
    if empty:
        log.warning("%s: no videos for classes %s; UAR averages over the classes present", base, empty)
    return samples



def _emotion_from_csv(root: Path, path: Path, classes: tuple[str, ...]) -> list[Sample]:
    if not path.is_file():
        raise BenchmarkError(f"label file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if rows and rows[0] and rows[0][0].strip().lower() in ("video", "video_name", "name", "clip", "id"):
        rows = rows[1:]  # a header line
    problems, samples = [], []
    for ln, row in enumerate(rows, 2):
        if len(row) < 2:
            problems.append(f"line {ln}: expected 'video,label', got {row}")
            continue
        name, lab = row[0].strip(), class_of(row[-1], classes)
        if lab is None:
            problems.append(f"line {ln}: unknown label {row[-1]!r} (classes: {list(classes)} or 1..{len(classes)})")
            continue
        video = find_clip(root, name)
        if video is None:
            problems.append(f"line {ln}: no video {name!r} under {root}")
            continue
        samples.append(Sample(id=name, video=VideoRef(video), label=lab))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if not samples:
        raise BenchmarkError(f"{path}: no labelled clips")
    return samples


# ---------------------------------------------------------------------------------------------
# JSONL annotation sets (DFEC captions, EMER)


def _read_jsonl(path: Path, text_fields: tuple[str, ...]) -> list[tuple[int, dict[str, Any], list[str], Path]]:
    """(line, record, texts, video) per line; ``texts`` from the first of ``text_fields`` present."""
    if not path.is_file():
        raise BenchmarkError(f"annotation file not found: {path}")
    out, problems, seen = [], [], set()
    for ln, line in iter_lines(path):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {ln}: malformed JSON ({e.msg})")
            continue
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("video"), str):
            problems.append(f"line {ln}: needs string fields 'id' and 'video'")
            continue
        texts = next((d[k] for k in text_fields if k in d), None)
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            problems.append(f"line {ln}: needs a non-empty {' or '.join(text_fields)}")
            continue
        if d["id"] in seen:
            problems.append(f"line {ln}: duplicate id {d['id']!r}")
            continue
        seen.add(d["id"])
        video = Path(d["video"]) if Path(d["video"]).is_absolute() else path.parent / d["video"]
        if not video.exists():
            problems.append(f"line {ln}: video not found: {video}")
            continue
        out.append((ln, d, texts, video))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if not out:
        raise BenchmarkError(f"{path}: no annotations")
    return out


def load_caption_set(path: str | os.PathLike, default_question: str) -> list[Sample]:
    """DFEC-style caption annotations: ``{"id", "video", "caption" or "captions", "question"?}`` per line."""
    return [Sample(id=d["id"], video=VideoRef(v, _range(d)), question=d.get("question") or default_question,
                   references=texts)
            for _, d, texts, v in _read_jsonl(Path(path), ("captions", "caption"))]


def load_emer(path: str | os.PathLike, default_question: str) -> list[Sample]:
    """EMER annotations: ``{"id", "video", "reasoning", "question"?}`` per line."""
    return [Sample(id=d["id"], video=VideoRef(v, _range(d)), question=d.get("question") or default_question,
                   references=texts)
            for _, d, texts, v in _read_jsonl(Path(path), ("reasoning",))]


def _range(d: dict[str, Any]) -> tuple[int, int] | None:
    fr = d.get("frame_range")
    return (int(fr[0]), int(fr[1])) if fr else None


# ---------------------------------------------------------------------------------------------
# YouTube Faces verification pairs


@dataclass
class Pair:
    id: str
    first: VideoRef
    second: VideoRef
    same: bool
    fold: int


def load_pairs(root: str | os.PathLike, pairs_file: str | os.PathLike | None = None) -> list[Pair]:
    """Pairs from ``splits.txt`` (YTF) or ``pairs.csv``: ``fold, pair, first, second, [...,] same`` per row.

    ``first``/``second`` are video names relative to ``root`` (e.g. ``Aaron_Eckhart/0``, extension optional).
    """
    root = Path(root)
    path = Path(pairs_file) if pairs_file else next((root / n for n in ("splits.txt", "pairs.csv")
                                                     if (root / n).is_file()), root / "splits.txt")
    if not path.is_file():
        raise BenchmarkError(f"pairs file not found: {path} (expected splits.txt or pairs.csv under {root})")
    pairs, problems = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for ln, row in enumerate(csv.reader(f), 1):
            row = [c.strip() for c in row]
            if not row or (ln == 1 and not row[0].isdigit()):
                continue  # blank line or header
            if len(row) < 5 or not row[0].isdigit() or row[-1] not in ("0", "1"):
                problems.append(f"line {ln}: expected 'fold, pair, first, second, ..., same(0/1)', got {row}")
                continue
            a, b = find_clip(root, row[2]), find_clip(root, row[3])
            if a is None or b is None:
                problems.append(f"line {ln}: no video {row[2] if a is None else row[3]!r} under {root}")
                continue
            pairs.append(Pair(f"{row[0]}-{row[1]}", VideoRef(a), VideoRef(b), row[-1] == "1", int(row[0])))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if len(pairs) < 2:
        raise BenchmarkError(f"{path}: need at least 2 pairs, found {len(pairs)}")
    return pairs


# ---------------------------------------------------------------------------------------------
# FaVChat manifests (FaceSynth test split, the generic route)


def qa_id(clip: Clip, k: int) -> str:
    return f"{clip.id}#qa{k}"


def load_manifest_split(path: str | os.PathLike, split: str | None = "test", check_videos: bool = True,
                        default_question: str = "") -> tuple[list[Sample], list[Sample]]:
    """(caption samples, QA samples) of a manifest's split: each clip's summary is the caption reference
    for ``default_question``; each QA pair is a sample with id ``<clip id>#qa<k>``."""
    clips = read_manifest(path, check_videos=check_videos, split=split)
    if not clips:
        raise BenchmarkError(f"{path}: no clips with split={split!r}")
    captions = [Sample(c.id, VideoRef(c.video_path, c.frame_range), default_question,
                       references=[c.summary], meta={"clip": c.id})
                for c in clips if c.summary]
    qa = [Sample(qa_id(c, k), VideoRef(c.video_path, c.frame_range), q.question, references=[q.answer],
                 meta={"clip": c.id, "type": q.type})
          for c in clips for k, q in enumerate(c.qa)]
    if not captions and not qa:
        raise BenchmarkError(f"{path}: the {split!r} clips have neither summaries nor QA pairs to evaluate")
    return captions, qa


def check_prediction_ids(predictions: dict[str, Any], samples: list[Sample], source: str) -> None:
    """Predictions for ids that are not in the benchmark are an error (a wrong file, or a stale one)."""
    known = {s.id for s in samples}
    extra = sorted(set(predictions) - known)
    if extra:
        raise BenchmarkError(f"{source}: {len(extra)} prediction id(s) not in the manifest (or not in the split evaluated), e.g. {extra[:5]} "
                             f"(expected clip ids for summaries and '<clip id>#qa<k>' for QA pairs)")
