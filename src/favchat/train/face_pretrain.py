"""Task pretraining of the facial encoder on the training clips' labels (before stage 0/1).

The paper's facial encoder arrives pretrained on face analysis: FaceXFormer's Swin-B backbone is trained on
face parsing, landmarks, head pose, attributes and expression recognition before FaVChat ever sees it. An
encoder that starts from ImageNet (EfficientNet-Lite0) or from scratch has no such knowledge, and the
language-model loss of stages 1-2, which reaches the encoder only through three levels of attention, teaches
it too slowly (``docs/demo.md``). This step gives the encoder its face-task pretraining on the training
split of a manifest, with a temporary linear head over the mean of each block the low level reads:

- binary cross-entropy over every taxonomy label that occurs in the training clips, and
- softmax cross-entropy inside each of the taxonomy's exclusive sets (one emotion, one hair colour, ...)
  for the clips that show exactly one of its labels, and
- per frame, binary cross-entropy over the labels the training clips' events time (actions, emotions),
  with a second linear head over each frame's block means: a label is on in the facial frames sampled
  inside one of its events, off in every frame of a clip that does not show it, and left out for a clip
  that shows it without events (``event_loss_weight``; off by default). A clip-wide label says *that* a person
  nods, not *when*, and the mean over the clip's frames blurs a blink into the frames around it.

Only ``face_encoder`` trains; the head is dropped at the end and ``final/`` is a FaVChat checkpoint that
stage 0 or stage 1 starts from (``init_from``). ``report.json`` gives the heads' accuracy on the val split
(per exclusive set, the mean per-label accuracy and, with events, the per-frame accuracy and how often a
clip's set of actions comes out exactly from its frames), read on identities the training never saw.

    favchat pretrain-face --config configs/train/face_pretrain_tiny.yaml [--optim.max_steps 200 ...]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from favchat.config_io import to_dict
from favchat.data.taxonomy import EXCLUSIVE_SETS, group_of
from favchat.train.config import DataSection, ModelSection, OptimSection
from favchat.train.metrics_log import MetricsLogger

if TYPE_CHECKING:
    from favchat.data.datasets import VideoCache

log = logging.getLogger("favchat.train")


@dataclass
class FacePretrainConfig:
    output_dir: str = "runs/face_pretrain"
    init_from: str | None = None  # a FaVChat checkpoint; None: a fresh model from ``model`` (pretrained parts loaded)
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=1e-3, weight_decay=0.01, max_steps=200,
                                                                     batch_size=32, warmup_steps=10))
    eval_clips: int = 200  # val clips the report reads (0: no evaluation)
    event_loss_weight: float = 0.0  # weight of the per-frame event loss (0: off; no clip with events: off)
    log_every: int = 10

    def __post_init__(self) -> None:
        if not self.data.train_manifest:
            raise ValueError("data.train_manifest is required")
        if self.event_loss_weight < 0:
            raise ValueError(f"event_loss_weight must be >= 0, got {self.event_loss_weight}")


class _LabelHead(nn.Module):
    """The facial encoder plus linear heads over the mean of each chain block's tokens: per clip (B, labels)
    and, with ``num_event_labels``, per frame (B, T, event labels; else None)."""

    def __init__(self, tower: nn.Module, blocks: list[int], num_labels: int, num_event_labels: int = 0):
        super().__init__()
        self.tower, self.blocks = tower, blocks
        width = sum(tower.dim(i) for i in blocks)
        self.head = nn.Linear(width, num_labels)
        self.frame_head = nn.Linear(width, num_event_labels) if num_event_labels else None

    def forward(self, face_pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t = face_pixel_values.shape[:2]
        states = self.tower(face_pixel_values)  # {block: (B, T·N_i, C_i)}, frame-major
        clip = self.head(torch.cat([states[i].mean(1) for i in self.blocks], -1))
        if self.frame_head is None:
            return clip, None
        frames = torch.cat([states[i].reshape(b, t, -1, states[i].shape[-1]).mean(2) for i in self.blocks], -1)
        return clip, self.frame_head(frames)  # (B, T, event labels)


def frame_targets(clip, face_indices, event_labels: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame targets (T, E) of ``event_labels`` at the video frames ``face_indices`` and their mask: a
    label is on inside one of the clip's events of it; a label the clip does not show is off everywhere; a
    label it shows without an event is left out (mask 0)."""
    start = clip.frame_range[0] if clip.frame_range is not None else 0
    t = torch.tensor(face_indices, dtype=torch.long) - start  # clip frames, as events count them
    y = torch.zeros(len(t), len(event_labels))
    mask = torch.zeros_like(y)
    shown = set(clip.all_labels)
    for k, name in enumerate(event_labels):
        spans = [(e.start, e.end) for e in clip.events if e.label == name]
        for a, b in spans:
            y[(t >= a) & (t < b), k] = 1.0
        if spans or name not in shown:
            mask[:, k] = 1.0
    return y, mask


