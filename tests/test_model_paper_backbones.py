"""The paper's backbones inside the model: ``from_parts`` and ``favchat init`` read the released layouts (reduced
sizes, random weights; tests/backbone_files.py), the facial tower gives the chain the stages before merging (an
HF Swin folder too), the no-facial-encoder ablation reads blocks across the general tower's depth, the face crops
are FaceXFormer's, and ``favchat init`` → ``favchat train --stage 1`` runs end to end on CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbone_files import randomise, write_facexformer, write_llm, write_umt
from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor
from favchat.cli import main
from favchat.model import load_tower
from favchat.model.configuration import FaceXFormerConfig, UMTConfig
from favchat.model.processing import FaVChatVideoProcessor
from model_helpers import QUESTIONS, frames
from reference_backbones import RefFaceXFormer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("released")
    write_umt(d / "l16_25m.pth")
    write_umt(d / "videochat2_stage2.pth", videochat2=True)
    write_facexformer(d / "model.pt")
    write_llm(d / "qwen")
    return {"umt": d / "l16_25m.pth", "videochat2": d / "videochat2_stage2.pth", "face": d / "model.pt",
            "llm": d / "qwen"}


def _small_paper_like(files, **overrides) -> FaVChatConfig:
    """The tiny preset with the paper's kinds of towers and LLM dtype, read from the reduced files."""
    kw = dict(general_vision_config=UMTConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=1,
                                              intermediate_size=128, vision_layernorm=True).to_dict(),
              face_vision_config=FaceXFormerConfig(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]).to_dict(),
              general_vision_path=str(files["videochat2"]), face_vision_path=str(files["face"]),
              llm_path=str(files["llm"]), llm_dtype="bfloat16", low_level_blocks=[1, 2, 3, 4], image_size=64,
              face_image_size=64, num_general_frames=4, num_face_frames=2)
    return FaVChatConfig.from_preset("tiny", **(kw | overrides))


