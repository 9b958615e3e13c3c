"""CelebV-HQ's own annotations into FaVChat: its 83 manual labels become taxonomy labels, with no extractor.

The paper takes all of CelebV-HQ with its labels (App. B.1) and trains the extractor E1 from them (B.2).
``import_celebv`` reads ``celebvhq_info.json`` and the downloaded clips and writes, into ``out``:

- ``labels.jsonl``: a FaVChat manifest, one line per clip: the labels mapped into the 103-label taxonomy
  (spellings and casing tolerated: ``Blurry``/``blurry``, ``blonde_hair`` -> ``blond_hair``,
  ``5_o'clock_shadow`` -> ``5_o_clock_shadow``, ``sadness`` -> ``sad``), a changing emotion kept as timed
  ``events`` (and each of its emotions in ``labels.emotion``), the frame range, and ``meta.face_box``;
  ``favchat data train-extractor --manifest OUT/labels.jsonl --heads '[E1]'`` trains E1 on it;
- the pipeline's state (``state/filter``, ``trim``, ``extract``), so the summary and QA stages run on it
  exactly as on extracted labels: ``favchat data annotate --out OUT`` then ``favchat data qa --out OUT``
  (``OUT/manifest.jsonl`` then holds labels, events, summaries and QA).

Clips are found in ``videos`` as ``<clip id>.mp4`` (CelebV-HQ's download-and-process output: trimmed to the
clip and cropped to its face box, so the face box is the whole frame), or as the raw download
``<ytb_id>.mp4`` (the frame range comes from the clip's seconds, the face box from its ``bbox``). Clips
without a video (YouTube removes videos) are skipped, counted and listed in ``OUT/missing_videos.txt``.

    favchat data import-celebv --info celebvhq_info.json --videos downloaded_celebvhq/processed --out data/celebv
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from favchat.data.layout import describe_folder, find_clip, looks_like
from favchat.data.manifest import SPLITS, Clip, Event
from favchat.data.taxonomy import BY_NAME, GROUPS, LABELS_BY_GROUP

log = logging.getLogger(__name__)

# CelebV-HQ spellings that differ from the taxonomy's (after lower-casing; the paper's table uses the latter).
SPELLINGS = {"blonde_hair": "blond_hair", "5_o'clock_shadow": "5_o_clock_shadow", "sadness": "sad",
             "happiness": "happy", "angry": "anger", "surprised": "surprise", "fearful": "fear",
             "disgusted": "disgust"}
SOURCE = "celebv-hq"


class CelebVError(ValueError):
    """``celebvhq_info.json`` or the video folder is not what CelebV-HQ distributes; names the file and problem."""


def taxonomy_label(name: str, group: str) -> str | None:
    """A CelebV-HQ label as the taxonomy's label of ``group``, or None when it is not one."""
    n = name.strip().lower().replace(" ", "_").replace("-", "_")
    n = SPELLINGS.get(n, n)
    return n if n in BY_NAME and BY_NAME[n].group == group else None


@dataclass
class CelebVClip:
    """One clip of ``celebvhq_info.json`` with its labels in taxonomy names."""

    id: str
    ytb_id: str
    start_sec: float
    end_sec: float
    bbox: dict[str, float]  # top, bottom, left, right, normalised to the raw video's frame
    labels: dict[str, list[str]]
    emotions: list[tuple[str, float, float]]  # (label, start_sec, end_sec) relative to the clip; [] if one emotion
    version: str | None


def _mapping(meta: Any, key: str, group: str, path: Path, problems: list[str]) -> list[str]:
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"meta_info.{key}: expected a list of label names, got {str(names)[:60]}")
        return []
    mapped = [taxonomy_label(n, group) for n in names]
    bad = [n for n, m in zip(names, mapped, strict=True) if m is None]
    if bad:
        problems.append(f"meta_info.{key}: labels that are not {group} labels of the taxonomy: {bad}")
    return [m or "" for m in mapped]


def _flags(values: Any, names: list[str], where: str, problems: list[str]) -> list[str]:
    if not isinstance(values, list) or len(values) != len(names) or any(v not in (0, 1) for v in values):
        problems.append(f"{where}: expected {len(names)} flags 0/1 (one per mapping entry), got {str(values)[:60]}")
        return []
    return [n for n, v in zip(names, values, strict=True) if v]


