"""FaceSynth generation: clip ``i`` of seed ``s`` is a pure function of ``(s, i)``, written as an mp4 plus one
manifest line.

Identities, scenes and scripts draw from independent seeded streams (``SeedSequence(seed, spawn_key)``),
so clip ``i`` is the same whatever ``n``, worker count or order produced it; a rerun skips the ids its
manifest already holds. Clip ``i`` belongs to identity ``i // clips_per_identity``, and identities are
split train/val/test in blocks of ten (8/1/1), so val and test faces never appear in training.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from favchat.data.manifest import SPLITS, Clip, ManifestWriter
from favchat.data.synth.events import Script, face_states, sample_script
from favchat.data.synth.identity import Identity, sample_identity
from favchat.data.synth.render import Renderer, make_scene
from favchat.data.synth.text import make_qa, summarise
from favchat.data.taxonomy import GROUPS, LABELS_BY_GROUP

# Within each block of ten identities: which split each position goes to (8 train, 1 val, 1 test).
# val and test come early so that even a handful of identities covers all three splits.
_SPLIT_PATTERN = ("train", "val", "test", "train", "train", "train", "train", "train", "train", "train")


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Sizes are in pixels (square frames), lengths in frames."""

    seed: int = 0
    """Data set seed: the same seed gives the same clips."""
    min_frames: int = 16
    """Shortest clip, in frames."""
    max_frames: int = 48
    """Longest clip, in frames."""
    min_size: int = 64
    """Smallest frame side, in pixels."""
    max_size: int = 112
    """Largest frame side, in pixels."""
    fps: float = 12.0
    """Frames per second of the written clips."""
    clips_per_identity: int = 4
    """Clips of each synthetic identity (identities are split between train, val and test)."""
    camera_motion: float = 1.0
    """0: a still camera; 1: the default drift and shake."""
    crf: int = 20
    """H.264 quality of the written clips (lower: better)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if not 32 <= self.min_size <= self.max_size:
            raise ValueError(f"need 32 <= min_size <= max_size (pixels), got {self.min_size}, {self.max_size}")
        if self.clips_per_identity < 1 or self.fps <= 0 or self.camera_motion < 0:
            raise ValueError("clips_per_identity must be >= 1, fps > 0 and camera_motion >= 0")


@dataclass
class Rendered:
    """One generated clip: its manifest record and its frames (T, H, W, 3) uint8 RGB."""

    clip: Clip
    frames: np.ndarray
    script: Script
    identity: Identity
    landmarks: list[dict[str, tuple[float, ...]]]  # per frame, see Renderer.landmarks


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def clip_id(i: int) -> str:
    return f"fs-{i:06d}"


def identity_of(cfg: SynthConfig, i: int) -> int:
    return i // cfg.clips_per_identity


def split_of_identity(j: int) -> str:
    return _SPLIT_PATTERN[j % len(_SPLIT_PATTERN)]


def get_identity(cfg: SynthConfig, j: int) -> Identity:
    return sample_identity(_rng(cfg.seed, 0, j), f"fs-id-{j:05d}")


def _camera_path(rng: np.random.Generator, n: int, strength: float) -> np.ndarray:
    """Per-frame head offsets (fractions of the frame): a slow drift plus a little shake.  (n, 2)"""
    drift = rng.uniform(-0.03, 0.03, 2) * np.linspace(0, 1, n)[:, None]
    shake = rng.normal(0, 0.004, (n, 2))
    return strength * (drift + shake)


def render_clip(cfg: SynthConfig, i: int, emotion: str | None = None, actions: tuple[str, ...] | None = None,
                emotion_start: int | None = None) -> Rendered:
    """Clip ``i``: identity, scene, script, frames, summary and QA. ``emotion``/``actions``/``emotion_start``
    force the script."""
    j = identity_of(cfg, i)
    ident = get_identity(cfg, j)
    rng = _rng(cfg.seed, 1, i)
    n_frames = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    size = int(rng.integers(cfg.min_size // 2, cfg.max_size // 2 + 1)) * 2  # even: H.264 needs it
    scene = make_scene(rng, size)
    script = sample_script(rng, ident, n_frames, emotion=emotion, actions=actions, emotion_start=emotion_start)
    states = face_states(script, rng)
    offsets = _camera_path(rng, n_frames, cfg.camera_motion)
    renderer = Renderer(ident, scene, rng)
    offs = [(float(o[0]), float(o[1])) for o in offsets]
    frames = np.stack([renderer.render(st, o) for st, o in zip(states, offs, strict=True)])  # (T, S, S, 3)
    labels = {
        "appearance": [n for n in LABELS_BY_GROUP["appearance"] if n in set(ident.labels())],
        "action": [n for n in LABELS_BY_GROUP["action"] if n in set(script.action_labels)],
        "emotion": [script.emotion],
    }
    text_rng = _rng(cfg.seed, 2, i)
    free = list(script.events)
    summary = summarise(labels, free, script.emotion_start, n_frames, text_rng)
    all_events = script.all_events()
    qa = make_qa(labels, free, all_events, n_frames, cfg.fps, summary, text_rng)
    cid = clip_id(i)
    clip = Clip(
        id=cid, video=f"videos/{cid}.mp4", frame_range=(0, n_frames), fps=cfg.fps, source="facesynth",
        split=split_of_identity(j), labels=labels, summary=summary, qa=qa, events=all_events, identity=ident.name,
        meta={"size": size, "seed": cfg.seed, "index": i, "emotion_start": script.emotion_start,
              "wink_side": ["left", "right"][script.wink_side]},
    )
    return Rendered(clip, frames, script, ident, [renderer.landmarks(st, o) for st, o in zip(states, offs, strict=True)])


def _work(args: tuple[SynthConfig, int, str]) -> dict:
    from favchat.data.video import write_video

    cfg, i, out = args
    r = render_clip(cfg, i)
    write_video(Path(out) / r.clip.video, r.frames, fps=cfg.fps, crf=cfg.crf)
    return r.clip.to_json()


def generate(cfg: SynthConfig, n: int, out: str | Path, workers: int = 1, progress: bool = True) -> Path:
    """Write ``n`` clips (ids ``fs-000000`` ...) under ``out``: ``videos/*.mp4`` and ``manifest.jsonl``.

    Clips already in the manifest are skipped, so an interrupted run resumes where it stopped.
    Returns the manifest path.
    """
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.jsonl"
    with ManifestWriter(path) as writer:
        todo = [i for i in range(n) if clip_id(i) not in writer]
        jobs = [(cfg, i, str(out)) for i in todo]
        bar = tqdm(total=n, initial=n - len(todo), desc="facesynth", unit="clip", disable=not progress)
        if workers == 1:
            for rec in map(_work, jobs):
                writer.add(rec)
                bar.update()
        else:
            # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy mid-lock.
            with mp.get_context("spawn").Pool(workers) as pool:
                # In order: the manifest lists the clips by index however the workers' timing falls, so a
                # seeded dataset reads the same (and trains the same) every time.
                for rec in pool.imap(_work, jobs, chunksize=max(1, min(16, len(jobs) // (workers * 8)))):
                    writer.add(rec)
                    bar.update()
        bar.close()
    return path


def split_counts(clips: list[Clip]) -> dict[str, int]:
    return {s: sum(c.split == s for c in clips) for s in SPLITS}


def label_counts(clips: list[Clip]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in clips:
        for g in GROUPS:
            for n in c.labels[g]:
                counts[n] = counts.get(n, 0) + 1
    return counts
