"""Strict typed configs: unknown keys and wrong types stop with a message naming the dotted key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from favchat.config import ConfigError, load_config, to_dict
from favchat.train.config import DEFAULT_SCHEDULE, TrainConfig


def _write(tmp_path, data) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


BASE = {"data": {"train_manifest": "m.jsonl"}}


def test_defaults_follow_the_design_schedule(tmp_path):
    cfg = load_config(TrainConfig, _write(tmp_path, BASE))
    assert cfg.schedule == DEFAULT_SCHEDULE
    assert "language_model" not in cfg.trainable and "general_qformer" not in cfg.trainable  # stage 1
    assert not cfg.use_lora


def test_reading_a_config_imports_no_torch():
    """The schedule's component names come from a torch-free module, so a config loads without torch."""
    code = ("import sys; from favchat.train.config import DataSection, TrainConfig; "
            "TrainConfig(stage=1, data=DataSection(train_manifest='m.jsonl')); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config(TrainConfig, _write(tmp_path, BASE),
                      ["--optim.lr", "3e-4", "--stage=3", "--init_from", "runs/s2", "--schedule.3", "[projector]"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.stage == 3 and cfg.trainable == ["projector"] and not cfg.use_lora
    assert to_dict(cfg)["optim"]["lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({**BASE, "optimizer": {"lr": 1}}, [], r"optimizer"),
        ({**BASE, "optim": {"learning_rate": 1}}, [], r"learning_rate"),
        (BASE, ["--optim.lr", "fast"], r"optim.lr"),
        (BASE, ["--optim.max_steps", "2.5"], r"optim.max_steps"),
        (BASE, ["--precision", "fp8"], r"precision"),
        (BASE, ["--stage", "2"], r"stage 2 starts from the stage-1 checkpoint"),
        (BASE, ["--schedule.1", "[vision_tower]"], r"unknown components \['vision_tower'\]"),
        ({}, [], r"data.train_manifest is required"),
        (BASE, ["--save_every", "0"], r"log_every, save_every and keep_checkpoints must be >= 1"),
        (BASE, ["--optim.lr"], r"expected one argument"),
    ],
)
def test_bad_configs_fail_before_any_work(tmp_path, data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, _write(tmp_path, data), overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="did not find expected"):
        load_config(TrainConfig, bad)


def test_model_overrides_take_nested_values(tmp_path):
    cfg = load_config(TrainConfig, _write(tmp_path, BASE), ["--model.overrides.text_config", "{hidden_size: 128}"])
    assert cfg.model.overrides == {"text_config": {"hidden_size": 128}}


def test_an_override_of_an_int_keyed_entry_keeps_its_other_fields():
    from favchat.demo import load_recipe

    cfg = load_recipe(["--stages.2.optim.max_steps", "600"])
    assert (cfg.stages[2].optim.max_steps, cfg.stages[2].optim.lr, cfg.stages[2].optim.batch_size) == (600, 1.5e-3, 8)
    assert cfg.stages[1].optim.max_steps == 150


def test_a_section_given_in_part_keeps_the_fields_own_defaults():
    from favchat.train.face_pretrain import FacePretrainConfig

    # FacePretrainConfig's optim defaults differ from OptimSection's (weight decay 0.01, batch 32)
    cfg = load_config(FacePretrainConfig, None, ["--optim.lr", "0.002", "--data.train_manifest", "m.jsonl"])
    assert cfg.optim.lr == 0.002
    assert (cfg.optim.weight_decay, cfg.optim.batch_size) == (0.01, 32)


def test_deterministic_kernels_apply_inside_the_block_and_restore_after(monkeypatch):
    import os

    import torch

    from favchat.train.determinism import deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "benchmark", True)
    monkeypatch.setattr(cudnn, "deterministic", False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_kernels(False):
        assert not torch.are_deterministic_algorithms_enabled() and cudnn.benchmark
    with pytest.raises(KeyboardInterrupt), deterministic_kernels(True):
        assert torch.are_deterministic_algorithms_enabled()
        assert cudnn.deterministic and not cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        raise KeyboardInterrupt  # the settings come back however the run ends
    assert not torch.are_deterministic_algorithms_enabled()
    assert cudnn.benchmark and not cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
