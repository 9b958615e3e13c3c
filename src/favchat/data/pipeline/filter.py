"""Stage 1 of the dataset pipeline (App. B.1): keep the videos in which a face is visible.

A video is decoded only at a sample of frames (every ``sample_stride``-th, at most ``max_samples``),
downscaled by the decoder before it is held in memory (a 4K file costs what a small one does), and a
pluggable face detector (``favchat.data.faces``) runs on each sampled frame. The video is kept when
the fraction of sampled frames with a face reaches ``face_threshold`` (the paper's 60%). Every video
gets a ``FilterResult``: its face fraction, the per-sample face boxes (which trim and extract reuse),
and for a rejection a reason category and a message.

    favchat data filter --input videos/ --out work/
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from favchat.data.faces import FaceDetector
from favchat.data.video import VideoDecodeError, probe, read_frames

# Rejection categories, in the order the final table lists them.
REJECT_REASONS = ("unreadable", "too_short", "few_faces")


@dataclass
class FilterConfig:
    """How videos are sampled and judged."""

    detector: str = "auto"  # favchat.data.faces.get_detector name: auto | haar | yuface | mediapipe
    face_threshold: float = 0.60  # keep when at least this fraction of sampled frames shows a face
    sample_stride: int = 16  # detect on every n-th frame (App. B.3 samples every 16th frame too)
    max_samples: int = 256  # long videos get a wider stride so no video costs more than this
    decode_max_side: int = 384  # frames are downscaled to this longer side while decoding
    detect_max_side: int = 192  # and to this one for detection (faces fill much of a facial video)
    min_frames: int = 36  # a video shorter than the shortest clip is rejected without decoding
    folder_fps: float = 25.0  # frame rate of frame-folder videos (YouTube Faces' frames), which carry none

    def __post_init__(self) -> None:
        if not 0.0 < self.face_threshold <= 1.0:
            raise ValueError(f"face_threshold must be in (0, 1], got {self.face_threshold}")
        for name in ("sample_stride", "max_samples", "decode_max_side", "detect_max_side", "min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folder_fps <= 0:
            raise ValueError(f"folder_fps must be positive, got {self.folder_fps}")
        if self.detect_max_side > self.decode_max_side:
            raise ValueError("detect_max_side cannot exceed decode_max_side (frames are decoded at that size)")


@dataclass
class FilterResult:
    """One video's verdict; a line of the filter state file."""

    id: str
    video: str
    kept: bool
    reason: str | None = None  # one of REJECT_REASONS when rejected
    detail: str = ""  # human-readable why
    face_fraction: float = 0.0
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sampled: list[int] = field(default_factory=list)  # frame indices that were decoded and checked
    boxes: list[list[float] | None] = field(default_factory=list)  # per sample: [x0, y0, x1, y1] in [0, 1] or None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FilterResult:
        return cls(**d)


def sample_positions(num_frames: int, stride: int, max_samples: int) -> list[int]:
    """Every ``stride``-th frame from 0, widened so that at most ``max_samples`` frames are taken."""
    step = max(stride, math.ceil(num_frames / max_samples))
    return list(range(0, num_frames, step))


def detect_boxes(frames: np.ndarray, detector: FaceDetector, detect_max_side: int) -> list[list[float] | None]:
    """The best face box of each frame (K, H, W, 3), normalised to [0, 1], or None when there is none."""
    import cv2

    h, w = frames.shape[1:3]
    scale = min(1.0, detect_max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out: list[list[float] | None] = []
    for frame in frames:
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else frame
        found = detector.detect(small)
        if not found:
            out.append(None)
            continue
        b = found[0]  # detectors return the best box first
        sw, sh = small.shape[1], small.shape[0]
        out.append([round(b.x0 / sw, 5), round(b.y0 / sh, 5), round(b.x1 / sw, 5), round(b.y1 / sh, 5)])
    return out


def filter_video(
    path: str, video_id: str, cfg: FilterConfig, detector: FaceDetector
) -> tuple[FilterResult, np.ndarray | None]:
    """Judge one video. Returns the result and the decoded sampled frames (None when it was not decoded).

    Never raises for a bad file: an unreadable, truncated or non-video file is a rejection with a reason.
    """
    try:
        info = probe(path, folder_fps=cfg.folder_fps)
    except VideoDecodeError as e:
        return FilterResult(video_id, path, False, "unreadable", str(e)), None
    res = FilterResult(video_id, path, False, num_frames=info.num_frames, fps=info.fps, width=info.width,
                       height=info.height)
    if info.num_frames < cfg.min_frames:
        res.reason, res.detail = "too_short", f"{info.num_frames} frames < the minimum clip of {cfg.min_frames}"
        return res, None
    res.sampled = sample_positions(info.num_frames, cfg.sample_stride, cfg.max_samples)
    try:
        frames = read_frames(path, res.sampled, max_side=cfg.decode_max_side)  # (K, H, W, 3)
    except VideoDecodeError as e:
        res.sampled = []
        res.reason, res.detail = "unreadable", str(e)
        return res, None
    res.boxes = detect_boxes(frames, detector, cfg.detect_max_side)
    res.face_fraction = round(sum(b is not None for b in res.boxes) / len(res.boxes), 4)
    if res.face_fraction >= cfg.face_threshold:
        res.kept = True
    else:
        res.reason = "few_faces"
        res.detail = (f"a face in {res.face_fraction:.0%} of {len(res.boxes)} sampled frames "
                      f"< the threshold {cfg.face_threshold:.0%}")
    return res, frames
