"""``favchat eval`` with a real FaVChat checkpoint: the tiny preset, randomly initialised and saved with
``save_pretrained``. The model is UNTRAINED, so its answers (and hence the scores) are meaningless: these
tests check the plumbing from checkpoint to report, not the numbers."""

from __future__ import annotations

import json

import pytest
import torch

from favchat.cli import main
from favchat.data.synth.generate import SynthConfig, generate, render_clip
from favchat.data.video import write_video
from favchat.eval.benchmarks import DFEW_CLASSES

CFG = SynthConfig(min_frames=8, max_frames=8, min_size=32, max_size=32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor

    path = tmp_path_factory.mktemp("tiny-untrained")
    cfg = FaVChatConfig.from_preset("tiny")
    FaVChatForConditionalGeneration(cfg).save_pretrained(path)
    FaVChatProcessor.from_config(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return generate(CFG, 12, tmp_path_factory.mktemp("facesynth"), progress=False)


def test_eval_facesynth_with_checkpoint_and_judge(checkpoint, manifest, tmp_path, openai_stub):
    stub = openai_stub(lambda body: "[]" if body["messages"][-1]["content"].startswith("Extract") else '{"score": 2}')
    out = tmp_path / "run"
    argv = ["eval", "facesynth", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out", str(out),
            "--limit", "1", "--max_new_tokens", "4", "--judge.base_url", stub.base_url, "--judge.model", "stub",
            "--progress", "false"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["captions"]["n"] == 1 and m["qa"]["n"] == 1 and m["qa"]["judge"]["summary"]["correctness"]["mean"] == 2.0
    caps = [json.loads(x) for x in (out / "caption_predictions.jsonl").read_text().splitlines()]
    qa = [json.loads(x) for x in (out / "qa_predictions.jsonl").read_text().splitlines()]
    assert len(caps) == 1 and len(qa) == 2 and caps[0]["id"] == "fs-000008"  # the first test-split clip
    assert "| FaVChat (captions, n=1) |" in (out / "report.md").read_text()
    sent = len(stub.requests)
    assert main(argv) == 0 and len(stub.requests) == sent  # answers and judge results both resumed


def test_batched_answers_equal_the_answers_one_by_one(checkpoint, manifest):
    from favchat.data.manifest import read_manifest
    from favchat.eval.predict import ModelPredictor, VideoRef

    clips = read_manifest(manifest)[:2]
    # two videos' questions in one batch: prompts of different lengths (left-padded) and features of either video
    items = [(VideoRef(c.video_path, c.frame_range), qa.question) for c in clips for qa in c.qa[:4]]
    assert len({len(q) for _, q in items}) > 2 and len({v for v, _ in items}) == 2
    pred = ModelPredictor(checkpoint, max_new_tokens=12)
    pred.load()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # weights of our own, whatever seed the fixture had: answers that differ by question
        for p in pred.model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    one_by_one = [pred(v, q) for v, q in items]
    assert pred.answer_batch(items) == one_by_one and len(set(one_by_one)) > 1
    # the same questions asked about the other video get other answers: each row reads its own video's features
    swapped = [(items[-1][0] if v == items[0][0] else items[0][0], q) for v, q in items]
    assert pred.answer_batch(swapped) != one_by_one


def test_eval_dfew_folder_with_checkpoint(checkpoint, tmp_path, capsys):
    root = tmp_path / "dfew"
    synth = {"angry": "anger"}
    for i, cls in enumerate(DFEW_CLASSES):
        r = render_clip(CFG, i, emotion=synth.get(cls, cls))
        write_video(root / cls.capitalize() / f"{r.clip.id}.mp4", r.frames, fps=CFG.fps)
    out = tmp_path / "run"
    assert main(["eval", "dfew", "--root", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--max_new_tokens", "4", "--progress", "false"]) == 0
    m = json.loads((out / "metrics.json").read_text())["classification"]
    assert m["n"] == 7 and 0.0 <= m["uar"] <= 1.0 and 0.0 <= m["war"] <= 1.0
    assert m["protocol"] == "describe-then-classify"
    report = (out / "report.md").read_text()
    assert "| Method | Modality | UAR | WAR |" in report and f"| {100 * m['uar']:.2f} | {100 * m['war']:.2f} |" in report
    assert (out / "confusion.png").exists()
    (root / "Fear").rename(root / "Feared")
    assert main(["eval", "dfew", "--root", str(root), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "folders that are not classes: ['Feared']" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_frame_sweep_with_checkpoint(checkpoint, manifest, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "frames", "--manifest", str(manifest), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--frames", "[2, 4]", "--limit", "1", "--max_new_tokens", "4", "--tokenizer", "simple",
                 "--progress", "false"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["frame_sweep"]["rows"]
    assert [r["frames"] for r in rows] == [2, 4] and (out / "frame_sweep.png").exists()
