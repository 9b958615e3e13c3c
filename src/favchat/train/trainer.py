"""Supervised training of one stage of the progressive paradigm (paper §2.3, docs/design.md §2).

Stage 0 (an LLM built from scratch learns to answer from label phrases in the video slots) is described in
``config.py``.

    favchat train --stage 1 --config configs/train/tiny_stage1.yaml [--optim.lr 3e-4 ...]
    accelerate launch --config_file configs/accelerate/ddp_8gpu.yaml -m favchat train --stage 1 --config ...

One linear loop: build the model (a preset for stage 1, the previous stage's checkpoint after), freeze
everything but the stage's components (``config.schedule[stage]``), wrap the LLM in LoRA when the
stage asks for it, then optimise next-token cross-entropy on answer tokens (plus ``slot_loss_weight`` times
the slot loss: ``FaVChatForConditionalGeneration.forward``). Every ``save_every`` steps
a checkpoint holds the accelerate state (model, optimizer, scheduler, RNG of every process), the data
position and the fully resolved config, so ``--resume`` continues exactly. The last step also writes
``final/``: a plain ``FaVChatForConditionalGeneration`` folder (LoRA merged) with its processor.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from favchat.config_io import to_dict
from favchat.model.components import OPTIONAL_COMPONENTS
from favchat.train.config import STAGE_TASK, ModelSection, TrainConfig
from favchat.train.determinism import deterministic_kernels
from favchat.train.feature_cache import FrozenTowerCache
from favchat.train.metrics_log import MetricsLogger

if TYPE_CHECKING:
    from favchat.data.datasets import VideoCache

log = logging.getLogger("favchat.train")

STATE_FILE = "trainer_state.json"


class SetupError(ValueError):
    """An input problem found before training starts (a missing checkpoint, an empty data set, ...)."""


def build_model(init_from: str | None, model: ModelSection, hint: str = ""):
    """The model and processor a run starts from: a fresh preset (pretrained parts loaded), or a checkpoint.
    ``hint`` ends the error message of an ``init_from`` that is not a checkpoint."""
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

    if init_from:
        path = Path(init_from)
        if not (path / "config.json").is_file():
            raise SetupError(f"init_from {path} is not a FaVChat checkpoint (no config.json){hint}")
        return FaVChatForConditionalGeneration.from_pretrained(path), FaVChatProcessor.from_pretrained(path)
    mcfg = FaVChatConfig.from_preset(model.preset, **model.overrides)
    return FaVChatForConditionalGeneration.from_parts(mcfg), FaVChatProcessor.from_config(mcfg)


def apply_schedule(model: torch.nn.Module, cfg: TrainConfig) -> list[str]:
    """Freeze all but the stage's components (LoRA on the LLM when the stage asks); trainable names back."""
    from favchat.model.lora import apply_lora

    if cfg.use_lora and not model.config.lora:
        preset = model.config.lora_defaults or {}
        chosen = {k: getattr(cfg.lora, k) for k in ("r", "alpha", "dropout", "target_modules")}
        for key, value in chosen.items():
            if value is not None and key in preset and value != preset[key]:
                log.warning("lora.%s = %s overrides the %s preset's %s", key, value, model.config.preset, preset[key])
        apply_lora(model, **chosen)
    present = model.component_parameters()
    missing = [c for c in cfg.trainable if c not in present and c not in OPTIONAL_COMPONENTS]
    if missing:
        raise SetupError(f"stage {cfg.stage} trains {missing}, which this model does not have")
    model.set_trainable([c for c in cfg.trainable if c in present])
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _new_window() -> dict[str, float]:
    return {"loss": 0.0, "slot_loss": 0.0, "w_g": 0.0, "w_f": 0.0, "n": 0, "n_w": 0, "samples": 0, "tokens": 0, "skipped": 0}


def _epoch_batches(loader_factory, start_epoch: int, skip: int) -> Iterator[tuple[int, int, Any]]:
    """(epoch, batch index in epoch, batch) forever; the first epoch starts at batch ``skip`` (resume)."""
    epoch = start_epoch
    while True:
        first = skip if epoch == start_epoch else 0
        for i, batch in enumerate(loader_factory(epoch, first), start=first):
            yield epoch, i, batch
        epoch += 1


@dataclass
class TrainResult:
    final_dir: Path  # the loadable model folder
    model: torch.nn.Module  # this process's trained model (unwrapped), e.g. to compare ranks
    step: int


def train(cfg: TrainConfig, resume: bool = False, video_cache: VideoCache | None = None) -> TrainResult:
    """One stage. ``video_cache``: decoded clips shared with earlier runs in this process (with
    ``data.cache_videos``; else each run keeps its own)."""
    with deterministic_kernels(cfg.deterministic):
        return _train(cfg, resume, video_cache)


