"""The facial encoder's task pretraining: what it trains, what it leaves alone, its losses, its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from favchat.config import load_config
from favchat.data.synth.generate import SynthConfig, generate
from favchat.train.face_pretrain import (
    FacePretrainConfig,
    evaluate_heads,
    label_loss,
    pretrain_face,
)
from favchat.train.trainer import SetupError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("facesynth")
    return generate(SynthConfig(seed=4, min_frames=16, max_frames=16, min_size=64, max_size=64), n=16, out=out,
                    progress=False)


def _cfg(tmp_path: Path, manifest: Path, **optim) -> FacePretrainConfig:
    return load_config(FacePretrainConfig, None, {
        "output_dir": str(tmp_path / "face"), "data": {"train_manifest": str(manifest)},
        "optim": {"lr": 1e-2, "max_steps": 3, "batch_size": 4, "warmup_steps": 0, **optim}, "log_every": 1,
    })


def test_only_the_facial_encoder_changes_and_the_checkpoint_loads(tmp_path, manifest):
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration

    torch.manual_seed(0)
    before = FaVChatForConditionalGeneration(FaVChatConfig.from_preset("tiny")).state_dict()
    final = pretrain_face(_cfg(tmp_path, manifest))
    after = FaVChatForConditionalGeneration.from_pretrained(final).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # build_model seeds the same fresh model (seed 0), so everything outside the encoder is bit-identical
    assert changed and all(k.startswith("face_encoder.") for k in changed)
    report = json.loads((tmp_path / "face" / "report.json").read_text())
    assert report["val_clips"] > 0 and 0.0 <= report["val"]["label_accuracy"] <= 1.0
    assert any("neutral" in k for k in report["val"])  # the emotions form an exclusive set
    assert (tmp_path / "face" / "metrics.csv").read_text().count("\n") == 4  # header + 3 logged steps


def test_the_exclusive_set_loss_adds_cross_entropy_only_where_one_label_is_set():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    # set {0, 1}: row 0 has one label (0) -> CE; row 1 has none -> excluded
    ce = torch.nn.functional.cross_entropy(logits[:1, :2], torch.tensor([0]))
    assert torch.allclose(label_loss(logits, targets, [[0, 1]]), bce + ce)
    acc = evaluate_heads(logits, targets, {"a/b": [0, 1]})
    assert acc["a/b"] == 1.0 and acc["label_accuracy"] == pytest.approx(5 / 6)


def test_a_model_without_a_facial_encoder_is_refused(tmp_path, manifest):
    cfg = _cfg(tmp_path, manifest)
    cfg.model.overrides = {"use_face_encoder": False}
    with pytest.raises(SetupError, match="no facial encoder"):
        pretrain_face(cfg)
    assert not (tmp_path / "face" / "final").exists()


def test_the_command_stops_with_a_clear_message_on_a_missing_manifest(tmp_path, capsys):
    from favchat.cli import main

    rc = main(["pretrain-face", "--data.train_manifest", str(tmp_path / "none.jsonl"),
               "--output_dir", str(tmp_path / "face")])
    assert rc == 2 and "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "face").exists()


def test_a_config_without_a_manifest_is_a_config_error(capsys):
    from favchat.cli import main

    assert main(["pretrain-face"]) == 2
    assert "data.train_manifest is required" in capsys.readouterr().err


def test_a_video_that_does_not_decode_is_skipped_or_named(tmp_path, manifest):
    """``data.on_error`` as in the stage trainer: "skip" trains on the rest and counts it, "raise" names it."""
    import csv

    from favchat.data.datasets import SampleError

    lines = manifest.read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for r in recs:
        r["video"] = str(manifest.parent / r["video"])
    train = [k for k, r in enumerate(recs) if r["split"] == "train"]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    recs[train[0]]["video"] = str(bad)
    broken = tmp_path / "m.jsonl"
    broken.write_text("".join(json.dumps(r) + "\n" for r in recs))
    n_train = len(train)

    with pytest.raises(SampleError, match=rf"{recs[train[0]]['id']}.*bad\.mp4"):
        pretrain_face(_cfg(tmp_path / "raise", broken, batch_size=n_train, max_steps=1))
    cfg = _cfg(tmp_path / "skip", broken, batch_size=n_train, max_steps=2)
    cfg.data.on_error = "skip"
    assert (pretrain_face(cfg) / "model.safetensors").is_file()
    with open(tmp_path / "skip" / "face" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["skipped"]) for r in rows] == [1, 1]  # one whole epoch per step, the bad clip in each
