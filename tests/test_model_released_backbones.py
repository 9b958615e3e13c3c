"""The paper's backbones read from their released checkpoint layouts (reduced sizes, random weights) reproduce the
original implementations block by block within 1e-4 in fp32 (references in tests/reference_backbones.py), through
the public ``favchat.model.load_tower``; a file of the wrong kind stops with a message naming what it is."""

from __future__ import annotations

import argparse

import pytest
import torch

from backbone_files import randomise
from favchat.model import load_tower
from favchat.model.checkpoints import CheckpointError, read_tower_checkpoint
from reference_backbones import RefFaceXFormer, RefTorchvisionSwin, RefVideoChat2ViT

TOL = 1e-4


def _close(ours: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    assert [tuple(o.shape) for o in ours] == [tuple(r.shape) for r in ref]
    return max((o - r).abs().max().item() for o, r in zip(ours, ref, strict=True))


# ---------------------------------------------------------------------------------------------------- UMT
def _umt(dim=64, heads=2, patch=16, tubelet=1, img_size=224, frames=4, depth=3) -> RefVideoChat2ViT:
    ref = RefVideoChat2ViT(dim, depth, heads, 2 * dim, patch, tubelet, img_size, frames)
    randomise(ref)
    return ref.eval()


def _umt_reference(ref: RefVideoChat2ViT, pixels: torch.Tensor) -> list[torch.Tensor]:
    return ref.block_outputs(pixels.transpose(1, 2))  # ours (B, T, 3, H, W), VideoChat2's (B, 3, T, H, W)


def _wrap(layout: str, sd: dict[str, torch.Tensor], dim: int) -> object:
    """A UMT state dict (``encoder.*``) in one of the layouts its projects release."""
    g = torch.Generator().manual_seed(1)
    norm = {"weight": 1 + 0.1 * torch.randn(dim, generator=g), "bias": 0.1 * torch.randn(dim, generator=g)}
    if layout == "flat":  # VideoChat2's l16_25m.pth
        return sd
    if layout == "videochat2":  # a VideoChat2 model: the ViT under vision_encoder., its vision_layernorm, the rest
        out = {f"vision_encoder.{k}": v for k, v in sd.items()}
        out |= {f"vision_layernorm.{k}": v for k, v in norm.items()}
        return out | {"qformer.bert.embeddings.LayerNorm.weight": torch.ones(8), "llama_proj.weight": torch.ones(8, 8),
                      "query_tokens": torch.zeros(1, 4, 8)}
    if layout == "umt_pretrain":  # UMT's own checkpoint: {"model": ...}, decoder, text tower, optimizer
        out = {f"vision_encoder.{k}": v for k, v in sd.items()}
        out |= {"vision_encoder.encoder.norm.weight": torch.ones(dim), "vision_encoder.encoder.norm.bias": torch.zeros(dim),
                "vision_encoder.clip_decoder.0.head.weight": torch.ones(8, dim),
                "vision_encoder.pool_norm.weight": torch.ones(dim), "text_encoder.bert.pooler.dense.weight": torch.ones(4, 4),
                "vision_proj.weight": torch.ones(4, dim), "temp": torch.tensor(0.07)}
        return {"model": out, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 3,
                "args": argparse.Namespace(model="vit_large_patch16_224", lr=1.5e-4)}
    if layout == "videochat_flash":  # UMT-L_f4_vision.pt: vision_layernorm inside the encoder
        return sd | {f"encoder.vision_layernorm.{k}": v for k, v in norm.items()}
    raise ValueError(layout)


@pytest.mark.parametrize("layout", ["flat", "videochat2", "umt_pretrain", "videochat_flash"])
def test_umt_layouts_load_strictly_and_match_videochat2(tmp_path, layout):
    ref = _umt()
    path = tmp_path / "umt.pth"
    torch.save(_wrap(layout, ref.state_dict(), 64), path)
    ckpt = read_tower_checkpoint(path, num_attention_heads=2)
    assert ckpt.kind == "umt" and ckpt.config.num_hidden_layers == 3 and ckpt.config.hidden_size == 64
    assert ckpt.config.intermediate_size == 128 and ckpt.config.patch_size == 16 and ckpt.config.tubelet_size == 1
    assert set(ckpt.state_dict) == {k[len("encoder."):] for k in ref.state_dict()}  # all 13 per block, no more
    assert ckpt.config.vision_layernorm == (layout in ("videochat2", "videochat_flash"))
    if layout == "umt_pretrain":
        assert {k.split(".")[1] for k in ckpt.unused if k.startswith("vision_encoder.")} == {
            "encoder", "clip_decoder", "pool_norm"}
    tower = load_tower(path, num_attention_heads=2)
    pixels = torch.randn(2, 4, 3, 224, 224)
    with torch.no_grad():
        ours = tower(pixels)
    assert len(ours) == 3 and ours[0].shape == (2, 4 * 196, 64)
    assert _close(ours, _umt_reference(ref, pixels)) < TOL


@pytest.mark.parametrize("img_size,patch,tubelet,frames", [
    (224, 16, 1, 8),   # the position table resized in time, 4 → 8 frames
    (224, 16, 1, 1),   # an image: the first frame's table
    (224, 16, 1, 3),
    (224, 32, 1, 2),   # 224 px: the table is built at the grid itself (7x7)
    (64, 16, 1, 4),    # another size: the 14x14 table resized bicubically to 4x4
    (64, 16, 1, 6),    # ... and in time
    (96, 16, 1, 1),    # an image at another size
    (112, 8, 1, 4),    # a 14x14 grid at 112 px: no resize
    (64, 16, 2, 8),    # tubelets of 2 frames: 4 token frames
], ids=lambda v: str(v))
def test_umt_position_table_at_other_sizes_and_frame_counts(tmp_path, img_size, patch, tubelet, frames):
    ref = _umt(patch=patch, tubelet=tubelet, img_size=img_size, frames=frames, depth=2)
    path = tmp_path / "umt.pth"
    torch.save(ref.state_dict(), path)
    pixels = torch.randn(2, frames, 3, img_size, img_size)
    with torch.no_grad():
        ours = load_tower(path, num_attention_heads=2)(pixels)
    assert ours[0].shape == (2, frames // tubelet * (img_size // patch) ** 2, 64)
    assert _close(ours, _umt_reference(ref, pixels)) < TOL


def test_umt_heads_default_to_width_over_64(tmp_path):
    ref = _umt(dim=128, heads=2, depth=2, frames=2)
    path = tmp_path / "umt.pth"
    torch.save(ref.state_dict(), path)
    tower = load_tower(path)  # no head count given: 128 / 64
    assert tower.config.num_attention_heads == 2
    pixels = torch.randn(1, 2, 3, 224, 224)
    with torch.no_grad():
        assert _close(tower(pixels), _umt_reference(ref, pixels)) < TOL


# ---------------------------------------------------------------------------------------------------- FaceXFormer
def _facexformer(window: int = 7) -> RefFaceXFormer:
    ref = RefFaceXFormer(patch=4, embed=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=window)
    randomise(ref)
    return ref.eval()


def _swin_reference(ref: RefFaceXFormer, pixels: torch.Tensor) -> list[torch.Tensor]:
    b, t = pixels.shape[:2]
    maps = ref.stage_outputs(pixels.flatten(0, 1))  # (B·T, C, H, W) per stage
    return [m.permute(0, 2, 3, 1).reshape(b, t * m.shape[2] * m.shape[3], m.shape[1]) for m in maps]


@pytest.mark.parametrize("with_index", [True, False], ids=["with_relative_position_index", "without"])
def test_facexformer_whole_model_dict_loads_strictly_and_matches_the_hooks(tmp_path, with_index):
    ref = _facexformer()
    sd = {k: v for k, v in ref.state_dict().items() if with_index or not k.endswith("relative_position_index")}
    path = tmp_path / "model.pt"
    torch.save({"state_dict_backbone": sd, "epoch": 12}, path)
    ckpt = read_tower_checkpoint(path)
    assert ckpt.kind == "facexformer" and ckpt.prefix == "backbone.0."
    c = ckpt.config
    assert (c.patch_size, c.embed_dim, c.depths, c.num_heads, c.window_size, c.mlp_ratio) == (
        4, 16, [2, 2, 2, 2], [1, 2, 2, 4], 7, 4.0)
    # the decoder, FaceXFormer's own layers and the final norm are not read
    assert {k.split(".")[0] for k in ckpt.unused} == {"backbone", "pe_layer", "face_decoder", "linear_c", "linear_fuse"}
    assert all(k.startswith("backbone.1.") for k in ckpt.unused if k.startswith("backbone."))
    tower = load_tower(path)
    pixels = torch.randn(2, 2, 3, 224, 224)
    with torch.no_grad():
        ours = tower(pixels)
    assert [tuple(o.shape) for o in ours] == [(2, 2 * 56 * 56, 16), (2, 2 * 28 * 28, 32), (2, 2 * 14 * 14, 64),
                                              (2, 2 * 7 * 7, 128)]
    assert _close(ours, _swin_reference(ref, pixels)) < TOL


@pytest.mark.parametrize("height,width,window", [
    (100, 100, 7),  # 25 → 13 → 7 → 4: padding to whole windows, and no shift where one window covers the map
    (64, 96, 7),    # not square
    (30, 30, 7),    # 30/4 floors to 7; odd maps padded before merging
    (96, 96, 4),    # another window size, read from the bias table
], ids=lambda v: str(v))
def test_facexformer_at_sizes_the_window_does_not_divide(tmp_path, height, width, window):
    ref = _facexformer(window)
    path = tmp_path / "model.pt"
    torch.save({"state_dict_backbone": ref.state_dict()}, path)
    tower = load_tower(path, kind="facexformer")
    assert tower.config.window_size == window
    pixels = torch.randn(1, 2, 3, height, width)
    with torch.no_grad():
        assert _close(tower(pixels), _swin_reference(ref, pixels)) < TOL


def test_a_torchvision_swin_checkpoint_loads_too(tmp_path):
    swin = RefTorchvisionSwin(4, 16, [2, 2, 2, 2], [1, 2, 2, 4], 7)
    randomise(swin)
    path = tmp_path / "swin.pth"
    torch.save(swin.state_dict(), path)
    ckpt = read_tower_checkpoint(path)
    assert ckpt.prefix == "features." and sorted(ckpt.unused) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    ref = RefFaceXFormer(patch=4, embed=16)
    ref.backbone.load_state_dict({k.replace("features.", "0.", 1): v for k, v in swin.state_dict().items()
                                  if k.startswith("features.")} | {f"1.{k}": v for k, v in swin.norm.state_dict().items()})
    pixels = torch.randn(1, 1, 3, 112, 112)
    with torch.no_grad():
        assert _close(load_tower(path)(pixels), _swin_reference(ref.eval(), pixels)) < TOL


# ---------------------------------------------------------------------------------------------------- wrong files
def test_a_facexformer_file_given_as_umt_says_what_it_is(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict_backbone": _facexformer().state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"expected a UMT checkpoint .* found a FaceXFormer / torchvision Swin"):
        load_tower(path, kind="umt")


def test_a_text_file_and_a_truncated_file_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="expected a PyTorch checkpoint, found a text file starting 'these"):
        load_tower(text)
    path = tmp_path / "umt.pth"
    torch.save(_umt(depth=1).state_dict(), path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="expected a PyTorch checkpoint, found a damaged or truncated zip"):
        load_tower(cut)
    with pytest.raises(CheckpointError, match="found a folder"):
        load_tower(tmp_path)


def test_a_checkpoint_pickling_other_objects_is_not_unpickled(tmp_path):
    import datetime

    path = tmp_path / "umt_pretrain.pth"
    torch.save({"model": _umt(depth=1).state_dict(), "saved": datetime.date(2024, 1, 1)}, path)
    with pytest.raises(CheckpointError, match=r"a pickle holding objects other than tensors \(datetime.date\), "
                                              "which is not loaded here"):
        load_tower(path)


def test_a_umt_with_other_parts_is_refused_by_name(tmp_path):
    sd = _umt(depth=1).state_dict() | {"encoder.blocks.0.gamma_1": torch.ones(64)}  # layer scale: not UMT-L's
    path = tmp_path / "umt.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"unexpected \['blocks.0.gamma_1'\]"):
        load_tower(path)
