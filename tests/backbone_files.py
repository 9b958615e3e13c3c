"""Reduced-size stand-ins for the paper's three artefacts, in their released layouts: a UMT checkpoint (flat
``encoder.*`` as ``l16_25m.pth``, or a VideoChat2 model file), FaceXFormer's whole-model dict, and an LLM folder
(a small random Qwen2 in bfloat16 with the tiny preset's tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch

from reference_backbones import RefFaceXFormer, RefVideoChat2ViT


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every weight random (norm weights around 1), so that no part of the computation hides behind an init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            is_norm = "norm" in name or name.split(".")[-2:-1] == ["2"] and p.ndim == 1
            p.copy_(1 + 0.1 * noise if is_norm and name.endswith("weight") else 0.1 * noise)


def write_umt(path: Path, videochat2: bool = False, dim: int = 64, depth: int = 3) -> RefVideoChat2ViT:
    """A UMT ViT (width ``dim``, ``depth`` blocks, patch 16, heads dim/64 → at least 1): ``l16_25m.pth``'s layout,
    or with ``videochat2`` a VideoChat2 model file (``vision_encoder.`` + ``vision_layernorm``)."""
    ref = RefVideoChat2ViT(dim, depth, max(1, dim // 64), 2 * dim)
    randomise(ref)
    sd = ref.state_dict()
    if videochat2:
        g = torch.Generator().manual_seed(1)
        sd = {f"vision_encoder.{k}": v for k, v in sd.items()} | {
            "vision_layernorm.weight": 1 + 0.1 * torch.randn(dim, generator=g),
            "vision_layernorm.bias": 0.1 * torch.randn(dim, generator=g), "llama_proj.weight": torch.ones(4, dim)}
    torch.save(sd, path)
    return ref.eval()


def write_facexformer(path: Path, embed: int = 16) -> RefFaceXFormer:
    """FaceXFormer's ``ckpts/model.pt`` layout: the whole model under ``state_dict_backbone``."""
    ref = RefFaceXFormer(patch=4, embed=embed, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=7)
    randomise(ref)
    torch.save({"state_dict_backbone": ref.state_dict()}, path)
    return ref.eval()


def write_llm(folder: Path, hidden: int = 64, layers: int = 2) -> None:
    """A random Qwen2 in bfloat16 with the tiny preset's tokenizer (ChatML), saved as an HF folder."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from favchat.model.presets import preset_config
    from favchat.model.tokenizer import build_tiny_tokenizer

    text = preset_config("tiny").text_config.to_dict() | {"hidden_size": hidden, "num_hidden_layers": layers,
                                                          "intermediate_size": 2 * hidden}
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(Qwen2Config(**text)).to(torch.bfloat16)
    llm.save_pretrained(folder)
    build_tiny_tokenizer().save_pretrained(folder)
