"""The multi-process commands as configs/accelerate/cpu_ddp_2proc.yaml and the README write them (2 CPU
processes, gloo): ``accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml -m favchat ...``,
with the command's own ``--section.key value`` overrides appended; each compared with the same command in one
process."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from favchat.cli import main as favchat
from favchat.data.synth.generate import SynthConfig, generate

ROOT = Path(__file__).parents[1]
# A Swin facial encoder (the paper preset's kind, reduced): its final layernorm never reaches the loss.
SWIN = ("{face_vision_config: {model_type: swin, image_size: 64, patch_size: 4, embed_dim: 16, depths: [1, 1, 1], "
        "num_heads: [2, 2, 2], window_size: 4}}")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("facesynth")
    return generate(SynthConfig(seed=5, min_frames=16, max_frames=16, min_size=64, max_size=64), n=8, out=out,
                    progress=False)


def _launch(args: list[str], module: str = "favchat") -> None:
    with socket.socket() as s:  # a free port: other test runs on the machine may be launching too
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", "--config_file", "configs/accelerate/cpu_ddp_2proc.yaml",
           "--main_process_port", port, "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo on a GPU machine too
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _lrs(out: Path) -> dict[int, float]:
    with open(out / "metrics.csv") as f:
        return {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}


def _train_args(tmp_path: Path, manifest: Path, stage: int, name: str, *extra: str) -> list[str]:
    return ["train", "--config", f"configs/train/tiny_stage{stage}.yaml", "--stage", str(stage),
            "--output_dir", str(tmp_path / name), "--data.train_manifest", str(manifest),
            "--data.num_workers", "0", "--optim.max_steps", "6", "--optim.batch_size", "2",
            "--optim.warmup_steps", "2", "--log_every", "1", "--save_every", "100", *extra]


@pytest.mark.slow
def test_stages_one_and_two_with_a_trainable_swin_under_ddp_keep_the_one_process_schedule(tmp_path, manifest,
                                                                                          monkeypatch):
    """Stage 1 (warm-up then cosine) and stage 2 from it, 2 processes, a trainable Swin facial encoder: both
    run, and the learning rate at every optimizer step is the 1-process run's."""
    swin = ("--model.overrides", SWIN)
    _launch(_train_args(tmp_path, manifest, 1, "ddp1", *swin))
    _launch(_train_args(tmp_path, manifest, 2, "ddp2", "--init_from", str(tmp_path / "ddp1" / "final")))
    monkeypatch.chdir(ROOT)
    assert favchat(_train_args(tmp_path, manifest, 1, "one1", *swin)) == 0
    one, two = _lrs(tmp_path / "one1"), _lrs(tmp_path / "ddp1")
    assert list(one) == list(range(1, 7)) and two == one
    assert max(one.values()) == one[2] and one[6] < one[3]  # the warm-up peak, then the decay
    assert (tmp_path / "ddp2" / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_face_pretraining_under_ddp_keeps_the_one_process_schedule(tmp_path, manifest, monkeypatch):
    args = ["pretrain-face", "--config", "configs/train/face_pretrain_tiny.yaml", "--data.train_manifest",
            str(manifest), "--data.num_workers", "0", "--optim.max_steps", "6", "--optim.batch_size", "2",
            "--optim.warmup_steps", "2", "--log_every", "1"]
    _launch([*args, "--output_dir", str(tmp_path / "ddp")])
    monkeypatch.chdir(ROOT)
    assert favchat([*args, "--output_dir", str(tmp_path / "one")]) == 0
    one = _lrs(tmp_path / "one")
    assert list(one) == list(range(1, 7)) and _lrs(tmp_path / "ddp") == one


@pytest.mark.slow
def test_rl_runs_under_ddp_as_docs_de_grpo_writes_it(tmp_path, manifest):
    """docs/de_grpo.md: ``accelerate launch --config_file configs/accelerate/cpu_ddp_2proc.yaml -m favchat.cli rl
    --config rl.yaml`` (DE-GRPO on the tiny preset's random weights, two steps)."""
    config = tmp_path / "rl.yaml"
    config.write_text(f"train_manifest: {manifest}\noutput_dir: {tmp_path / 'rl'}\nbatch_size: 2\n"
                      "num_generations: 2\nmax_new_tokens: 8\nmax_steps: 2\nnum_workers: 0\nsave_every: 0\n")
    _launch(["rl", "--config", str(config)], module="favchat.cli")
    with open(tmp_path / "rl" / "metrics.csv") as f:
        steps = [r for r in csv.DictReader(f) if r.get("reward")]
    assert len(steps) == 2
    assert (tmp_path / "rl" / "final" / "model.safetensors").is_file()
