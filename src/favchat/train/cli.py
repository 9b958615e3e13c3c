"""``favchat train``: one stage of the progressive supervised training; ``favchat pretrain-face``: the facial
encoder's task pretraining that precedes it for an encoder without face-task weights."""

from __future__ import annotations

from favchat.cli import CommandError
from favchat.train.config import FacePretrainConfig, TrainConfig


def train(config: TrainConfig, resume: bool = False) -> int:
    """Train one stage (1: video-summary, 2: QA, 3: emotion QA) with the paper's freezing schedule.

    The stage's trainable components come from the config's schedule (docs/design.md §2 by default). Runs under
    ``accelerate launch`` for DDP, FSDP or DeepSpeed (configs/accelerate/). Writes OUTPUT_DIR/final, a checkpoint
    the next stage starts from (init_from).

    Args:
        resume: Continue from the latest checkpoint in output_dir.
    """
    from favchat.data.manifest import ManifestError
    from favchat.train.trainer import SetupError
    from favchat.train.trainer import train as run

    try:
        result = run(config, resume=resume)
    except (ManifestError, SetupError, FileNotFoundError) as e:  # FileNotFoundError: no manifest at that path
        raise CommandError(e) from e
    print(f"final checkpoint: {result.final_dir}")
    return 0


def pretrain_face(config: FacePretrainConfig) -> int:
    """Pretrain the facial encoder on the training clips' labels (before stage 0/1).

    Trains only the facial encoder, with a temporary linear head over the blocks the low level reads, on the
    taxonomy labels of a manifest's training clips (binary cross-entropy per label, softmax cross-entropy inside
    each exclusive set such as the emotions). Writes OUTPUT_DIR/final (a FaVChat checkpoint for init_from of
    stage 0 or 1) and OUTPUT_DIR/report.json (the heads' accuracy on the val split).
    """
    from favchat.data.manifest import ManifestError
    from favchat.train.face_pretrain import pretrain_face as run
    from favchat.train.trainer import SetupError

    try:
        final = run(config, progress=True)
    except (ManifestError, SetupError, FileNotFoundError) as e:
        raise CommandError(e) from e
    print(f"final checkpoint: {final}")
    return 0
