"""The manifest format every stage reads: JSONL, one clip per line.

A line (see ``docs/manifest.md``)::

    {"id": "fs-000123", "video": "videos/fs-000123.mp4", "frame_range": [0, 48], "fps": 12.0,
     "source": "facesynth", "split": "train",
     "labels": {"appearance": ["black_hair", "eyeglasses"], "action": ["smile"], "emotion": ["happy"]},
     "summary": "A young man with black hair ...",
     "qa": [{"question": "What colour is the hair?", "answer": "Black.", "type": "attribute"}],
     "events": [{"label": "smile", "start": 12, "end": 30}], "identity": "id-0042", "meta": {}}

``video`` is resolved against the manifest's folder when relative. ``read_manifest`` checks every
line and raises one ``ManifestError`` listing each bad line with its number and field.
``ManifestWriter`` appends by id (an id already present is skipped, so reruns are idempotent) and
writes each line with one ``write`` + ``fsync``; a writer killed mid-line leaves a partial last line,
which the next writer cuts off and the reader skips with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from favchat.data.taxonomy import BY_NAME, GROUPS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
QA_TYPES = ("attribute", "action", "emotion", "temporal", "yesno", "description")


@dataclass
class QA:
    question: str
    answer: str
    type: str = "description"


@dataclass
class Event:
    label: str
    start: int  # first frame (inclusive), in clip frame indices
    end: int  # last frame (exclusive)


@dataclass
class Clip:
    id: str
    video: str
    frame_range: tuple[int, int] | None = None  # [start, end) in the video's frames; None = whole video
    fps: float | None = None
    source: str = "unknown"
    split: str = "train"
    labels: dict[str, list[str]] = field(default_factory=lambda: {g: [] for g in GROUPS})
    summary: str | None = None
    qa: list[QA] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    identity: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = field(default=None, repr=False, compare=False)  # folder relative paths resolve against

    @property
    def video_path(self) -> Path:
        p = Path(self.video)
        return p if p.is_absolute() or self.root is None else self.root / p

    @property
    def all_labels(self) -> list[str]:
        return [n for g in GROUPS for n in self.labels.get(g, [])]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        if d["frame_range"] is not None:
            d["frame_range"] = list(d["frame_range"])
        return d


class ManifestError(ValueError):
    """One or more bad manifest lines; ``problems`` is a list of (line number, field, message)."""

    def __init__(self, path: Path, problems: list[tuple[int, str, str]]):
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  {path}:{ln}: {fld}: {msg}" for ln, fld, msg in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s) in manifest {path}:\n{shown}{more}")


def _check(d: Any, check_video: bool, root: Path) -> tuple[Clip | None, list[tuple[str, str]]]:
    """Validate one parsed line; return the clip and a list of (field, message)."""
    errs: list[tuple[str, str]] = []
    if not isinstance(d, dict):
        return None, [("<line>", f"expected a JSON object, got {type(d).__name__}")]
    for key, typ in (("id", str), ("video", str)):
        if key not in d:
            errs.append((key, "missing required field"))
        elif not isinstance(d[key], typ) or not d[key]:
            errs.append((key, f"must be a non-empty {typ.__name__}"))
    known = {f for f in Clip.__dataclass_fields__ if f != "root"}
    for key in d:
        if key not in known:
            errs.append((key, f"unknown field (known: {sorted(known)})"))
    fr = d.get("frame_range")
    if fr is not None and not (
        isinstance(fr, list) and len(fr) == 2 and all(isinstance(x, int) for x in fr) and 0 <= fr[0] < fr[1]
    ):
        errs.append(("frame_range", f"must be [start, end) with 0 <= start < end, got {fr!r}"))
    if d.get("fps") is not None and not (isinstance(d["fps"], int | float) and d["fps"] > 0):
        errs.append(("fps", f"must be a positive number, got {d['fps']!r}"))
    if d.get("split", "train") not in SPLITS:
        errs.append(("split", f"must be one of {SPLITS}, got {d.get('split')!r}"))
    labels = d.get("labels", {})
    if not isinstance(labels, dict):
        errs.append(("labels", "must be an object group -> list of labels"))
        labels = {}
    for g, names in labels.items():
        if g not in GROUPS:
            errs.append((f"labels.{g}", f"unknown group (groups: {list(GROUPS)})"))
            continue
        if not isinstance(names, list):
            errs.append((f"labels.{g}", "must be a list of label names"))
            continue
        for n in names:
            if n not in BY_NAME:
                errs.append((f"labels.{g}", f"unknown label {n!r}"))
            elif BY_NAME[n].group != g:
                errs.append((f"labels.{g}", f"label {n!r} belongs to group {BY_NAME[n].group!r}"))
    qa = d.get("qa", [])
    if not isinstance(qa, list):
        errs.append(("qa", "must be a list"))
        qa = []
    for i, q in enumerate(qa):
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not isinstance(q.get("answer"), str):
            errs.append((f"qa[{i}]", "needs string fields 'question' and 'answer'"))
        elif q.get("type", "description") not in QA_TYPES:
            errs.append((f"qa[{i}].type", f"must be one of {QA_TYPES}, got {q.get('type')!r}"))
    events = d.get("events", [])
    if not isinstance(events, list) or not all(
        isinstance(e, dict) and e.get("label") in BY_NAME and isinstance(e.get("start"), int)
        and isinstance(e.get("end"), int) and e["start"] < e["end"] for e in events
    ):
        errs.append(("events", "must be a list of {label: taxonomy label, start: int, end: int > start}"))
    if errs:
        return None, errs
    clip = Clip(
        id=d["id"], video=d["video"], frame_range=tuple(fr) if fr else None, fps=d.get("fps"),
        source=d.get("source", "unknown"), split=d.get("split", "train"),
        labels={g: list(labels.get(g, [])) for g in GROUPS}, summary=d.get("summary"),
        qa=[QA(q["question"], q["answer"], q.get("type", "description")) for q in qa],
        events=[Event(e["label"], e["start"], e["end"]) for e in events], identity=d.get("identity"),
        meta=d.get("meta", {}) or {}, root=root,
    )
    if check_video and not clip.video_path.exists():  # a file, or a frame folder
        return None, [("video", f"file not found: {clip.video_path}")]
    return clip, []


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each complete line; a final line with no newline (a write cut short) is skipped."""
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.endswith("\n"):
                log.warning("%s:%d: incomplete last line skipped (an interrupted write)", path, ln)
                return
            if line.strip():
                yield ln, line


