"""Pluggable face detectors and face cropping.

Detectors take one RGB uint8 frame (H, W, 3) and return boxes in pixels, best first:
- ``haar``: OpenCV's frontal-face Haar cascade (ships with opencv-python-headless < 5; always there);
- ``yuface``: libfacedetection's CNN (``pip install yuface``);
- ``mediapipe``: MediaPipe's BlazeFace (``mediapipe==0.10.21``, installed with ``--no-deps``).

``get_detector("auto")`` picks the first that imports, in the order mediapipe, yuface, haar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Box]: ...


def _check_frame(rgb: np.ndarray) -> None:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError(f"a frame must be a uint8 array (H, W, 3), got {getattr(rgb, 'dtype', type(rgb))} "
                         f"{getattr(rgb, 'shape', '')}")


class HaarDetector:
    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 4, min_size_frac: float = 0.08):
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"could not load the Haar cascade {path} (OpenCV 5 dropped them: use opencv<5)")
        self.scale_factor, self.min_neighbors, self.min_size_frac = scale_factor, min_neighbors, min_size_frac

    def detect(self, rgb: np.ndarray) -> list[Box]:
        import cv2

        _check_frame(rgb)
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        m = max(12, int(min(gray.shape) * self.min_size_frac))
        rects, _, weights = self._cascade.detectMultiScale3(
            gray, self.scale_factor, self.min_neighbors, minSize=(m, m), outputRejectLevels=True
        )
        boxes = [Box(float(x), float(y), float(x + w), float(y + h), float(s)) for (x, y, w, h), s in zip(rects, np.ravel(weights), strict=False)]
        return sorted(boxes, key=lambda b: -b.score)


class YuFaceDetector:
    name = "yuface"

    def __init__(self, conf: float = 0.5):
        import yuface

        self._yuface, self.conf = yuface, conf

    def detect(self, rgb: np.ndarray) -> list[Box]:
        _check_frame(rgb)
        confs, boxes, _ = self._yuface.detect(np.ascontiguousarray(rgb[..., ::-1]), conf=self.conf)
        out = [Box(float(x), float(y), float(x + w), float(y + h), float(c) / 100.0)
               for c, (x, y, w, h) in zip(np.ravel(confs), np.reshape(boxes, (-1, 4)), strict=False)]
        return sorted(out, key=lambda b: -b.score)


class MediaPipeDetector:
    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5, model_selection: int = 0):
        from mediapipe.solutions import face_detection  # type: ignore[import-not-found]

        self._det = face_detection.FaceDetection(model_selection=model_selection,
                                                 min_detection_confidence=min_confidence)

    def detect(self, rgb: np.ndarray) -> list[Box]:
        _check_frame(rgb)
        h, w = rgb.shape[:2]
        res = self._det.process(np.ascontiguousarray(rgb))
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            out.append(Box(bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h,
                           float(d.score[0])))
        return sorted(out, key=lambda b: -b.score)


DETECTORS = {"haar": HaarDetector, "yuface": YuFaceDetector, "mediapipe": MediaPipeDetector}


def available_detectors() -> list[str]:
    """Names of the detectors that load on this machine."""
    names = []
    for name, cls in DETECTORS.items():
        try:
            cls()
        except (ImportError, RuntimeError, AttributeError):
            continue
        names.append(name)
    return names


def check_detector_name(name: str) -> None:
    """A ``get_detector`` name, checked without loading the detector (a model config names one)."""
    if name != "auto" and name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose from {['auto', *DETECTORS]}")


def get_detector(name: str = "auto", **kwargs) -> FaceDetector:
    check_detector_name(name)
    if name == "auto":
        for cand in ("mediapipe", "yuface", "haar"):
            try:
                return DETECTORS[cand](**kwargs)
            except (ImportError, RuntimeError, AttributeError):
                continue
        raise RuntimeError("no face detector could be loaded (install opencv-python-headless<5)")
    try:
        return DETECTORS[name](**kwargs)
    except ImportError as e:
        raise RuntimeError(f"face detector {name!r} is not installed: {e}") from e


def crop_face(rgb: np.ndarray, box: Box, size: int, margin: float = 0.25) -> np.ndarray:
    """A square crop around ``box`` enlarged by ``margin`` on each side, resized to ``size``×``size``.

    Parts of the square outside the frame are filled by edge replication so the face stays centred.
    """
    import cv2

    _check_frame(rgb)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    half = max(box.x1 - box.x0, box.y1 - box.y0) * (0.5 + margin)
    x0, y0, x1, y1 = (int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
    h, w = rgb.shape[:2]
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    src = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge") if pad else rgb
    crop = src[y0 + pad:y1 + pad, x0 + pad:x1 + pad]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR)


# How a face is cut out of a frame around the detector's box (FaVChatConfig.face_crop).
FACE_CROPS = ("square", "facexformer")


def crop_face_enlarged(rgb: np.ndarray, box: Box, size: int, enlarge: float = 0.5) -> np.ndarray:
    """The crop FaceXFormer's inference takes: ``box`` grown by ``enlarge`` of its width and of its height (half
    on each side), clipped to the frame, cut at whole pixels and resized to ``size``×``size`` bicubically with
    PIL (what torchvision's ``Resize`` does to an image), so the face keeps the framing FaceXFormer learned on
    (its aspect ratio is not kept, as there)."""
    from PIL import Image

    _check_frame(rgb)
    h, w = rgb.shape[:2]
    dx, dy = (box.x1 - box.x0) * enlarge / 2, (box.y1 - box.y0) * enlarge / 2
    x0, y0 = int(max(0.0, box.x0 - dx)), int(max(0.0, box.y0 - dy))
    x1, y1 = int(min(w, box.x1 + dx)), int(min(h, box.y1 + dy))
    crop = Image.fromarray(rgb).crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))  # at least one pixel
    return np.asarray(crop.resize((size, size), Image.BICUBIC))

