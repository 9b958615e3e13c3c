"""What every training loop here sets up the same way: the stage trainer (``trainer.py``), the facial encoder's
pretraining (``face_pretrain.py``), the RL trainer (``favchat.rl.trainer``) and the extractor heads
(``favchat.data.pipeline.train_extractor``). Each loop stays linear and readable; the setup lives here, once.

- ``make_accelerator``: the ``Accelerator`` of a run in ``output_dir`` (accelerate's ``ProjectConfiguration``:
  checkpoints in ``output_dir/checkpoints/checkpoint_<n>``, the oldest deleted past ``keep_checkpoints``), with
  its trackers (``metrics.csv`` always; TensorBoard when asked for and installed).
- ``make_optimizer`` / ``make_scheduler``: AdamW and its learning-rate schedule from an ``OptimSection``.
- ``epoch_batches``: a seeded order per epoch, so the data position (epoch, batch) is enough to resume exactly;
  ``decoded_batch``: the next batch with a sample left after the videos that did not decode.
- ``save_checkpoint`` / ``latest_checkpoint`` / ``resume``: accelerate's state plus the loop's own, and back.
- ``start_run`` / ``end_run`` / ``save_config``: once the inputs are checked, the trackers start and the fully
  resolved config is written beside what the run produces; at the end the trackers close.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from favchat.config import to_dict
from favchat.train.config import OptimSection
from favchat.train.metrics_log import CSVTracker


def make_accelerator(output_dir: str | Path, mixed_precision: str = "no", grad_accum: int = 1,
                     keep_checkpoints: int | None = None, tensorboard: bool = False,
                     find_unused_parameters: bool = False):
    """The run's ``Accelerator``; ``start_run`` starts its trackers, ``end_run`` closes them."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, is_tensorboard_available

    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir),
                                   automatic_checkpoint_naming=True, total_limit=keep_checkpoints)
    trackers: list[Any] = [CSVTracker(Path(output_dir) / "metrics.csv")]
    if tensorboard and is_tensorboard_available():
        trackers.append("tensorboard")
    # Always a DDP handler: a loop that learns what trains after this (the stage trainer) sets
    # accelerator.ddp_handler.find_unused_parameters before it prepares the model.
    kwargs = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
    # cpu=True without a GPU: under torchrun that makes accelerate use gloo instead of asking for NCCL.
    accelerator = Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum,
                              cpu=not torch.cuda.is_available(), project_config=project, log_with=trackers,
                              kwargs_handlers=kwargs)
    return accelerator


def start_run(accelerator, cfg: Any) -> None:
    """Once the run's inputs are checked: the trackers start and the resolved config goes to
    ``<output_dir>/config.yaml`` (nothing is written in ``output_dir`` before)."""
    accelerator.init_trackers("tensorboard")  # the TensorBoard logs' folder under output_dir
    if accelerator.is_main_process:
        save_config(Path(accelerator.project_dir) / "config.yaml", cfg)


def end_run(accelerator) -> None:
    """The trackers close (not ``accelerator.end_training``: it also ends the process group, which the
    caller's later runs and collectives still use)."""
    for tracker in accelerator.trackers:
        tracker.finish()


def make_optimizer(params: Any, optim: OptimSection) -> torch.optim.Optimizer:
    """AdamW over ``params`` (tensors, or parameter groups whose own settings win)."""
    return torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, optim: OptimSection, num_processes: int):
    """The learning-rate schedule: ``optim.warmup_steps`` of linear warmup, then ``optim.scheduler`` to
    ``optim.max_steps``. Prepared by accelerate, the scheduler steps once per process at each optimizer step
    (``num_processes`` times), so its schedule is counted in those steps."""
    from transformers import get_scheduler

    return get_scheduler(optim.scheduler, optimizer, num_warmup_steps=optim.warmup_steps * num_processes,
                         num_training_steps=optim.max_steps * num_processes)


def epoch_batches(dataset: Any, batch_size: int, collate: Callable[[list], Any], seed: int, accelerator,
                  num_workers: int = 0, start_epoch: int = 0, skip_batches: int = 0,
                  put_on_device: bool = False) -> Iterator[tuple[int, int, Any]]:
    """(epoch, batch index in the epoch, batch) forever, this process's share of each batch. Every epoch draws
    its own order from ``seed`` and the epoch, so (epoch, batch index) is enough to resume exactly: the first
    epoch starts at batch ``skip_batches``, cut from the order instead of decoded and thrown away."""
    from accelerate.data_loader import prepare_data_loader

    epoch = start_epoch
    while True:
        first = skip_batches if epoch == start_epoch else 0
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(dataset), generator=g).tolist()[first * batch_size * accelerator.num_processes:]
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, drop_last=False,
                                             num_workers=num_workers, collate_fn=collate)
        # The function, not ``accelerator.prepare_data_loader``: the accelerator would keep every epoch's loader.
        shard = prepare_data_loader(loader, device=accelerator.device, num_processes=accelerator.num_processes,
                                    process_index=accelerator.process_index, put_on_device=put_on_device)
        for i, batch in enumerate(shard, start=first):
            yield epoch, i, batch
        epoch += 1


def decoded_batch(batches: Iterator[tuple[int, int, Any]], skipped: Callable[[Any], int],
                  empty: Callable[[Any], bool]) -> tuple[int, int, Any, int]:
    """The next (epoch, index, batch) with a sample left, and how many samples were skipped on the way (videos
    that did not decode under ``on_error="skip"``: ``skipped(batch)`` counts a batch's; ``empty(batch)`` says
    none of its videos decoded)."""
    lost = 0
    while True:
        epoch, i, batch = next(batches)
        lost += skipped(batch)
        if not empty(batch):
            return epoch, i, batch, lost


def save_config(path: str | Path, cfg: Any) -> None:
    """The fully resolved config (a dataclass) as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def save_checkpoint(accelerator, write: Callable[[Path], None]) -> Path:
    """accelerate's state (model, optimizer, scheduler, every process's RNG) in the next
    ``checkpoints/checkpoint_<n>``, then the loop's own state by ``write(folder)`` on the main process, last, so
    a folder holding it is complete (``latest_checkpoint``)."""
    folder = Path(accelerator.save_state())  # every process takes part (sharded optimizers, RNG per rank)
    if accelerator.is_main_process:
        write(folder)
    accelerator.wait_for_everyone()
    return folder


def latest_checkpoint(output_dir: str | Path, marker: str) -> Path | None:
    """The newest complete checkpoint of a run: the last ``checkpoint_<n>`` holding the loop's ``marker`` file."""
    done = [p for p in (Path(output_dir) / "checkpoints").glob("checkpoint_*") if (p / marker).is_file()]
    return max(done, key=lambda p: int(p.name.rsplit("_", 1)[1]), default=None)


def resume(accelerator, folder: Path) -> None:
    """accelerate's state from ``folder``; the next checkpoint is numbered after it."""
    accelerator.load_state(str(folder))
    accelerator.project_configuration.iteration = int(folder.name.rsplit("_", 1)[1]) + 1
