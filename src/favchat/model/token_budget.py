"""Visual tokens per video in the LLM prompt: FaVChat's N_q beside two common alternatives.

- FaVChat: the fused N_q query tokens per question, whatever the frame count.
- LLaVA-style: every patch token of the blocks FaVChat reads, projected into the prompt
  (the general block of every general frame plus the last chain block of every face frame).
- Qwen2.5-VL: 14 px patches, 2×2 spatial merge, 2-frame temporal patches, sides rounded to 28 px:
  ``ceil(T / 2) · (H / 28) · (W / 28)`` per stream.

Run: python -m favchat.model.token_budget [preset ...]
"""

from __future__ import annotations

import math
import sys

import torch


def qwen25vl_video_tokens(num_frames: int, height: int, width: int) -> int:
    h, w = (max(28, round(s / 28) * 28) for s in (height, width))
    return math.ceil(num_frames / 2) * (h // 28) * (w // 28)


def token_budget(config) -> dict[str, int]:
    """Counts for one video under ``config`` (towers built on the meta device to read their token counts)."""
    from favchat.model.modeling import FaVChatForConditionalGeneration

    with torch.device("meta"):
        model = FaVChatForConditionalGeneration(config)
        g = torch.zeros(1, config.num_general_frames, 3, config.image_size, config.image_size)
        f = torch.zeros(1, config.num_face_frames, 3, config.face_image_size, config.face_image_size)
        feats = model.encode_video(g, f)
    all_patches = feats.general[model.general_encoder.groups["memory"][0]].shape[1]
    if feats.face is not None:
        all_patches += feats.face[model.face_encoder.groups["chain"][-1]].shape[1]
    qwen = qwen25vl_video_tokens(config.num_general_frames, config.image_size, config.image_size)
    if config.use_face_encoder:
        qwen += qwen25vl_video_tokens(config.num_face_frames, config.face_image_size, config.face_image_size)
    return {"favchat": config.num_query_tokens, "llava_all_patches": all_patches, "qwen25vl": qwen}


def main(argv: list[str] | None = None) -> None:
    from favchat.model.configuration import FaVChatConfig

    presets = (argv if argv is not None else sys.argv[1:]) or ["tiny", "paper"]
    print("| preset | frames (general + face) | FaVChat (N_q) | LLaVA-style, all patches | Qwen2.5-VL |")
    print("|---|---|---|---|---|")
    for name in presets:
        cfg = FaVChatConfig.from_preset(name)
        b = token_budget(cfg)
        print(f"| {name} | {cfg.num_general_frames} @ {cfg.image_size} px + {cfg.num_face_frames} @ "
              f"{cfg.face_image_size} px | {b['favchat']} | {b['llava_all_patches']} | {b['qwen25vl']} |")


if __name__ == "__main__":
    main()
