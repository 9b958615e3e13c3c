"""Benchmark layouts and the zero-shot protocols on FaceSynth clips, with scripted predictors (no model)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from favchat.data.synth.generate import SynthConfig, render_clip
from favchat.data.video import probe, write_video
from favchat.eval import benchmarks, protocols
from favchat.eval.predict import Request, VideoRef, predict, read_predictions

CFG = SynthConfig(min_frames=8, max_frames=8, min_size=32, max_size=32)
# DFEW class -> the FaceSynth (taxonomy) emotion that renders it.
DFEW_TO_SYNTH = {"happy": "happy", "sad": "sad", "neutral": "neutral", "angry": "anger", "surprise": "surprise",
                 "disgust": "disgust", "fear": "fear"}


@pytest.fixture(scope="module")
def dfew_root(tmp_path_factory):
    """A DFEW-layout folder of FaceSynth emotion clips: root/<class>/<id>.mp4, two clips per class."""
    root = tmp_path_factory.mktemp("dfew")
    i = 0
    for cls, emo in DFEW_TO_SYNTH.items():
        for _ in range(2):
            r = render_clip(CFG, i, emotion=emo)
            write_video(root / cls / f"{r.clip.id}.mp4", r.frames, fps=CFG.fps)
            i += 1
    return root


class ScriptedPredictor:
    """Describes each clip with a scripted sentence (by file), and classifies by echoing the description it is given."""

    def __init__(self, descriptions):
        self.descriptions = descriptions
        self.calls = 0

    def __call__(self, video: VideoRef, question: str) -> str:
        self.calls += 1
        assert probe(video.path).num_frames == 8  # a real, decodable clip reached the predictor
        if question.startswith("Here is a detailed description"):
            return question.split("\n")[1]
        return self.descriptions[video.path.stem]


def test_emotion_folder_describe_then_classify(dfew_root, tmp_path):
    samples = benchmarks.load_emotion_folder(dfew_root, benchmarks.DFEW_CLASSES)
    assert len(samples) == 14 and {s.label for s in samples} == set(benchmarks.DFEW_CLASSES)
    rng = np.random.default_rng(0)
    words = {"happy": "joyful", "sad": "sorrowful", "neutral": "calm", "angry": "furious", "surprise": "astonished",
             "disgust": "revolted", "fear": "terrified"}
    plan, descriptions = {}, {}
    for s in samples:
        guess = s.label if rng.random() < 0.6 else str(rng.choice(benchmarks.DFEW_CLASSES))
        if s.id.endswith("000013"):
            guess = None  # a description that names no emotion
        plan[s.id] = guess or "unmatched"
        descriptions[s.video.path.stem] = (f"The person is not sad; the face looks {words[guess]}." if guess
                                           else "The person looks at the camera.")
    pred = ScriptedPredictor(descriptions)
    res = protocols.run_classification(pred, samples, benchmarks.DFEW_CLASSES, tmp_path)
    y_true, y_pred = [s.label for s in samples], [plan[s.id] for s in samples]
    with warnings.catch_warnings():  # sklearn warns that "unmatched" is no true class
        warnings.simplefilter("ignore", UserWarning)
        assert res["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert res["war"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert res["unmatched"] == 1 and (tmp_path / "confusion.png").stat().st_size > 1000
    lines = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 14 and all(x["label"] and x["description"] in x["question"] for x in lines)
    assert pred.calls == 28
    protocols.run_classification(pred, samples, benchmarks.DFEW_CLASSES, tmp_path)  # resumed: nothing asked again
    assert pred.calls == 28


def test_emotion_folder_errors(dfew_root, tmp_path):
    with pytest.raises(benchmarks.BenchmarkError, match=r"missing class folders \['contempt', 'anxiety', 'helplessness', 'disappointment'\]"):
        benchmarks.load_emotion_folder(dfew_root, benchmarks.MAFW_CLASSES)
    bad = tmp_path / "bad"
    for c in (*benchmarks.DFEW_CLASSES, "joy"):
        (bad / c).mkdir(parents=True)
    with pytest.raises(benchmarks.BenchmarkError, match=r"folders that are not classes: \['joy'\]"):
        benchmarks.load_emotion_folder(bad, benchmarks.DFEW_CLASSES)
    with pytest.raises(benchmarks.BenchmarkError, match="fold folder not found"):
        benchmarks.load_emotion_folder(dfew_root, benchmarks.DFEW_CLASSES, fold=3)
    csv = tmp_path / "set_1.csv"
    videos = sorted(dfew_root.glob("*/*.mp4"))
    csv.write_text("video_name,label\n" + f"{videos[0].parent.name}/{videos[0].stem},1\n"
                   + f"{videos[1].parent.name}/{videos[1].stem},joy\n" + "nope,2\n")
    with pytest.raises(benchmarks.BenchmarkError, match=r"(?s)line 3: unknown label 'joy'.*line 4: no video 'nope'"):
        benchmarks.load_emotion_folder(dfew_root, benchmarks.DFEW_CLASSES, labels_csv=csv)
    csv.write_text("video_name,label\n" + f"{videos[0].parent.name}/{videos[0].stem},7\n")
    (s,) = benchmarks.load_emotion_folder(dfew_root, benchmarks.DFEW_CLASSES, labels_csv=csv)
    assert s.label == "fear"  # DFEW's official 1-based order


def test_answer_to_class():
    assert benchmarks.answer_to_class("Anxious.", benchmarks.MAFW_CLASSES) == "anxiety"
    assert benchmarks.answer_to_class("Anxious.", benchmarks.DFEW_CLASSES) == "fear"  # through the taxonomy lexicon
    assert benchmarks.answer_to_class("She is not happy; she is sad.", benchmarks.DFEW_CLASSES) == "sad"
    assert benchmarks.answer_to_class("He is not angry.", benchmarks.DFEW_CLASSES) is None
    assert benchmarks.answer_to_class("Happiness", benchmarks.MAFW_CLASSES) == "happiness"
    assert benchmarks.answer_to_class("Not disappointed, just helpless.", benchmarks.MAFW_CLASSES) == "helplessness"


def test_caption_set_and_emer_layouts(dfew_root, tmp_path):
    video = next(dfew_root.glob("happy/*.mp4"))
    ann = tmp_path / "annotations.jsonl"
    ann.write_text(json.dumps({"id": "c0", "video": str(video), "captions": ["A smile.", "She smiles."]}) + "\n"
                   + json.dumps({"id": "c1", "video": "missing.mp4", "caption": "x"}) + "\n"
                   + json.dumps({"id": "c2", "video": str(video)}) + "\n")
    with pytest.raises(benchmarks.BenchmarkError, match=r"(?s)line 2: video not found.*line 3: needs a non-empty captions or caption"):
        benchmarks.load_caption_set(ann, "Describe.")
    ann.write_text(json.dumps({"id": "e0", "video": str(video), "reasoning": "She smiles: happy."}) + "\n")
    (s,) = benchmarks.load_emer(ann, "Why?")
    assert s.references == ["She smiles: happy."] and s.question == "Why?"


def test_verification_pairs_protocol(tmp_path):
    # Four identities (hair colour differs), two clips each; descriptions name the hair colour.
    hair = ["black hair", "blond hair", "gray hair", "brown hair"]
    frames = render_clip(CFG, 0).frames
    for p in range(4):
        for k in range(2):
            write_video(tmp_path / f"person_{p}" / f"{k}.mp4", frames, fps=CFG.fps)
    rows = ["split number, pair id, first name, second name, is same"]
    n = 0
    for fold in (1, 2):
        for p in range(4):
            n += 1
            rows.append(f"{fold}, {n}, person_{p}/0, person_{p}/1, 1")
            n += 1
            rows.append(f"{fold}, {n}, person_{p}/0, person_{(p + 1) % 4}/1, 0")
    (tmp_path / "splits.txt").write_text("\n".join(rows) + "\n")
    pairs = benchmarks.load_pairs(tmp_path)
    assert len(pairs) == 16 and sum(p.same for p in pairs) == 8

    def describe(video, question):
        return f"A person with {hair[int(video.path.parent.name[-1])]} and eyeglasses."

    res = protocols.run_verification(describe, pairs, tmp_path / "out")
    assert res["accuracy"] == 1.0 and res["folds"] == 2
    (tmp_path / "splits.txt").write_text("1, 1, person_0/0, nobody/3, 1\n")
    with pytest.raises(benchmarks.BenchmarkError, match="no video 'nobody/3'"):
        benchmarks.load_pairs(tmp_path)


def test_predictions_resume_and_errors(dfew_root, tmp_path):
    video = VideoRef(next(dfew_root.glob("sad/*.mp4")))
    calls = []

    def answer(v, q):
        calls.append(q)
        return q.upper()

    reqs = [Request(f"r{i}", video, f"q{i}") for i in range(3)]
    out = predict(answer, reqs[:2], tmp_path / "p.jsonl", progress=False)
    assert [out[f"r{i}"]["answer"] for i in range(2)] == ["Q0", "Q1"]
    out = predict(answer, reqs, tmp_path / "p.jsonl", progress=False)
    assert calls == ["q0", "q1", "q2"] and out["r2"]["answer"] == "Q2"
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: a prediction needs string fields"):
        read_predictions(tmp_path / "bad.jsonl")


def test_predict_asks_a_batching_predictor_in_batches_in_order(dfew_root, tmp_path):
    sad, happy = (VideoRef(next(dfew_root.glob(f"{c}/*.mp4"))) for c in ("sad", "happy"))

    class Batched:
        def __init__(self):
            self.batches = []

        def __call__(self, video, question):
            raise AssertionError("a predictor with answer_batch is asked in batches")

        def answer_batch(self, items):
            self.batches.append([(video.path.parent.name, q) for video, q in items])
            return [q.upper() for _, q in items]

    videos = [sad, sad, sad, happy, happy]
    reqs = [Request(f"r{i}", v, f"q{i}") for i, v in enumerate(videos)]
    pred = Batched()
    out = predict(pred, reqs, tmp_path / "p.jsonl", progress=False, batch_size=2)
    assert pred.batches == [[("sad", "q0"), ("sad", "q1")], [("sad", "q2"), ("happy", "q3")], [("happy", "q4")]]
    assert [out[f"r{i}"]["answer"] for i in range(5)] == [f"Q{i}" for i in range(5)]
    pred.answer_batch = lambda items: ["only one"]
    with pytest.raises(ValueError, match="gave 1 answers to 2 questions"):
        predict(pred, [Request("x1", sad, "a"), Request("x2", happy, "b")], tmp_path / "q.jsonl", progress=False)
    assert read_predictions(tmp_path / "q.jsonl") == {}


def test_frame_sweep_plot(dfew_root, tmp_path):
    video = VideoRef(next(dfew_root.glob("happy/*.mp4")))
    refs = ["a happy man with black hair smiles and nods twice", "a sad woman with blond hair frowns and looks down",
            "an old man with gray hair yawns then turns his head"]
    samples = [benchmarks.Sample(f"c{i}", video, f"Describe clip {i}.", references=[r]) for i, r in enumerate(refs)]

    def make(k):  # more frames, more of the reference's words
        return lambda v, q: " ".join(refs[int(q[-2])].split()[: max(1, k // 2)])

    res = protocols.run_frame_sweep(make, [2, 8, 16], samples, tmp_path, tokenizer="simple", progress=False)
    ciders = [r["cider"] for r in res["rows"]]
    assert [r["frames"] for r in res["rows"]] == [2, 8, 16] and ciders[0] < ciders[1] < ciders[2]
    assert (tmp_path / "frame_sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert re.search(r"frames_8", str(sorted(tmp_path.iterdir())))
