"""Stage 0/1/2/3 and RL datasets over a FaceSynth manifest, with the real FaVChatProcessor (tiny preset)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from favchat.data.datasets import (
    Collator,
    EmotionQADataset,
    MemoizedLoader,
    QADataset,
    RLDataset,
    SampleError,
    Skipped,
    SummaryDataset,
    VideoCache,
)
from favchat.data.manifest import read_manifest
from favchat.data.synth import SynthConfig, generate
from favchat.data.taxonomy import LABELS_BY_GROUP, mentioned_labels
from favchat.data.video import VideoDecodeError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fs")
    cfg = SynthConfig(seed=4, min_frames=16, max_frames=16, min_size=64, max_size=64, clips_per_identity=1)
    return generate(cfg, 6, out, progress=False)


@pytest.fixture(scope="module")
def processor():
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.processing import FaVChatProcessor

    return FaVChatProcessor.from_config(FaVChatConfig.from_preset("tiny"))


def test_samples_per_stage(manifest: Path, processor):
    clips = read_manifest(manifest)
    s1 = SummaryDataset(manifest, processor.load_video)
    s2 = QADataset(manifest, processor.load_video)
    s3 = EmotionQADataset(manifest, processor.load_video)
    rl = RLDataset(manifest, processor.load_video, split="train")
    assert len(s1) == len(clips) and len(s2) == sum(len(c.qa) for c in clips)
    assert len(rl) == sum(c.split == "train" for c in clips)
    emotions = set(LABELS_BY_GROUP["emotion"])
    kept = [s3.samples[i] for i in range(len(s3))]
    assert kept and all(s.qa_type == "emotion" or set().union(*mentioned_labels(s.answer)) & emotions for s in kept)
    # yes/no questions about an emotion come with both answers (a "yes"-only stage 3 teaches "always yes")
    polar = {s.answer.split(",")[0] for s in kept if s.qa_type == "yesno"}
    assert polar == {"Yes", "No"}, polar
    assert len(s3) < len(s2)  # attribute-only answers are left out
    item = s1[0]
    assert item["answer"] == clips[0].summary and item["labels"] == clips[0].labels
    assert item["video"].general.shape == (processor.num_general_frames, processor.image_size, processor.image_size, 3)
    assert QADataset(manifest, processor.load_video, qa_types=["yesno"]).samples[0].qa_type == "yesno"


def test_dataloader_with_workers_and_collator(manifest: Path, processor):
    ds = QADataset(manifest, processor.load_video)
    dl = DataLoader(ds, batch_size=4, num_workers=1, collate_fn=Collator(processor))
    batch = next(iter(dl))
    inp = batch["inputs"]
    assert inp["general_pixel_values"].shape[:2] == (4, processor.num_general_frames)
    assert inp["input_ids"].shape == inp["labels"].shape
    # Labels cover the answer tokens only.
    first = inp["labels"][0][inp["labels"][0] != -100]
    assert processor.decode(first).strip().startswith(batch["answers"][0][:10])
    assert batch["skipped"] == [] and len(batch["ids"]) == 4
    rl = next(iter(DataLoader(RLDataset(manifest, processor.load_video), batch_size=2,
                              collate_fn=Collator(processor, with_answers=False))))
    assert "labels" not in rl["inputs"] and rl["gt_labels"][0]["emotion"]


def _corrupt(manifest: Path, tmp_path: Path) -> Path:
    """A copy of the manifest whose second clip's video is garbage bytes."""
    clips = read_manifest(manifest)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    lines = manifest.read_text().splitlines()
    out = tmp_path / "m.jsonl"
    recs = [json.loads(x) for x in lines]
    for r, c in zip(recs, clips, strict=True):
        r["video"] = str(c.video_path)
    recs[1]["video"] = str(bad)
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return out


def test_decode_failure_raises_or_is_skipped_and_counted(manifest: Path, processor, tmp_path: Path):
    m = _corrupt(manifest, tmp_path)
    with pytest.raises(SampleError, match=r"fs-000001#summary.*bad\.mp4"):
        SummaryDataset(m, processor.load_video)[1]
    ds = SummaryDataset(m, processor.load_video, on_error="skip")
    marker = ds[1]
    assert isinstance(marker, Skipped) and marker.id == "fs-000001#summary" and ds.num_skipped == 1
    # Through worker processes: the batch reports the skip, and no other sample takes its place.
    batch = next(iter(DataLoader(ds, batch_size=3, num_workers=1, collate_fn=Collator(processor))))
    assert batch["ids"] == ["fs-000000#summary", "fs-000002#summary"]
    assert [s.id for s in batch["skipped"]] == ["fs-000001#summary"]
    assert batch["inputs"]["input_ids"].shape[0] == 2
    all_bad = Collator(processor)([marker])
    assert all_bad["inputs"] is None and all_bad["skipped"] == [marker]
    with pytest.raises(ValueError, match="on_error"):
        SummaryDataset(m, processor.load_video, on_error="replace")


def test_datasets_take_any_load_video_callable(manifest: Path):
    calls = []

    def load_video(path, frame_range):
        calls.append((Path(path).name, frame_range))
        return torch.zeros(1)

    item = QADataset(manifest, load_video)[0]
    assert calls == [("fs-000000.mp4", (0, 16))] and item["question"] and item["qa_type"]


def test_memoized_loader_decodes_each_clip_once(manifest: Path, processor):
    calls = []

    def load(path, frame_range=None):
        calls.append(str(path))
        return processor.load_video(path, frame_range)

    memo = MemoizedLoader(load)
    plain, cached = QADataset(manifest, processor.load_video), QADataset(manifest, memo)
    assert len(cached) > len(cached.clips)  # several QA pairs per clip
    for i in range(len(cached)):
        a, b = plain[i]["video"], cached[i]["video"]
        assert (a.general == b.general).all() and (a.face == b.face).all()
    assert sorted(calls) == sorted(str(c.video_path) for c in cached.clips) and len(memo) == len(cached.clips)

    def broken(path, frame_range=None):
        raise VideoDecodeError(f"{path}: cannot decode")

    bad = QADataset(manifest, MemoizedLoader(broken), on_error="skip")
    assert isinstance(bad[0], Skipped) and len(bad.load_video) == 0  # a failure is not remembered


def test_video_cache_shares_frames_between_runs_with_the_same_processor_settings(manifest: Path, tmp_path):
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.processing import FaVChatProcessor

    cfg = FaVChatConfig.from_preset("tiny")
    first = FaVChatProcessor.from_config(cfg)
    first.save_pretrained(tmp_path)
    again = FaVChatProcessor.from_pretrained(tmp_path)  # the next stage's processor, from the checkpoint
    other = FaVChatProcessor.from_config(FaVChatConfig.from_preset("tiny", face_image_size=48))
    calls = []
    for proc in (first, again, other):
        def load(path, frame_range=None, _load=proc.load_video):
            calls.append(str(path))
            return _load(path, frame_range)

        proc.load_video = load
    cache = VideoCache()
    clip = read_manifest(manifest)[0]
    a = cache.loader(first)(clip.video_path, clip.frame_range)
    assert cache.loader(again)(clip.video_path, clip.frame_range) is a and len(calls) == 1
    b = cache.loader(other)(clip.video_path, clip.frame_range)
    assert len(calls) == 2 and b.face.shape[1] == 48 and a.face.shape[1] == 64
