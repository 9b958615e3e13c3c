"""The real data sets as users download them (docs/datasets.md), on miniature copies in their distributed layouts
(tests/set_miniatures.py): each ``favchat eval`` command and ``favchat data import-celebv`` end to end, frame
folders read as videos, and wrong roots stopped with the file and the problem before anything is written.

The eval commands run a tiny, randomly initialised FaVChat checkpoint: its answers are meaningless, so what is
checked is the reading, the protocol and the metrics' bookkeeping, not the accuracy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import set_miniatures as mini
from favchat.cli import main
from favchat.data.manifest import read_manifest
from favchat.data.video import FrameFolder, VideoDecodeError, probe, read_all_frames, read_frames
from favchat.eval.benchmarks import DFEW_CLASSES, BenchmarkError
from favchat.eval.sets import dfew, emer, mafw, ytf

FAST = ["--max-new-tokens", "2", "--no-progress"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

    path = tmp_path_factory.mktemp("tiny-untrained")
    cfg = FaVChatConfig.from_preset("tiny", num_general_frames=2, num_face_frames=2)
    FaVChatForConditionalGeneration(cfg).save_pretrained(path)
    FaVChatProcessor.from_config(cfg).save_pretrained(path)
    return path


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Frame folders are videos


def test_frame_folder_is_a_video(tmp_path):
    names = ["0.998.jpg", "0.999.jpg", "0.1000.jpg", "0.1001.jpg"]  # natural order crosses a digit boundary
    folder = mini.frame_folder(tmp_path / "Person_A" / "0", list(names))
    (folder / "Thumbs.db").write_text("not a frame")
    assert [f.name for f in FrameFolder(folder).files] == names
    info = probe(folder, folder_fps=30.0)
    assert (info.num_frames, info.fps, info.width, info.height) == (4, 30.0, 32, 32)
    frames = read_all_frames(folder)  # frame k is brightened by 8k: its mean rises with k
    assert frames.shape == (4, 32, 32, 3) and list(np.argsort(frames.mean((1, 2, 3)))) == [0, 1, 2, 3]
    assert read_frames(folder, [3, 0, 3], max_side=16).shape == (3, 16, 16, 3)
    with pytest.raises(VideoDecodeError, match=r"frames \[7\] requested, but the folder holds 4 frames"):
        read_frames(folder, [7])
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDecodeError, match=r"empty: a folder is read as a video of image frames .* holds none"):
        probe(tmp_path / "empty")


def test_processor_and_pipeline_read_frame_folders(tmp_path):
    from favchat import FaVChatConfig, FaVChatProcessor
    from favchat.data.pipeline.build import discover
    from favchat.data.pipeline.filter import FilterConfig, filter_video

    root = tmp_path / "frame_images_DB"
    mini.frame_folder(root / "Aaron_Eckhart" / "0", [f"0.{k}.jpg" for k in range(40, 80)])
    mini.tiny_video(root / "extra.mp4")
    proc = FaVChatProcessor.from_config(FaVChatConfig.from_preset("tiny"))
    loaded = proc.load_video(root / "Aaron_Eckhart" / "0", frame_range=(4, 20))
    assert loaded.general.shape[0] == proc.num_general_frames
    items = discover([root])
    assert [it.key for it in items] == ["Aaron_Eckhart/0", "extra.mp4"] and items[0].id.startswith("Aaron_Eckhart_0-")

    class NoFace:
        def detect(self, frame):
            return []

    res, _ = filter_video(items[0].path, items[0].id, FilterConfig(folder_fps=24.0), NoFace())
    assert (res.num_frames, res.fps, res.reason) == (40, 24.0, "few_faces")  # read, sampled and judged


# ---------------------------------------------------------------------------------------------
# DFEW and MAFW


def test_eval_dfew_as_distributed(checkpoint, tmp_path):
    root = tmp_path / "DFEW"
    folds = mini.write_dfew(root)
    out = tmp_path / "dfew1"
    assert main(["eval", "dfew", "--root", str(root), "--fold", "1", "--checkpoint", str(checkpoint),
                 "--out", str(out), *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    (clip, label), = folds[1]
    assert m["classification"]["n"] == 1 and "folds" not in m["classification"]
    pred = lines(out / "predictions.jsonl")
    assert [(p["id"], p["label"]) for p in pred] == [(f"{int(clip):05d}", DFEW_CLASSES[label - 1])]
    assert "EmoLabel_DataSplit/test(single-labeled)/set_k.csv" in m["inputs"]["data"]

    out = tmp_path / "dfew-all"  # the paper's protocol: the mean over the five folds' test sets
    argv = ["eval", "dfew", "--root", str(root), "--fold", "all", "--protocol", "direct", "--checkpoint",
            str(checkpoint), "--out", str(out), *FAST]
    assert main(argv) == 0
    c = json.loads((out / "metrics.json").read_text())["classification"]
    assert [f["fold"] for f in c["folds"]] == [1, 2, 3, 4, 5] and all(f["n"] == 1 for f in c["folds"])
    assert c["n"] == 5 and c["uar"] == pytest.approx(np.mean([f["uar"] for f in c["folds"]]))
    assert c["war"] == pytest.approx(np.mean([f["war"] for f in c["folds"]]))
    assert all((out / f"fold_{k}" / "confusion.png").exists() for k in range(1, 6))
    assert "the mean over the 5 folds' test sets" in (out / "report.md").read_text()
    assert len(lines(out / "predictions.jsonl")) == 5


def test_dfew_reader_variants(tmp_path):
    root = tmp_path / "DFEW"
    folds = mini.write_dfew(root, test_dir="test(single_labeled)")  # the README's spelling
    s = dfew.load_dfew(root, 2)
    assert [x.id for x in s] == ["00002"] and s[0].video.path == root / "Clip" / "original" / "00002.mp4"
    assert s[0].label == DFEW_CLASSES[folds[2][0][1] - 1]
    frames = dfew.load_dfew(root, 2, clips="clip_224x224")  # face-aligned frame folders, read as videos
    assert frames[0].video.path.is_dir() and probe(frames[0].video.path).num_frames == 4


def test_eval_mafw_as_distributed(checkpoint, tmp_path):
    root = tmp_path / "MAFW"
    folds = mini.write_mafw(root, split_root="Train & Test Set/single/no_caption")  # the second copy's name
    out = tmp_path / "mafw1"
    assert main(["eval", "mafw", "--root", str(root), "--fold", "1", "--protocol", "direct", "--checkpoint",
                 str(checkpoint), "--out", str(out), *FAST]) == 0
    pred = lines(out / "predictions.jsonl")
    assert [(p["id"], p["label"]) for p in pred] == [(n[:-4], lab) for n, lab in folds[1]]
    assert json.loads((out / "metrics.json").read_text())["classification"]["classes"][3] == "happiness"
    other = tmp_path / "MAFW2"
    mini.write_mafw(other)  # split/single/no_caption; a fold line without its label takes it from Labels/
    (other / "split/single/no_caption/set_3/test.txt").write_text("00005.mp4\n00006.mp4 SADNESS\n")
    assert [(s.id, s.label) for s in mafw.load_mafw(other, 3)] == [("00005", folds[3][0][1]), ("00006", "sadness")]


# ---------------------------------------------------------------------------------------------
# DFEC, EMER, YouTube Faces


def test_eval_dfec_test_json(checkpoint, tmp_path):
    root = tmp_path / "FEC-Bench"
    items = mini.write_dfec(root)
    out = tmp_path / "dfec"
    assert main(["eval", "captions", "--annotations", str(root / "test.json"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--tokenizer", "simple", *FAST]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["captions"]["n"] == 3 and m["captions"]["cider"] >= 0.0 and "DFEC test.json" in m["inputs"]["data"]
    assert sorted(p["id"] for p in lines(out / "caption_predictions.jsonl")) == [str(d["id"]) for d in items]


def test_eval_emer_both_csv_forms(checkpoint, tmp_path, openai_stub):
    files = mini.write_emer(tmp_path / "EMER")
    stub = openai_stub(lambda body: '{"score": 6}')
    for version in ("v1", "v2"):
        out = tmp_path / f"emer-{version}"
        videos = ["--videos", str(files["videos"])] if version == "v1" else []  # v2: EMER/video/ found by itself
        assert main(["eval", "emer", "--annotations", str(files[version]), *videos, "--checkpoint", str(checkpoint), "--out", str(out), "--judge-base-url", stub.base_url,
                     "--judge-model", "stub", *FAST]) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert m["emer"]["clue_overlap"] == 6.0 and m["emer"]["label_overlap"] == 6.0
        assert f"EMER {version} CSV" in m["inputs"]["data"]
    refs = [x.references[0] for x in emer.load_emer_csv(files["v2"], "Why?", files["videos"])]
    assert refs[0] == "In the video, she smiles; she is happy."


def test_eval_ytf_frame_folders_and_both_pair_files(checkpoint, tmp_path):
    root = tmp_path / "YTF"
    rows = mini.write_ytf(root)
    out = tmp_path / "ytf"
    base = ["eval", "ytf", "--root", str(root), "--checkpoint", str(checkpoint), "--out", str(out), *FAST]
    assert main(base) == 0  # splits.txt, frame_images_DB
    v = json.loads((out / "metrics.json").read_text())["verification"]
    assert v["pairs"] == len(rows) == 8 and v["folds"] == 2
    described = len(lines(out / "descriptions.jsonl"))
    assert described == len({name for r in rows for name in r[2:4]})  # each frame folder described once
    from_mat = ytf.load_ytf(root, root / "meta_data" / "meta_and_splits.mat")
    from_txt = ytf.load_ytf(root)
    assert [(p.first, p.second, p.same, p.fold) for p in from_mat] == [(p.first, p.second, p.same, p.fold)
                                                                        for p in from_txt]
    assert main([*base, "--pairs", str(root / "meta_data" / "meta_and_splits.mat")]) == 0
    assert len(lines(out / "descriptions.jsonl")) == described  # the same videos: resumed, none asked again
    aligned = ytf.load_ytf(root, images="aligned")
    assert aligned[0].first.path == root / "aligned_images_DB" / rows[0][2]


# ---------------------------------------------------------------------------------------------
# Wrong roots and files stop before anything is written


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    mini.write_dfew(base / "DFEW")
    mini.write_mafw(base / "MAFW")
    mini.write_ytf(base / "YTF")
    mini.write_dfec(base / "DFEC")
    (base / "empty").mkdir()
    return base


@pytest.mark.parametrize("argv, expected", [
    (["dfew", "--root", "MAFW", "--fold", "1"],
     r"expected DFEW's label folder .*MAFW/EmoLabel_DataSplit/test\(single-labeled\)/set_1\.csv.* "
     r"\(it looks like a MAFW folder: it has Labels/single_label\.txt\)"),
    (["dfew", "--root", "empty", "--fold", "1"], r"empty/EmoLabel_DataSplit/.*it is empty"),
    (["dfew", "--root", "DFEW"], r"DFEW as distributed has 5 folds: pass --fold 1\.\.5, or --fold all"),
    (["dfew", "--root", "DFEW", "--fold", "6"], r"fold must be 1\.\.5 or 'all', got '6'"),
    (["mafw", "--root", "DFEW", "--fold", "2"],
     r"expected MAFW's fold lists .*DFEW/split/single/no_caption/set_2/test\.txt.*looks like a DFEW folder"),
    (["mafw", "--root", "empty", "--fold", "1"], r"expected MAFW's fold lists .*it is empty"),
    (["ytf", "--root", "DFEW"], r"expected YouTube Faces' frame folders in .*DFEW/frame_images_DB or "
                                r".*looks like a DFEW folder"),
    (["ytf", "--root", "empty"], r"expected YouTube Faces' frame folders .*it is empty"),
    (["captions", "--annotations", "DFEW/EmoLabel_DataSplit/test(single-labeled)/set_1.csv"],
     r"set_1\.csv.*malformed JSON"),
])
def test_eval_wrong_roots(sets, tmp_path, capsys, argv, expected, checkpoint):
    argv = [str(sets / a) if a in ("MAFW", "DFEW", "empty", "YTF") or "/" in a else a for a in argv]
    out = tmp_path / "out"
    assert main(["eval", *argv, "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(expected, err, re.S), err
    assert not out.exists()  # nothing written


def test_eval_bad_files_name_the_line(sets, tmp_path, capsys, checkpoint):
    root = tmp_path / "DFEW"
    mini.write_dfew(root)
    csv = root / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    csv.write_text("video_name,label\n1,8\n2,happy\n")
    out = tmp_path / "out"
    assert main(["eval", "dfew", "--root", str(root), "--fold", "1", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"2 problem(s) in {csv}" in err and "line 2: unknown label '8' (DFEW's labels are 1..7: 1=happy" in err
    assert "line 3: unknown label 'happy'" in err and not out.exists()
    mafw_root = tmp_path / "MAFW"
    mini.write_mafw(mafw_root)
    (mafw_root / "split/single/no_caption/set_1/test.txt").write_text("00001.mp4 joy\n00002.mp4 3\n")
    with pytest.raises(BenchmarkError, match=r"(?s)line 1: unknown label 'joy'.*line 2: numeric label '3'"):
        mafw.load_mafw(mafw_root, 1)
    emer_csv = tmp_path / "other.csv"
    emer_csv.write_text("video,label\n1,2\n")
    with pytest.raises(BenchmarkError, match=r"expected EMER's columns 'names,emotions,subtitles,reasons'.*found "
                                             r"\['video', 'label'\]"):
        emer.load_emer_csv(emer_csv, "Why?")
    dfec_root = tmp_path / "DFEC"
    mini.write_dfec(dfec_root)
    out = tmp_path / "out2"
    assert main(["eval", "captions", "--annotations", str(dfec_root / "test.json"), "--videos-root", str(tmp_path / "x"),
                 "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 videos not found under" in err and "DFEW 1, MAFW 1, CAER 1" in err and "Pass --videos-root" in err
    assert not out.exists()
    (tmp_path / "celebv.json").write_text(json.dumps({"meta_info": {}, "clips": {}}))
    assert main(["eval", "captions", "--annotations", str(tmp_path / "celebv.json"), "--checkpoint", str(checkpoint),
                 "--out", str(out)]) == 2
    assert "expected DFEC's test.json, a JSON array of {id, video, caption}; found a JSON object with keys " \
           "meta_info, clips (CelebV-HQ's celebvhq_info.json?)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# CelebV-HQ into the pipeline


def test_import_celebv_then_summaries_qa_and_e1(tmp_path, capsys):
    from favchat.data.celebv import taxonomy_label

    assert [taxonomy_label(n, g) for n, g in (("Blurry", "appearance"), ("blonde_hair", "appearance"),
                                              ("5_o'clock_shadow", "appearance"), ("Sadness", "emotion"),
                                              ("sigh", "action"), ("purple_hair", "appearance"))] == \
        ["blurry", "blond_hair", "5_o_clock_shadow", "sad", "sigh", None]
    src = mini.write_celebv(tmp_path / "CelebV-HQ", readme_casing=True)
    out = tmp_path / "celebv"
    assert main(["data", "import-celebv", "--info", str(src["info"]), "--videos", str(src["videos"]), "--out", str(out),
                 "--no-progress"]) == 0
    assert "imported 4 of 5 clips" in capsys.readouterr().out
    assert (out / "missing_videos.txt").read_text() == "zzMissing00_0\n"
    clips = {c.id: c for c in read_manifest(out / "labels.jsonl")}
    a, b, raw = clips["M2Ohb0FAaJU_1"], clips["_0tf2n3rlJU_0"], clips["kd1BQaIh8Rc_3"]
    assert a.labels == {"appearance": ["male", "black_hair", "5_o_clock_shadow"], "action": ["nod", "talk"],
                        "emotion": ["neutral"]}
    assert a.frame_range == (0, 36) and a.meta["face_box"] == [0.0, 0.0, 1.0, 1.0] and a.source == "celebv-hq"
    assert "blond_hair" in b.labels["appearance"] and "sigh" in b.labels["action"]
    assert b.labels["emotion"] == ["neutral", "happy"]
    assert [(e.label, e.start, e.end) for e in b.events] == [("neutral", 0, 2), ("happy", 10, 26)]  # 8 fps
    assert raw.frame_range == (8, 20) and raw.meta["face_box"] == [0.25, 0.1, 0.75, 0.8]  # seconds 1.0-2.5
    assert raw.labels["emotion"] == ["sad"] and clips["kd1BQaIh8Rc_4"].frame_range == (24, 32)

    # The rest of the pipeline, exactly as on extracted labels.
    assert main(["data", "annotate", "--out", str(out), "--no-progress"]) == 0
    assert main(["data", "qa", "--out", str(out), "--no-progress"]) == 0
    done = {c.id: c for c in read_manifest(out / "manifest.jsonl")}
    assert set(done) == set(clips) and all(len(c.qa) == 4 and c.summary for c in done.values())
    assert "neutral at first, then happy" in done["_0tf2n3rlJU_0"].summary
    assert done["_0tf2n3rlJU_0"].events == b.events and done["kd1BQaIh8Rc_3"].meta["face_box"] == raw.meta["face_box"]
    assert done["kd1BQaIh8Rc_3"].video == raw.video and done["kd1BQaIh8Rc_3"].frame_range == (8, 20)

    # E1 from CelebV-HQ's labels, as the paper trains it (App. B.2).
    ext = tmp_path / "extractor"
    assert main(["data", "train-extractor", "--manifest", str(out / "labels.jsonl"), "--heads", "E1", "--out",
                 str(ext), "--epochs", "1", "--crop-size", "16", "--val-fraction", "0"]) == 0
    from favchat.data.pipeline.extract import load_extractor

    model = load_extractor(ext / "extractor.pt")
    assert list(model.heads) == ["E1"] and model.cfg.heads == ("E1",)
    report = json.loads((ext / "report.json").read_text())
    assert len(report["labels"]) == 83 and report["labels"]["black_hair"]["support"] == 1


def test_import_celebv_wrong_inputs(tmp_path, capsys):
    src = mini.write_celebv(tmp_path / "CelebV-HQ")
    dfec_root = tmp_path / "DFEC"
    mini.write_dfec(dfec_root)
    out = tmp_path / "out"
    base = ["data", "import-celebv", "--out", str(out), "--no-progress"]
    assert main([*base, "--info", str(dfec_root / "test.json"), "--videos", str(src["videos"])]) == 2
    assert "expected CelebV-HQ's celebvhq_info.json, an object with 'meta_info' and 'clips'; found a JSON list " \
           "of 3 items (DFEC's test.json?)" in capsys.readouterr().err
    assert main([*base, "--info", str(src["info"]), "--videos", str(dfec_root)]) == 2
    err = capsys.readouterr().err
    assert "none of the 5 clips" in err and "looked for <clip id>.mp4, e.g. M2Ohb0FAaJU_1.mp4" in err
    assert "it holds CAER/, DFEW/, MAFW/, test.json" in err
    info = json.loads(src["info"].read_text())
    info["clips"]["kd1BQaIh8Rc_3"]["attributes"]["emotion"]["labels"] = "joy"
    info["clips"]["M2Ohb0FAaJU_1"]["attributes"]["action"] = [0, 1]
    src["info"].write_text(json.dumps(info))
    assert main([*base, "--info", str(src["info"]), "--videos", str(src["videos"])]) == 2
    err = capsys.readouterr().err
    assert f"2 problem(s) in {src['info']}" in err and "clips['kd1BQaIh8Rc_3'].attributes.emotion: unknown emotion 'joy'" in err
    assert "clips['M2Ohb0FAaJU_1'].attributes.action: expected 35 flags 0/1" in err
    assert not out.exists()


def test_build_without_extractor_stops_before_any_work(tmp_path, capsys):
    mini.tiny_video(tmp_path / "videos" / "a.mp4")
    out = tmp_path / "out"
    assert main(["data", "build", "--input", str(tmp_path / "videos"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pass --extractor PATH" in err and "favchat data train-extractor" in err and "favchat data import-celebv" in err
    assert not out.exists()
    assert main(["data", "build", "--input", str(tmp_path / "videos"), "--out", str(out), "--extractor",
                 str(tmp_path / "nope.pt")]) == 2
    assert "extractor checkpoint not found" in capsys.readouterr().err and not out.exists()
