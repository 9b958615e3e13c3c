"""FaceSynth generation: determinism, label sets, text that reads back to the labels, splits, the CLI."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from favchat.cli import main as cli_main
from favchat.data.manifest import QA_TYPES, read_manifest
from favchat.data.synth import RENDERED, RENDERED_LABELS, SynthConfig, generate, render_clip
from favchat.data.synth.events import ACTIONS, COMPATIBLE, EMOTIONS, EXPRESSIONS, EYE_ACTIONS, LINKED_ACTION
from favchat.data.taxonomy import BY_NAME, GROUPS, contradicts, mentioned_labels
from favchat.data.video import probe, read_all_frames

SMALL = SynthConfig(seed=11, min_frames=16, max_frames=20, min_size=64, max_size=80)


def test_rendered_labels_cover_the_three_groups():
    assert len(RENDERED_LABELS) >= 30 and len(set(RENDERED_LABELS)) == len(RENDERED_LABELS)
    for g, names in RENDERED.items():
        assert all(BY_NAME[n].group == g for n in names)
    assert {g: len(v) for g, v in RENDERED.items()} == {"appearance": 22, "action": 13, "emotion": 7}
    # What the scripts can produce is exactly what the text may ask about.
    assert set(ACTIONS) | set(LINKED_ACTION.values()) == set(RENDERED["action"])
    assert set(EXPRESSIONS) == set(EMOTIONS) == set(RENDERED["emotion"])


def test_clip_is_a_pure_function_of_seed_and_index():
    a, b = render_clip(SMALL, 5), render_clip(SMALL, 5)
    assert np.array_equal(a.frames, b.frames) and a.clip == b.clip
    c = render_clip(SynthConfig(seed=12, min_frames=16, max_frames=20, min_size=64, max_size=80), 5)
    assert a.clip.summary != c.clip.summary or not np.array_equal(a.frames[:1], c.frames[:1])
    assert a.frames.dtype == np.uint8 and a.frames.shape[1] == a.frames.shape[2] == a.clip.meta["size"]
    assert 64 <= a.clip.meta["size"] <= 80 and 16 <= len(a.frames) <= 20


def test_labels_text_and_events_are_consistent():
    seen_types, seen_labels = set(), set()
    for i in range(40):
        r = render_clip(SMALL, i)
        c = r.clip
        have = {n for g in GROUPS for n in c.labels[g]}
        assert have <= set(RENDERED_LABELS) and len(c.labels["emotion"]) == 1
        assert not [(x, y) for x, y in combinations(sorted(have), 2) if contradicts(x, y)]
        # The summary reads back through the lexicon to exactly the clip's labels.
        pos, neg = mentioned_labels(c.summary)
        assert pos == have and not neg, (c.summary, pos ^ have, neg)
        for qa in c.qa:
            pos, neg = mentioned_labels(qa.answer)
            assert pos <= have and not (neg & have), (qa, pos - have, neg & have)
            seen_types.add(qa.type)
        yes_no = [q for q in c.qa if q.type == "yesno"]
        assert {q.answer.split(",")[0] for q in yes_no} == {"Yes", "No"}  # a true positive and a true negative
        for ev in c.events:
            assert 0 <= ev.start < ev.end <= c.frame_range[1] and ev.label in have
        free = list(r.script.events)
        assert all(p.end <= q.start for p, q in zip(free, free[1:], strict=False))  # free actions do not overlap
        emotion = c.labels["emotion"][0]
        assert {e.label for e in free} <= set(COMPATIBLE[emotion])  # e.g. nobody laughs while sad
        assert ("smile" in have) == (emotion == "happy") and ("frown" in have) == (emotion in ("anger", "disgust"))
        if r.identity.glasses == "sunglasses":
            assert not {e.label for e in free} & EYE_ACTIONS
        seen_labels |= have
    assert seen_types == set(QA_TYPES)
    assert len(seen_labels) >= 30


def test_forced_scripts_and_refusals():
    r = render_clip(SMALL, 3, emotion="anger", actions=("nod",))
    assert r.clip.labels["emotion"] == ["anger"] and set(r.clip.labels["action"]) == {"nod", "frown"}
    with pytest.raises(ValueError, match="cannot be rendered"):
        render_clip(SMALL, 3, emotion="sad", actions=("laugh",))
    with pytest.raises(ValueError, match="renders the emotions"):
        render_clip(SMALL, 3, emotion="contempt")
    with pytest.raises(ValueError, match="min_frames"):
        SynthConfig(min_frames=0)


def test_generate_writes_videos_and_a_resumable_manifest(tmp_path: Path):
    cfg = SynthConfig(seed=1, min_frames=16, max_frames=16, min_size=64, max_size=64, clips_per_identity=1)
    path = generate(cfg, 12, tmp_path, workers=1, progress=False)
    clips = read_manifest(path)  # validates every line and checks the videos exist
    assert [c.id for c in clips] == [f"fs-{i:06d}" for i in range(12)]
    info = probe(clips[0].video_path, count=True)
    assert info.num_frames == 16 and (info.width, info.height) == (64, 64)
    decoded = read_all_frames(clips[0].video_path).astype(int)
    err = np.abs(decoded - render_clip(cfg, 0).frames).mean()  # codec loss (and the removed sensor noise)
    assert err < 10 and err < np.abs(decoded - render_clip(cfg, 1).frames).mean() / 3
    # Held-out identities: no identity crosses splits, and all three splits are present.
    by_split = {s: {c.identity for c in clips if c.split == s} for s in ("train", "val", "test")}
    assert all(by_split.values())
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    lines = path.read_text().splitlines()
    generate(cfg, 12, tmp_path, workers=1, progress=False)  # rerun: nothing new
    assert path.read_text().splitlines() == lines


def test_the_same_seed_writes_the_same_files(tmp_path: Path):
    """Two parallel generations: the manifest in clip order, every video the same bytes (the codec is set
    to repeat itself), so a seeded dataset trains the same every time."""
    cfg = SynthConfig(seed=5, min_frames=16, max_frames=20, min_size=64, max_size=112)
    a, b = (generate(cfg, 10, tmp_path / name, workers=2, progress=False) for name in ("a", "b"))
    assert a.read_text() == b.read_text()
    assert [c.id for c in read_manifest(a)] == [f"fs-{i:06d}" for i in range(10)]
    for c in read_manifest(a):
        assert c.video_path.read_bytes() == (b.parent / c.video).read_bytes(), c.id


def test_cli_synth_with_preview(tmp_path: Path, capsys):
    out = tmp_path / "fs"
    rc = cli_main(["synth", "--n", "3", "--out", str(out), "--seed", "2", "--min_frames", "16", "--max_frames", "16",
                   "--min_size", "64", "--max_size", "64", "--preview", "--preview_clips", "2", "--workers", "2"])
    assert rc == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 3
    assert (out / "preview.png").stat().st_size > 1000
    assert json.loads((out / "facesynth_config.json").read_text())["seed"] == 2
    assert "3 clips" in capsys.readouterr().out
    assert cli_main(["synth", "--n", "3", "--out", str(out), "--seed", "3"]) == 2
    assert "another config" in capsys.readouterr().err
