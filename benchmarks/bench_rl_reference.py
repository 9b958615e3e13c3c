"""Memory of the RL reference policy: a deep copy of the model (before) against ``favchat.rl.reference``.

    python benchmarks/bench_rl_reference.py

Before issue #27 the reference policy was a deep copy of the whole model in its own dtype (fp32) whenever
anything besides LoRA trained, which RL's default set (adapters, Q-Formers, projector, the LLM's LoRA) always
does. Now the LLM's adapters are switched off for the reference (stage 3's adapters folded into the base
first) and only the other trainable parameters are copied, in bf16.

Two models with RL's default trainable set and the preset's LoRA on the LLM:
- a reduced-size paper model, built for real: the paper preset's structure (Qwen2 LLM with Qwen2.5's vocabulary,
  a UMT-style video ViT, a Swin facial encoder, LoRA r 64 on all seven projections) at small widths and depths.
  Printed: the bytes of the reference's own tensors and the process's resident memory grown while building it;
- the paper preset itself (Qwen2.5-7B, UMT-L, Swin-B), built on the meta device: the bytes the reference's
  tensors would take (computed from their shapes and dtypes).
"""

from __future__ import annotations

import copy
import gc
from pathlib import Path

import torch

from favchat.model.configuration import FaVChatConfig
from favchat.model.lora import apply_lora
from favchat.model.modeling import FaVChatForConditionalGeneration
from favchat.rl.config import RLConfig
from favchat.rl.reference import ReferencePolicy

REDUCED = dict(
    text_config={"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 256, "intermediate_size": 1024,
                 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "max_position_embeddings": 4096, "tie_word_embeddings": False, "bos_token_id": 151643,
                 "eos_token_id": 151645, "pad_token_id": 151643},
    general_vision_config={"model_type": "favchat_video_vit", "image_size": 224, "patch_size": 16, "hidden_size": 256,
                           "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024,
                           "max_frames": 16},
    face_vision_config={"model_type": "swin", "image_size": 224, "patch_size": 4, "embed_dim": 32, "depths": [2, 2, 2, 2],
                        "num_heads": [2, 4, 8, 16], "window_size": 7},
    pq_hidden_size=192, pq_num_heads=4, pq_intermediate_size=768,
)


def rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def rl_model(config: FaVChatConfig) -> FaVChatForConditionalGeneration:
    model = FaVChatForConditionalGeneration(config)
    apply_lora(model)  # the preset's lora_defaults, as stage 3 leaves the model
    model.set_trainable(RLConfig().trainable)
    return model


def main() -> None:
    torch.manual_seed(0)
    model = rl_model(FaVChatConfig.from_preset("paper", **REDUCED))
    gc.collect()
    r0 = rss()  # the new one first: memory the deep copy frees would otherwise be reused unseen
    new = ReferencePolicy(model)
    new_bytes, new_rss = new.nbytes(), rss() - r0
    r0 = rss()
    old = copy.deepcopy(model)  # the reference before: a frozen deep copy
    old_bytes, old_rss = nbytes([*old.parameters(), *old.buffers()]), rss() - r0
    del old
    total = nbytes(model.parameters())
    print(f"reduced-size paper model: {total / 2**20:.1f} MiB of parameters "
          f"({sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6:.2f}M trainable)")
    print(f"  reference before (deep copy, fp32): {old_bytes / 2**20:8.1f} MiB of tensors, resident +{old_rss / 2**20:.1f} MiB")
    print(f"  reference now ({new.describe()}): {new_bytes / 2**20:8.2f} MiB of tensors, resident "
          f"+{new_rss / 2**20:.1f} MiB")

    with torch.device("meta"):
        paper = rl_model(FaVChatConfig.from_preset("paper"))
        ref = ReferencePolicy(paper)
    full = nbytes([*paper.parameters(), *paper.buffers()])
    print(f"paper preset (meta device, computed): the model {full / 2**30:.2f} GiB in fp32; reference before "
          f"{full / 2**30:.2f} GiB (fp32 copy), now {ref.nbytes() / 2**20:.1f} MiB ({len(ref.copies)} tensors in bf16)")


if __name__ == "__main__":
    main()
