"""Training the E1/E2/E3 extractor heads from labelled manifests, with a per-label report.

Clips come from one or more manifests (FaceSynth writes labelled ones). Frames are every 16th of a
clip, faces are detected and cropped, and the heads (with the small encoder, or over the frozen
EfficientNet-Lite0 features, computed once) are trained with a binary cross-entropy per label.
Clips whose split is ``val``/``test`` are held out for the report; when there are none, a hashed
``val_fraction`` of the clips is. Runs under ``accelerate launch`` on many processes as well.

    favchat data train-extractor --manifest synth/manifest.jsonl --out extractor/ --epochs 20

Writes ``extractor.pt`` (config + weights), ``report.json`` and ``report.md`` (precision, recall,
F1 and support of every label the held-out clips have or the extractor predicts).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from favchat.data.faces import FaceDetector, get_detector
from favchat.data.manifest import Clip, read_manifest
from favchat.data.pipeline.extract import (
    HEADS,
    ClipInput,
    ExtractorConfig,
    FeatureExtractor,
    clip_frame_indices,
    collate,
    make_clip_input,
    merged_labels,
    save_extractor,
    score_clips,
)
from favchat.data.pipeline.filter import detect_boxes
from favchat.data.taxonomy import EXTRACTORS
from favchat.data.video import VideoDecodeError, probe, read_frames

log = logging.getLogger(__name__)


@dataclass
class TrainExtractorConfig:
    """Optimisation and data settings of ``train-extractor``."""

    epochs: int = 20
    """Passes over the training clips."""
    lr: float = 3e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    batch_size: int = 16
    """Clips per step."""
    val_fraction: float = 0.2
    """Clips held out for the report when no clip has split val/test."""
    seed: int = 0
    """Seed of the initialisation and the data order."""
    detector: str = "auto"
    """Face detector for the crops."""
    decode_max_side: int = 384
    """Frames are downscaled to this while decoding."""
    detect_max_side: int = 192
    """And to this for face detection."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("need epochs >= 1, batch_size >= 1 and lr > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def labelled_input(clip: Clip, cfg: ExtractorConfig, detector: FaceDetector, tcfg: TrainExtractorConfig
                   ) -> ClipInput | None:
    """Frames, face boxes and crops of a manifest clip; None when no frame shows a face."""
    start, end = clip.frame_range or (0, probe(clip.video_path).num_frames)
    idx = clip_frame_indices(start, end, cfg)
    frames = read_frames(clip.video_path, idx, max_side=tcfg.decode_max_side)  # (T, H, W, 3)
    box = clip.meta.get("face_box")  # a set's own face box (CelebV-HQ's, imported) is used as given
    boxes = [list(box)] * len(idx) if box else detect_boxes(frames, detector, tcfg.detect_max_side)
    if all(b is None for b in boxes):
        return None
    return make_clip_input(frames, boxes, cfg)


def targets(clips: list[Clip], heads: tuple[str, ...] = HEADS) -> dict[str, torch.Tensor]:
    """Multi-hot targets per head: (N, len(EXTRACTORS[h]))."""
    out = {}
    for h in heads:
        col = {n: j for j, n in enumerate(EXTRACTORS[h])}
        t = torch.zeros(len(clips), len(col))
        for i, c in enumerate(clips):
            for n in c.all_labels:
                if n in col:
                    t[i, col[n]] = 1.0
        out[h] = t
    return out


