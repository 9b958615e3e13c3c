"""Named configurations: ``tiny`` (CPU tests, the demo), ``smollm2`` (the real SmolLM2-135M-Instruct, the
pretrained EfficientNet-Lite0 as facial encoder at 112 px, a random ViT-S-size video ViT at 224 px), ``paper``
(Qwen2.5-7B-Instruct + UMT-L as VideoChat2 runs it + FaceXFormer's Swin-B on face crops, N_q = 32) and
``qwen3-8b`` (the paper preset with Qwen3-8B).

The ``paper``/``qwen3-8b`` configs are written out here (the published config.json values, UMT-L's and Swin-B's
sizes) so the module tree can be built and inspected on the meta device with no download; ``favchat init``
(``favchat.model.assemble``) builds the model from the released files, reading the sizes from them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from favchat.model.configuration import FaVChatConfig
from favchat.model.tokenizer import SPECIAL_TOKENS, TINY_VOCAB_SIZE

PRESETS = ("tiny", "smollm2", "paper", "qwen3-8b")
LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_vit(hidden: int, layers: int, image: int = 64) -> dict[str, Any]:
    return {"model_type": "favchat_video_vit", "image_size": image, "patch_size": 8, "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": 4, "intermediate_size": 2 * hidden,
            "max_frames": 16}


def _tiny(**overrides: Any) -> FaVChatConfig:
    # 64 px frames (patch 8, 64 tokens per frame): the towers then do real work next to the levels, as at
    # full scale, so the per-video cache pays off here too (benchmarks/bench_model.py).
    text = {"model_type": "qwen2", "vocab_size": TINY_VOCAB_SIZE, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 1024, "tie_word_embeddings": True,
            "pad_token_id": SPECIAL_TOKENS.index("<|endoftext|>"),
            "eos_token_id": SPECIAL_TOKENS.index("<|im_end|>"), "bos_token_id": None}
    kw: dict[str, Any] = dict(
        general_vision_config=_tiny_vit(48, 3), face_vision_config=_tiny_vit(32, 3), text_config=text,
        pq_hidden_size=32, pq_num_heads=4, pq_intermediate_size=64, qformer_num_layers=2, num_query_tokens=8,
        adapter_hidden_size=32, low_level_blocks=[1, 2, 3], general_block=-2, num_general_frames=8,
        num_face_frames=8, image_size=64, face_image_size=64,
        video_token_id=SPECIAL_TOKENS.index("<video>"), preset="tiny",
        lora_defaults={"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    )
    kw.update(overrides)
    return FaVChatConfig(**kw)


def _smollm2(**overrides: Any) -> FaVChatConfig:
    from favchat.model.smollm2 import smollm2_text_config

    path, text = smollm2_text_config()
    kw: dict[str, Any] = dict(
        general_vision_config=VIT_S_VIDEO, face_vision_config={"model_type": "favchat_efficientnet_lite0",
                                                                "image_size": 112},
        text_config=text, pq_hidden_size=256, pq_num_heads=4, pq_intermediate_size=512, qformer_num_layers=2,
        num_query_tokens=16, adapter_hidden_size=128, low_level_blocks=[2, 3, 4, 5], general_block=-2,
        num_general_frames=8, num_face_frames=8, image_size=224, face_image_size=112,
        video_token_id=text.vocab_size - 1, llm_path=str(path), preset="smollm2",
        lora_defaults={"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": LLAMA_LORA_TARGETS},
    )
    kw.update(overrides)
    return FaVChatConfig(**kw)


# A ViT-S-size video ViT (random init: no ViT weights ship in any wheel) at UMT's 224 px / patch 16.
VIT_S_VIDEO = {"model_type": "favchat_video_vit", "image_size": 224, "patch_size": 16, "hidden_size": 384,
               "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536, "max_frames": 16}
# UMT-L with VideoChat2's vision_layernorm over the block it reads (its weights come from a VideoChat2 file
# that has them; from UMT's own l16_25m.pth it starts as the identity, as in VideoChat2's stage 1).
UMT_L = {"model_type": "favchat_umt", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
         "intermediate_size": 4096, "patch_size": 16, "tubelet_size": 1, "vision_layernorm": True}
# FaceXFormer's backbone: torchvision's swin_b
SWIN_B = {"model_type": "favchat_facexformer", "patch_size": 4, "embed_dim": 128, "depths": [2, 2, 18, 2],
          "num_heads": [4, 8, 16, 32], "window_size": 7}
QWEN25_7B = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
             "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
             "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
             "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
             "pad_token_id": 151643}
QWEN3_8B = {"model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
            "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
            "pad_token_id": 151643}


def _paper(text: dict[str, Any], name: str, **overrides: Any) -> FaVChatConfig:
    # The video placeholder is appended to the vocabulary (Qwen's 151,665 tokenizer ids fit below 152,064).
    # The general Q-Former reads UMT-L's block 23 of 24 (VideoChat2's); the chain reads Swin-B's four stages
    # before merging (FaceXFormer's), or, without the facial encoder, four UMT blocks across its depth. The face
    # crops are FaceXFormer's (the detector's box enlarged by 50 %, 224 px, ImageNet mean/std); the LLM is kept
    # in bfloat16 (it trains through LoRA only).
    kw: dict[str, Any] = dict(
        general_vision_config=UMT_L, face_vision_config=SWIN_B, text_config=text,
        pq_hidden_size=768, pq_num_heads=12, pq_intermediate_size=3072, qformer_num_layers=2,
        num_query_tokens=32, adapter_hidden_size=256, low_level_blocks=[1, 2, 3, 4], general_block=-2,
        general_chain_blocks=[6, 12, 18, 23],
        num_general_frames=8, num_face_frames=16, image_size=224, face_image_size=224,
        face_detector="auto", face_crop="facexformer", llm_dtype="bfloat16",
        video_token_id=None, preset=name, autocast_dtype="bfloat16",
        lora_defaults={"r": 64, "alpha": 128, "dropout": 0.05, "target_modules": LLAMA_LORA_TARGETS},
    )
    kw.update(overrides)
    return FaVChatConfig(**kw)


def preset_config(name: str, **overrides: Any) -> FaVChatConfig:
    known = {f.name for f in dataclasses.fields(FaVChatConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown FaVChatConfig field(s) {unknown} among the {name!r} preset's overrides")
    if name == "tiny":
        return _tiny(**overrides)
    if name == "smollm2":
        return _smollm2(**overrides)
    if name == "paper":
        return _paper(QWEN25_7B, name, **overrides)
    if name == "qwen3-8b":
        return _paper(QWEN3_8B, name, **overrides)
    raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")
