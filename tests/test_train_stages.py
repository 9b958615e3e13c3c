"""The supervised stages (0-3) on the tiny preset: freezing schedule, exact resume, 2-process DDP, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from favchat.config import load_config
from favchat.data.manifest import ManifestError
from favchat.data.synth.generate import SynthConfig, generate
from favchat.train.config import TrainConfig
from favchat.train.trainer import SetupError, train


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("facesynth")
    return generate(SynthConfig(seed=3, min_frames=16, max_frames=16, min_size=64, max_size=64), n=12, out=out,
                    progress=False)


def _cfg(tmp_path: Path, manifest: Path, stage: int, name: str, **extra) -> TrainConfig:
    overrides = {
        "stage": stage, "output_dir": str(tmp_path / name), "seed": 0, "tensorboard": False,
        "data": {"train_manifest": str(manifest)},
        "optim": {"lr": 1e-2, "max_steps": 3, "batch_size": 2, "scheduler": "constant"},
        "log_every": 1, "save_every": 100,
    }
    for k, v in extra.items():
        node = overrides
        *head, last = k.split(".")
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return load_config(TrainConfig, None, overrides)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _component(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.fixture(scope="module")
def stages(tmp_path_factory, manifest):
    """Run stages 0 (the demo recipe's reader, whose phrase table trains beside the LLM), 1, 2, 3 in a chain;
    keep each stage's weights before and after."""
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration
    from favchat.recipes.tiny_demo.hooks import ReaderStage

    tmp = tmp_path_factory.mktemp("stages")
    out = {}
    init = None
    for stage in (0, 1, 2, 3):
        cfg = _cfg(tmp, manifest, stage, f"stage{stage}", **({"init_from": str(init)} if init else {}))
        if init is None:
            torch.manual_seed(0)
            before = _state(FaVChatForConditionalGeneration.from_parts(FaVChatConfig.from_preset("tiny")))
        else:
            before = _state(FaVChatForConditionalGeneration.from_pretrained(init))
        res = train(cfg, hooks=ReaderStage(cfg) if stage == 0 else None)
        out[stage] = (cfg, before, res)
        init = res.final_dir
    return out


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_each_stage_changes_exactly_its_components(stages, stage):
    cfg, before, res = stages[stage]
    after = _state(res.model)
    trainable = set(cfg.trainable)
    lora = [k for k in after if "lora_" in k]
    assert bool(lora) == (stage == 3), "LoRA on the LLM in stage 3 only (the default)"
    changed_comps = set()
    for name, value in after.items():
        if "lora_" in name:  # LoRA weights created in this stage
            assert stage == 3
            if "lora_B" in name:  # B starts at zero: training must move it
                assert value.abs().sum() > 0, name
            continue
        same = torch.equal(before[name.replace(".base_layer", "")], value)  # peft renames wrapped weights
        comp = _component(name)
        if comp not in trainable or (comp == "language_model" and cfg.use_lora):
            assert same, f"stage {stage}: frozen {name} changed"
        elif not same:
            changed_comps.add(comp)
    expected = {c for c in trainable if c != "static_weights"} - ({"language_model"} if cfg.use_lora else set())
    assert changed_comps == expected
    if stage == 0:  # the recipe's phrase table trained beside the LLM and was written beside the model
        assert load_file(res.final_dir / "phrase_table.safetensors")["weight"].abs().sum() > 0


def test_final_checkpoint_loads_and_generates(stages, manifest):
    from favchat import FaVChatForConditionalGeneration, FaVChatProcessor

    _, _, res = stages[3]
    model = FaVChatForConditionalGeneration.from_pretrained(res.final_dir).eval()
    proc = FaVChatProcessor.from_pretrained(res.final_dir)
    for k, v in _state(res.model).items():
        assert torch.equal(model.state_dict()[k], v), k
    video = sorted((manifest.parent / "videos").glob("*.mp4"))[0]
    batch = proc(videos=[str(video)], questions=["What colour is the hair?"])
    ids = model.generate(**batch, max_new_tokens=4)
    assert ids.shape[0] == 1 and 1 <= ids.shape[1] <= 4


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, manifest, monkeypatch):
    import favchat.train.trainer as trainer

    kw = {"optim.max_steps": 4, "save_every": 2, "deterministic": True}  # the same weights on a GPU too
    full = train(_cfg(tmp_path, manifest, 1, "full", **kw))

    original = trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt("simulated crash after the first checkpoint")

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    cfg = _cfg(tmp_path, manifest, 1, "crashed", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(trainer, "save_checkpoint", original)
    from favchat.train import toolkit

    latest = toolkit.latest_checkpoint(Path(cfg.output_dir), trainer.STATE_FILE)
    assert latest.name == "checkpoint_0" and json.loads((latest / trainer.STATE_FILE).read_text())["step"] == 2
    resumed = train(cfg, resume=True)
    assert resumed.step == 4
    a, b = _state(full.model), _state(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    rows = (Path(cfg.output_dir) / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4  # header + one row per step, across the crash


@pytest.mark.parametrize("stage", [2, 3])
def test_cached_frozen_towers_train_the_same_weights(tmp_path, manifest, stages, stage, monkeypatch):
    """Stage 3 freezes both towers; stage 2 here freezes the facial one only (the general one trains)."""
    import favchat.train.trainer as trainer
    from favchat.train.config import DEFAULT_SCHEDULE

    made = []

    class Recorder(trainer.FrozenTowerCache):
        def __init__(self, model, stores=None):
            super().__init__(model, stores)
            made.append(self)

    monkeypatch.setattr(trainer, "FrozenTowerCache", Recorder)
    schedule = {k: [c for c in v if not (k == 2 and c == "face_encoder")] for k, v in DEFAULT_SCHEDULE.items()}
    kw = {"init_from": str(stages[stage - 1][2].final_dir), "schedule": schedule, "optim.max_steps": 8,
          "deterministic": True}
    plain = train(_cfg(tmp_path, manifest, stage, "plain", **kw))
    cached = train(_cfg(tmp_path, manifest, stage, "cached", cache_frozen_towers=True, **kw))
    (cache,) = made
    assert cache.streams == (["general", "face"] if stage == 3 else ["face"])
    assert cache.hits > 0 and cache.misses == len(cache)  # clips came back and were not encoded again
    a, b = _state(plain.model), _state(cached.model)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)
    assert any(not torch.equal(a[k], stages[stage][1][k]) for k in a if _component(k) == "general_encoder") \
        == (stage == 2)  # the general tower did train in stage 2


def test_a_frozen_towers_states_are_shared_by_the_stages_of_a_process(tmp_path, manifest, stages, monkeypatch):
    """The demo's facial encoder is frozen in stages 2 and 3 (here): stage 3 reads the states stage 2 computed,
    through the process's VideoCache, and trains the weights it trains when it computes them itself."""
    from favchat import FaVChatForConditionalGeneration, FaVChatProcessor
    from favchat.data.datasets import VideoCache
    from favchat.train.config import DEFAULT_SCHEDULE

    schedule = {k: [c for c in v if c != "face_encoder"] for k, v in DEFAULT_SCHEDULE.items()}
    kw = {"schedule": schedule, "optim.max_steps": 6, "deterministic": True, "cache_frozen_towers": True,
          "data.cache_videos": True}
    videos, apart = VideoCache(), VideoCache()
    two = train(_cfg(tmp_path, manifest, 2, "two", init_from=str(stages[1][2].final_dir), **kw), video_cache=videos)
    processor = FaVChatProcessor.from_pretrained(two.final_dir)

    def face_clips(cache, model):  # the clips whose facial states the cache holds for this model's facial encoder
        return set(cache.tower_states("face", model.face_encoder, processor, str(manifest)))

    seen_by_two = face_clips(videos, two.model)
    encoded = []
    original = FaVChatForConditionalGeneration.encode_stream

    def record(self, stream, pixels):
        encoded.append((stream, pixels.shape[0]))
        return original(self, stream, pixels)

    monkeypatch.setattr(FaVChatForConditionalGeneration, "encode_stream", record)
    shared = train(_cfg(tmp_path, manifest, 3, "shared", init_from=str(two.final_dir), **kw), video_cache=videos)
    faces_shared = sum(n for s, n in encoded if s == "face")
    encoded.clear()
    alone = train(_cfg(tmp_path, manifest, 3, "alone", init_from=str(two.final_dir), **kw), video_cache=apart)
    faces_alone = sum(n for s, n in encoded if s == "face")
    seen_by_three = face_clips(apart, alone.model)
    assert seen_by_two and faces_alone == len(seen_by_three)
    assert faces_shared == len(seen_by_three - seen_by_two) < faces_alone  # stage 2's clips not encoded again
    assert face_clips(videos, shared.model) == seen_by_two | seen_by_three
    a, b = _state(alone.model), _state(shared.model)
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)


def test_the_tower_cache_is_refused_where_weights_are_sharded(tmp_path, manifest, monkeypatch):
    import accelerate
    from accelerate import DistributedType

    monkeypatch.setattr(accelerate.Accelerator, "distributed_type", property(lambda self: DistributedType.FSDP))
    with pytest.raises(SetupError, match="not under FSDP or ZeRO-3"):
        train(_cfg(tmp_path, manifest, 1, "fsdp", cache_frozen_towers=True))
    assert not (tmp_path / "fsdp").exists()  # refused before anything was written


def test_two_process_ddp_on_cpu_gives_equal_weights(tmp_path, manifest):
    script = tmp_path / "ddp_worker.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        from safetensors.torch import save_file
        from favchat.config import load_config
        from favchat.train.config import TrainConfig
        from favchat.train.trainer import train
        cfg = load_config(TrainConfig, None, {{
            "stage": 1, "output_dir": {str(tmp_path / "ddp")!r}, "tensorboard": False,
            "data": {{"train_manifest": {str(manifest)!r}}},
            "optim": {{"lr": 1e-2, "max_steps": 2, "batch_size": 2}}, "log_every": 1, "save_every": 100}})
        res = train(cfg)
        rank = torch.distributed.get_rank()
        save_file({{k: v.contiguous() for k, v in res.model.state_dict().items()
                    if k != "language_model.lm_head.weight"}}, {str(tmp_path)!r} + f"/rank{{rank}}.safetensors")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # on CPU (gloo) on a GPU machine too
    config = Path(__file__).parents[1] / "configs" / "accelerate" / "cpu_ddp_2proc.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
           "--main_process_port", "29533", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()


def test_stage_zero_needs_a_recipes_data(tmp_path, manifest):
    with pytest.raises(SetupError, match="stage 0 has no data of its own"):
        train(_cfg(tmp_path, manifest, 0, "s0"))
    assert not (tmp_path / "s0").exists()


def test_stage_two_without_a_stage_one_checkpoint_stops_before_training(tmp_path, manifest):
    with pytest.raises(ValueError, match="stage 2 starts from the stage-1 checkpoint"):
        _cfg(tmp_path, manifest, 2, "s2")
    cfg = _cfg(tmp_path, manifest, 2, "s2", init_from=str(tmp_path / "missing"))
    with pytest.raises(SetupError, match="not a FaVChat checkpoint"):
        train(cfg)
    assert not (tmp_path / "s2").exists()


def test_manifest_naming_a_missing_video_stops_before_training(tmp_path, manifest):
    lines = manifest.read_text().splitlines()
    bad = manifest.parent / "bad.jsonl"  # beside the videos, which the manifest names relatively
    bad.write_text("\n".join(lines[:2] + [lines[2].replace(".mp4", "-gone.mp4")] + lines[3:]) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl:3: video: file not found"):
        train(_cfg(tmp_path, bad, 1, "s1"))
    assert not (tmp_path / "s1").exists()


def test_the_command_stops_with_a_clear_message_on_a_missing_manifest(tmp_path, capsys):
    from favchat.cli import main

    config = Path(__file__).parents[1] / "configs" / "train" / "tiny_stage1.yaml"
    rc = main(["train", "--stage", "1", "--config", str(config), "--data.train_manifest", str(tmp_path / "none.jsonl"),
               "--output_dir", str(tmp_path / "s1")])
    assert rc == 2 and "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "s1").exists()


def test_chat_streams_answers_and_encodes_the_video_once(stages, manifest, monkeypatch, capsys):
    from favchat import FaVChatForConditionalGeneration
    from favchat.cli import main
    from favchat.serve.chat import ChatSession

    _, _, res = stages[3]
    video = sorted((manifest.parent / "videos").glob("*.mp4"))[0]
    calls = []
    original = FaVChatForConditionalGeneration.encode_video

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FaVChatForConditionalGeneration, "encode_video", counting)
    session = ChatSession(res.final_dir, video, frames=4)
    assert session.video.general.shape[0] == 4
    first = "".join(session.ask("What colour is the hair?", max_new_tokens=6))
    second = "".join(session.ask("What emotion does the person show?", max_new_tokens=6))
    assert len(calls) == 1, "the towers run once per video, not once per question"
    assert [q for q, _ in session.history] == ["What colour is the hair?", "What emotion does the person show?"]
    assert session.history[0][1] == first.strip() and session.history[1][1] == second.strip()

    assert main(["chat", "--model", str(res.final_dir), "--video", str(video), "--max_new_tokens", "4",
                 "--question", "What colour is the hair?"]) == 0
    assert main(["chat", "--model", str(res.final_dir), "--video", str(video.with_name("missing.mp4")),
                 "--question", "hi"]) == 2
    assert "no such file" in capsys.readouterr().err