def read_manifest(path: str | os.PathLike, check_videos: bool = True, split: str | None = None) -> list[Clip]:
    """Read and validate a manifest; raise ``ManifestError`` naming every bad line and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    clips: list[Clip] = []
    problems: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    for ln, line in iter_lines(path):
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append((ln, "<json>", f"malformed JSON: {e.msg} at column {e.colno}"))
            continue
        clip, errs = _check(d, check_videos, path.parent)
        problems.extend((ln, fld, msg) for fld, msg in errs)
        if clip is None:
            continue
        if clip.id in seen:
            problems.append((ln, "id", f"duplicate id {clip.id!r} (first on line {seen[clip.id]})"))
            continue
        seen[clip.id] = ln
        if split is None or clip.split == split:
            clips.append(clip)
    if problems:
        raise ManifestError(path, problems)
    return clips


class ManifestWriter:
    """Append-only, idempotent, crash-safe JSONL writer keyed by clip id.

    >>> with ManifestWriter("out/manifest.jsonl") as w:
    ...     w.add(clip)          # returns False when the id is already in the file
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self.ids: set[str] = set()
        if self.path.exists():
            for _, line in iter_lines(self.path):
                try:
                    self.ids.add(json.loads(line)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        """Cut a partial last line left by a writer that was killed mid-write."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            log.warning("%s: removing an incomplete last line (%d bytes)", self.path, len(data) - cut)
            f.truncate(cut)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.ids

    def add(self, clip: Clip | dict[str, Any]) -> bool:
        d = clip.to_json() if isinstance(clip, Clip) else dict(clip)
        if d["id"] in self.ids:
            return False
        self._f.write(json.dumps(d, ensure_ascii=False) + "\n")  # one write per line
        self._f.flush()
        os.fsync(self._f.fileno())
        self.ids.add(d["id"])
        return True

    def add_all(self, clips: Iterable[Clip | dict[str, Any]]) -> int:
        return sum(self.add(c) for c in clips)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
