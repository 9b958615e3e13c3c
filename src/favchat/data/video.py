"""Video reading and writing through PyAV, with errors that say what is wrong with a file.

Every component that touches a video file (the processor, the datasets, the data pipeline,
FaceSynth) goes through ``probe``, ``read_frames`` and ``write_video`` here.

A video is a file, or a **frame folder**: a directory of image files, one per frame, in natural order
(``2.jpg`` before ``10.jpg``; YouTube Faces' ``0.555.jpg`` before ``0.1000.jpg``), as YouTube Faces and
DFEW's ``clip_224x224`` ship them. ``probe``, ``read_frames`` and ``read_all_frames`` hand a directory to
``FrameFolder``; a folder carries no frame rate, so ``probe`` reports the caller's ``folder_fps``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class VideoDecodeError(ValueError):
    """A video file that cannot be used; the message names the file and the reason."""


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# The frame rate reported for a frame folder when the caller's config gives none (the common rate of
# the sets that ship frames; a folder's files say nothing about it).
DEFAULT_FOLDER_FPS = 25.0


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int  # counted by decoding when the container does not say
    fps: float
    width: int
    height: int


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.exists():
        raise VideoDecodeError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise VideoDecodeError(f"{p}: empty file (0 bytes)")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoDecodeError(f"{p}: not a readable video container ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{p}: the file has no video stream")
    return container


def _decode_all(path: str | os.PathLike, keep: set[int] | None,
                max_side: int | None = None) -> tuple[dict[int, np.ndarray], int]:
    """Decode frames in order; keep those whose index is in ``keep`` (all when None).

    ``max_side``: kept frames whose longer side exceeds it are downscaled by the decoder's scaler
    before they are held in memory (a 4K file then costs no more than a small one).
    """
    import av

    container = _open(path)
    frames: dict[int, np.ndarray] = {}
    n = 0
    last = max(keep) if keep else None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if keep is None or n in keep:
                scale = min(1.0, max_side / max(frame.width, frame.height)) if max_side else 1.0
                if scale < 1.0:
                    frames[n] = frame.to_ndarray(format="rgb24", width=max(2, round(frame.width * scale)),
                                                 height=max(2, round(frame.height * scale)), interpolation="AREA")
                else:
                    frames[n] = frame.to_ndarray(format="rgb24")
            n += 1
            if last is not None and n > last:
                break
    except av.error.FFmpegError as e:
        if n == 0:
            raise VideoDecodeError(f"{path}: decoding failed before the first frame ({e})") from e
        # A truncated file: keep what decoded, the caller checks it got the frames it asked for.
    finally:
        container.close()
    return frames, n


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that orders the digit runs of a name by value: ``2.jpg`` < ``10.jpg``, ``0.555`` < ``0.1000``."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name.lower()) if t]


class FrameFolder:
    """A video stored as one image file per frame (``IMAGE_EXTS``), in natural name order."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VideoDecodeError(f"{self.path}: no such frame folder")
        entries = sorted(self.path.iterdir())
        self.files = sorted((p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                             and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
        if not self.files:
            shown = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:5]) or "nothing"
            raise VideoDecodeError(f"{self.path}: a folder is read as a video of image frames "
                                   f"({', '.join(IMAGE_EXTS)}), but it holds none (found: {shown})")

    def _image(self, k: int, max_side: int | None = None) -> np.ndarray:
        import cv2

        f = self.files[k]
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)  # (H, W, 3) BGR, None when unreadable
        if img is None:
            raise VideoDecodeError(f"{f}: frame {k} of {self.path} is not a readable image")
        h, w = img.shape[:2]
        scale = min(1.0, max_side / max(h, w)) if max_side else 1.0
        if scale < 1.0:
            img = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def info(self, fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
        h, w = self._image(0).shape[:2]
        return VideoInfo(str(self.path), len(self.files), fps, w, h)

    def read(self, indices: Sequence[int], max_side: int | None = None) -> np.ndarray:
        """Frames at ``indices`` (repeats allowed) as RGB uint8, (len(indices), H, W, 3)."""
        bad = sorted({int(i) for i in indices if not 0 <= int(i) < len(self.files)})
        if bad:
            raise VideoDecodeError(f"{self.path}: frames {bad[:5]}{'...' if len(bad) > 5 else ''} requested, "
                                   f"but the folder holds {len(self.files)} frames")
        images = {k: self._image(k, max_side) for k in sorted({int(i) for i in indices})}
        sizes = {im.shape for im in images.values()}
        if len(sizes) > 1:
            raise VideoDecodeError(f"{self.path}: its frames differ in size ({sorted(sizes)[:3]}); "
                                   "a video's frames must all have one size")
        return np.stack([images[int(i)] for i in indices])


def probe(path: str | os.PathLike, count: bool = False, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    """Frame count, fps and size. ``count=True`` decodes the whole file to count frames exactly.

    A frame folder reports ``folder_fps`` (its images carry no frame rate).
    """
    if Path(path).is_dir():
        return FrameFolder(path).info(folder_fps)
    container = _open(path)
    try:
        s = container.streams.video[0]
        fps = float(s.average_rate or s.base_rate or 0) or 25.0
        n, w, h = int(s.frames or 0), int(s.codec_context.width or 0), int(s.codec_context.height or 0)
    finally:
        container.close()
    if count or n <= 0:
        _, n = _decode_all(path, keep=set())
    if n <= 0:
        raise VideoDecodeError(f"{path}: the video has no decodable frames")
    return VideoInfo(str(path), n, fps, w, h)


def sample_indices(num_frames: int, k: int, start: int = 0, end: int | None = None) -> list[int]:
    """``k`` frame indices spread uniformly over ``[start, end)`` (the centre of each of k segments)."""
    end = num_frames if end is None else min(end, num_frames)
    span = end - start
    if span <= 0:
        raise ValueError(f"empty frame range [{start}, {end})")
    if k <= 0:
        raise ValueError(f"need k >= 1 frames, got {k}")
    return [start + min(span - 1, int((i + 0.5) * span / k)) for i in range(k)]


def read_frames(path: str | os.PathLike, indices: Sequence[int], max_side: int | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (repeats allowed) as RGB uint8, shape (len(indices), H, W, 3).

    ``max_side``: downscale (keeping the aspect ratio) so the longer side is at most this many pixels.
    """
    if len(indices) == 0:
        raise ValueError("no frame indices given")
    if Path(path).is_dir():
        return FrameFolder(path).read(indices, max_side)
    wanted = set(int(i) for i in indices)
    frames, n = _decode_all(path, keep=wanted, max_side=max_side)
    missing = sorted(wanted - frames.keys())
    if missing:
        raise VideoDecodeError(
            f"{path}: frames {missing[:5]}{'...' if len(missing) > 5 else ''} could not be decoded "
            f"(the file gave {n} frames; truncated or shorter than its header says)"
        )
    return np.stack([frames[int(i)] for i in indices])


def read_all_frames(path: str | os.PathLike) -> np.ndarray:
    if Path(path).is_dir():
        folder = FrameFolder(path)
        return folder.read(range(len(folder.files)))
    frames, n = _decode_all(path, keep=None)
    if n == 0:
        raise VideoDecodeError(f"{path}: the video has no decodable frames")
    return np.stack([frames[i] for i in range(n)])


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray] | np.ndarray, fps: float = 12.0,
                crf: int = 20) -> Path:
    """Write RGB uint8 frames (H, W, 3) as an H.264 mp4 (even sizes are padded by edge repeat).

    The file is written to a temporary name and renamed, so a crash never leaves a half-written clip.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    container = av.open(str(tmp), mode="w")
    stream = None
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            h, w = frame.shape[:2]
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            if stream is None:
                from fractions import Fraction

                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                # No MB-tree: with it, x264 did not write the same bytes twice for the same frames here, and
                # a seeded FaceSynth must give the same clips every time.
                stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    except BaseException:
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    container.close()
    os.replace(tmp, path)
    return path