class _ClipLabels(torch.utils.data.Dataset):
    """Face frames, a multi-hot label vector and per-frame event targets with their mask (``frame_targets``)
    per clip; None for a clip whose video does not decode under ``on_error="skip"`` (the collate function
    drops it), ``SampleError`` naming it under "raise"."""

    def __init__(self, clips, load_video, labels: list[str], event_labels: list[str], on_error: str = "raise"):
        self.clips, self.load_video, self.on_error = clips, load_video, on_error
        self.index = {n: k for k, n in enumerate(labels)}
        self.event_labels = event_labels

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        from favchat.data.datasets import SampleError, load_clip_video

        c = self.clips[i]
        y = torch.zeros(len(self.index))
        for n in c.all_labels:
            if n in self.index:
                y[self.index[n]] = 1.0
        try:
            video = load_clip_video(self.load_video, c, f"clip {c.id}")
        except SampleError as e:
            if self.on_error == "raise":
                raise
            log.warning("skipped %s", e)
            return None
        return (video, y, *frame_targets(c, video.face_indices, self.event_labels))


def label_loss(logits: torch.Tensor, targets: torch.Tensor, exclusive: list[list[int]]) -> torch.Tensor:
    """BCE over all labels + CE inside each exclusive set, for the rows with exactly one label of that set."""
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    for idx in exclusive:
        rows = targets[:, idx].sum(-1) == 1
        if rows.any():
            loss = loss + F.cross_entropy(logits[rows][:, idx], targets[rows][:, idx].argmax(-1))
    return loss


