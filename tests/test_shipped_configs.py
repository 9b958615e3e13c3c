"""Every config under configs/ loads into its command's config, and stage 3's LoRA is the preset's unless a
config overrides it (a conflict is logged)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from favchat.config import load_config
from favchat.rl.config import RLConfig
from favchat.train.config import FacePretrainConfig, TrainConfig

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load(path):
    cfg = load_config(FacePretrainConfig if path.name.startswith("face_pretrain") else TrainConfig, path)
    assert cfg.output_dir


@pytest.mark.parametrize("path", sorted((CONFIGS / "rl").rglob("*.yaml")), ids=lambda p: p.name)
def test_rl_configs_load(path):
    # a Table 4 row is configs/rl/facesynth.yaml plus the row's switches
    base = yaml.safe_load((CONFIGS / "rl" / "facesynth.yaml").read_text()) if path.parent.name == "table4" else {}
    cfg = load_config(RLConfig, overrides=base | yaml.safe_load(path.read_text()))
    assert cfg.model_path and cfg.train_manifest


def test_paper_recipe_is_app_c_batches_and_the_preset_lora():
    stages = {k: load_config(TrainConfig, CONFIGS / "train" / f"paper_stage{k}.yaml") for k in (1, 2, 3)}
    assert [stages[k].optim.batch_size * 8 for k in (1, 2, 3)] == [16, 8, 8]  # 8 GPUs (ddp_8gpu.yaml)
    assert stages[2].init_from == "runs/paper/stage1/final" and stages[3].init_from == "runs/paper/stage2/final"
    assert stages[3].lora.r is None  # the paper preset's r 64 on all seven projections
    rl = load_config(RLConfig, CONFIGS / "rl" / "paper.yaml")
    assert rl.batch_size * 8 == 8 and rl.weight_decay > 0 and rl.learning_rate < stages[3].optim.lr


def test_stage_three_lora_is_the_presets_unless_overridden(caplog):
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration
    from favchat.train.trainer import apply_schedule

    def lora(**settings):
        model = FaVChatForConditionalGeneration(FaVChatConfig.from_preset("tiny"))
        apply_schedule(model, load_config(TrainConfig, overrides={"stage": 3, "init_from": "unused", "data": {"train_manifest": "unused"},
                                                           "lora": settings}))
        return model.config.lora

    assert lora() == FaVChatConfig.from_preset("tiny").lora_defaults
    with caplog.at_level(logging.WARNING, logger="favchat.train.trainer"):
        assert lora(r=4, dropout=0.05)["r"] == 4
    assert "lora.r = 4 overrides the tiny preset's 8" in caplog.text and "lora.dropout" not in caplog.text
