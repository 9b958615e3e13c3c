"""``favchat synth``: generate a FaceSynth data set (mp4 clips + manifest.jsonl) with a progress bar.

    favchat synth --n 1000 --out data/facesynth --seed 0 --workers 2 --preview
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate FaceSynth procedural facial videos with exact labels, summaries and QA",
        description="Generate N FaceSynth clips under OUT: videos/*.mp4 and manifest.jsonl (one line per clip "
                    "with labels by group, events, summary, QA pairs and a train/val/test split by held-out "
                    "identity). Deterministic by seed; rerunning skips clips already in the manifest.",
    )
    p.add_argument("--n", type=int, required=True, help="number of clips")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--min-frames", type=int, default=16)
    p.add_argument("--max-frames", type=int, default=48)
    p.add_argument("--min-size", type=int, default=64, help="smallest frame side in pixels")
    p.add_argument("--max-size", type=int, default=112, help="largest frame side in pixels")
    p.add_argument("--fps", type=float, default=12.0)
    p.add_argument("--clips-per-identity", type=int, default=4)
    p.add_argument("--camera-motion", type=float, default=1.0, help="0 still camera, 1 default drift and shake")
    p.add_argument("--preview", action="store_true", help="also write OUT/preview.png, a contact sheet of sample "
                                                         "frames with their labels")
    p.add_argument("--preview-clips", type=int, default=8, help="clips on the contact sheet")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    from favchat.data.manifest import read_manifest
    from favchat.data.synth.generate import SynthConfig, generate, label_counts, split_counts
    from favchat.data.video import read_all_frames

    cfg = SynthConfig(seed=args.seed, min_frames=args.min_frames, max_frames=args.max_frames,
                      min_size=args.min_size, max_size=args.max_size, fps=args.fps,
                      clips_per_identity=args.clips_per_identity, camera_motion=args.camera_motion)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "facesynth_config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != asdict(cfg):
        raise SystemExit(f"{out} holds FaceSynth clips made with another config ({cfg_path}); "
                         "use a new --out or the same options")
    cfg_path.write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    manifest = generate(cfg, args.n, out, workers=args.workers)
    clips = read_manifest(manifest)
    counts = label_counts(clips)
    print(f"{len(clips)} clips in {manifest}; splits {split_counts(clips)}; {len(counts)} labels in use")
    if args.preview:
        from favchat.data.synth.preview import contact_sheet

        ordered = sorted(clips, key=lambda c: c.id)  # workers finish out of order
        pick = ordered[:: max(1, len(ordered) // args.preview_clips)][: args.preview_clips]
        sheet = contact_sheet([(c, read_all_frames(c.video_path)) for c in pick], out / "preview.png")
        print(f"contact sheet: {sheet}")
    return 0
