"""The backbones' checkpoints as their projects release them, read into our towers (docs/model.md, "The released
backbones"), and ``load_tower``, the public entry point:

    from favchat.model import load_tower
    umt = load_tower("l16_25m.pth")              # kind found from the keys: "umt"
    face = load_tower("model.pt")                # "facexformer"
    states = umt(pixel_values)                   # (B, T, 3, H, W), normalised → every block's (B, T·N, C)

UMT (``kind="umt"``): VideoChat2's ``l16_25m.pth`` (flat ``encoder.*``), ``umt_l16_qformer.pth`` and
``videochat2_7b_stage{2,3}.pth`` (the ViT under ``vision_encoder.encoder.``, beside VideoChat2's
``vision_layernorm``), UMT's own checkpoints (``{"model": ...}``, with its decoder and text tower, not read) and
VideoChat-Flash's ``UMT-L_f4_vision.pt``. Width, depth, patch and tubelet come from the shapes; the head count
is width / 64 (UMT-B and UMT-L) unless given.

FaceXFormer (``kind="facexformer"``): its ``ckpts/model.pt`` (the whole model under ``state_dict_backbone``:
``backbone.0.*`` is torchvision's Swin, the decoder is not read) or a torchvision Swin v1 checkpoint
(``features.*``); ``relative_position_index`` may be there or not. Patch, width, depths, heads and window come
from the shapes.

Files are read with ``torch.load(mmap=True, weights_only=True)`` (or as safetensors; of the other objects a
pickle may hold, only UMT's training ``args``, an ``argparse.Namespace``, is allowed): nothing executes, and the
tensors stay on disk until a tower takes them.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from favchat.model.configuration import FaceXFormerConfig, UMTConfig

KINDS = ("umt", "facexformer")
# Dicts a checkpoint may wrap its weights in: UMT's training checkpoints ("model"), FaceXFormer's
# ("state_dict_backbone"), and the usual others.
WRAPPERS = ("state_dict_backbone", "model", "state_dict", "module", "model_state_dict")
UMT_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "attn.q_bias", "attn.v_bias", "attn.qkv.weight", "attn.proj.weight",
                  "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                  "mlp.fc2.weight", "mlp.fc2.bias")
UMT_HEAD_DIM = 64


class CheckpointError(ValueError):
    """A file that is not the checkpoint asked for (or not a checkpoint at all): says what was expected and found."""


@dataclass
class TowerCheckpoint:
    """A tower's weights read from a file: its config (sizes from the shapes) and its state dict in our towers'
    key names (``UMTEncoder`` / ``SwinBackbone``)."""

    path: Path
    kind: str  # "umt" | "facexformer"
    config: UMTConfig | FaceXFormerConfig
    state_dict: dict[str, torch.Tensor]
    prefix: str  # where the tower's keys sit in the file
    vision_layernorm: dict[str, torch.Tensor] = field(default_factory=dict)  # VideoChat2's, when the file has it
    unused: list[str] = field(default_factory=list)  # the file's keys no tower reads

    def describe(self) -> str:
        c = self.config
        if self.kind == "umt":
            size = (f"UMT ViT, width {c.hidden_size}, {c.num_hidden_layers} blocks, {c.num_attention_heads} heads, "
                    f"patch {c.patch_size}, tubelet {c.tubelet_size}")
            return size + (", with VideoChat2's vision_layernorm" if self.vision_layernorm else "")
        return (f"Swin v1 (FaceXFormer's backbone), patch {c.patch_size}, width {c.embed_dim}, depths "
                f"{'-'.join(map(str, c.depths))}, heads {'-'.join(map(str, c.num_heads))}, window {c.window_size}")

    def unused_summary(self) -> str:
        return summarise_keys(self.unused)


def summarise_keys(keys: list[str], limit: int = 6) -> str:
    """``backbone.1.* (2), face_decoder.* (300), ...``: keys grouped by their first two name parts."""
    groups = Counter(".".join(k.split(".")[:2]) for k in keys)
    parts = [f"{g}.* ({n})" for g, n in groups.most_common(limit)]
    return ", ".join(parts) + (f" and {len(groups) - limit} more groups" if len(groups) > limit else "")


# ---------------------------------------------------------------------------------------------------- files
def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat ``{name: tensor}`` of a checkpoint file, unwrapped from the dicts checkpoints keep it in."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint file (.pth/.pt/.safetensors), found a folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[8:9] == b"{" and path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise CheckpointError(f"{path}: expected a safetensors file, found a damaged one ({e})") from e
    try:
        # UMT's training checkpoints keep their argparse.Namespace ("args") beside the weights: plain data
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=head[:4] == b"PK\x03\x04")
    except Exception as e:  # torch.load raises RuntimeError, UnpicklingError, EOFError... for a file it cannot read
        raise CheckpointError(f"{path}: expected a PyTorch checkpoint, found {_what_file(head, e)}") from e
    return _unwrap(obj, path)


def _what_file(head: bytes, error: Exception) -> str:
    if "Unsupported global" in str(error):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        return (f"a pickle holding objects other than tensors ({found[1] if found else 'unknown'}), which is not "
                "loaded here (it could run code); save its weights alone: "
                "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth')")
    if head[:4] == b"PK\x03\x04":
        return f"a damaged or truncated zip archive ({error})"
    text = head.decode("utf-8", errors="replace").strip()
    if text and all(ch.isprintable() or ch.isspace() for ch in text):
        return f"a text file starting {text[:40]!r}"
    return f"an unreadable file ({type(error).__name__}: {str(error).splitlines()[0]})"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            raise CheckpointError(f"{path}: expected a state dict of tensors, found a dict with keys "
                                  f"{sorted(map(str, obj))[:8]} and no tensors")
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found a {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------------------------------- UMT
def _prefix(sd: dict[str, torch.Tensor], first: str, ndim: int, companion: str) -> str | None:
    """Where a backbone sits in a state dict: the prefix of a key ending in ``first`` (a tensor of ``ndim``
    dimensions) that also has ``companion`` beside it."""
    for key, value in sd.items():
        if key.endswith(first) and value.ndim == ndim and key[: -len(first)] + companion in sd:
            return key[: -len(first)]
    return None


def _umt_prefix(sd: dict[str, torch.Tensor]) -> str | None:
    return _prefix(sd, "patch_embed.proj.weight", 5, "blocks.0.attn.q_bias")


def _swin_prefix(sd: dict[str, torch.Tensor]) -> str | None:
    return _prefix(sd, "0.0.weight", 4, "1.0.attn.relative_position_bias_table")


def identify(sd: dict[str, torch.Tensor]) -> str:
    """What a state dict looks like, in words (for error messages)."""
    if (p := _umt_prefix(sd)) is not None:
        return f"a UMT checkpoint (its ViT under {p!r})"
    if (p := _swin_prefix(sd)) is not None:
        return f"a FaceXFormer / torchvision Swin checkpoint (its Swin under {p!r})"
    if any(k.startswith(("model.layers.", "lm_head.")) for k in sd):
        return "an LLM's weights"
    keys = list(sd)
    return f"{len(keys)} tensors that are neither (first keys: {keys[:4]})"


def _blocks(sd: dict[str, torch.Tensor], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in sd if (m := pattern.match(k))})


def read_umt(path: str | Path, sd: dict[str, torch.Tensor] | None = None,
             num_attention_heads: int | None = None) -> TowerCheckpoint:
    """A UMT ViT's weights and sizes from any of the wrappings its projects release (module docstring)."""
    path = Path(path)
    sd = read_state_dict(path) if sd is None else sd
    prefix = _umt_prefix(sd)
    if prefix is None:
        raise CheckpointError(f"{path}: expected a UMT checkpoint (a ViT with a 5-D '...patch_embed.proj.weight' "
                              f"and '...blocks.N.attn.q_bias'), found {identify(sd)}")
    depth = len(_blocks(sd, prefix + "blocks."))
    if _blocks(sd, prefix + "blocks.") != list(range(depth)):
        raise CheckpointError(f"{path}: UMT blocks {_blocks(sd, prefix + 'blocks.')} are not numbered 0..{depth - 1}")
    patch = sd[prefix + "patch_embed.proj.weight"]  # (C, 3, tubelet, p, p)
    width, channels, tubelet, ph, pw = patch.shape
    if ph != pw:
        raise CheckpointError(f"{path}: UMT patches must be square, found {ph}x{pw}")
    hidden = sd[prefix + "blocks.0.mlp.fc1.weight"].shape[0]
    heads = num_attention_heads or width // UMT_HEAD_DIM
    if heads < 1 or width % heads:
        raise CheckpointError(f"{path}: width {width} does not split into {heads} heads; give num_attention_heads")
    own = {"patch_embed.proj.weight", "patch_embed.proj.bias"}
    own |= {f"blocks.{i}.{k}" for i in range(depth) for k in UMT_BLOCK_KEYS}
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    missing = sorted(own - set(inside))
    # inside the ViT but not ours: UMT's final norm (VideoChat2 reads the blocks without it), and
    # VideoChat-Flash keeps VideoChat2's vision_layernorm there
    extra = sorted(k for k in set(inside) - own if not k.startswith(("norm.", "vision_layernorm.")))
    if missing or extra:
        raise CheckpointError(f"{path}: a UMT ViT under {prefix!r} that is not the architecture VideoChat2 runs "
                              f"(missing {missing[:4]}, unexpected {extra[:4]})")
    config = UMTConfig(hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                       intermediate_size=hidden, patch_size=ph, tubelet_size=tubelet, num_channels=channels)
    _check_shapes(path, prefix, inside, _umt_shapes(config))
    # VideoChat2's vision_layernorm: inside the ViT (VideoChat-Flash) or beside the module holding it (VideoChat2)
    parts = prefix.split(".")[:-1]
    places = [prefix] + [".".join(parts[:i]) + "." * (i > 0) for i in range(len(parts) - 1, -1, -1)]
    norm = next((p + "vision_layernorm." for p in places if p + "vision_layernorm.weight" in sd), None)
    vision_layernorm = {} if norm is None else {k: sd[norm + k] for k in ("weight", "bias")}
    config.vision_layernorm = norm is not None
    used = {prefix + k for k in own} | ({norm + "weight", norm + "bias"} if norm else set())
    return TowerCheckpoint(path, "umt", config, {k: inside[k] for k in sorted(own)}, prefix, vision_layernorm,
                           [k for k in sd if k not in used])


