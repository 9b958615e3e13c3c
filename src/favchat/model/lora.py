"""LoRA on FaVChat's LLM through ``peft``, recorded in the config so checkpoints reload with it.

``apply_lora`` injects LoRA layers into ``model.language_model`` in place (the attribute names the training
schedule refers to stay the same) and writes the settings to ``model.config.lora``; a model built from
that config (``from_pretrained``) injects the same layers before loading, so the saved LoRA weights land.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def inject_lora(model: nn.Module, r: int, alpha: float, target_modules: Sequence[str], dropout: float = 0.0) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none")
    inject_adapter_in_model(cfg, model.language_model)


def apply_lora(model: nn.Module, r: int | None = None, alpha: float | None = None,
               target_modules: Sequence[str] | None = None, dropout: float | None = None) -> nn.Module:
    """LoRA on the LLM (defaults: the preset's ``lora_defaults``); freezes the LLM's base weights and
    leaves every other component's ``requires_grad`` as it was. Returns the model."""
    if model.config.lora:
        raise ValueError(f"the model already has LoRA on its LLM: {model.config.lora}")
    defaults = model.config.lora_defaults or {}
    settings = {"r": r if r is not None else defaults.get("r", 16),
                "alpha": alpha if alpha is not None else defaults.get("alpha", 32),
                "dropout": dropout if dropout is not None else defaults.get("dropout", 0.0),
                "target_modules": list(target_modules or defaults.get("target_modules", ["q_proj", "v_proj"]))}
    names = {n.rsplit(".", 1)[-1] for n, _ in model.language_model.named_modules()}
    missing = [t for t in settings["target_modules"] if t not in names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not module names of the LLM "
                         f"({type(model.language_model).__name__})")
    inject_lora(model, **settings)
    for name, p in model.language_model.named_parameters():
        p.requires_grad_("lora_" in name)
    model.config.lora = settings
    return model
