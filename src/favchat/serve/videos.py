"""Video URLs in requests → checked bytes: ``data:`` URLs (uploads) and ``file://`` URLs under the allowed
roots, then the container checked against the server's limits before anything is decoded in full.

Every refusal is an ``APIError`` with a 4xx status and a message for the client.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from favchat.data.video import VideoDecodeError, VideoInfo, probe, read_frames, sample_indices
from favchat.serve.errors import APIError
from favchat.serve.settings import MiB, ServeConfig

log = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


@dataclass(frozen=True)
class VideoBlob:
    data: bytes
    sha256: str  # the cache key: the same bytes are the same video, whoever sends them


def fetch_video(url: str, config: ServeConfig, roots: list[str]) -> VideoBlob:
    """The bytes a video URL names. ``roots``: the allowed folders, already resolved (``os.path.realpath``)."""
    if not isinstance(url, str) or not url:
        raise APIError(400, "video_url.url must be a non-empty string", "invalid_video_url")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        data = decode_data_url(url, config.max_video_bytes)
    elif scheme == "file":
        data = read_allowed_file(url, roots, config.max_video_bytes)
    else:
        raise APIError(400, f"unsupported video URL scheme {scheme!r}: send the video as a data: URL "
                       "(base64) or as a file:// URL under a folder the server allows", "invalid_video_url")
    return VideoBlob(data, hashlib.sha256(data).hexdigest())


def decode_data_url(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise APIError(400, "a data: URL must be base64: data:video/mp4;base64,AAAA...", "invalid_video_url")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise APIError(413, f"the uploaded video is over the limit of {max_bytes / MiB:g} MiB", "video_too_big")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise APIError(400, f"the data: URL is not valid base64 ({e})", "invalid_video_url") from None
    if not data:
        raise APIError(400, "the uploaded video is empty (0 bytes)", "unreadable_video")
    return data


def within(path: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([path, root]) == root for root in roots)


def read_allowed_file(url: str, roots: list[str], max_bytes: int) -> bytes:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise APIError(400, "a file: URL names a path on the server: file:///folder/clip.mp4", "invalid_video_url")
    if not roots:
        raise APIError(403, "file:// URLs are off on this server (it was started without --allowed_roots): "
                       "upload the video as a data: URL", "path_not_allowed")
    path = unquote(parts.path)
    if not os.path.isabs(path):
        raise APIError(400, f"{path!r}: a file: URL needs an absolute path", "invalid_video_url")
    # realpath resolves '..' and every symbolic link, so a link inside a root that points outside is refused.
    real = os.path.realpath(path)
    if not within(real, roots):
        raise APIError(403, f"{path}: not inside a folder this server allows (after resolving '..' and links)",
                       "path_not_allowed")
    try:
        # O_NOFOLLOW: the checked path must not have become a link since realpath looked at it; O_NONBLOCK:
        # a named pipe must not hang the request (it is refused below, as anything but a regular file).
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise APIError(400, f"{path}: no such file", "video_not_found") from None
    except OSError as e:
        raise APIError(403, f"{path}: cannot be opened ({e.strerror})", "path_not_allowed") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise APIError(400, f"{path}: not a regular file", "unreadable_video")
        size = st.st_size
        if size > max_bytes:
            raise APIError(413, f"{path}: {size / MiB:.1f} MiB, over the limit of {max_bytes / MiB:g} MiB",
                           "video_too_big")
        if size == 0:
            raise APIError(400, f"{path}: empty file (0 bytes)", "unreadable_video")
        return f.read(max_bytes + 1)


def list_videos(roots: list[str], limit: int = 500) -> list[Path]:
    """Video files under the allowed roots (links that leave them are skipped), sorted, at most ``limit``."""
    found: list[Path] = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(folder, name)
                if name.lower().endswith(VIDEO_SUFFIXES) and within(os.path.realpath(path), roots):
                    found.append(Path(path))
                    if len(found) >= limit:
                        return found
    return found


@contextmanager
def as_file(blob: VideoBlob, folder: Path) -> Iterator[Path]:
    """The bytes in a temporary file for the decoder, removed afterwards."""
    path = folder / f"{blob.sha256[:16]}-{uuid.uuid4().hex[:8]}.video"
    path.write_bytes(blob.data)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def unreadable(path: Path, error: Exception) -> APIError:
    """A decoder failure as the client's error; the temporary file's name is not theirs to see."""
    if isinstance(error, (VideoDecodeError, ValueError)):
        message = str(error).replace(str(path), "the video")
    else:  # a decoder failing in a way it does not describe: the client learns that much, the log the rest
        log.warning("decoding an uploaded video failed", exc_info=error)
        message = f"the video could not be decoded ({type(error).__name__})"
    return APIError(400, message, "unreadable_video")


def check_video(path: Path, config: ServeConfig) -> VideoInfo:
    """The container's frame count, rate and size, checked against the limits (nothing decoded in full)."""
    try:
        info = probe(path)
    except Exception as e:  # untrusted bytes: any decoder failure is the video's fault
        raise unreadable(path, e) from None
    if max(info.width, info.height) > config.max_side:
        raise APIError(400, f"the video is {info.width}x{info.height}; this server takes at most "
                       f"{config.max_side} pixels a side", "video_resolution_too_high")
    if info.num_frames > config.max_frames:
        raise APIError(400, f"the video has {info.num_frames} frames; this server takes at most "
                       f"{config.max_frames}", "video_too_many_frames")
    duration = info.num_frames / info.fps
    if duration > config.max_duration_s:
        raise APIError(400, f"the video lasts {duration:.1f} s; this server takes at most "
                       f"{config.max_duration_s:g} s", "video_too_long")
    return info


def preview_frames(path: Path, info: VideoInfo, count: int, side: int = 192) -> list[str]:
    """``count`` frames spread over the video, as JPEG data URLs at most ``side`` pixels a side."""
    import cv2

    try:
        frames = read_frames(path, sample_indices(info.num_frames, count), max_side=side)
    except Exception as e:  # as in check_video
        raise unreadable(path, e) from None
    urls = []
    for frame in frames:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise APIError(400, "a frame of the video could not be converted for the preview", "unreadable_video")
        urls.append("data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode())
    return urls
