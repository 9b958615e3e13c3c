"""The real data sets as users download them (docs/datasets.md), on miniature copies in their distributed layouts
(tests/set_miniatures.py): each ``favchat eval`` command and ``favchat data import-celebv`` end to end, frame
folders read as videos, and wrong roots stopped with the file and the problem before anything is written.

The eval commands run a tiny, randomly initialised FaVChat checkpoint: its answers are meaningless, so what is
checked is the reading, the protocol and the metrics' bookkeeping, not the accuracy."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import set_miniatures as mini
from favchat.cli import main
from favchat.data.manifest import read_manifest
from favchat.data.video import FrameFolder, VideoDecodeError, probe, read_all_frames, read_frames
from favchat.eval.benchmarks import DFEW_CLASSES, BenchmarkError
from favchat.eval.sets import dfew, emer, mafw, ytf

FAST = ["--max_new_tokens", "2", "--progress", "false"]


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


def test_manifests_and_generic_layouts_take_frame_folders(tmp_path):
    from favchat.eval.benchmarks import load_emotion_folder

    for k, cls in enumerate(DFEW_CLASSES):  # class folders holding frame folders (e.g. DFEW's clip_224x224, sorted)
        mini.frame_folder(tmp_path / "dfew" / cls / f"{k + 1:05d}", ["1.jpg", "2.jpg"], seed=k)
    samples = load_emotion_folder(tmp_path / "dfew", DFEW_CLASSES)
    assert len(samples) == 7 and all(s.video.path.is_dir() for s in samples)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "video": "dfew/happy/00001"}) + "\n")
    assert read_manifest(tmp_path / "m.jsonl")[0].video_path.is_dir()


# ---------------------------------------------------------------------------------------------
# DFEW and MAFW


def test_dfew_reader_variants(tmp_path):
    root = tmp_path / "DFEW"
    folds = mini.write_dfew(root, test_dir="test(single_labeled)")  # the README's spelling
    s = dfew.load_dfew(root, 2)
    assert [x.id for x in s] == ["00002"] and s[0].video.path == root / "Clip" / "original" / "00002.mp4"
    assert s[0].label == DFEW_CLASSES[folds[2][0][1] - 1]
    frames = dfew.load_dfew(root, 2, clips="clip_224x224")  # face-aligned frame folders, read as videos
    assert frames[0].video.path.is_dir() and probe(frames[0].video.path).num_frames == 4


def test_mafw_reader_variants(tmp_path):
    root = tmp_path / "MAFW"
    folds = mini.write_mafw(root, split_root="Train & Test Set/single/no_caption")  # the second copy's name
    assert [(s.id, s.label) for s in mafw.load_mafw(root, 1)] == [(n[:-4], lab) for n, lab in folds[1]]
    other = tmp_path / "MAFW2"
    mini.write_mafw(other)  # split/single/no_caption; a fold line without its label takes it from Labels/
    (other / "split/single/no_caption" / "set_3" / "test.txt").write_text("00005.mp4\n00006.mp4 SADNESS\n")
    assert [(s.id, s.label) for s in mafw.load_mafw(other, 3)] == [("00005", folds[3][0][1]), ("00006", "sadness")]


# ---------------------------------------------------------------------------------------------
# EMER and YouTube Faces: the forms the documented commands do not take


def test_eval_emer_v2_csv(checkpoint, tmp_path, openai_stub):
    files = mini.write_emer(tmp_path / "EMER")  # v1 (gt-eng.csv) is the documented command, run below
    stub = openai_stub(lambda body: '{"score": 6}')
    out = tmp_path / "emer-v2"
    assert main(["eval", "emer", "--annotations", str(files["v2"]), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--judge.base_url", stub.base_url, "--judge.model", "stub", *FAST]) == 0  # EMER/video/ found beside
    m = json.loads((out / "metrics.json").read_text())
    assert m["emer"]["clue_overlap"] == 6.0 and m["emer"]["label_overlap"] == 6.0 and "EMER v2 CSV" in m["inputs"]["data"]
    refs = [x.references[0] for x in emer.load_emer_csv(files["v2"], "Why?")]
    assert refs[0] == "In the video, she smiles; she is happy."
    assert [x.meta["emotions"] for x in emer.load_emer_csv(files["v1"], "Why?")] == ["happy", "angry"]


def test_ytf_pairs_from_the_mat_file_and_aligned_frames(tmp_path):
    root = tmp_path / "YTF"
    rows = mini.write_ytf(root)
    mat = root / "meta_data" / "meta_and_splits.mat"
    from_mat, from_txt = ytf.load_ytf(root, mat), ytf.load_ytf(root)
    assert [(p.first, p.second, p.same, p.fold) for p in from_mat] == [(p.first, p.second, p.same, p.fold)
                                                                        for p in from_txt]
    assert [(p.first.path, p.same) for p in from_txt] == [(root / "frame_images_DB" / a, bool(y))
                                                           for _, _, a, _, y in rows]
    aligned = ytf.load_ytf(root, images="aligned")[0].first.path
    assert aligned == root / "aligned_images_DB" / rows[0][2] and probe(aligned).num_frames == 4


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
    (["dfew", "--root", "empty"], r"empty/EmoLabel_DataSplit/.*it is empty"),
    (["dfew", "--root", "DFEW"], r"DFEW as distributed has 5 folds: pass --fold 1\.\.5, or --fold all"),
    (["dfew", "--root", "DFEW", "--fold", "6"], r"fold must be 1\.\.5 or 'all', got 6"),
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
    assert main(["eval", *argv, "--checkpoint", str(checkpoint), "--out", str(out), "--progress", "false"]) == 2
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
    (mafw_root / "split/single/no_caption" / "set_1" / "test.txt").write_text("00001.mp4 joy\n00002.mp4 3\n")
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
    assert main(["eval", "captions", "--annotations", str(dfec_root / "test.json"), "--videos_root", str(tmp_path / "x"),
                 "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 videos not found under" in err and "DFEW 1, MAFW 1, CAER 1" in err and "Pass --videos_root" in err
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
                 "--no_progress"]) == 0
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
    assert main(["data", "annotate", "--out", str(out), "--progress", "false"]) == 0
    assert main(["data", "qa", "--out", str(out), "--progress", "false"]) == 0
    done = {c.id: c for c in read_manifest(out / "manifest.jsonl")}
    assert set(done) == set(clips) and all(len(c.qa) == 4 and c.summary for c in done.values())
    assert "neutral at first, then happy" in done["_0tf2n3rlJU_0"].summary
    assert done["_0tf2n3rlJU_0"].events == b.events and done["kd1BQaIh8Rc_3"].meta["face_box"] == raw.meta["face_box"]
    assert done["kd1BQaIh8Rc_3"].video == raw.video and done["kd1BQaIh8Rc_3"].frame_range == (8, 20)

    # E1 from CelebV-HQ's labels, as the paper trains it (App. B.2).
    ext = tmp_path / "extractor"
    assert main(["data", "train-extractor", "--manifest", str(out / "labels.jsonl"), "--heads", "[E1]", "--out",
                 str(ext), "--epochs", "1", "--crop_size", "16", "--val_fraction", "0"]) == 0
    from favchat.data.pipeline.extract import load_extractor, make_clip_input, merged_labels, score_clips

    model = load_extractor(ext / "extractor.pt")
    assert list(model.heads) == ["E1"] and model.cfg.heads == ("E1",)
    crops = make_clip_input(mini.noise_frames(4), [[0.0, 0.0, 1.0, 1.0]] * 4, model.cfg)
    assert list(score_clips(model, [crops])[0]) == list(merged_labels(("E1",)))  # what extract gets: E1's labels
    report = json.loads((ext / "report.json").read_text())
    assert len(report["labels"]) == 83 and report["labels"]["black_hair"]["support"] == 1


def test_import_celebv_wrong_inputs(tmp_path, capsys):
    src = mini.write_celebv(tmp_path / "CelebV-HQ")
    dfec_root = tmp_path / "DFEC"
    mini.write_dfec(dfec_root)
    out = tmp_path / "out"
    base = ["data", "import-celebv", "--out", str(out), "--no_progress"]
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
    assert main(["data", "build", "--input", str(tmp_path / "videos"), "--out", str(out), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert "pass --extract.extractor PATH" in err and "favchat data train-extractor" in err and "favchat data import-celebv" in err
    assert not out.exists()
    assert main(["data", "build", "--input", str(tmp_path / "videos"), "--out", str(out), "--extract.extractor",
                 str(tmp_path / "nope.pt")]) == 2
    assert "extractor checkpoint not found" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------
# Every command of docs/datasets.md, as written


def documented_commands() -> list[list[str]]:
    """The ``favchat`` commands of docs/datasets.md's bash blocks, continuation lines joined, ``&&`` split."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv:
                    assert argv[0] == "favchat", argv
                    commands.append(argv[1:])
    return commands


