"""EMER (explainable multimodal emotion reasoning, on MER2023 clips) as released: one CSV per version.

    dataset-v1/gt-eng.csv               # names,emotions,subtitles,reasons   (100 samples)
    dataset-v2/final-EMER-reason.csv    # name,chinese,english               (332 samples; its README says "names")

The reference explanation is ``reasons`` (v1) or ``english`` (v2). Clips are MER2023's videos, found as
``<videos>/<name>.<ext>`` (or a frame folder ``<name>/``); without ``videos``, in the CSV's folder or a
``video/`` or ``videos/`` folder beside it or beside its folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from favchat.data.layout import VIDEO_EXTS, describe_folder, find_clip
from favchat.eval.benchmarks import BenchmarkError, Sample
from favchat.eval.predict import VideoRef

# version -> (name columns accepted, reference column, other columns kept in the sample's meta)
FORMS = {"v1": (("names", "name"), "reasons", ("emotions", "subtitles")),
         "v2": (("name", "names"), "english", ())}


def load_emer_csv(path: str | os.PathLike, default_question: str,
                  videos: str | os.PathLike | None = None) -> list[Sample]:
    """EMER's samples with their reference explanations.

    Args:
        path: ``gt-eng.csv`` (EMER v1) or ``final-EMER-reason.csv`` (v2); the form is read from the header.
        default_question: the question asked of each clip.
        videos: the folder of MER2023's clips; default: the CSV's folder, or ``video/`` or ``videos/`` beside the CSV
            or beside its folder.
    """
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"EMER annotation file not found: {path}")
    folders = [Path(videos)] if videos is not None else [
        d / sub for d in (path.parent, path.parent.parent) for sub in ("", "video", "videos")]
    folders = [d for d in dict.fromkeys(folders) if d.is_dir()] or folders[:1]
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    head = [c.strip().lower() for c in rows[0]] if rows else []
    form = next((v for v, (names, ref, _) in FORMS.items() if ref in head and any(n in head for n in names)), None)
    if form is None:
        raise BenchmarkError(f"{path}: expected EMER's columns 'names,emotions,subtitles,reasons' (v1, gt-eng.csv) or "
                             f"'name,chinese,english' (v2, final-EMER-reason.csv), found {head or 'an empty file'}")
    names, ref, extra = FORMS[form]
    col = {c: head.index(c) for c in head}
    name_col = next(col[n] for n in names if n in col)
    samples, problems, missing, seen = [], [], [], set()
    for ln, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        row = row + [""] * (len(head) - len(row))
        name, text = row[name_col].strip(), row[col[ref]].strip()
        if not name or not text:
            problems.append(f"line {ln}: needs a name and a non-empty '{ref}'")
            continue
        if name in seen:
            problems.append(f"line {ln}: duplicate name {name!r}")
            continue
        seen.add(name)
        video = next((v for d in folders if (v := find_clip(d, name)) is not None), None)
        if video is None:
            missing.append(name)
            continue
        samples.append(Sample(id=name, video=VideoRef(video), question=default_question, references=[text],
                              meta={"version": form, **{k: row[col[k]] for k in extra if k in col}}))
    if problems:
        raise BenchmarkError(f"{len(problems)} problem(s) in {path}:\n  " + "\n  ".join(problems[:30]))
    if missing:
        where = "; ".join(f"{d}: {describe_folder(d)}" for d in folders)
        raise BenchmarkError(f"{path}: {len(missing)} of {len(seen)} clips have no video (looked for <name>"
                             f"{'/'.join(VIDEO_EXTS[:2])}... or a folder <name>/, e.g. {missing[:3]}, in {where}). "
                             "Pass --videos, the folder of MER2023's clips.")
    if not samples:
        raise BenchmarkError(f"{path}: no samples")
    return samples
