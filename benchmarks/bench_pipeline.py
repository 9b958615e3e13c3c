"""Throughput of the dataset pipeline's video stages (filter + trim + extract) against a naive baseline.

    python benchmarks/bench_pipeline.py [--videos 8] [--frames 300] [--size 256] [--detector auto]

Videos: the astronaut photograph (a real face) moving over ``--frames`` frames at ``--size`` px, the
face leaving the frame for a while in every other video (so trimming has work to do). The pipeline
decodes and detects on every 16th frame (downscaled), and the extractor reuses those frames. The naive
baseline decodes every frame, detects on every frame at full size, trims on per-frame detections and
runs the same extractor. Both produce clips; the script prints clips per minute and the speed-up.
The extractor has random weights: only its cost matters here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_videos(folder: Path, n: int, frames: int, size: int) -> list[Path]:
    import cv2
    from skimage import data

    from favchat.data.video import write_video

    img = data.astronaut()  # (512, 512, 3); face near (190, 140)
    paths = []
    for v in range(n):
        out = []
        for t in range(frames):
            s = size / 300 * (1.0 + 0.1 * np.sin(t / 9 + v))
            cx, cy = 190 + 15 * np.sin(t / 7 + v), 140 + 10 * np.cos(t / 11)
            if v % 2 and frames // 2 <= t < frames // 2 + 40:
                cx += 400  # the face leaves the frame for 40 frames
            m = np.float32([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
            out.append(cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_CONSTANT))
        paths.append(write_video(folder / f"astro_{v:02d}.mp4", out, fps=25))
    return paths


def naive(paths: list[Path], detector_name: str, extractor_path: Path) -> int:
    """Decode every frame, detect on every frame, trim on those detections, extract: the clip count."""
    from favchat.data.faces import get_detector
    from favchat.data.pipeline.extract import clip_frame_indices, load_extractor, make_clip_input, score_clips
    from favchat.data.pipeline.trim import TrimConfig, face_runs, split_run
    from favchat.data.video import read_all_frames

    det = get_detector(detector_name)
    model = load_extractor(extractor_path)
    clips = 0
    for p in paths:
        frames = read_all_frames(p)  # (N, H, W, 3)
        h, w = frames.shape[1:3]
        boxes = []
        for f in frames:
            found = det.detect(f)
            boxes.append([found[0].x0 / w, found[0].y0 / h, found[0].x1 / w, found[0].y1 / h] if found else None)
        spans = [s for run in face_runs(list(range(len(frames))), boxes, len(frames)) for s in split_run(*run, TrimConfig())]
        inputs = []
        for a, b in spans:
            idx = clip_frame_indices(a, b, model.cfg)
            inputs.append(make_clip_input(frames[idx], [boxes[i] for i in idx], model.cfg))
        score_clips(model, inputs) if inputs else None
        clips += len(spans)
    return clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--detector", default="auto")
    args = ap.parse_args()

    import torch

    from favchat.data.faces import get_detector
    from favchat.data.pipeline.build import PipelineConfig, State, discover, run_video_stages
    from favchat.data.pipeline.extract import ExtractorConfig, FeatureExtractor, save_extractor
    from favchat.data.pipeline.filter import FilterConfig

    torch.set_num_threads(1)  # both sides on one thread: a fair, quieter comparison on a shared machine
    det_name = get_detector(args.detector).name
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_videos(tmp / "videos", args.videos, args.frames, args.size)
        ext = save_extractor(FeatureExtractor(ExtractorConfig()).eval(), tmp / "extractor.pt")
        cfg = PipelineConfig(out=str(tmp / "out"), filter=FilterConfig(detector=det_name), extractor=str(ext),
                             device="cpu", progress=False)
        items = discover([tmp / "videos"])
        get_detector(det_name).detect(np.zeros((64, 64, 3), np.uint8))  # load libraries outside the timers

        state = State(cfg.work)
        t0 = time.perf_counter()
        run_video_stages(cfg, items, state)
        fast_s = time.perf_counter() - t0
        fast_clips = sum(len(r["clips"]) for r in state.records["trim"].values())
        state.close()

        t0 = time.perf_counter()
        naive_clips = naive(paths, det_name, ext)
        naive_s = time.perf_counter() - t0

    fast_cpm, naive_cpm = 60 * fast_clips / fast_s, 60 * naive_clips / naive_s
    print(f"{args.videos} videos x {args.frames} frames at {args.size} px, detector {det_name}")
    print(f"pipeline (every 16th frame, downscaled, frames reused): {fast_clips} clips in {fast_s:.2f} s "
          f"= {fast_cpm:.1f} clips/min")
    print(f"naive (every frame decoded and detected):               {naive_clips} clips in {naive_s:.2f} s "
          f"= {naive_cpm:.1f} clips/min")
    print(f"speed-up: {fast_cpm / naive_cpm:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