def _umt_shapes(c: UMTConfig) -> dict[str, tuple[int, ...]]:
    w, m = c.hidden_size, c.intermediate_size
    shapes = {"patch_embed.proj.weight": (w, c.num_channels, c.tubelet_size, c.patch_size, c.patch_size),
              "patch_embed.proj.bias": (w,)}
    block = {"norm1.weight": (w,), "norm1.bias": (w,), "attn.q_bias": (w,), "attn.v_bias": (w,),
             "attn.qkv.weight": (3 * w, w), "attn.proj.weight": (w, w), "attn.proj.bias": (w,),
             "norm2.weight": (w,), "norm2.bias": (w,), "mlp.fc1.weight": (m, w), "mlp.fc1.bias": (m,),
             "mlp.fc2.weight": (w, m), "mlp.fc2.bias": (w,)}
    for i in range(c.num_hidden_layers):
        shapes |= {f"blocks.{i}.{k}": s for k, s in block.items()}
    return shapes


def _check_shapes(path: Path, prefix: str, sd: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    wrong = [f"{prefix}{k} {tuple(sd[k].shape)} (expected {s})" for k, s in shapes.items() if tuple(sd[k].shape) != s]
    if wrong:
        raise CheckpointError(f"{path}: tensors of unexpected shape: {wrong[:3]}")


# ---------------------------------------------------------------------------------------------------- FaceXFormer
def read_facexformer(path: str | Path, sd: dict[str, torch.Tensor] | None = None) -> TowerCheckpoint:
    """FaceXFormer's Swin backbone (or torchvision's Swin v1) and its sizes (module docstring)."""
    path = Path(path)
    sd = read_state_dict(path) if sd is None else sd
    prefix = _swin_prefix(sd)
    if prefix is None:
        raise CheckpointError(f"{path}: expected FaceXFormer's checkpoint (torchvision Swin keys such as "
                              f"'backbone.0.1.0.attn.relative_position_bias_table' under 'state_dict_backbone') or "
                              f"a torchvision Swin, found {identify(sd)}")
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    patch = inside["0.0.weight"]  # (C, 3, p, p)
    embed, channels, p, _ = patch.shape
    depths, heads = [], []
    while f"{2 * len(depths) + 1}.0.norm1.weight" in inside:
        stage = 2 * len(depths) + 1
        depths.append(len(_blocks(inside, f"{stage}.")))
        heads.append(inside[f"{stage}.0.attn.relative_position_bias_table"].shape[1])
    rows = inside["1.0.attn.relative_position_bias_table"].shape[0]
    window = (round(rows ** 0.5) + 1) // 2
    if (2 * window - 1) ** 2 != rows:
        raise CheckpointError(f"{path}: a relative position bias table of {rows} rows is not a square window's")
    mlp_ratio = inside["1.0.mlp.0.weight"].shape[0] / embed
    config = FaceXFormerConfig(patch_size=p, embed_dim=embed, depths=depths, num_heads=heads, window_size=window,
                               mlp_ratio=mlp_ratio, num_channels=channels)
    ours = {_from_torchvision(k): k for k in inside if not k.endswith("relative_position_index")}
    from favchat.model.facexformer import SwinBackbone, relative_position_index

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in SwinBackbone(config).state_dict().items()}
    missing = sorted(set(shapes) - set(ours))
    extra = sorted(k for ours_key, k in ours.items() if ours_key not in shapes)
    if missing or extra:
        raise CheckpointError(f"{path}: a Swin under {prefix!r} that is not torchvision's Swin v1 (missing "
                              f"{missing[:4]}, unexpected {extra[:4]})")
    state = {k: inside[ours[k]] for k in sorted(shapes)}
    _check_shapes(path, prefix, state, shapes)
    index = relative_position_index(window).flatten()
    for k in (k for k in inside if k.endswith("relative_position_index")):
        if not torch.equal(inside[k].flatten().long(), index):
            raise CheckpointError(f"{path}: {prefix}{k} is not the relative position index of a {window}x{window} "
                                  "window")
    used = {prefix + k for k in inside}
    return TowerCheckpoint(path, "facexformer", config, state, prefix, unused=[k for k in sd if k not in used])