def event_loss(frame_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per frame and event label, averaged over the cells the mask keeps."""
    bce = F.binary_cross_entropy_with_logits(frame_logits, targets, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp_min(1.0)


@torch.no_grad()
def evaluate_events(frame_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                    actions: list[int]) -> dict[str, float]:
    """Per-frame accuracy over the kept cells, and the share of clips whose set of ``actions`` (event label
    columns) on in some frame comes out exactly, among clips where every one of them is kept."""
    hit = ((frame_logits > 0) == (targets > 0.5)).float()
    out = {"frame_accuracy": ((hit * mask).sum() / mask.sum().clamp_min(1.0)).item()}
    if actions:
        pred = (frame_logits[..., actions] > 0).any(1)  # (B, A)
        true = (targets[..., actions] > 0.5).any(1)
        rows = (mask[..., actions] > 0).all(1).all(1)
        if rows.any():
            out["action_set_from_frames"] = (pred[rows] == true[rows]).all(-1).float().mean().item()
    return out


def _exclusive_sets(labels: list[str]) -> dict[str, list[int]]:
    """Each exclusive set with at least two labels in ``labels``, named by its sorted members."""
    out = {}
    for s in EXCLUSIVE_SETS:
        idx = [k for k, n in enumerate(labels) if n in s]
        if len(idx) > 1:
            out["/".join(labels[k] for k in idx)] = idx
    return out


@torch.no_grad()
def evaluate_heads(logits: torch.Tensor, targets: torch.Tensor, exclusive: dict[str, list[int]]) -> dict[str, float]:
    """Accuracy of the arg-max inside each exclusive set (rows with one label of it) and mean per-label accuracy."""
    out = {"label_accuracy": ((logits > 0) == (targets > 0.5)).float().mean().item()}
    for name, idx in exclusive.items():
        rows = targets[:, idx].sum(-1) == 1
        if rows.any():
            hit = logits[rows][:, idx].argmax(-1) == targets[rows][:, idx].argmax(-1)
            out[name] = hit.float().mean().item()
    return out


def pretrain_face(cfg: FacePretrainConfig, progress: bool = False, video_cache: VideoCache | None = None) -> Path:
    """Train ``face_encoder`` on the label heads; returns the ``final/`` checkpoint folder. ``video_cache``:
    decoded clips shared with later runs in this process (with ``data.cache_videos``)."""
    from accelerate import Accelerator
    from accelerate.data_loader import prepare_data_loader
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    from favchat.data.datasets import VideoCache, load_clips
    from favchat.train.trainer import SetupError, build_model

    out = Path(cfg.output_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    clips = load_clips(cfg.data.train_manifest, split="train")
    labels = sorted({n for c in clips for n in c.all_labels})
    if not labels:
        raise SetupError(f"{cfg.data.train_manifest}: no labelled training clips to pretrain the facial encoder on")
    model, processor = build_model(cfg.init_from, cfg.model)
    if model.face_encoder is None:
        raise SetupError("this model has no facial encoder (use_face_encoder=False): nothing to pretrain")
    exclusive = _exclusive_sets(labels)
    event_labels = sorted({e.label for c in clips for e in c.events}) if cfg.event_loss_weight > 0 else []
    actions = [k for k, n in enumerate(event_labels) if group_of(n) == "action"]
    net = _LabelHead(model.face_encoder, model.face_encoder.groups["chain"], len(labels), len(event_labels))
    model.requires_grad_(False)
    net.requires_grad_(True)
    if main:
        log.info("facial encoder pretraining: %d clips, %d labels, %d exclusive sets, %d labels timed per frame",
                 len(clips), len(labels), len(exclusive), len(event_labels))
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    # The prepared scheduler steps once per process at each optimizer step: its schedule is counted in those.
    scheduler = get_scheduler(cfg.optim.scheduler, optimizer,
                              num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                              num_training_steps=cfg.optim.max_steps * accelerator.num_processes)
    net, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)
    load_video = (video_cache or VideoCache()).loader(processor) if cfg.data.cache_videos else processor.load_video
    dataset = _ClipLabels(clips, load_video, labels, event_labels, cfg.data.on_error)

    def collate(items):
        """(face pixels, clip targets, frame targets, frame mask, clips skipped); all but the count are None
        when no video of the batch decoded."""
        ok = [it for it in items if it is not None]
        if not ok:
            return None, None, None, None, len(items)
        return (processor.pixel_values([it[0] for it in ok])[1],
                *(torch.stack([it[k] for it in ok]) for k in (1, 2, 3)), len(items) - len(ok))

    def batches():
        epoch = 0
        while True:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.optim.batch_size, collate_fn=collate,
                                                 sampler=torch.randperm(len(dataset), generator=g).tolist(),
                                                 num_workers=cfg.data.num_workers)
            yield from prepare_data_loader(loader, device=accelerator.device,
                                           num_processes=accelerator.num_processes,
                                           process_index=accelerator.process_index, put_on_device=True)
            epoch += 1

    logger = MetricsLogger(out, enabled=main, tensorboard=False)
    net.train()
    it = batches()
    window, n, samples, skipped, t0 = 0.0, 0, 0, 0, time.perf_counter()
    for step in tqdm(range(1, cfg.optim.max_steps + 1), desc="facial encoder", disable=not (progress and main)):
        faces, targets, frame_y, frame_mask, lost = next(it)
        while faces is None:  # every video of the batch failed to decode (on_error="skip")
            skipped += lost
            faces, targets, frame_y, frame_mask, lost = next(it)
        logits, frame_logits = net(faces)
        loss = label_loss(logits, targets, list(exclusive.values()))
        if frame_logits is not None:
            loss = loss + cfg.event_loss_weight * event_loss(frame_logits, frame_y, frame_mask)
        accelerator.backward(loss)
        if cfg.optim.max_grad_norm > 0:
            accelerator.clip_grad_norm_(net.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window, n = window + loss.detach().float().item(), n + 1
        samples, skipped = samples + faces.shape[0], skipped + lost
        if step % cfg.log_every == 0 or step == cfg.optim.max_steps:
            dt = time.perf_counter() - t0
            logger.log(step, {"loss": window / n, "lr": scheduler.get_last_lr()[0],
                              "samples_per_s": samples * accelerator.num_processes / dt, "skipped": skipped})
            window, n, samples, skipped, t0 = 0.0, 0, 0, 0, time.perf_counter()
    logger.close()

    net = accelerator.unwrap_model(net)
    report = {"labels": labels, "event_labels": event_labels, "train_clips": len(clips)}
    if cfg.eval_clips > 0 and main:
        val = load_clips(cfg.data.val_manifest or cfg.data.train_manifest, split="val")[: cfg.eval_clips]
        if val:
            report["val_clips"] = len(val)
            report["val"] = _evaluate(net, _ClipLabels(val, processor.load_video, labels, event_labels,
                                                       cfg.data.on_error), collate, exclusive, actions,
                                      accelerator.device)
            log.info("facial encoder heads on %d val clips: %s", len(val),
                     ", ".join(f"{k} {v:.3f}" for k, v in report["val"].items()))
    final = out / "final"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        (out / "report.json").write_text(json.dumps(report, indent=2))
        model.save_pretrained(final, safe_serialization=True)
        processor.save_pretrained(final)
    accelerator.wait_for_everyone()
    return final


@torch.no_grad()
def _evaluate(net: _LabelHead, dataset, collate, exclusive, actions, device) -> dict[str, float]:
    net.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=collate)
    clip, frame, targets, frame_y, frame_mask = [], [], [], [], []
    for faces, y, fy, fm, _ in loader:
        if faces is not None:  # a batch none of whose videos decoded (on_error="skip")
            logits, frame_logits = net(faces.to(device))
            clip.append(logits.float().cpu())
            targets.append(y)
            if frame_logits is not None:
                frame.append(frame_logits.float().cpu())
                frame_y.append(fy)
                frame_mask.append(fm)
    net.train()
    if not clip:
        return {}
    out = evaluate_heads(torch.cat(clip), torch.cat(targets), exclusive)
    if frame:
        out.update(evaluate_events(torch.cat(frame), torch.cat(frame_y), torch.cat(frame_mask), actions))
    return out
