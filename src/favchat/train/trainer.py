"""Supervised training of one stage of the progressive paradigm (paper §2.3, docs/design.md §2).

Stage 0 (an LLM built from scratch learns to read its video slots, on a recipe's data) is described in
``config.py``.

    favchat train --config configs/train/tiny_stage1.yaml --stage 1 [--optim.lr 3e-4 ...]
    accelerate launch --config_file configs/accelerate/ddp_8gpu.yaml -m favchat train --config ... --stage 1

One linear loop: build the model (a preset for stage 1, the previous stage's checkpoint after), freeze
everything but the stage's components (``config.schedule[stage]``), wrap the LLM in LoRA when the
stage asks for it, then optimise next-token cross-entropy on answer tokens (a recipe's ``StageHooks`` may
change the data and the loss: ``favchat.train.hooks``). Every ``save_every`` steps
a checkpoint holds the accelerate state (model, optimizer, scheduler, RNG of every process), the data
position and the fully resolved config, so ``--resume`` continues exactly. The last step also writes
``final/``: a plain ``FaVChatForConditionalGeneration`` folder (LoRA merged) with its processor.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from favchat.model.components import OPTIONAL_COMPONENTS
from favchat.train import toolkit
from favchat.train.config import STAGE_TASK, ModelSection, TrainConfig
from favchat.train.determinism import deterministic_kernels
from favchat.train.feature_cache import FrozenTowerCache
from favchat.train.hooks import StageHooks

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
    return {"loss": 0.0, "w_g": 0.0, "w_f": 0.0, "n": 0, "n_w": 0, "samples": 0, "tokens": 0, "skipped": 0}


@dataclass
class TrainResult:
    final_dir: Path  # the loadable model folder
    model: torch.nn.Module  # this process's trained model (unwrapped), e.g. to compare ranks
    step: int


def train(cfg: TrainConfig, resume: bool = False, video_cache: VideoCache | None = None,
          hooks: StageHooks | None = None) -> TrainResult:
    """One stage. ``video_cache``: decoded clips, and the frozen towers' states (``cache_frozen_towers``), shared
    with earlier runs in this process (with ``data.cache_videos``; else each run keeps its own). ``hooks``: a
    recipe's changes to the stage."""
    with deterministic_kernels(cfg.deterministic):
        return _train(cfg, resume, video_cache, hooks or StageHooks())