def _from_torchvision(key: str) -> str:
    """torchvision's ``features`` names → ``SwinBackbone``'s: 0 the patch embedding (conv 0.0, norm 0.2), odd
    indices the stages, even ones the patch merging between them; a block's MLP is (0: fc1, 3: fc2). A name
    that fits none comes back as it is (and is then reported as unexpected)."""
    m = re.fullmatch(r"(\d+)\.(.+)", key)
    if m is None:
        return key
    i, rest = int(m.group(1)), m.group(2)
    if i == 0:
        layer = {"0.": "patch_embed.proj.", "2.": "patch_embed.norm."}.get(rest[:2])
        return key if layer is None else layer + rest[2:]
    if i % 2 == 0:
        return f"merges.{i // 2 - 1}.{rest}"
    return f"stages.{i // 2}." + rest.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")


def released_key(kind: str, key: str) -> str:
    """A key of our tower's state dict as the released files name it (below their prefix): UMT's are the same,
    the Swin's are torchvision's (the inverse of ``_from_torchvision``)."""
    if kind == "umt":
        return key
    part, index, rest = key.split(".", 2)
    if part == "patch_embed":
        return {"proj": "0.0.", "norm": "0.2."}[index] + rest
    if part == "merges":
        return f"{2 * int(index) + 2}.{rest}"
    return f"{2 * int(index) + 1}.{rest}".replace(".mlp.fc1.", ".mlp.0.").replace(".mlp.fc2.", ".mlp.3.")


