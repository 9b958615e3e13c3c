"""Stage 2 of the dataset pipeline (App. B.1): cut kept videos into clips of 36–600 frames.

A clip is a frame range in which the face is present throughout, at the resolution of the filter's
sampling: a frame counts as showing a face when its nearest sampled frame does, and a clip is a run of
such frames. Runs longer than ``max_frames`` are split into equal parts; parts shorter than
``min_frames`` are dropped.
Clip files are written only on request (``--trim.write_clips true``); otherwise a clip is a frame range of its
source video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from favchat.data.pipeline.filter import FilterResult


@dataclass
class TrimConfig:
    min_frames: int = 36  # the paper's shortest clip
    max_frames: int = 600  # and longest

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")


def face_runs(sampled: list[int], boxes: list[list[float] | None], num_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges in which every frame's nearest sampled frame shows a face.

    Each frame takes the detection of its nearest sampled frame (ties go to the earlier one), so a run
    of face samples s_i..s_j covers the frames from the midpoint after s_(i-1) to the midpoint after
    s_j (the video's ends where there is no neighbour). With every frame sampled this is exact.
    """
    runs: list[tuple[int, int]] = []
    first: int | None = None
    for k, box in enumerate(boxes):
        if box is not None and first is None:
            first = k
        if box is not None and (k + 1 == len(boxes) or boxes[k + 1] is None):
            start = 0 if first == 0 else (sampled[first - 1] + sampled[first]) // 2 + 1
            end = num_frames if k + 1 == len(sampled) else (sampled[k] + sampled[k + 1]) // 2 + 1
            runs.append((start, end))
            first = None
    return runs


def split_run(start: int, end: int, cfg: TrimConfig) -> list[tuple[int, int]]:
    """Split [start, end) into the fewest equal parts of at most ``max_frames``; drop parts that are too short."""
    n = end - start
    if n < cfg.min_frames:
        return []
    parts = math.ceil(n / cfg.max_frames)
    bounds = [start + (n * k) // parts for k in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b - a >= cfg.min_frames]


def trim_video(fr: FilterResult, cfg: TrimConfig) -> list[dict]:
    """The clips of one kept video: ``[{"id": "<video id>-c000", "frame_range": [s, e]}, ...]``."""
    if not fr.kept:
        return []
    spans = [s for run in face_runs(fr.sampled, fr.boxes, fr.num_frames) for s in split_run(*run, cfg)]
    return [{"id": f"{fr.id}-c{k:03d}", "frame_range": [a, b]} for k, (a, b) in enumerate(spans)]


def write_clip_file(video: str, frame_range: tuple[int, int], fps: float, out: Path, max_side: int = 512) -> Path:
    """Write frames [start, end) of ``video`` as their own mp4, downscaled to ``max_side`` (a 600-frame
    clip is then at most ~0.3 GB in memory); atomic, so a kill never leaves half a clip."""
    from favchat.data.video import read_frames, write_video

    start, end = frame_range
    return write_video(out, read_frames(video, range(start, end), max_side=max_side), fps=fps)
