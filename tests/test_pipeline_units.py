"""Unit tests of the dataset pipeline's pure parts: sampling, trimming, label merging, reply validation,
the template writer, landmark motion, discovery and sharding."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from favchat.data.manifest import QA_TYPES
from favchat.data.pipeline.annotate import (
    AnnotateConfig,
    Annotator,
    ClipJob,
    parse_qa,
    parse_summary,
    template_qa,
    template_summary,
)
from favchat.data.pipeline.build import discover, format_table, merge_stats, shard_of
from favchat.data.pipeline.extract import (
    LANDMARK_DIM,
    MERGED_LABELS,
    ExtractorConfig,
    clip_frame_indices,
    face_crops,
    landmark_motion,
    merge_scores,
    nearest_boxes,
)
from favchat.data.pipeline.filter import FilterConfig, FilterResult, sample_positions
from favchat.data.pipeline.trim import TrimConfig, face_runs, split_run, trim_video
from favchat.data.taxonomy import EXTRACTORS, LABEL_NAMES, contradicts, mentioned_labels


def test_sample_positions_stride_and_cap():
    assert sample_positions(100, 16, 256) == [0, 16, 32, 48, 64, 80, 96]
    long = sample_positions(100_000, 16, 256)
    assert len(long) <= 256 and long[0] == 0 and long == sorted(set(long))


def test_filter_config_rejects_bad_values():
    with pytest.raises(ValueError, match="face_threshold"):
        FilterConfig(face_threshold=1.5)
    with pytest.raises(ValueError, match="detect_max_side"):
        FilterConfig(decode_max_side=128, detect_max_side=256)


def test_face_runs_and_split():
    box = [0.1, 0.1, 0.5, 0.5]
    sampled = list(range(0, 160, 16))
    boxes = [box, box, box, None, box, box, box, box, box, None]
    # Each frame takes its nearest sample's verdict: runs end at the midpoints between samples.
    assert face_runs(sampled, boxes, 150) == [(0, 41), (57, 137)]
    assert face_runs(sampled[:3], boxes[:3], 40) == [(0, 40)]  # to the end of the video
    every = [box if 10 <= i < 50 else None for i in range(60)]  # every frame sampled: exact
    assert face_runs(list(range(60)), every, 60) == [(10, 50)]
    cfg = TrimConfig(36, 600)
    assert split_run(0, 33, cfg) == []  # too short
    assert split_run(57, 137, cfg) == [(57, 137)]
    parts = split_run(0, 1300, cfg)  # 1300 frames -> 3 equal parts of <= 600
    assert len(parts) == 3 and parts[0][0] == 0 and parts[-1][1] == 1300
    assert all(36 <= b - a <= 600 for a, b in parts) and all(p[1] == q[0] for p, q in zip(parts, parts[1:], strict=False))


def test_trim_video_ids_and_rejected():
    box = [0.1, 0.1, 0.5, 0.5]
    fr = FilterResult("v1", "v1.mp4", True, sampled=[0, 16, 32, 48], boxes=[box] * 4, num_frames=60)
    assert trim_video(fr, TrimConfig()) == [{"id": "v1-c000", "frame_range": [0, 60]}]
    fr.kept = False
    assert trim_video(fr, TrimConfig()) == []


def test_merged_labels_cover_the_taxonomy_without_duplicates():
    assert (len(EXTRACTORS["E1"]), len(EXTRACTORS["E2"]), len(EXTRACTORS["E3"])) == (83, 42, 12)
    assert len(MERGED_LABELS) == len(set(MERGED_LABELS)) == 103
    assert set(MERGED_LABELS) == set(LABEL_NAMES)
    probs = {h: np.zeros(len(EXTRACTORS[h])) for h in EXTRACTORS}
    probs["E1"][EXTRACTORS["E1"].index("smile")] = 1.0  # smile is in E1 and E2: the merge averages
    probs["E3"][EXTRACTORS["E3"].index("frown")] = 0.8  # frown is in E1 and E3
    s = merge_scores(probs)
    assert s["smile"] == pytest.approx(0.5) and s["frown"] == pytest.approx(0.4) and s["happy"] == 0.0
    assert list(s) == list(MERGED_LABELS)


def test_clip_frame_indices_every_16th_and_capped():
    cfg = ExtractorConfig(max_frames=4)
    assert clip_frame_indices(0, 60, cfg) == [0, 16, 32, 48]
    assert clip_frame_indices(10, 60, cfg) == [16, 32, 48]  # the video's every-16th frames, not the clip's
    assert clip_frame_indices(33, 40, cfg) == [33]
    many = clip_frame_indices(0, 600, cfg)
    assert len(many) == 4 and many[0] == 0 and many[-1] == 592


def test_nearest_boxes_and_crops_use_a_fallback_box():
    a, b = [0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]
    got = nearest_boxes([0, 10, 30], [0, 16, 32], [a, None, b])
    assert got == [a, a, b]
    assert nearest_boxes([0], [0], [None]) == [None]
    frames = np.random.default_rng(0).integers(0, 255, (2, 40, 40, 3), dtype=np.uint8)
    crops = face_crops(frames, [a, None], 24)
    assert crops.shape == (2, 24, 24, 3) and crops.dtype == np.uint8
    with pytest.raises(ValueError, match="no face box"):
        face_crops(frames, [None, None], 24)


def test_landmark_motion_sees_local_motion_not_global():
    rng = np.random.default_rng(0)
    pts = np.repeat(rng.uniform(0.2, 0.8, (1, 478, 2)), 6, axis=0)  # (T, P, 2) a still face
    shifted = pts + np.linspace(0, 0.1, 6)[:, None, None]  # the whole face moves: no expression
    assert np.allclose(landmark_motion(shifted), 0.0, atol=1e-6)
    moving = pts.copy()
    moving[::2, 61:62, 1] += 0.05  # a lip corner twitches
    feats = landmark_motion(moving)
    assert feats.shape == (LANDMARK_DIM,) and feats[8] > 0  # lips region (5th) mean motion
    assert landmark_motion(pts[:1]).shape == (LANDMARK_DIM,)


def test_extractor_config_validation():
    assert ExtractorConfig().crop_size == 64 and ExtractorConfig(backbone="efficientnet-lite0").crop_size == 224
    with pytest.raises(ValueError, match="backbone"):
        ExtractorConfig(backbone="resnet")


# ---------------------------------------------------------------------------------------------
# Reply validation


def _qa_json(n: int = 4, **override) -> str:
    items = [{"question": f"Question {i}?", "answer": f"Answer {i}.", "type": QA_TYPES[i % len(QA_TYPES)]}
             for i in range(n)]
    items[0].update(override)
    return json.dumps({"qa": items})


def test_parse_qa_accepts_exact_schema_and_fences():
    assert len(parse_qa(_qa_json(), 4)) == 4
    assert len(parse_qa("```json\n" + _qa_json() + "\n```", 4)) == 4


@pytest.mark.parametrize("text,why", [
    ("not json at all", "not JSON"),
    (json.dumps([{"question": "a?", "answer": "b"}]), "exactly one key"),
    (_qa_json(3), "expected 4"),
    (_qa_json(type="opinion"), "type must be one of"),
    (_qa_json(question="No question mark"), "does not end"),
    (_qa_json(answer=""), "non-empty"),
    (json.dumps({"qa": [{"question": "Same?", "answer": "x", "type": "yesno"}] * 4}), "duplicate"),
    (json.dumps({"qa": [{"question": "Q?", "answer": "x"}] * 4}), "exactly the keys"),
])
def test_parse_qa_rejects_malformed(text, why):
    with pytest.raises(ValueError, match=why):
        parse_qa(text, 4)


def test_parse_summary_rules():
    cfg = AnnotateConfig(min_summary_words=8)
    feats = {"appearance": ["black_hair"], "action": ["smile"], "emotion": ["happy"]}
    good = "A person with black hair smiles warmly at the camera and looks happy throughout."
    assert parse_summary("  " + good + "\n", feats, cfg) == good
    with pytest.raises(ValueError, match="empty"):
        parse_summary("  ", feats, cfg)
    with pytest.raises(ValueError, match="too short"):
        parse_summary("A smiling person.", feats, cfg)
    with pytest.raises(ValueError, match="prose"):
        parse_summary('{"summary": "a person with black hair smiles and looks happy today"}', feats, cfg)
    with pytest.raises(ValueError, match="contradicts"):
        parse_summary("A person with blond hair smiles at the camera and looks happy throughout.", feats, cfg)
    lax = AnnotateConfig(min_summary_words=8, check_contradictions=False)
    assert parse_summary("A person with blond hair smiles at the camera and looks happy.", feats, lax)


def test_template_writer_is_consistent_with_the_features():
    feats = {"appearance": ["male", "black_hair", "eyeglasses"], "action": ["smile", "nod"], "emotion": ["happy"]}
    seen_negative = False
    for i in range(8):
        job = ClipJob(f"clip-{i}", "v.mp4", (0, 48), 12.0, feats)
        summary = template_summary(job)
        asserted, denied = mentioned_labels(summary)
        assert {"black_hair", "eyeglasses", "smile", "nod", "happy"} <= asserted
        assert not any(contradicts(a, b) for a in asserted for b in sum(feats.values(), []))
        qa = template_qa(job, summary, 4)
        assert len(qa) == 4 and all(q.type in QA_TYPES for q in qa)
        yn = [q for q in qa if q.type == "yesno"]
        assert len(yn) == 1
        if yn[0].answer.startswith("No"):
            seen_negative = True
            asked, _ = mentioned_labels(yn[0].question)
            assert any(contradicts(a, b) for a in asked for b in feats["appearance"])
    assert seen_negative  # about half the clips get a true-negative yes/no question
    empty = ClipJob("e", "v.mp4", (0, 48), 12.0, {"appearance": [], "action": [], "emotion": []})
    assert len(template_qa(empty, template_summary(empty), 4)) == 4


def test_annotator_run_respects_concurrency_and_yields_every_job():
    from favchat.chat_api import ChatAPIConfig, ChatAPIError

    ann = Annotator(AnnotateConfig(backend="api", api=ChatAPIConfig(base_url="http://127.0.0.1:9/v1", concurrency=3)))
    lock, live, peak = threading.Lock(), [0], [0]

    def work(job: ClipJob) -> str:
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.02)
        with lock:
            live[0] -= 1
        if job.id == "c3":
            raise ChatAPIError("gave up")
        return job.id.upper()

    jobs = [ClipJob(f"c{i}", "v", (0, 1), 1.0, {}) for i in range(10)]
    out = dict((j.id, r) for j, r in ann.run(jobs, work))
    assert set(out) == {j.id for j in jobs} and peak[0] == 3
    assert isinstance(out["c3"], ChatAPIError) and out["c5"] == "C5"


# ---------------------------------------------------------------------------------------------
# Discovery, sharding, table


def test_discover_ids_and_shards_are_deterministic(tmp_path):
    for rel in ("a/x.mp4", "b/x.mp4", "c.MOV", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    items = discover([tmp_path])
    assert [it.key for it in items if it.key.endswith("x.mp4")] and len(items) == 3  # .txt is not a video
    assert len({it.id for it in items}) == 3  # same stem in two folders: distinct ids
    assert discover([tmp_path]) == items
    shards = [shard_of(it.key, 4) for it in items]
    assert shards == [shard_of(it.key, 4) for it in discover([tmp_path])] and all(0 <= s < 4 for s in shards)
    with pytest.raises(FileNotFoundError):
        discover([tmp_path / "missing"])


def test_merge_stats_and_table():
    a = {"videos_in": 3, "kept": 2, "rejected": 1, "rejected_by_reason": {"unreadable": 1, "too_short": 0,
         "few_faces": 0}, "clips": 2, "labelled_clips": 2, "labels": 5, "distinct_labels": 4, "summaries": 2,
         "qa_pairs": 8, "clips_done": 2}
    s = merge_stats([a, a])
    assert s["videos_in"] == 6 and s["rejected_by_reason"]["unreadable"] == 2 and "distinct_labels" not in s
    s["distinct_labels"] = 4
    table = format_table(s)
    assert "videos in" in table and "unreadable" in table and "QA pairs" in table
