"""``favchat train``: one stage of the progressive supervised training; ``favchat pretrain-face``: the facial
encoder's task pretraining that precedes it for an encoder without face-task weights."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train one stage (0: a from-scratch LLM learns to read label phrases in the video slots, 1: video-summary, "
             "2: QA, 3: emotion QA) with the paper's freezing schedule",
        description=(
            "Train one stage of the progressive paradigm. The stage's trainable components come from the "
            "config's schedule (docs/design.md §2 by default). Any config key can be overridden after the known "
            "arguments with --section.key value, e.g. --optim.lr 3e-4 --optim.max_steps 200. Runs under "
            "`accelerate launch` for DDP, FSDP or DeepSpeed (see configs/accelerate/)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--stage", type=int, choices=(0, 1, 2, 3),
                   help="the stage (overrides the config's); 0 pretrains an LLM built from scratch to answer from the "
                        "clip's label phrases put in the video slots (no video is decoded)")
    p.add_argument("--config", required=True, help="YAML training config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    p.set_defaults(func=_run, accepts_overrides=True)

    p = sub.add_parser(
        "pretrain-face",
        help="pretrain the facial encoder on the training clips' labels (before stage 0/1)",
        description=(
            "Train only the facial encoder, with a temporary linear head over the blocks the low level reads, "
            "on the taxonomy labels of a manifest's training clips (binary cross-entropy per label, softmax "
            "cross-entropy inside each exclusive set such as the emotions). Writes OUTPUT_DIR/final (a FaVChat "
            "checkpoint for init_from of stage 0 or 1) and OUTPUT_DIR/report.json (the heads' accuracy on the "
            "val split). Any config key can be overridden with --section.key value."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (FacePretrainConfig fields); without it, defaults + overrides")
    p.set_defaults(func=_run_face, accepts_overrides=True)


def _run_face(args: argparse.Namespace) -> int:
    import sys

    from favchat.config_io import ConfigError, load_config
    from favchat.data.manifest import ManifestError
    from favchat.train.face_pretrain import FacePretrainConfig, pretrain_face
    from favchat.train.trainer import SetupError

    try:
        cfg = load_config(FacePretrainConfig, args.config, list(args.overrides))
    except ConfigError as e:
        print(f"favchat pretrain-face: bad config: {e}", file=sys.stderr)
        return 2
    try:
        final = pretrain_face(cfg, progress=True)
    except (ManifestError, SetupError, FileNotFoundError) as e:  # FileNotFoundError: no manifest at that path
        print(f"favchat pretrain-face: {e}", file=sys.stderr)
        return 2
    print(f"final checkpoint: {final}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import sys

    from favchat.config_io import ConfigError, load_config
    from favchat.train.config import TrainConfig

    overrides = list(args.overrides)
    if args.stage is not None:
        overrides += ["--stage", str(args.stage)]
    try:
        cfg = load_config(TrainConfig, args.config, overrides)
    except ConfigError as e:
        print(f"favchat train: bad config: {e}", file=sys.stderr)
        return 2

    from favchat.data.manifest import ManifestError
    from favchat.train.trainer import SetupError, train

    try:
        result = train(cfg, resume=args.resume)
    except (ManifestError, SetupError, FileNotFoundError) as e:  # FileNotFoundError: no manifest at that path
        print(f"favchat train: {e}", file=sys.stderr)
        return 2
    print(f"final checkpoint: {result.final_dir}")
    return 0