def read_info(path: str | os.PathLike) -> list[CelebVClip]:
    """Every clip of ``celebvhq_info.json`` with its labels mapped; ``CelebVError`` lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise CelebVError(f"CelebV-HQ annotation file not found: {path}{looks_like(path, 'CelebV-HQ')}")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CelebVError(f"{path}: not JSON ({e}); expected CelebV-HQ's celebvhq_info.json") from e
    if not isinstance(data, dict) or not {"meta_info", "clips"} <= set(data):
        what = (f"a JSON object with keys {list(data)[:5]}" if isinstance(data, dict)
                else f"a JSON {type(data).__name__}" + (f" of {len(data)} items (DFEC's test.json?)"
                                                        if isinstance(data, list) else ""))
        raise CelebVError(f"{path}: expected CelebV-HQ's celebvhq_info.json, an object with 'meta_info' and 'clips'; "
                          f"found {what}")
    problems: list[str] = []
    appearance = _mapping(data["meta_info"], "appearance_mapping", "appearance", path, problems)
    action = _mapping(data["meta_info"], "action_mapping", "action", path, problems)
    if problems:
        raise CelebVError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems))
    clips = data["clips"] if isinstance(data["clips"], dict) else {}
    out = []
    for cid, c in clips.items():
        where = f"clips[{cid!r}]"
        try:
            attrs, box, dur = c["attributes"], c["bbox"], c["duration"]
            start, end = float(dur["start_sec"]), float(dur["end_sec"])
            bbox = {k: float(box[k]) for k in ("top", "bottom", "left", "right")}
            emo = attrs["emotion"]
            ytb = str(c["ytb_id"])
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{where}: missing or malformed field {e} (expected ytb_id, duration, bbox, attributes)")
            continue
        if not end > start >= 0 or not all(0 <= v <= 1 for v in bbox.values()):
            problems.append(f"{where}: duration {start}..{end} s or bbox {bbox} out of range")
            continue
        labels = {"appearance": _flags(attrs.get("appearance"), appearance, f"{where}.attributes.appearance", problems),
                  "action": _flags(attrs.get("action"), action, f"{where}.attributes.action", problems),
                  "emotion": []}
        timed: list[tuple[str, float, float]] = []
        if not isinstance(emo, dict) or "labels" not in emo:
            problems.append(f"{where}.attributes.emotion: expected {{sep_flag, labels}}, got {str(emo)[:60]}")
            continue
        entries = emo["labels"] if emo.get("sep_flag") else [emo["labels"]]
        for e in entries if isinstance(entries, list) else [None]:
            name = e.get("emotion") if emo.get("sep_flag") and isinstance(e, dict) else e
            label = taxonomy_label(name, "emotion") if isinstance(name, str) else None
            if label is None:
                problems.append(f"{where}.attributes.emotion: unknown emotion {name!r} (CelebV-HQ's: neutral, "
                                "anger, contempt, disgust, happy, fear, sadness, surprise)")
                continue
            if emo.get("sep_flag"):
                try:
                    timed.append((label, float(e["start_sec"]), float(e["end_sec"])))
                except (KeyError, TypeError, ValueError):
                    problems.append(f"{where}.attributes.emotion: a timed emotion needs start_sec and end_sec")
            if label not in labels["emotion"]:
                labels["emotion"].append(label)
        labels = {g: [n for n in LABELS_BY_GROUP[g] if n in labels[g]] for g in ("appearance", "action")} | {
            "emotion": labels["emotion"]}  # taxonomy order; emotions in the order they are shown
        out.append(CelebVClip(cid, ytb, start, end, bbox, labels, timed, c.get("version")))
    if problems:
        raise CelebVError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30])
                          + (f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""))
    if not out:
        raise CelebVError(f"{path}: 'clips' holds no clips")
    return out


def _records(clip: CelebVClip, video: Path, raw: bool, folder_fps: float, split: str
             ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Clip]:
    """The filter, trim and extract state records of one clip, and its manifest line."""
    from favchat.data.video import probe

    info = probe(video, folder_fps=folder_fps)
    if raw:  # the raw download: the clip is a span of it, the face is CelebV-HQ's box
        start = min(round(clip.start_sec * info.fps), info.num_frames - 1)
        end = min(max(round(clip.end_sec * info.fps), start + 1), info.num_frames)
        b = clip.bbox
        box = [b["left"], b["top"], b["right"], b["bottom"]]
    else:  # the processed clip: already trimmed, and cropped to the face box
        start, end, box = 0, info.num_frames, [0.0, 0.0, 1.0, 1.0]
    n = end - start
    events = []
    for label, s, e in clip.emotions:
        a = min(round(s * info.fps), n - 1)
        events.append(Event(label, a, min(max(round(e * info.fps), a + 1), n)))
    meta = {"face_box": box, "ytb_id": clip.ytb_id, "celebv_seconds": [clip.start_sec, clip.end_sec],
            "celebv_bbox": clip.bbox, **({"celebv_version": clip.version} if clip.version else {})}
    video_id = clip.ytb_id if raw else clip.id
    filt = {"id": video_id, "video": str(video.resolve()), "kept": True, "reason": None,
            "detail": "CelebV-HQ clip; labels imported", "face_fraction": 1.0, "num_frames": info.num_frames,
            "fps": info.fps, "width": info.width, "height": info.height, "sampled": [], "boxes": []}
    trim = {"id": clip.id, "frame_range": [start, end], "file": None}
    extract = {"id": clip.id, "features": clip.labels, "events": [e.__dict__ for e in events], "source": SOURCE,
               "split": split, "meta": meta}
    line = Clip(id=clip.id, video=str(video.resolve()), frame_range=(start, end), fps=info.fps, source=SOURCE,
                split=split, labels=clip.labels, events=events, meta=meta)
    return filt, trim, extract, line


def import_celebv(info: str | os.PathLike, videos: str | os.PathLike, out: str | os.PathLike, split: str = "train",
                  folder_fps: float = 25.0, progress: bool = True) -> dict[str, Any]:
    """Import CelebV-HQ's clips and labels: ``out/labels.jsonl`` and the pipeline state (see the module docstring).

    Args:
        info: CelebV-HQ's ``celebvhq_info.json``.
        videos: the folder of downloaded clips: ``<clip id>.mp4`` (processed) or ``<ytb_id>.mp4`` (raw downloads).
        out: the output folder (``labels.jsonl``, ``state/``, ``missing_videos.txt``); a rerun adds what is new.
        split: the manifest's split for every clip (``train``, ``val`` or ``test``).
        folder_fps: the frame rate of clips stored as frame folders (they carry none).
        progress: show a progress bar.

    Returns:
        Counts: clips in the file, imported, without a video, unreadable, and labels per group.
    """
    from tqdm.auto import tqdm

    from favchat.data.pipeline.build import State
    from favchat.data.video import VideoDecodeError

    if split not in SPLITS:
        raise CelebVError(f"split must be one of {SPLITS}, got {split!r}")
    clips = read_info(info)
    folder = Path(videos)
    if not folder.is_dir():
        raise CelebVError(f"CelebV-HQ video folder not found: {folder}")
    found: list[tuple[CelebVClip, Path, bool]] = []
    missing: list[str] = []
    for c in clips:
        v = find_clip(folder, c.id)
        raw = v is None
        v = v or find_clip(folder, c.ytb_id)
        if v is None:
            missing.append(c.id)
        else:
            found.append((c, v, raw))
    if not found:
        raise CelebVError(f"none of the {len(clips)} clips of {info} has a video in {folder} (looked for "
                          f"<clip id>.mp4, e.g. {clips[0].id}.mp4, and the raw <ytb_id>.mp4, e.g. {clips[0].ytb_id}.mp4); "
                          f"{describe_folder(folder)}{looks_like(folder, 'CelebV-HQ')}")
    out = Path(out)
    digest = hashlib.sha256(Path(info).read_bytes()).hexdigest()[:16]
    state = State(out)
    unreadable: list[str] = []
    try:
        state.check_config("extract", {"labels_from": "celebvhq_info.json", "info_sha256": digest, "split": split})
        lines, trims = [], {}
        for c, v, raw in tqdm(found, desc="CelebV-HQ clips", unit="clip", disable=not progress):
            try:
                filt, trim, extract, line = _records(c, v, raw, folder_fps, split)
            except VideoDecodeError as e:
                log.warning("clip %s skipped: %s", c.id, e)
                unreadable.append(c.id)
                continue
            if filt["id"] not in state.records["filter"]:
                state.add("filter", filt)
            trims.setdefault(filt["id"], []).append(trim)  # a raw video's clips share one trim record
            state.add("extract", extract)
            lines.append(line)
        for vid, spans in trims.items():
            state.add("trim", {"id": vid, "clips": spans})
    finally:
        state.close()
    path = out / "labels.jsonl"  # rewritten whole (atomically) from this run's clips
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in sorted(lines, key=lambda c: c.id)),
                   encoding="utf-8")
    os.replace(tmp, path)
    (out / "missing_videos.txt").write_text("".join(f"{m}\n" for m in missing + unreadable))
    counts = {g: sum(len(line.labels[g]) for line in lines) for g in GROUPS}
    return {"clips": len(clips), "imported": len(lines), "no_video": len(missing), "unreadable": len(unreadable),
            "timed_emotions": sum(bool(line.events) for line in lines), "labels": counts, "manifest": str(path)}
