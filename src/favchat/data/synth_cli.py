"""``favchat synth``: generate a FaceSynth data set (mp4 clips + manifest.jsonl) with a progress bar.

    favchat synth --n 1000 --out data/facesynth --seed 0 --workers 2 --preview
"""

from __future__ import annotations

from favchat.cli import CommandError
from favchat.data.synth.generate import SynthConfig


def synth(config: SynthConfig, out: str, n: int, workers: int = 1, preview: bool = False,
          preview_clips: int = 8) -> int:
    """Generate FaceSynth procedural facial videos with exact labels, summaries and QA.

    Writes N clips under OUT: videos/*.mp4 and manifest.jsonl (one line per clip with labels by group, events,
    summary, QA pairs and a train/val/test split by held-out identity). Deterministic by seed; rerunning skips
    clips already in the manifest.

    Args:
        out: Output folder.
        n: Number of clips.
        workers: Worker processes.
        preview: Also write OUT/preview.png, a contact sheet of sample frames with their labels.
        preview_clips: Clips on the contact sheet.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from favchat.data.manifest import read_manifest
    from favchat.data.synth.generate import generate, label_counts, split_counts
    from favchat.data.video import read_all_frames

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / "facesynth_config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != asdict(config):
        raise CommandError(f"{folder} holds FaceSynth clips made with another config ({cfg_path}); "
                           "use a new --out or the same options")
    cfg_path.write_text(json.dumps(asdict(config), indent=2) + "\n")
    manifest = generate(config, n, folder, workers=workers)
    clips = read_manifest(manifest)
    counts = label_counts(clips)
    print(f"{len(clips)} clips in {manifest}; splits {split_counts(clips)}; {len(counts)} labels in use")
    if preview:
        from favchat.data.synth.preview import contact_sheet

        ordered = sorted(clips, key=lambda c: c.id)  # workers finish out of order
        pick = ordered[:: max(1, len(ordered) // preview_clips)][:preview_clips]
        sheet = contact_sheet([(c, read_all_frames(c.video_path)) for c in pick], folder / "preview.png")
        print(f"contact sheet: {sheet}")
    return 0