def test_from_parts_takes_every_pretrained_weight_from_its_file(files):
    cfg = _small_paper_like(files)
    model = FaVChatForConditionalGeneration.from_parts(cfg)
    sd = torch.load(files["videochat2"], weights_only=True)
    general = model.general_encoder
    # VideoChat2 reads block 2 of 3 here (general_block -2): the last block is not built
    assert len(general.encoder.blocks) == 2 and general.groups == {"memory": [2]}
    for k, v in general.encoder.state_dict().items():
        assert torch.equal(v, sd[f"vision_encoder.encoder.{k}"]), k
    assert torch.equal(general.vision_layernorm.weight, sd["vision_layernorm.weight"])
    from safetensors.torch import load_file

    llm_sd = load_file(files["llm"] / "model.safetensors")
    assert model.language_model.dtype == torch.bfloat16
    assert all(torch.equal(v, llm_sd[k]) for k, v in model.language_model.state_dict().items() if k in llm_sd)
    assert all(torch.isfinite(p).all() for p in model.parameters())

    pixels = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        states = general(pixels)
        blocks = load_tower(files["videochat2"], num_attention_heads=1)(pixels)
        assert torch.allclose(states[2], blocks[1], atol=1e-5)
        # the general Q-Former's memory: block 2 through VideoChat2's vision_layernorm (eps 1e-12)
        expected = F.layer_norm(blocks[1], (64,), sd["vision_layernorm.weight"], sd["vision_layernorm.bias"], 1e-12)
        assert torch.allclose(general.memory(states), expected, atol=1e-5)
        faces = torch.randn(1, 2, 3, 64, 64)
        stages = model.face_encoder._states(faces, 4)[1:]  # before the learned temporal embedding
        ref = load_tower(files["face"])(faces)
        assert [tuple(s.shape) for s in stages] == [(2, 256, 16), (2, 64, 32), (2, 16, 64), (2, 4, 128)]
        assert all(torch.allclose(s.reshape(r.shape), r, atol=1e-5) for s, r in zip(stages, ref, strict=True))

    proc = FaVChatProcessor.from_config(cfg)
    batch = proc([frames(size=64), frames(size=64, seed=1)], QUESTIONS, ["Yes.", "Brown."])
    model.set_trainable(["general_encoder", "face_encoder", "low_level", "projector"])
    out = model.train()(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and general.encoder.blocks[0].attn.q_bias.grad is not None
    assert model.face_encoder.backbone.stages[0][0].attn.relative_position_bias_table.grad is not None


def test_a_config_that_does_not_fit_the_file_is_refused(files):
    from favchat.model.checkpoints import CheckpointError

    cfg = _small_paper_like(files, general_vision_config=UMTConfig(hidden_size=128, num_hidden_layers=3,
                                                                   intermediate_size=256).to_dict())
    with pytest.raises(CheckpointError, match=r"config does not fit the file: hidden_size 128 \(the file: 64\)"):
        FaVChatForConditionalGeneration.from_parts(cfg)


def _hf_to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An HF SwinModel's weights under torchvision's names (features.* as FaceXFormer's backbone.0.*)."""
    out = {"0.0.0.weight": sd["embeddings.patch_embeddings.projection.weight"],
           "0.0.0.bias": sd["embeddings.patch_embeddings.projection.bias"],
           "0.0.2.weight": sd["embeddings.norm.weight"], "0.0.2.bias": sd["embeddings.norm.bias"],
           "1.weight": sd["layernorm.weight"], "1.bias": sd["layernorm.bias"]}
    names = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.proj",
             "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3",
             "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table"}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[:2] != ["encoder", "layers"]:
            continue
        s = int(parts[2])
        if parts[3] == "downsample":
            out[f"0.{2 * s + 2}.{'.'.join(parts[4:])}"] = v
            continue
        j, rest = parts[4], ".".join(parts[5:])
        for hf, tv in names.items():
            if rest == hf or rest.startswith(hf + "."):
                out[f"0.{2 * s + 1}.{j}.{tv}{rest[len(hf):]}"] = v
        if rest.startswith("attention.q_proj."):
            kind = rest.rsplit(".", 1)[1]
            qkv = [sd[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"0.{2 * s + 1}.{j}.attn.qkv.{kind}"] = torch.cat(qkv)
    return out


def test_an_hf_swin_folder_gives_the_stages_before_merging_as_facexformer_reads_them(tmp_path):
    from transformers import SwinConfig, SwinModel

    hf_cfg = SwinConfig(image_size=224, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                        window_size=7)
    torch.manual_seed(0)
    hf = SwinModel(hf_cfg)
    randomise(hf)
    hf.save_pretrained(tmp_path / "swin")
    cfg = FaVChatConfig.from_preset("tiny", face_vision_config=hf_cfg.to_dict(),
                                    face_vision_path=str(tmp_path / "swin"), low_level_blocks=[1, 2, 3, 4],
                                    face_image_size=224, num_face_frames=1)
    model = FaVChatForConditionalGeneration.from_parts(cfg)
    tower = model.face_encoder
    assert tower.state_dims == [16, 16, 32, 64, 128]  # the embedding, then each stage before its merging
    ref = RefFaceXFormer(patch=4, embed=16)
    missing, unexpected = ref.backbone.load_state_dict(_hf_to_torchvision(hf.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing)  # HF does not save them
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = tower._states(images[:, None], 4)[1:]
    expected = [m.flatten(2).transpose(1, 2) for m in ref.eval().stage_outputs(images)]
    assert [tuple(o.shape) for o in ours] == [(2, 3136, 16), (2, 784, 32), (2, 196, 64), (2, 49, 128)]
    assert max((o - e).abs().max().item() for o, e in zip(ours, expected, strict=True)) < 1e-4


def test_the_paper_ablation_without_a_facial_encoder_reads_blocks_across_umt_depth():
    cfg = FaVChatConfig.from_preset("paper", use_face_encoder=False)
    with torch.device("meta"):
        model = FaVChatForConditionalGeneration(cfg)
    assert model.general_encoder.groups == {"memory": [23], "chain": [6, 12, 18, 23]}
    assert [p.in_features for p in model.low_level.proj] == [1024] * 4
    cfg = FaVChatConfig.from_preset("paper", use_face_encoder=False, general_chain_blocks=[4, 8])
    with torch.device("meta"):
        assert FaVChatForConditionalGeneration(cfg).general_encoder.groups["chain"] == [4, 8]


class _OneBox:
    """A detector that finds the same box in every frame (or none)."""

    name = None

    def __init__(self, box):
        self.box = box

    def detect(self, rgb):
        return [self.box] if self.box is not None else []


def test_paper_face_crops_are_facexformers():
    from PIL import Image
    from skimage.data import astronaut

    from favchat.data.faces import Box, get_detector

    cfg = FaVChatConfig.from_preset("paper")
    assert (cfg.face_crop, cfg.face_image_size, cfg.face_detector) == ("facexformer", 224, "auto")
    assert cfg.image_mean == [0.485, 0.456, 0.406] and cfg.image_std == [0.229, 0.224, 0.225]
    image = astronaut()  # 512x512, a face
    box = get_detector("haar").detect(image)[0]
    proc = FaVChatVideoProcessor(num_face_frames=2, face_image_size=224, face_crop="facexformer",
                                 face_detector=_OneBox(box))
    clip = np.stack([image] * 3)
    inputs = proc.load_video(clip)
    # FaceXFormer's inference: the box grown by half its width and height (a quarter on each side), clipped to
    # the frame, cut at whole pixels, resized to 224x224 bicubically (PIL)
    w, h = box.x1 - box.x0, box.y1 - box.y0
    x0, y0 = max(0, box.x0 - w / 4), max(0, box.y0 - h / 4)
    x1, y1 = min(512, box.x1 + w / 4), min(512, box.y1 + h / 4)
    expected = np.asarray(Image.fromarray(image).crop((int(x0), int(y0), int(x1), int(y1))).resize(
        (224, 224), Image.BICUBIC))
    assert inputs.face_source == "detector" and np.array_equal(inputs.face[0], expected)
    # a box at the frame's edge is clipped, not padded
    proc_edge = FaVChatVideoProcessor(num_face_frames=1, face_image_size=64, face_crop="facexformer",
                                      face_detector=_OneBox(Box(0, 0, 100, 200)))
    crop = proc_edge.load_video(clip).face[0]
    assert np.array_equal(crop, np.asarray(Image.fromarray(image).crop((0, 0, 125, 250)).resize((64, 64),
                                                                                              Image.BICUBIC)))
    none = FaVChatVideoProcessor(face_crop="facexformer", face_detector=_OneBox(None))
    assert none.load_video(clip).face_source == "full_frame"  # no face: the whole frame, and it says so


# ---------------------------------------------------------------------------------------------------- favchat init
SMALL = ["--overrides.num_general_frames", "4", "--overrides.num_face_frames", "2", "--overrides.image_size", "64",
         "--overrides.face_image_size", "64", "--overrides.pq_hidden_size", "64", "--overrides.pq_num_heads", "4",
         "--overrides.pq_intermediate_size", "128", "--overrides.num_query_tokens", "8",
         "--overrides.adapter_hidden_size", "32"]


def _init(files, out: Path, general="umt", face="face", llm="llm", preset="paper", extra=SMALL) -> int:
    return main(["init", "--preset", preset, "--general_encoder", str(files.get(general, general)),
                 "--face_encoder", str(files.get(face, face)), "--llm", str(files.get(llm, llm)), "--out", str(out),
                 *extra])


@pytest.mark.slow
def test_init_then_stage_1_end_to_end(files, tmp_path, capsys):
    from safetensors.torch import load_file

    from favchat.data.synth.generate import SynthConfig, generate

    ckpt = tmp_path / "ckpt"
    assert _init(files, ckpt) == 0
    printed = capsys.readouterr().out
    assert f"general_encoder  {files['umt']}: UMT ViT, width 64, 3 blocks" in printed
    assert f"face_encoder     {files['face']}: Swin v1 (FaceXFormer's backbone)" in printed
    assert f"language_model   {files['llm']}: Qwen2ForCausalLM" in printed and "bfloat16" in printed
    random = printed.split("random initialisation:")[1]
    for part in ("general_encoder.vision_layernorm", "text_proj", "low_level", "general_qformer", "face_qformer",
                 "general_adapter", "face_adapter", "projector"):
        assert part in random
    model = FaVChatForConditionalGeneration.from_pretrained(ckpt)
    assert model.config.preset == "paper" and model.config.face_crop == "facexformer"
    assert model.language_model.dtype == torch.bfloat16 and model.projector[0].weight.dtype == torch.float32
    umt = torch.load(files["umt"], weights_only=True)
    assert torch.equal(model.general_encoder.encoder.blocks[1].mlp.fc2.weight, umt["encoder.blocks.1.mlp.fc2.weight"])

    manifest = generate(SynthConfig(seed=3, min_frames=8, max_frames=8, min_size=64, max_size=64), n=4,
                        out=tmp_path / "clips", progress=False)
    run = tmp_path / "stage1"
    rc = main(["train", "--config", str(ROOT / "configs/train/paper_stage1.yaml"), "--stage", "1",
               "--init_from", str(ckpt), "--data.train_manifest", str(manifest), "--data.num_workers", "0",
               "--output_dir", str(run), "--optim.max_steps", "2", "--optim.batch_size", "1",
               "--optim.warmup_steps", "0", "--precision", "no", "--tensorboard", "false"])
    assert rc == 0
    before, after = load_file(ckpt / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    llm = [k for k in before if k.startswith("language_model.")]
    assert llm and all(torch.equal(before[k], after[k]) and after[k].dtype == torch.bfloat16 for k in llm)
    assert not torch.equal(before["general_encoder.encoder.blocks.0.attn.qkv.weight"],
                           after["general_encoder.encoder.blocks.0.attn.qkv.weight"])  # stage 1 trains the towers
    assert json.loads((run / "final" / "config.json").read_text())["llm_dtype"] == "bfloat16"


def test_init_with_qwen3_and_a_videochat2_file(files, tmp_path):
    from transformers import AutoModelForCausalLM, Qwen3Config

    from favchat.model.tokenizer import build_tiny_tokenizer

    qwen3 = tmp_path / "qwen3"
    text = FaVChatConfig.from_preset("tiny").text_config.to_dict()
    text = {k: v for k, v in text.items() if k not in ("model_type", "architectures")} | {"head_dim": 16}
    AutoModelForCausalLM.from_config(Qwen3Config(**text)).to(torch.bfloat16).save_pretrained(qwen3)
    build_tiny_tokenizer().save_pretrained(qwen3)
    assert _init(files, tmp_path / "ckpt", general="videochat2", llm=qwen3, preset="qwen3-8b") == 0
    model = FaVChatForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    assert type(model.language_model).__name__ == "Qwen3ForCausalLM" and model.config.preset == "qwen3-8b"
    sd = torch.load(files["videochat2"], weights_only=True)
    assert torch.equal(model.general_encoder.vision_layernorm.bias, sd["vision_layernorm.bias"])


@pytest.mark.parametrize("case", ["face_as_general", "text_as_face", "truncated", "llm_is_a_file", "out_not_empty"])
def test_init_stops_on_a_wrong_file_before_writing(files, tmp_path, capsys, case):
    out = tmp_path / "ckpt"
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(files["umt"].read_bytes()[:4096])
    args, message = {
        "face_as_general": ({"general": "face"}, r"expected a UMT checkpoint .* found a FaceXFormer / torchvision Swin"),
        "text_as_face": ({"face": text}, "expected a PyTorch checkpoint, found a text file starting 'not a checkpoint"),
        "truncated": ({"general": cut}, "expected a PyTorch checkpoint, found a damaged or truncated zip archive"),
        "llm_is_a_file": ({"llm": files["umt"]}, "expected the LLM's HF folder .* found a file"),
        "out_not_empty": ({}, "exists and is not an empty folder"),
    }[case]
    if case == "out_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert _init(files, out, **args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert (not out.exists()) or sorted(p.name for p in out.iterdir()) == ["keep.txt"]