def _held_out(clip: Clip, frac: float) -> bool:
    return int(hashlib.sha1(clip.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def per_label_report(scores: list[dict[str, float]], clips: list[Clip], threshold: float,
                     heads: tuple[str, ...] = HEADS) -> dict[str, Any]:
    """Precision, recall, F1 and support per label of ``heads`` (None where undefined)."""
    rows = {}
    for n in merged_labels(heads):
        pred = np.array([s[n] >= threshold for s in scores])
        true = np.array([n in c.all_labels for c in clips])
        tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
        p = tp / (tp + fp) if tp + fp else None
        r = tp / (tp + fn) if tp + fn else None
        f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r > 0 else 0.0)
        rows[n] = {"precision": p, "recall": r, "f1": f1, "support": int(true.sum()), "predicted": int(pred.sum())}
    seen = [r for r in rows.values() if r["support"] > 0]
    # Undefined precision (nothing predicted) counts as 0 over labels that have support, as sklearn's zero_division=0.
    macro = {k: float(np.mean([r[k] or 0.0 for r in seen])) if seen else 0.0 for k in ("precision", "recall", "f1")}
    return {"labels": rows, "macro_over_supported": macro, "num_clips": len(clips)}


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    rows = [(n, r) for n, r in report["labels"].items() if r["support"] or r["predicted"]]
    m = report["macro_over_supported"]
    lines = [
        "# Extractor report", "",
        f"Evaluated on {report['num_clips']} {report['evaluated_on']} clips; threshold {report['threshold']}.",
        f"Macro over labels with support: precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}.",
        f"{len(report['labels']) - len(rows)} of {len(report['labels'])} labels have neither support nor predictions "
        "(not in these clips).", "",
        "| label | precision | recall | F1 | support | predicted |", "|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} | {r['support']} | "
              f"{r['predicted']} |" for n, r in rows]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")


def train_extractor(manifests: list[str], out_dir: str | Path, cfg: ExtractorConfig,
                    tcfg: TrainExtractorConfig) -> dict[str, Any]:
    """Train the three heads on the clips of ``manifests``; write the checkpoint and the report."""
    from tqdm.auto import tqdm

    from favchat.train import toolkit
    from favchat.train.config import OptimSection

    out_dir = Path(out_dir)
    accelerator = toolkit.make_accelerator(out_dir)
    torch.manual_seed(tcfg.seed)
    clips = [c for m in manifests for c in read_manifest(m)]
    if not clips:
        raise ValueError(f"no clips in {manifests}")
    detector = get_detector(tcfg.detector)
    inputs: list[ClipInput] = []
    used: list[Clip] = []
    for c in tqdm(clips, desc="crops", disable=not accelerator.is_main_process):
        try:
            x = labelled_input(c, cfg, detector, tcfg)
        except VideoDecodeError as e:
            log.warning("skipping clip %s: %s", c.id, e)
            continue
        if x is None:
            log.warning("skipping clip %s: no face found in its frames", c.id)
            continue
        inputs.append(x)
        used.append(c)
    if not used:
        raise ValueError("no clip of the manifests had a detectable face")
    split_val = any(c.split != "train" for c in used)
    val = [i for i, c in enumerate(used) if (c.split != "train" if split_val else _held_out(c, tcfg.val_fraction))]
    train = [i for i in range(len(used)) if i not in set(val)] or val
    if not val:
        val, evaluated_on = train, "training (none held out)"
    else:
        evaluated_on = "held-out"

    model = FeatureExtractor(cfg).to(accelerator.device)
    tgt = targets(used, cfg.heads)
    frozen = cfg.backbone != "small"
    if frozen:  # the trunk never changes: encode every clip once, train the heads on pooled features
        with torch.no_grad():
            pooled = torch.cat([
                model.pool(*(collate(inputs[i:i + 32], cfg)[k].to(accelerator.device) for k in ("crops", "mask"))).cpu()
                for i in range(0, len(inputs), 32)])  # (N, 3D)
    batch_keys = ["pooled"] if frozen else ["crops", "mask"]
    if cfg.landmarks:
        batch_keys.append("landmarks")

    def make_batch(ids: list[int]) -> dict[str, torch.Tensor]:
        b = {} if frozen else collate([inputs[i] for i in ids], cfg)
        if frozen:
            b["pooled"] = pooled[ids]
            if cfg.landmarks:
                b["landmarks"] = collate([inputs[i] for i in ids], cfg)["landmarks"]
        return {**{k: b[k] for k in batch_keys}, **{f"t_{h}": tgt[h][ids] for h in cfg.heads}}

    params = [p for p in model.parameters() if p.requires_grad]
    opt = toolkit.make_optimizer(params, OptimSection(lr=tcfg.lr, weight_decay=tcfg.weight_decay))
    model, opt = accelerator.prepare(model, opt)
    batches = toolkit.epoch_batches(train, tcfg.batch_size, make_batch, tcfg.seed, accelerator, put_on_device=True)
    bce = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    epoch, _, batch = next(batches)
    for e in tqdm(range(tcfg.epochs), desc="train-extractor", disable=not accelerator.is_main_process):
        model.train()
        total, n = 0.0, 0
        while epoch == e:
            logits = model(**{k: batch[k] for k in batch_keys})  # head -> (B, n_h)
            loss = sum(bce(logits[h], batch[f"t_{h}"]) for h in cfg.heads) / len(cfg.heads)
            opt.zero_grad()
            accelerator.backward(loss)
            opt.step()
            total, n = total + float(loss.detach()), n + 1
            epoch, _, batch = next(batches)
        losses.append(total / max(n, 1))

    report: dict[str, Any] = {}
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model).eval()
        scores = score_clips(net, [inputs[i] for i in val])
        report = per_label_report(scores, [used[i] for i in val], cfg.threshold, cfg.heads)
        report.update(evaluated_on=evaluated_on, threshold=cfg.threshold, train_clips=len(train),
                      losses=[round(x, 5) for x in losses], config=asdict(cfg), train_config=asdict(tcfg))
        save_extractor(net, out_dir / "extractor.pt", extra={"train_config": asdict(tcfg)})
        write_report(report, out_dir)
    accelerator.wait_for_everyone()
    return report
