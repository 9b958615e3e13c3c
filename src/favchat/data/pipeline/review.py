"""Quality control (App. B.3): a markdown review of a random sample of a manifest's clips.

Each sampled clip gets a strip of four of its frames (a PNG beside the review), its labels by group,
its summary and its QA pairs, so a person can check in a few minutes that the texts match the faces.

    favchat data review --manifest data/manifest.jsonl --out data/review.md --n 20
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from favchat.data.manifest import Clip, read_manifest
from favchat.data.video import VideoDecodeError, probe, read_frames, sample_indices


def frame_strip(clip: Clip, k: int = 4, side: int = 160) -> np.ndarray:
    """``k`` evenly spaced frames of the clip side by side: (side, ~k * side, 3) uint8."""
    start, end = clip.frame_range or (0, probe(clip.video_path).num_frames)
    frames = read_frames(clip.video_path, sample_indices(end, k, start, end), max_side=side)  # (k, h, w, 3)
    return np.concatenate(list(frames), axis=1)


def write_review(manifest: str | Path, out: str | Path, n: int = 20, seed: int = 0) -> Path:
    """Write ``out`` (markdown) and ``<out stem>_frames/<clip id>.png`` for ``n`` random clips."""
    import cv2

    clips = read_manifest(manifest, check_videos=False)
    out = Path(out)
    assets = out.with_name(f"{out.stem}_frames")
    assets.mkdir(parents=True, exist_ok=True)
    sample = sorted(random.Random(seed).sample(clips, min(n, len(clips))), key=lambda c: c.id)
    lines = [f"# Review of {len(sample)} random clips of {manifest}", "",
             f"{len(clips)} clips in the manifest; sample seed {seed}.", ""]
    for c in sample:
        lines += [f"## {c.id}", "", f"`{c.video}` frames {list(c.frame_range) if c.frame_range else 'all'}", ""]
        try:
            cv2.imwrite(str(assets / f"{c.id}.png"), frame_strip(c)[..., ::-1])
            lines += [f"![{c.id}]({assets.name}/{c.id}.png)", ""]
        except VideoDecodeError as e:
            lines += [f"(frames unavailable: {e})", ""]
        for g, names in c.labels.items():
            lines.append(f"- **{g}**: {', '.join(names) or '—'}")
        lines += ["", f"**Summary.** {c.summary or '—'}", ""]
        lines += [f"{i}. *{q.type}* — Q: {q.question} A: {q.answer}" for i, q in enumerate(c.qa, 1)]
        lines += [""]
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
