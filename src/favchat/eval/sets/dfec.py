"""DFEC (FaceTrack-MM's caption benchmark, FEC-Bench) as released: ``test.json``.

    test.json      # a JSON array of 800 {"id", "video", "caption"}
    CAER/ RAVDESS/ DFEW/ MER24/ MAFW/ AFEW-VA/ FERV39k/    # the source sets, where "video" points:
                                                           # e.g. "DFEW/videos/2961.mp4"

``video`` resolves against ``videos_root`` (default: the folder of ``test.json``), the folder that holds the
source sets. A missing video is an error that counts the missing clips per source set.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from favchat.data.layout import describe_folder
from favchat.eval.benchmarks import BenchmarkError, Sample
from favchat.eval.predict import VideoRef

SOURCE_SETS = ("CAER", "RAVDESS", "DFEW", "MER24", "MAFW", "AFEW-VA", "FERV39k")


def is_json_array(path: str | os.PathLike) -> bool:
    """True when the file's first non-blank character opens a JSON array (DFEC's test.json, not a JSONL file)."""
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(4096).lstrip()
    return head.startswith("[")


def _what(data: Any) -> str:
    if isinstance(data, dict):
        keys = ", ".join(list(data)[:5])
        hint = " (CelebV-HQ's celebvhq_info.json?)" if "clips" in data and "meta_info" in data else ""
        return f"a JSON object with keys {keys}{hint}"
    return f"a JSON {type(data).__name__}"


def load_dfec(path: str | os.PathLike, default_question: str, videos_root: str | os.PathLike | None = None) -> list[Sample]:
    """DFEC's caption items with their videos.

    Args:
        path: DFEC's ``test.json``.
        default_question: the question asked of each clip (the set has none of its own).
        videos_root: the folder holding the source sets (``DFEW/``, ``MAFW/``, ...) that ``video`` paths point into;
            default: the folder of ``test.json``.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"DFEC annotation file not found: {path}")
    root = Path(videos_root) if videos_root is not None else path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{path}: not JSON ({e.msg} at line {e.lineno}); expected DFEC's test.json, a JSON "
                             "array of {id, video, caption}") from e
    if not isinstance(data, list):
        raise BenchmarkError(f"{path}: expected DFEC's test.json, a JSON array of {{id, video, caption}}; found "
                             f"{_what(data)}")
    samples, problems, missing, seen = [], [], [], set()
    for k, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("id"), str | int) or not isinstance(d.get("video"), str):
            problems.append(f"item {k}: needs 'id' (string or number) and 'video' (string), got {str(d)[:80]}")
            continue
        caption = d.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            problems.append(f"item {k} (id {d['id']}): needs a non-empty 'caption'")
            continue
        cid = str(d["id"])
        if cid in seen:
            problems.append(f"item {k}: duplicate id {cid!r}")
            continue
        seen.add(cid)
        video = Path(d["video"]) if Path(d["video"]).is_absolute() else root / d["video"]
        if not video.exists():
            missing.append(d["video"])
            continue
        samples.append(Sample(id=cid, video=VideoRef(video), question=default_question, references=[caption],
                              meta={"source": Path(d["video"]).parts[0]}))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if missing:
        by_set = Counter(Path(v).parts[0] for v in missing)
        absent = [s for s in by_set if not (root / s).is_dir()]
        raise BenchmarkError(
            f"{path}: {len(missing)} of {len(data)} videos not found under {root}, by source set: "
            + ", ".join(f"{s} {n}" for s, n in by_set.most_common()) + f"; e.g. {missing[0]}. "
            + (f"Missing source folders: {', '.join(absent)} ({describe_folder(root)}). " if absent else "")
            + f"Pass --videos_root, the folder that holds the source sets ({', '.join(SOURCE_SETS)}).")
    if not samples:
        raise BenchmarkError(f"{path}: an empty array (no caption items)")
    return samples