def _train(cfg: TrainConfig, resume: bool, video_cache: VideoCache | None, hooks: StageHooks) -> TrainResult:
    from accelerate import DistributedType
    from accelerate.utils import set_seed

    from favchat.data.datasets import Collator, EmotionQADataset, QADataset, SummaryDataset, VideoCache
    from favchat.model.vision import HFVisionTower

    out = Path(cfg.output_dir)
    accelerator = toolkit.make_accelerator(out, cfg.precision, cfg.optim.grad_accum, cfg.keep_checkpoints,
                                           cfg.tensorboard)
    set_seed(cfg.seed)
    main = accelerator.is_main_process

    # Everything that can be wrong with the inputs is checked before the first step.
    model, processor = build_model(cfg.init_from, cfg.model, f"; stage {cfg.stage} starts from the "
                                   f"stage-{cfg.stage - 1} run's final/ folder")

    load_video = (video_cache or VideoCache()).loader(processor) if cfg.data.cache_videos else processor.load_video

    dataset = hooks.dataset(cfg, load_video)
    if dataset is None:
        if cfg.stage == 0:
            raise SetupError("stage 0 has no data of its own: it reads a recipe's (favchat.recipes.tiny_demo, "
                             "run by favchat demo)")
        dataset = {1: SummaryDataset, 2: QADataset, 3: EmotionQADataset}[cfg.stage](
            cfg.data.train_manifest, load_video, split="train", on_error=cfg.data.on_error)
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
    # parameters without a gradient, or it waits for them and fails at the next step. Read when prepared.
    accelerator.ddp_handler.find_unused_parameters = any(
        p.requires_grad for tower in (model.general_encoder, model.face_encoder)
        if isinstance(tower, HFVisionTower) for p in tower.parameters())
    collate = hooks.setup(model, processor) or Collator(processor)
    extra = hooks.module  # a recipe's own trainable weights, optimised after the model's
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if main:
        log.info("stage %d: %d trainable tensors (%.2fM params) in %s", cfg.stage, len(trainable), n_train / 1e6,
                 cfg.trainable)

    params = [p for p in model.parameters() if p.requires_grad]
    if extra is not None:
        params += [p for p in extra.parameters() if p.requires_grad]
    optimizer = toolkit.make_optimizer(params, cfg.optim)
    scheduler = toolkit.make_scheduler(optimizer, cfg.optim, accelerator.num_processes)
    if extra is not None:
        model, hooks.module, optimizer, scheduler = accelerator.prepare(model, extra, optimizer, scheduler)
    else:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    def parameters() -> list[torch.nn.Parameter]:
        # The prepared modules' parameters: under FSDP they are not the tensors built above.
        return [*model.parameters(), *(hooks.module.parameters() if hooks.module is not None else ())]
    cache = None
    if use_cache:
        shared = video_cache is not None and cfg.data.cache_videos  # with the decoded clips: the process's runs'
        cache = FrozenTowerCache(accelerator.unwrap_model(model), (
            lambda stream, tower: video_cache.tower_states(stream, tower, processor, cfg.data.train_manifest))
            if shared else None)
        if main:
            log.info("frozen tower states cached per clip for streams %s", cache.streams or "none (all train)")

    step, epoch, batch_in_epoch = 0, 0, 0
    if resume:
        ckpt = toolkit.latest_checkpoint(out, STATE_FILE)
        if ckpt is None:
            raise SetupError(f"--resume: no complete checkpoint in {out / 'checkpoints'}")
        toolkit.resume(accelerator, ckpt)
        state = json.loads((ckpt / STATE_FILE).read_text())
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["next_batch"]
        if main:
            log.info("resumed from %s at step %d (epoch %d, batch %d)", ckpt, step, epoch, batch_in_epoch)
    toolkit.start_run(accelerator, cfg)

    model.train()
    batches = toolkit.epoch_batches(dataset, cfg.optim.batch_size, collate, cfg.seed, accelerator,
                                    cfg.data.num_workers, epoch, batch_in_epoch)
    window = _new_window()
    t0 = time.perf_counter()
    while step < cfg.optim.max_steps:
        for _ in range(cfg.optim.grad_accum):
            epoch, i, batch, lost = toolkit.decoded_batch(batches, lambda b: len(b["skipped"]),
                                                          lambda b: b["inputs"] is None)
            window["skipped"] += lost
            inputs = {k: v.to(accelerator.device) for k, v in batch["inputs"].items()}
            if cache is not None:
                inputs["video_features"] = cache.lookup(batch["clip_ids"], inputs)
            with accelerator.accumulate(model):
                outputs, loss, logs = hooks.forward(model, inputs, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(parameters(), cfg.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window["loss"] += outputs.loss.detach().float().item()
            for k, v in logs.items():
                window[k] = window.get(k, 0.0) + v.detach().float().item()
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
            extras = {k: window[k] / n for k in logs}
            accelerator.log({
                "loss": window["loss"] / n, **extras, "lr": scheduler.get_last_lr()[0], **adapters,
                "samples_per_s": window["samples"] / dt, "tokens_per_s": window["tokens"] / dt,
                "epoch": epoch, "skipped": window["skipped"],
            }, step=step)
            window = _new_window()
            t0 = time.perf_counter()
        if step % cfg.save_every == 0 or step == cfg.optim.max_steps:
            save_checkpoint(accelerator, step, epoch, i + 1, cfg)
    toolkit.end_run(accelerator)
    if cache is not None and main:
        log.info("tower cache: %d clips, %d hits, %d misses", len(cache), cache.hits, cache.misses)
    final = out / "final"
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    if main:
        export_final(model, processor, final, cfg)
        if hooks.module is not None:
            hooks.module = accelerator.unwrap_model(hooks.module)
        hooks.export(final)
    accelerator.wait_for_everyone()
    return TrainResult(final, model, step)


def save_checkpoint(accelerator, step: int, epoch: int, next_batch: int, cfg: TrainConfig) -> Path:
    """accelerate's state, then the data position and the config: what ``--resume`` continues from."""
    def write(folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "epoch": epoch, "next_batch": next_batch}))
        toolkit.save_config(folder / "config.yaml", cfg)

    return toolkit.save_checkpoint(accelerator, write)


def export_final(model, processor, final: Path, cfg: TrainConfig) -> None:
    """A loadable model folder (safetensors only; LoRA settings are in its config) with processor and config."""
    final.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(final, safe_serialization=True)
    processor.save_pretrained(final)
    toolkit.save_config(final / "train_config.yaml", cfg)