def judge_reply(body):
    text = body["messages"][-1]["content"]
    if text.startswith("Extract the events"):
        return '["The person smiles."]'
    if "Events:" in text:
        return json.dumps(["entailment"] * len(re.findall(r"^\d+\. ", text, re.M)))
    return '{"score": 3}' if "from 0 to 5" in text else '{"score": 7}'


def test_documented_commands(checkpoint, tmp_path, monkeypatch, openai_stub):
    """Each command with the miniatures in place of /data/<set>, the tiny checkpoint in place of runs/stage3 and a
    local judge in place of the endpoint; only speed flags are added (fewer tokens and epochs, no progress bars)."""
    data = tmp_path / "data-root"
    dfew_folds = mini.write_dfew(data / "DFEW")
    mafw_folds = mini.write_mafw(data / "MAFW", per_fold=1)
    dfec_items = mini.write_dfec(data / "FEC-Bench")
    ytf_rows = mini.write_ytf(data / "YTF")
    mini.write_emer(data / "EMER")
    celebv = mini.write_celebv(data / "CelebV-HQ")
    celebv["videos"].rename(data / "CelebV-HQ" / "processed")
    for name in ("HMDB51", "FERV39K"):
        mini.tiny_video(data / name / "brush_hair" / f"{name}_0.avi")
    stub = openai_stub(judge_reply)
    monkeypatch.setenv("FAVCHAT_JUDGE_BASE_URL", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    monkeypatch.chdir(tmp_path)
    ran = []
    for argv in documented_commands():
        argv = [re.sub(r"(?<![\w.])/data/", f"{data}/", a) if "/data/" in a else str(checkpoint) if a == "runs/stage3"
                else stub.base_url if a.startswith("http://localhost") else a for a in argv]
        speed = {"eval": ["--max_new_tokens", "2", "--progress", "false"], "train-extractor": ["--epochs", "1"],
                 "import-celebv": ["--no_progress"]}
        argv += speed.get(argv[0], speed.get(argv[1], ["--progress", "false"]))
        assert main(argv) == 0, argv
        ran.append(" ".join(argv[:2]))
    assert ran == ["data import-celebv", "data annotate", "data qa", "data train-extractor", "data build",
                   "eval dfew", "eval dfew", "eval mafw", "eval captions", "eval ytf", "eval emer"]

    runs = tmp_path / "runs"
    m = json.loads((runs / "dfew-1" / "metrics.json").read_text())
    (clip, label), = dfew_folds[1]
    assert [(p["id"], p["label"]) for p in lines(runs / "dfew-1" / "predictions.jsonl")] == \
        [(f"{int(clip):05d}", DFEW_CLASSES[label - 1])]
    assert m["classification"]["n"] == 1 and "test(single-labeled)/set_k.csv" in m["inputs"]["data"]
    for name in ("dfew", "mafw"):  # --fold all: the five-fold mean
        c = json.loads((runs / name / "metrics.json").read_text())["classification"]
        assert [f["fold"] for f in c["folds"]] == [1, 2, 3, 4, 5] and all(f["n"] == 1 for f in c["folds"])
        assert c["n"] == 5 and c["uar"] == pytest.approx(np.mean([f["uar"] for f in c["folds"]]))
        assert c["war"] == pytest.approx(np.mean([f["war"] for f in c["folds"]]))
        assert all((runs / name / f"fold_{k}" / "confusion.png").exists() for k in range(1, 6))
        assert "the mean over the 5 folds' test sets" in (runs / name / "report.md").read_text()
        assert len(lines(runs / name / "descriptions.jsonl")) == 5  # each clip asked once
    assert lines(runs / "mafw" / "predictions.jsonl")[0]["label"] == mafw_folds[1][0][1]
    cap = json.loads((runs / "dfec" / "metrics.json").read_text())["captions"]
    assert cap["n"] == len(dfec_items) and cap["judge"]["summary"]["correctness"]["mean"] == 3.0
    assert cap["autodq"]["f1"] == 1.0
    v = json.loads((runs / "ytf" / "metrics.json").read_text())["verification"]
    assert v["pairs"] == len(ytf_rows) and v["folds"] == 2
    e = json.loads((runs / "emer" / "metrics.json").read_text())
    assert e["emer"]["clue_overlap"] == 7.0 and "EMER v1 CSV" in e["inputs"]["data"]
    assert len(read_manifest(tmp_path / "data" / "celebv" / "manifest.jsonl")) == 4
    assert (tmp_path / "extractor" / "extractor.pt").exists()
    s = json.loads((tmp_path / "data" / "others" / "stats.json").read_text())
    assert s["videos_in"] == 2 + len({n for r in ytf_rows for n in r[2:4]})  # the avi files and the frame folders