# ---------------------------------------------------------------------------------------------------- entry point
def read_tower_checkpoint(path: str | Path, kind: str | None = None,
                          num_attention_heads: int | None = None) -> TowerCheckpoint:
    """A tower's weights: ``kind`` "umt" or "facexformer", or None to find it from the keys."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    sd = read_state_dict(path)
    if kind is None:
        kind = "umt" if _umt_prefix(sd) is not None else "facexformer" if _swin_prefix(sd) is not None else None
        if kind is None:
            raise CheckpointError(f"{path}: expected a UMT or FaceXFormer checkpoint, found {identify(sd)}")
    if kind == "umt":
        return read_umt(path, sd, num_attention_heads)
    if num_attention_heads is not None:
        raise ValueError("num_attention_heads is read from a FaceXFormer checkpoint's shapes, not given")
    return read_facexformer(path, sd)


def build_tower_module(checkpoint: TowerCheckpoint, dtype: torch.dtype = torch.float32,
                       **config_overrides: Any) -> nn.Module:
    """The whole backbone of a checkpoint (``UMTEncoder`` or ``SwinBackbone``), built on the meta device and
    given the checkpoint's tensors (cast to ``dtype``): no second copy of the weights."""
    from favchat.model.facexformer import SwinBackbone
    from favchat.model.umt import UMTEncoder

    config = checkpoint.config
    unknown = sorted(set(config_overrides) - set(config.to_dict()))
    if unknown:
        raise ValueError(f"unknown {type(config).__name__} field(s) {unknown}")
    for k, v in config_overrides.items():
        setattr(config, k, v)
    with torch.device("meta"):
        module = UMTEncoder(config) if checkpoint.kind == "umt" else SwinBackbone(config)
    module.load_state_dict({k: v.to(dtype) for k, v in checkpoint.state_dict.items()}, strict=True, assign=True)
    return module.eval()


