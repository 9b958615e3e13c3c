"""``favchat init``: the paper's model assembled from the three released artefacts, as a checkpoint that
``favchat train --stage 1`` starts from (``init_from``) and ``from_pretrained`` loads.

    favchat init --preset paper --general_encoder l16_25m.pth --face_encoder model.pt \\
        --llm /models/Qwen2.5-7B-Instruct --out ckpt/paper

The general encoder is a UMT checkpoint (VideoChat2's ``l16_25m.pth``, a VideoChat2 stage file, UMT's own or
VideoChat-Flash's), the facial encoder FaceXFormer's ``ckpts/model.pt`` (or a torchvision Swin checkpoint, or an
HF Swin folder), the LLM an HF folder. Their sizes are read from the files; the preset gives the rest (the
prompt-query levels, frames, face crops). Every input is checked before anything is written; the model is built
on the meta device and each part materialised from its file (``favchat.model.parts``), the LLM in its
checkpoint's dtype (or ``llm_dtype``), so the host holds about one copy of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the command's module imports no torch until it runs (``favchat --help``)
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


@dataclass
class InitConfig:
    """The paper's model assembled from the backbones' released files (``favchat init``)."""

    general_encoder: str = ""
    """The UMT checkpoint: VideoChat2's l16_25m.pth, a VideoChat2 stage file, UMT's own or VideoChat-Flash's."""
    face_encoder: str = ""
    """FaceXFormer's ckpts/model.pt, a torchvision Swin checkpoint, or an HF Swin folder."""
    llm: str = ""
    """The LLM's local HF folder (config.json, safetensors weights, tokenizer), e.g. /models/Qwen2.5-7B-Instruct."""
    out: str = ""
    """The checkpoint folder to write (model and processor); it must not hold files."""
    preset: str = "paper"
    """The preset giving everything the files do not: paper, qwen3-8b (or another preset name)."""
    llm_dtype: Literal["bfloat16", "float16", "float32"] | None = None
    """The LLM's parameter dtype (None: the one its config.json names, else the preset's)."""
    overrides: dict[str, object] = field(default_factory=dict)
    """FaVChatConfig fields replacing the preset's (e.g. --overrides.num_face_frames 8); not those the files give."""

    def __post_init__(self) -> None:
        missing = [f"--{name}" for name in ("general_encoder", "face_encoder", "llm", "out") if not getattr(self, name)]
        if missing:
            raise ValueError(f"{', '.join(missing)} required (the released files and the folder to write)")


def init(config: InitConfig) -> int:
    """Assemble the paper's model from the released backbones (UMT-L, FaceXFormer, an LLM folder).

    Sizes are read from the files; the preset gives the prompt-query levels, frames and face crops. Nothing is
    written unless every input is what it should be. It prints what came from which file and what starts random,
    and writes an HF checkpoint with its processor to OUT: favchat train --stage 1 --init_from OUT starts from it.
    """
    from favchat.cli import CommandError

    try:
        report = init_checkpoint(config.preset, config.general_encoder, config.face_encoder, config.llm, config.out,
                                 config.llm_dtype, config.overrides)
    except (FileExistsError, FileNotFoundError, ValueError) as e:  # CheckpointError is a ValueError
        raise CommandError(str(e)) from e
    print("\n".join(report.lines()))
    print(f"wrote {config.out}: start stage 1 from it with --init_from {config.out}")
    return 0
