"""Task pretraining of the facial encoder on the training clips' labels (before stage 0/1).

The paper's facial encoder arrives pretrained on face analysis: FaceXFormer's Swin-B backbone is trained on
face parsing, landmarks, head pose, attributes and expression recognition before FaVChat ever sees it. An
encoder that starts from ImageNet (EfficientNet-Lite0) or from scratch has no such knowledge, and the
language-model loss of stages 1-2, which reaches the encoder only through three levels of attention, teaches
it too slowly (``docs/experiments/demo_log.md``). This step gives the encoder its face-task pretraining on the training
split of a manifest, with a temporary linear head over the mean of each block the low level reads:

- binary cross-entropy over every taxonomy label that occurs in the training clips, and
- softmax cross-entropy inside each of the taxonomy's exclusive sets (one emotion, one hair colour, ...)
  for the clips that show exactly one of its labels.

Only ``face_encoder`` trains; the head is dropped at the end and ``final/`` is a FaVChat checkpoint that
stage 0 or stage 1 starts from (``init_from``). ``report.json`` gives the heads' accuracy on the val split
(per exclusive set, and the mean per-label accuracy), read on identities the training never saw.

    favchat pretrain-face --config configs/train/face_pretrain_tiny.yaml [--optim.max_steps 200 ...]
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from favchat.data.taxonomy import EXCLUSIVE_SETS
from favchat.train import toolkit
from favchat.train.config import FacePretrainConfig

if TYPE_CHECKING:
    from favchat.data.datasets import VideoCache

log = logging.getLogger("favchat.train")


class _LabelHead(nn.Module):
    """The facial encoder plus a linear head over the mean of each chain block's tokens: (B, labels)."""

    def __init__(self, tower: nn.Module, blocks: list[int], num_labels: int):
        super().__init__()
        self.tower, self.blocks = tower, blocks
        self.head = nn.Linear(sum(tower.dim(i) for i in blocks), num_labels)

    def forward(self, face_pixel_values: torch.Tensor) -> torch.Tensor:
        states = self.tower(face_pixel_values)  # {block: (B, T·N_i, C_i)}
        return self.head(torch.cat([states[i].mean(1) for i in self.blocks], -1))


class _ClipLabels(torch.utils.data.Dataset):
    """Face frames and a multi-hot label vector per clip; None for a clip whose video does not decode under
    ``on_error="skip"`` (the collate function drops it), ``SampleError`` naming it under "raise"."""

    def __init__(self, clips, load_video, labels: list[str], on_error: str = "raise"):
        self.clips, self.load_video, self.on_error = clips, load_video, on_error
        self.index = {n: k for k, n in enumerate(labels)}

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
        return video, y


def label_loss(logits: torch.Tensor, targets: torch.Tensor, exclusive: list[list[int]]) -> torch.Tensor:
    """BCE over all labels + CE inside each exclusive set, for the rows with exactly one label of that set."""
    loss = F.binary_cross_entropy_with_logits(logits, targets)
    for idx in exclusive:
        rows = targets[:, idx].sum(-1) == 1
        if rows.any():
            loss = loss + F.cross_entropy(logits[rows][:, idx], targets[rows][:, idx].argmax(-1))
    return loss


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
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from favchat.data.datasets import VideoCache, load_clips
    from favchat.train.trainer import SetupError, build_model

    out = Path(cfg.output_dir)
    accelerator = toolkit.make_accelerator(out)
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
    net = _LabelHead(model.face_encoder, model.face_encoder.groups["chain"], len(labels))
    model.requires_grad_(False)
    net.requires_grad_(True)
    if main:
        log.info("facial encoder pretraining: %d clips, %d labels, %d exclusive sets", len(clips), len(labels),
                 len(exclusive))
    optimizer = toolkit.make_optimizer(net.parameters(), cfg.optim)
    scheduler = toolkit.make_scheduler(optimizer, cfg.optim, accelerator.num_processes)
    net, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)
    load_video = (video_cache or VideoCache()).loader(processor) if cfg.data.cache_videos else processor.load_video
    dataset = _ClipLabels(clips, load_video, labels, cfg.data.on_error)

    def collate(items):
        """(face pixels, targets, clips skipped); the first two are None when no video of the batch decoded."""
        ok = [it for it in items if it is not None]
        if not ok:
            return None, None, len(items)
        return (processor.pixel_values([it[0] for it in ok])[1], torch.stack([it[1] for it in ok]),
                len(items) - len(ok))

    toolkit.start_run(accelerator, cfg)
    net.train()
    batches = toolkit.epoch_batches(dataset, cfg.optim.batch_size, collate, cfg.seed, accelerator,
                                    cfg.data.num_workers, put_on_device=True)
    window, n, samples, skipped, t0 = 0.0, 0, 0, 0, time.perf_counter()
    for step in tqdm(range(1, cfg.optim.max_steps + 1), desc="facial encoder", disable=not (progress and main)):
        _, _, (faces, targets, _), lost = toolkit.decoded_batch(batches, lambda b: b[2], lambda b: b[0] is None)
        loss = label_loss(net(faces), targets, list(exclusive.values()))
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
            accelerator.log({"loss": window / n, "lr": scheduler.get_last_lr()[0],
                             "samples_per_s": samples * accelerator.num_processes / dt, "skipped": skipped}, step=step)
            window, n, samples, skipped, t0 = 0.0, 0, 0, 0, time.perf_counter()
    toolkit.end_run(accelerator)

    net = accelerator.unwrap_model(net)
    report = {"labels": labels, "train_clips": len(clips)}
    if cfg.eval_clips > 0 and main:
        val = load_clips(cfg.data.val_manifest or cfg.data.train_manifest, split="val")[: cfg.eval_clips]
        if val:
            report["val_clips"] = len(val)
            report["val"] = _evaluate(net, _ClipLabels(val, processor.load_video, labels, cfg.data.on_error),
                                      collate, exclusive, accelerator.device)
            log.info("facial encoder heads on %d val clips: %s", len(val),
                     ", ".join(f"{k} {v:.3f}" for k, v in report["val"].items()))
    final = out / "final"
    if main:
        (out / "report.json").write_text(json.dumps(report, indent=2))
        model.save_pretrained(final, safe_serialization=True)
        processor.save_pretrained(final)
    accelerator.wait_for_everyone()
    return final


@torch.no_grad()
def _evaluate(net: _LabelHead, dataset, collate, exclusive, device) -> dict[str, float]:
    net.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, collate_fn=collate)
    logits, targets = [], []
    for faces, y, _ in loader:
        if faces is not None:  # a batch none of whose videos decoded (on_error="skip")
            logits.append(net(faces.to(device)).float().cpu())
            targets.append(y)
    net.train()
    return evaluate_heads(torch.cat(logits), torch.cat(targets), exclusive) if logits else {}
