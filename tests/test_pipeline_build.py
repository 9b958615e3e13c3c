"""Acceptance tests of the dataset pipeline, end to end on real videos: FaceSynth clips, a moving
photograph of a real face (skimage's astronaut), and bad inputs; the API backend against the local
OpenAI-compatible stub (real HTTP, the real openai client) that answers valid, malformed, 429 and 500."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from favchat.chat_api import ChatAPIConfig
from favchat.data.manifest import read_manifest
from favchat.data.pipeline.annotate import AnnotateConfig
from favchat.data.pipeline.build import PipelineConfig, build, merge
from favchat.data.pipeline.filter import FilterConfig, filter_video
from favchat.data.taxonomy import mentioned_labels
from favchat.data.video import write_video

# What each bad input must be rejected as.
BAD = {"zero.mp4": "unreadable", "truncated.mp4": "unreadable", "text.mp4": "unreadable",
       "audio_only.mp4": "unreadable", "one_frame.mp4": "too_short", "uhd_4k.mp4": "few_faces"}


def astronaut_video(path: Path, n: int = 64, size: int = 128, mirror: bool = False) -> Path:
    """The astronaut photograph (a real face) drifting and zooming over ``n`` frames."""
    import cv2
    from skimage import data

    img = data.astronaut()  # (512, 512, 3); the face is around (x 190, y 140)
    if mirror:
        img = np.ascontiguousarray(img[:, ::-1])
    frames = []
    for t in range(n):
        s = size / 300 * (1.0 + 0.1 * np.sin(t / 9))
        cx, cy = (321 if mirror else 190) + 15 * np.sin(t / 7), 140 + 10 * np.cos(t / 11)
        m = np.float32([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
        frames.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT))
    return write_video(path, frames, fps=12)


def audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, i * 1024
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """inputs/: 4 FaceSynth clips, the astronaut, the bad inputs; fs/manifest.jsonl: FaceSynth's labels."""
    from favchat.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("pipeline")
    inputs = root / "inputs"
    inputs.mkdir()
    manifest = generate(SynthConfig(seed=0, min_frames=50, max_frames=60, min_size=96, max_size=112,
                                    clips_per_identity=2), 4, root / "fs", progress=False)
    for c in read_manifest(manifest):
        shutil.copy(c.video_path, inputs / c.video_path.name)
    astro = astronaut_video(inputs / "astronaut.mp4")
    astronaut_video(inputs / "astronaut_mirrored.mp4", n=56, mirror=True)  # 2 real-face clips whatever the detector
    (inputs / "zero.mp4").write_bytes(b"")
    (inputs / "truncated.mp4").write_bytes(astro.read_bytes()[: astro.stat().st_size // 2])
    (inputs / "text.mp4").write_text("this is not a video\n")
    audio_only(inputs / "audio_only.mp4")
    write_video(inputs / "one_frame.mp4", np.zeros((1, 64, 64, 3), np.uint8))
    grad = np.zeros((2160, 3840, 3), np.uint8)
    grad[..., 1] = np.linspace(0, 255, 3840, dtype=np.uint8)
    write_video(inputs / "uhd_4k.mp4", [grad] * 36, fps=12)
    return {"root": root, "inputs": inputs, "fs_manifest": manifest}


@pytest.fixture(scope="module")
def extractor(videos) -> Path:
    from favchat.data.pipeline.extract import ExtractorConfig
    from favchat.data.pipeline.train_extractor import TrainExtractorConfig, train_extractor

    out = videos["root"] / "extractor"
    train_extractor([str(videos["fs_manifest"])], out, ExtractorConfig(width=8, hidden=32),
                    TrainExtractorConfig(epochs=3, batch_size=4))
    return out / "extractor.pt"


def test_filter_rejects_bad_inputs_with_reasons_and_keeps_the_real_face(videos):
    from favchat.data.faces import get_detector

    det = get_detector("auto")
    cfg = FilterConfig()
    for name, reason in BAD.items():
        res, _ = filter_video(str(videos["inputs"] / name), name, cfg, det)
        assert not res.kept and res.reason == reason and res.detail, (name, res)
    res, frames = filter_video(str(videos["inputs"] / "astronaut.mp4"), "astro", cfg, det)
    assert res.kept and res.face_fraction >= 0.6 and frames.shape[0] == len(res.sampled) == len(res.boxes)
    for name in ("haar", "yuface"):  # the real face is found by each detector installed here
        try:
            d = get_detector(name)
        except RuntimeError:
            continue
        assert filter_video(str(videos["inputs"] / "astronaut.mp4"), "a", cfg, d)[0].kept, name


def test_4k_video_is_decoded_downscaled(videos):
    from favchat.data.faces import get_detector

    det = get_detector("auto")
    tracemalloc.start()
    res, frames = filter_video(str(videos["inputs"] / "uhd_4k.mp4"), "uhd", FilterConfig(), det)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (res.width, res.height) == (3840, 2160) and max(frames.shape[1:3]) == 384
    assert peak < 20e6, f"{peak / 1e6:.0f} MB held while filtering a 4K video (one full frame is 25 MB)"


def test_train_extractor_writes_checkpoint_and_per_label_report(extractor):
    from favchat.data.pipeline.extract import load_extractor

    rep = json.loads((extractor.parent / "report.json").read_text())
    assert len(rep["labels"]) == 103 and rep["num_clips"] >= 1
    supported = [n for n, r in rep["labels"].items() if r["support"]]
    assert supported and all(0.0 <= (rep["labels"][n]["recall"] or 0.0) <= 1.0 for n in supported)
    assert len(rep["losses"]) == 3 and all(np.isfinite(rep["losses"]))
    md = (extractor.parent / "report.md").read_text()
    assert "| label | precision | recall |" in md and supported[0] in md
    model = load_extractor(extractor)
    assert set(model.heads) == {"E1", "E2", "E3"}


# ---------------------------------------------------------------------------------------------
# The API backend against a flaky server


class FlakyAPI:
    """Answers each distinct request by a plan fixed by its content: valid at once, or after a malformed
    reply, a 429 or a 500. Valid replies depend only on the request, so two runs write the same texts."""

    PLANS = (("ok",), ("bad", "ok"), ("429", "bad", "ok"), ("500", "ok"))

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.seen: Counter[str] = Counter()
        self.valid: Counter[str] = Counter()
        self.kind: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def summary_text(key: str) -> str:
        return (f"Recording {key[:8]} presents a single individual filmed in even light, with the framing "
                "kept on the upper body for the whole of this short segment and nothing else in view.")

    def __call__(self, body: dict):
        key = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        summary = isinstance(body["messages"][-1]["content"], list)  # frames come with the summary request
        with self._lock:
            self.seen[key] += 1
            self.kind[key] = "summary" if summary else "qa"
            plan = self.PLANS[int(key[:4], 16) % len(self.PLANS)]
            step = plan[min(self.seen[key], len(plan)) - 1]
        if step == "429":
            return 429, {"error": {"message": "rate limited", "type": "rate_limit_error"}}
        if step == "500":
            return 500, {"error": {"message": "internal error", "type": "server_error"}}
        if step == "bad":
            return "Sure! Here it is:" if summary else '{"qa": [{"question": "truncated'
        with self._lock:
            self.valid[key] += 1
        time.sleep(self.delay)
        if summary:
            return self.summary_text(key)
        return json.dumps({"qa": [{"question": f"What is shown in recording {key[:8]} part {i}?",
                                   "answer": "A single individual in even light.", "type": "description"}
                                  for i in range(4)]})


def test_stub_summary_text_mentions_no_label():
    # The valid summary must pass the contradiction check whatever the clip's features are.
    assert mentioned_labels(FlakyAPI.summary_text("0123abcd")) == (set(), set())


def _api_cfg(out: Path, base_url: str, extractor: Path, **kw) -> PipelineConfig:
    api = ChatAPIConfig(base_url=base_url, model="stub", backoff_s=0.001, max_retries=4, concurrency=2,
                        cache_dir=str(out / "api_cache"), timeout_s=10)
    return PipelineConfig(out=str(out), annotate=AnnotateConfig(backend="api", api=api), extractor=str(extractor),
                          progress=False, **kw)


def _state_ids_unique(work: Path) -> None:
    for f in (work / "state").glob("*.jsonl"):
        ids = [json.loads(line)["id"] for line in f.read_text().splitlines()]
        assert len(ids) == len(set(ids)), f"duplicate line in {f}"


def test_flaky_api_build_annotates_every_clip_once_and_survives_a_kill(videos, extractor, openai_stub, tmp_path):
    api = FlakyAPI()
    stub = openai_stub(api)
    out = tmp_path / "out"
    s = build(_api_cfg(out, stub.base_url, extractor), [str(videos["inputs"])], review=3)
    n_files = len(list(videos["inputs"].iterdir()))
    assert s["videos_in"] == n_files == s["kept"] + s["rejected"]
    assert s["rejected_by_reason"]["unreadable"] >= 4 and s["rejected_by_reason"]["too_short"] >= 1
    assert s["clips"] >= 1 and s["clips_done"] == s["summaries"] == s["labelled_clips"] == s["clips"]
    assert s["qa_pairs"] == 4 * s["clips"] and s["api"]["failed"] == 0
    filt = {json.loads(line)["video"].rsplit("/", 1)[-1]: json.loads(line)
            for line in (out / "state" / "filter.jsonl").read_text().splitlines()}
    for name, reason in BAD.items():
        assert filt[name]["reason"] == reason and filt[name]["detail"]
    assert filt["astronaut.mp4"]["kept"] and filt["astronaut_mirrored.mp4"]["kept"]
    # Every clip got exactly one valid summary and one valid QA reply, through retries of all three kinds.
    kinds = Counter(api.kind[k] for k in api.valid)
    assert kinds == {"summary": s["clips"], "qa": s["clips"]} and max(api.valid.values()) == 1
    assert sum(api.seen.values()) > len(api.seen)  # malformed and failed replies were retried
    first = stub.requests[0]["messages"][-1]["content"]
    assert any(p.get("type") == "image_url" and p["image_url"]["url"].startswith("data:image/jpeg;base64,")
               for p in first)
    clips = read_manifest(out / "manifest.jsonl")
    assert len(clips) == s["clips"] and all(c.summary and len(c.qa) == 4 for c in clips)
    assert (out / "review.md").read_text().count("## ") == min(3, len(clips))
    # A rerun pays nothing, writes nothing twice and gives the same manifest.
    before, manifest = len(stub.requests), (out / "manifest.jsonl").read_bytes()
    s2 = build(_api_cfg(out, stub.base_url, extractor), [str(videos["inputs"])], review=0)
    assert len(stub.requests) == before and s2["api"]["calls"] == 0
    assert (out / "manifest.jsonl").read_bytes() == manifest
    _state_ids_unique(out)

    # Killing a build process mid-way and running it again gives the manifest of the uninterrupted run.
    api.delay = 0.15  # slow replies, so the kill lands while summaries are being written
    full, killed = out, tmp_path / "killed"
    cmd = [sys.executable, "-m", "favchat.cli", "data", "build", "--input", str(videos["inputs"]), "--out",
           str(killed), "--extract.extractor", str(extractor), "--text.backend", "api", "--text.api_base_url",
           stub.base_url, "--text.api_model", "stub", "--text.api_backoff", "0.001", "--text.api_max_retries", "4",
           "--text.api_concurrency", "1", "--text.api_timeout", "10", "--review", "0", "--progress", "false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = killed / "state" / "summary.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and state.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert state.read_text().count("\n") >= 1, "killed before the build reached the summaries"
    assert not (killed / "manifest.jsonl").exists()
    build(_api_cfg(killed, stub.base_url, extractor), [str(videos["inputs"])], review=0)
    assert (killed / "manifest.jsonl").read_bytes() == (full / "manifest.jsonl").read_bytes()
    _state_ids_unique(killed)
    # Both runs send the same requests. Each got one valid reply in the full run and one in the killed +
    # resumed run, except the one request in flight when the kill came (concurrency 1): the server may
    # have answered it after the client died, before the reply reached the cache.
    n_clips = len(read_manifest(full / "manifest.jsonl"))
    assert len(api.valid) == 2 * n_clips and min(api.valid.values()) == 2
    assert sum(v - 2 for v in api.valid.values()) <= 1


def test_stage_commands_and_shards_give_the_build_manifest(videos, extractor, tmp_path, capsys):
    from favchat.cli import main

    single, sharded = tmp_path / "single", tmp_path / "sharded"
    common = ["--out", str(single), "--progress", "false"]
    assert main(["data", "filter", "--input", str(videos["inputs"]), *common]) == 0
    assert main(["data", "trim", *common]) == 0
    assert main(["data", "extract", "--extract.extractor", str(extractor), *common]) == 0
    assert main(["data", "annotate", *common]) == 0
    assert main(["data", "qa", *common]) == 0
    table = capsys.readouterr().out
    assert "videos in" in table and "QA pairs" in table
    for i in range(2):
        build(PipelineConfig(out=str(sharded), extractor=str(extractor), num_shards=2, shard_index=i,
                             progress=False), [str(videos["inputs"])], review=0)
    s = merge(sharded, 2)
    assert (sharded / "manifest.jsonl").read_bytes() == (single / "manifest.jsonl").read_bytes()
    one = json.loads((single / "stats.json").read_text())
    assert s["videos_in"] == one["videos_in"] == s["kept"] + s["rejected"]
    assert s["qa_pairs"] == one["qa_pairs"] and s["distinct_labels"] == one["distinct_labels"]
    with pytest.raises(FileNotFoundError, match="shards without a manifest"):
        merge(sharded, 3)
    # A kill in the middle of extract: one line kept, the next cut mid-write. The rerun repairs the file,
    # re-extracts the rest from freshly decoded frames, and the manifest does not change.
    ext_state = single / "state" / "extract.jsonl"
    lines = ext_state.read_text().splitlines(keepends=True)
    assert len(lines) >= 2
    ext_state.write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    for stage in ("summary", "qa"):
        (single / "state" / f"{stage}.jsonl").write_text("")
    manifest = (single / "manifest.jsonl").read_bytes()
    (single / "manifest.jsonl").unlink()
    build(PipelineConfig(out=str(single), extractor=str(extractor), progress=False), [str(videos["inputs"])], review=0)
    assert (single / "manifest.jsonl").read_bytes() == manifest
    _state_ids_unique(single)
    # A rerun with other settings is refused rather than mixing two configurations in one state.
    with pytest.raises(ValueError, match="face_threshold"):
        main(["data", "filter", "--input", str(videos["inputs"]), "--filter.face_threshold", "0.9", *common])


def test_write_clips_gives_clip_files_the_manifest_points_to(videos, extractor, tmp_path):
    from favchat.data.video import probe

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(videos["inputs"] / "astronaut.mp4", inputs)
    out = tmp_path / "out"
    s = build(PipelineConfig(out=str(out), extractor=str(extractor), write_clips=True, progress=False),
              [str(inputs)], review=1)
    clips = read_manifest(out / "manifest.jsonl")  # checks that every video file exists
    assert len(clips) == s["clips"] >= 1
    for c in clips:
        assert c.video_path.parent == out / "clips" and c.frame_range[0] == 0
        assert probe(c.video_path, count=True).num_frames == c.frame_range[1] == (
            c.meta["source_range"][1] - c.meta["source_range"][0])
    assert (out / "review_frames" / f"{clips[0].id}.png").stat().st_size > 0


@pytest.mark.slow
def test_efficientnet_backbone_trains_and_labels(videos, tmp_path):
    from favchat.data.pipeline.extract import ExtractorConfig, load_extractor
    from favchat.data.pipeline.train_extractor import TrainExtractorConfig, train_extractor

    rep = train_extractor([str(videos["fs_manifest"])], tmp_path / "ext", ExtractorConfig(backbone="efficientnet-lite0",
                          crop_size=96), TrainExtractorConfig(epochs=2, batch_size=4))
    assert len(rep["losses"]) == 2 and rep["losses"][1] < rep["losses"][0]
    ckpt = tmp_path / "ext" / "extractor.pt"
    import torch

    keys = torch.load(ckpt, weights_only=True)["state_dict"]
    assert keys and not any(k.startswith("encoder.net.") for k in keys)  # the frozen trunk is not copied
    assert load_extractor(ckpt).cfg.backbone == "efficientnet-lite0"
    s = build(PipelineConfig(out=str(tmp_path / "out"), extractor=str(ckpt), progress=False),
              [str(videos["inputs"])], review=0)
    assert s["clips"] >= 1 and s["clips_done"] == s["clips"]