def load_tower(path: str | Path, kind: str | None = None, **overrides: Any) -> nn.Module:
    """The backbone of a released checkpoint, numerically what the original code computes.

    Args:
        path: a UMT or FaceXFormer checkpoint file (see this module's docstring for the layouts read).
        kind: "umt" or "facexformer"; None finds it from the keys.
        **overrides: ``num_attention_heads`` (UMT: not in the shapes; default width / 64), ``dtype`` (the
            parameters' dtype, default torch.float32), other fields of the tower's config (``UMTConfig``,
            ``FaceXFormerConfig``), e.g. ``layer_norm_eps``.

    Returns:
        A module in eval mode. Called on ``pixel_values`` (B, T, 3, H, W), already normalised, it returns a list:
        UMT, every block's output, each (B, T·N, C) (T frames of N = (H/p)·(W/p) patches, tubelet 1); FaceXFormer,
        the four stages' outputs before patch merging, each (B, T·H_i·W_i, C_i) (56², 28², 14², 7² at 224 px),
        frame after frame, each frame's tokens in row-major order.

    Raises:
        CheckpointError: the file is not a checkpoint of that kind (the message says what it is).
    """
    dtype = overrides.pop("dtype", torch.float32)
    heads = overrides.pop("num_attention_heads", None)
    checkpoint = read_tower_checkpoint(path, kind, heads)
    return build_tower_module(checkpoint, dtype, **overrides)
