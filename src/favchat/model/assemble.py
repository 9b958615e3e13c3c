"""``favchat init``: the paper's model assembled from the three released artefacts, as a checkpoint that
``favchat train --stage 1`` starts from (``init_from``) and ``from_pretrained`` loads.

    favchat init --preset paper --general-encoder l16_25m.pth --face-encoder model.pt \\
        --llm /models/Qwen2.5-7B-Instruct --out ckpt/paper

The general encoder is a UMT checkpoint (VideoChat2's ``l16_25m.pth``, a VideoChat2 stage file, UMT's own or
VideoChat-Flash's), the facial encoder FaceXFormer's ``ckpts/model.pt`` (or a torchvision Swin checkpoint, or an
HF Swin folder), the LLM an HF folder. Their sizes are read from the files; the preset gives the rest (the
prompt-query levels, frames, face crops). Every input is checked before anything is written; the model is built
on the meta device and each part materialised from its file (``favchat.model.parts``), the LLM in its
checkpoint's dtype (or ``llm_dtype``), so the host holds about one copy of the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from favchat.model.parts import PartsReport


def init_checkpoint(preset: str, general_encoder: str | Path, face_encoder: str | Path, llm: str | Path,
                    out: str | Path, llm_dtype: str | None = None,
                    overrides: dict[str, Any] | None = None) -> PartsReport:
    """Assemble a FaVChat checkpoint from the backbones' released files and write it to ``out``.

    Args:
        preset: the preset giving everything the files do not ("paper": Qwen2.5-7B-Instruct's model,
            "qwen3-8b": the same with Qwen3-8B; any preset name works).
        general_encoder: a UMT checkpoint file (its width, depth, patch and tubelet are read from its shapes;
            heads: width / 64).
        face_encoder: FaceXFormer's ``ckpts/model.pt`` (or a torchvision Swin checkpoint), or an HF Swin folder.
        llm: the LLM's local HF folder (config.json, safetensors weights, tokenizer).
        out: the folder to write (model and processor); it must not exist or be empty.
        llm_dtype: the LLM's parameter dtype ("bfloat16", "float16", "float32"); None: the dtype its config.json
            names, else the preset's.
        overrides: FaVChatConfig fields that replace the preset's (e.g. ``{"num_face_frames": 8}``).

    Returns:
        What came from which file and what starts random (``PartsReport.lines()``).

    Raises:
        CheckpointError: a file is not what its argument expects (the message names what was found).
        FileExistsError: ``out`` holds files.
    """
    import torch
    from transformers import AutoConfig

    from favchat.model.checkpoints import CheckpointError, read_umt
    from favchat.model.modeling import FaVChatForConditionalGeneration
    from favchat.model.presets import preset_config
    from favchat.model.processing import FaVChatProcessor

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose another --out")
    overrides = dict(overrides or {})
    preset_cfg = preset_config(preset, **overrides)
    umt = read_umt(general_encoder)
    umt.config.vision_layernorm = getattr(preset_cfg.general_vision_config, "vision_layernorm", False)
    face_config = _face_config(Path(face_encoder))
    llm = Path(llm)
    if not (llm / "config.json").is_file():
        raise CheckpointError(f"{llm}: expected the LLM's HF folder (config.json, weights, tokenizer), found "
                              f"{'a file' if llm.is_file() else 'no config.json'}")
    text_config = AutoConfig.from_pretrained(llm)
    if llm_dtype is None:
        named = text_config.dtype
        llm_dtype = (str(named).removeprefix("torch.") if isinstance(named, (str, torch.dtype))
                     else preset_cfg.llm_dtype)
    parts = {"general_vision_config": umt.config.to_dict(), "face_vision_config": face_config,
             "text_config": text_config.to_dict(), "llm_path": str(llm), "general_vision_path": str(general_encoder),
             "face_vision_path": str(face_encoder), "llm_dtype": llm_dtype}
    clash = sorted(set(overrides) & set(parts))
    if clash:
        raise ValueError(f"{clash} come from the files (and --llm-dtype), not from overrides")
    config = preset_config(preset, **overrides, **parts)
    processor = FaVChatProcessor.from_config(config)  # the LLM's tokenizer; sets the video token's id

    from favchat.model.parts import build_from_parts

    model, report = build_from_parts(FaVChatForConditionalGeneration, config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return report


def _face_config(path: Path) -> dict:
    """The facial tower's config from its file: FaceXFormer / torchvision Swin sizes, or an HF Swin folder's."""
    from favchat.model.checkpoints import CheckpointError, read_facexformer

    if not path.is_dir():
        return read_facexformer(path).config.to_dict()
    import torch
    from transformers import AutoConfig, AutoModel

    from favchat.model.vision import reads_before_merging

    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: expected FaceXFormer's model.pt or an HF Swin folder, found a folder "
                              "without config.json")
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        hierarchical = reads_before_merging(AutoModel.from_config(config))
    if not hierarchical:
        raise CheckpointError(f"{path}: expected FaceXFormer's model.pt or an HF Swin folder, found an HF "
                              f"{config.model_type!r} folder (no stages to read before their patch merging)")
    return config.to_dict()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="assemble the paper's model from the released backbones (UMT-L, FaceXFormer, an LLM folder)",
        description="Assemble a FaVChat checkpoint from the backbones' released files (UMT, FaceXFormer, an LLM "
                    "folder) and write it to OUT. Sizes are read from the files; the preset gives the prompt-query "
                    "levels, frames and face crops. Nothing is written unless every input is what it should be. "
                    "It prints what came from which file and what starts random. Then: favchat train --stage 1 "
                    "--config ... --init_from OUT.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="paper", help="paper | qwen3-8b (or another preset name)")
    p.add_argument("--general-encoder", required=True,
                   help="UMT checkpoint: VideoChat2's l16_25m.pth, a VideoChat2 stage file, UMT's or VideoChat-Flash's")
    p.add_argument("--face-encoder", required=True,
                   help="FaceXFormer's ckpts/model.pt, a torchvision Swin checkpoint, or an HF Swin folder")
    p.add_argument("--llm", required=True, help="the LLM's HF folder, e.g. /models/Qwen2.5-7B-Instruct")
    p.add_argument("--out", required=True, help="the checkpoint folder to write (must not hold files)")
    p.add_argument("--llm-dtype", choices=("bfloat16", "float16", "float32"),
                   help="the LLM's parameter dtype (None: the one its config.json names)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields",
                   help="replace a preset field (a FaVChatConfig field; the value is read as YAML), e.g. "
                        "--set num_face_frames=8; repeat for several")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    import yaml

    overrides = {}
    for item in args.fields:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"favchat init: --set takes FIELD=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        report = init_checkpoint(args.preset, args.general_encoder, args.face_encoder, args.llm, args.out,
                                 args.llm_dtype, overrides)
    except (FileExistsError, FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        print(f"favchat init: {e}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    print(f"wrote {args.out}: start stage 1 from it with init_from: {args.out}")
    return 0
