"""The manifest format: validating reader (line numbers and fields), idempotent crash-safe writer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from favchat.data.manifest import QA, Clip, Event, ManifestError, ManifestWriter, read_manifest


def _clip(i: int, video: str = "v.mp4") -> Clip:
    return Clip(id=f"c{i}", video=video, frame_range=(0, 16), fps=12.0, source="test", split="val",
                labels={"appearance": ["black_hair"], "action": ["nod"], "emotion": ["happy"]}, summary="s",
                qa=[QA("q?", "a.", "yesno"), QA("r?", "b.", "yesno", "unseen")], events=[Event("nod", 2, 9)],
                identity="p1", meta={"k": 1})


def _line(**over) -> str:
    d = _clip(0).to_json() | over
    return json.dumps({k: v for k, v in d.items() if v is not ...})


def test_round_trip_and_video_resolution(tmp_path: Path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    with ManifestWriter(tmp_path / "m.jsonl") as w:
        assert w.add(_clip(0)) and w.add(_clip(1))
    clips = read_manifest(tmp_path / "m.jsonl")
    assert [c.id for c in clips] == ["c0", "c1"]
    assert clips[0] == _clip(0) and clips[0].video_path == tmp_path / "v.mp4"
    assert read_manifest(tmp_path / "m.jsonl", split="train") == []
    # a QA pair's wording is written only where a writer knows it
    assert [set(q) for q in json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])["qa"]] == [
        {"question", "answer", "type"}, {"question", "answer", "type", "wording"}]


@pytest.mark.parametrize("bad_line, field, words", [
    ('{"id": "x", "video": ', "<json>", "malformed JSON"),
    (_line(video=...), "video", "missing required field"),
    (_line(labels={"appearance": ["purple_hair"]}), "labels.appearance", "unknown label 'purple_hair'"),
    (_line(labels={"emotion": ["smile"]}), "labels.emotion", "belongs to group 'action'"),
    (_line(split="dev"), "split", "must be one of"),
    (_line(frame_range=[5, 2]), "frame_range", "start < end"),
    (_line(qa=[{"question": "q"}]), "qa[0]", "'question' and 'answer'"),
    (_line(qa=[{"question": "q", "answer": "a", "wording": "heard"}]), "qa[0].wording", "must be one of"),
    (_line(events=[{"label": "nod", "start": 4, "end": 1}]), "events", "end: int > start"),
])
def test_reader_names_line_and_field(tmp_path: Path, bad_line: str, field: str, words: str):
    (tmp_path / "v.mp4").write_bytes(b"x")
    good = _line()
    (tmp_path / "m.jsonl").write_text(good + "\n\n" + bad_line + "\n")
    with pytest.raises(ManifestError) as ei:
        read_manifest(tmp_path / "m.jsonl")
    assert [(ln, f) for ln, f, _ in ei.value.problems] == [(3, field)]
    assert words in ei.value.problems[0][2] and f"m.jsonl:3: {field}" in str(ei.value)


def test_missing_video_and_duplicate_ids(tmp_path: Path):
    (tmp_path / "v.mp4").write_bytes(b"x")
    lines = [_line(), _line(id="c9", video="gone.mp4"), _line()]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as ei:
        read_manifest(tmp_path / "m.jsonl")
    probs = ei.value.problems
    assert probs[0][:2] == (2, "video") and "file not found" in probs[0][2] and "gone.mp4" in probs[0][2]
    assert probs[1][:2] == (3, "id") and "duplicate id 'c0' (first on line 1)" in probs[1][2]
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_writer_is_idempotent_across_reopen(tmp_path: Path):
    p = tmp_path / "m.jsonl"
    with ManifestWriter(p) as w:
        assert w.add_all([_clip(0), _clip(1)]) == 2
        assert not w.add(_clip(1))
    with ManifestWriter(p) as w:
        assert "c0" in w and not w.add(_clip(0)) and w.add(_clip(2))
    assert [c.id for c in read_manifest(p, check_videos=False)] == ["c0", "c1", "c2"]


def test_truncated_last_line_is_skipped_then_repaired(tmp_path: Path):
    p = tmp_path / "m.jsonl"
    with ManifestWriter(p) as w:
        w.add_all([_clip(0), _clip(1)])
    full = json.dumps(_clip(2).to_json())
    with open(p, "a") as f:
        f.write(full[: len(full) // 2])  # a write cut short
    assert [c.id for c in read_manifest(p, check_videos=False)] == ["c0", "c1"]
    with ManifestWriter(p) as w:  # cuts the partial line, then appends cleanly
        assert w.add(_clip(2))
    assert [c.id for c in read_manifest(p, check_videos=False)] == ["c0", "c1", "c2"]


_WRITER = """
import sys
from favchat.data.manifest import Clip, ManifestWriter
with ManifestWriter(sys.argv[1]) as w:
    for i in range(100000):
        w.add(Clip(id=f"c{i}", video="v.mp4", summary="x" * 2000))
        if i == 20:
            print("ready", flush=True)
"""


def test_writer_killed_mid_write_leaves_a_readable_file(tmp_path: Path):
    p = tmp_path / "m.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(p)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    clips = read_manifest(p, check_videos=False)
    assert len(clips) > 20 and [c.id for c in clips] == [f"c{i}" for i in range(len(clips))]
    assert all(c.summary == "x" * 2000 for c in clips)
    with ManifestWriter(p) as w:  # the next run resumes after the last complete line
        assert f"c{len(clips) - 1}" in w and w.add(Clip(id="after", video="v.mp4"))
    assert read_manifest(p, check_videos=False)[-1].id == "after"
