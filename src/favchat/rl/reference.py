"""The reference policy π_ref of the KL term (Eq. 14–16): the starting policy, without a second model.

Only what RL trains can differ from the start, so only that is kept:
- the LLM's LoRA weights need no copy. At the start the adapters the model already carries (stage 3's) are
  folded into the base weights and their B matrices zeroed, so the policy is unchanged and the LLM with its
  adapters *off* is the starting LLM for the whole run (:func:`fold_lora`);
- every other trainable parameter (the adapters, Q-Formers and projector; the whole LLM when it trains
  without LoRA) is copied once, in bfloat16 (:class:`ReferencePolicy`).

The reference forward is the policy's own forward with the adapters off and the copies put in the place of the
trainable parameters (``torch.func.functional_call``), in eval mode. The frozen parts (the vision towers, the
LLM's base weights under LoRA) are the policy's, shared. Cost at the paper's scale with LoRA: the small
components in bf16, instead of a second 7B model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


def lora_layers(module: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def lora_disabled(module: nn.Module) -> Iterator[None]:
    """The LoRA layers injected by ``favchat.model.lora`` switched off (the base model), then back on."""
    layers = lora_layers(module)
    if not layers:
        raise ValueError("the language model has no LoRA layers to switch off")
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        for m in layers:
            m.enable_adapters(True)


@torch.no_grad()
def fold_lora(module: nn.Module) -> int:
    """Add every active LoRA adapter's ``B·A·scale`` to its base weight and zero its B: the module computes the
    same function, and with the adapters off it is that function still. Returns the number of layers folded."""
    layers = lora_layers(module)
    for m in layers:
        base = m.get_base_layer()
        for name in m.active_adapters:
            base.weight += m.get_delta_weight(name).to(base.weight.dtype)  # (out, in)
            nn.init.zeros_(m.lora_B[name].weight)
    return len(layers)


class ReferencePolicy:
    """π_ref for a policy whose trainable parameters are set (``requires_grad``); build it before training."""

    def __init__(self, policy: nn.Module, dtype: torch.dtype = torch.bfloat16):
        llm = policy.language_model
        # the adapters are off in the reference forward only when they are what trains
        self.adapters_off = bool(lora_layers(llm)) and any(
            p.requires_grad for n, p in llm.named_parameters() if "lora_" in n)
        if self.adapters_off:
            fold_lora(llm)
        self.copies = {n: p.detach().to(dtype).clone() for n, p in policy.named_parameters()
                       if p.requires_grad and not (self.adapters_off and "lora_" in n)}
        self.dtypes = {n: p.dtype for n, p in policy.named_parameters() if n in self.copies}

    def nbytes(self) -> int:
        """Memory the reference holds of its own (the copies); everything else is the policy's."""
        return sum(t.numel() * t.element_size() for t in self.copies.values())

    def describe(self) -> str:
        return (f"the starting policy: {len(self.copies)} trainable tensors copied in bf16 "
                f"({self.nbytes() / 2**20:.1f} MiB)" + ("; LLM adapters off" if self.adapters_off else ""))

    @contextlib.contextmanager
    def forward_fn(self, policy: nn.Module) -> Iterator[Callable[..., Any]]:
        """A function that runs the reference forward (same arguments as ``policy``'s), in eval mode."""
        from torch.func import functional_call

        params = {n: t.to(self.dtypes[n]) for n, t in self.copies.items()}
        was_training = policy.training
        policy.eval()
        try:
            with lora_disabled(policy.language_model) if self.adapters_off else contextlib.nullcontext():
                yield lambda **kw: functional_call(policy, params, (), kw)
        finally:
            policy.train(was_training)