def _train(cfg: TrainConfig, resume: bool, video_cache: VideoCache | None) -> TrainResult:
    from accelerate import Accelerator, DistributedType
    from accelerate.data_loader import prepare_data_loader
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import get_scheduler

    from favchat.data.datasets import (
        Collator,
        EmotionQADataset,
        LabelReadingDataset,
        QADataset,
        SummaryDataset,
        VideoCache,
    )
    from favchat.data.taxonomy import LABELS
    from favchat.model.vision import HFVisionTower

    out = Path(cfg.output_dir)
    # DDP's settings are read when the model is prepared, once the stage's trainable parameters are known.
    ddp = DistributedDataParallelKwargs()
    # cpu=True without a GPU: under torchrun that makes accelerate use gloo instead of asking for NCCL.
    accelerator = Accelerator(mixed_precision=cfg.precision, gradient_accumulation_steps=cfg.optim.grad_accum,
                              cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])
    set_seed(cfg.seed)
    main = accelerator.is_main_process

    # Everything that can be wrong with the inputs is checked before the first step.
    model, processor = build_model(cfg.init_from, cfg.model, f"; stage {cfg.stage} starts from the "
                                   f"stage-{cfg.stage - 1} run's final/ folder")

    load_video = (video_cache or VideoCache()).loader(processor) if cfg.data.cache_videos else processor.load_video

    def stage_data(cls):
        return cls(cfg.data.train_manifest, load_video, split="train", on_error=cfg.data.on_error)

    dataset = stage_data({0: LabelReadingDataset, 1: SummaryDataset, 2: QADataset, 3: EmotionQADataset}[cfg.stage])
    if cfg.label_slots:
        shown = {n for s in dataset.samples for n in s.clip.all_labels}
        names = [lab.name for lab in LABELS if lab.name in shown]
        if len(names) > model.config.num_query_tokens:
            raise SetupError(f"label_slots: the training clips show {len(names)} labels, more than the model's "
                             f"num_query_tokens={model.config.num_query_tokens} video slots")
        model.config.slot_labels = names
    slot_loss = cfg.slot_loss_weight > 0  # stages 1-3 only (TrainConfig)
    collate = Collator(processor, slot_labels=model.config.slot_labels if slot_loss or cfg.stage == 0 else None,
                       phrase_targets=slot_loss and model.config.slot_labels is None)
    if len(dataset) == 0:
        raise SetupError(f"{cfg.data.train_manifest}: no training samples for stage {cfg.stage} "
                         f"({STAGE_TASK[cfg.stage]})")
    if cfg.activation_checkpointing:
        model.activation_checkpointing_enable()
    use_cache = cfg.cache_frozen_towers and cfg.stage != 0  # stage 0 runs no tower
    if use_cache:
        # The cache runs the frozen towers of the unwrapped model outside the wrapper's forward: that needs
        # whole (unsharded) weights.
        ds_plugin = getattr(accelerator.state, "deepspeed_plugin", None)
        if accelerator.distributed_type == DistributedType.FSDP or (ds_plugin and ds_plugin.zero_stage == 3):
            raise SetupError("cache_frozen_towers needs unsharded tower weights: not under FSDP or ZeRO-3")
    trainable = apply_schedule(model, cfg)
    # A trainable HF tower computes more than the levels read (Swin's final layernorm): DDP must look for
    # parameters without a gradient, or it waits for them and fails at the next step.
    ddp.find_unused_parameters = any(p.requires_grad for tower in (model.general_encoder, model.face_encoder)
                                     if isinstance(tower, HFVisionTower) for p in tower.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if main:
        log.info("stage %d: %d trainable tensors (%.2fM params) in %s", cfg.stage, len(trainable), n_train / 1e6,
                 cfg.trainable)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                  weight_decay=cfg.optim.weight_decay)
    # The prepared scheduler steps once per process at each optimizer step: its schedule is counted in those.
    scheduler = get_scheduler(cfg.optim.scheduler, optimizer,
                              num_warmup_steps=cfg.optim.warmup_steps * accelerator.num_processes,
                              num_training_steps=cfg.optim.max_steps * accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    cache = None
    if use_cache:
        cache = FrozenTowerCache(accelerator.unwrap_model(model))
        if main:
            log.info("frozen tower states cached per clip for streams %s", cache.streams or "none (all train)")

    def loader_factory(epoch: int, skip_batches: int):
        # A seeded order per epoch makes the data position (epoch, batch index) enough to resume exactly;
        # the batches already seen are cut from the order instead of being decoded and thrown away.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(dataset), generator=g).tolist()
        order = order[skip_batches * cfg.optim.batch_size * accelerator.num_processes:]
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.optim.batch_size, sampler=order, drop_last=False,
            num_workers=cfg.data.num_workers, collate_fn=collate,
        )
        # The function, not ``accelerator.prepare_data_loader``: the accelerator would keep every epoch's loader.
        return prepare_data_loader(loader, num_processes=accelerator.num_processes,
                                   process_index=accelerator.process_index, put_on_device=False)

    step, epoch, batch_in_epoch = 0, 0, 0
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise SetupError(f"--resume: no checkpoint-* folder in {out}")
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / STATE_FILE).read_text())
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["next_batch"]
        if main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, batch_in_epoch)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    logger = MetricsLogger(out, enabled=main, tensorboard=cfg.tensorboard)

    model.train()
    batches = _epoch_batches(loader_factory, epoch, batch_in_epoch)
    window = _new_window()
    t0 = time.perf_counter()
    while step < cfg.optim.max_steps:
        for _ in range(cfg.optim.grad_accum):
            epoch, i, batch = next(batches)
            window["skipped"] += len(batch["skipped"])
            while batch["inputs"] is None:  # every video of the batch failed to decode (on_error="skip")
                epoch, i, batch = next(batches)
                window["skipped"] += len(batch["skipped"])
            inputs = {k: v.to(accelerator.device) for k, v in batch["inputs"].items()}
            if cache is not None:
                inputs["video_features"] = cache.lookup(batch["clip_ids"], inputs)
            if cfg.slot_noise > 0:
                inputs["slot_noise"] = cfg.slot_noise
            with accelerator.accumulate(model):
                outputs = model(**inputs)
                loss = outputs.loss + cfg.slot_loss_weight * outputs.slot_loss if slot_loss else outputs.loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    # The prepared model's parameters: under FSDP they are not the tensors built above.
                    accelerator.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window["loss"] += outputs.loss.detach().float().item()
            if slot_loss:
                window["slot_loss"] += outputs.slot_loss.detach().float().item()
            if outputs.adapter_weights is not None:  # None in stage 0 (no visual levels)
                w = outputs.adapter_weights.detach().float().mean(0)
                window["w_g"] += w[0].item()
                window["w_f"] += w[1].item()
                window["n_w"] += 1
            window["n"] += 1
            window["samples"] += inputs["input_ids"].shape[0] * accelerator.num_processes
            window["tokens"] += int(inputs["attention_mask"].sum()) * accelerator.num_processes
        step += 1
        if not math.isfinite(window["loss"]):
            raise FloatingPointError(f"loss is {window['loss']} at step {step}; lower optim.lr or check the data")
        if step % cfg.log_every == 0 or step == cfg.optim.max_steps:
            dt = time.perf_counter() - t0
            n = window["n"]
            adapters = {"w_g": window["w_g"] / window["n_w"], "w_f": window["w_f"] / window["n_w"]} if window["n_w"] else {}
            slots = {"slot_loss": window["slot_loss"] / n} if slot_loss else {}
            logger.log(step, {
                "loss": window["loss"] / n, **slots, "lr": scheduler.get_last_lr()[0], **adapters,
                "samples_per_s": window["samples"] / dt, "tokens_per_s": window["tokens"] / dt,
                "epoch": epoch, "skipped": window["skipped"],
            })
            window = _new_window()
            t0 = time.perf_counter()
        if step % cfg.save_every == 0 or step == cfg.optim.max_steps:
            save_checkpoint(accelerator, out, step, epoch, i + 1, cfg)
    logger.close()
    if cache is not None and main:
        log.info("tower cache: %d clips, %d hits, %d misses", len(cache), cache.hits, cache.misses)
    final = out / "final"
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    if main:
        export_final(model, processor, final, cfg)
    accelerator.wait_for_everyone()
    return TrainResult(final, model, step)


def save_checkpoint(accelerator, out: Path, step: int, epoch: int, next_batch: int, cfg: TrainConfig) -> Path:
    ckpt = out / f"checkpoint-{step:07d}"
    accelerator.save_state(str(ckpt))  # every process takes part (sharded optimizers, RNG per rank)
    if accelerator.is_main_process:
        (ckpt / STATE_FILE).write_text(json.dumps({"step": step, "epoch": epoch, "next_batch": next_batch}))
        (ckpt / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        old = sorted(out.glob("checkpoint-*"))[:-cfg.keep_checkpoints]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def latest_checkpoint(out: Path) -> Path | None:
    done = [p for p in sorted(Path(out).glob("checkpoint-*")) if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def export_final(model, processor, final: Path, cfg: TrainConfig) -> None:
    """A loadable model folder (safetensors only; LoRA settings are in its config) with processor and config."""
    final.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(final, safe_serialization=True)
    processor.save_pretrained(final)
    (final / "train_config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
