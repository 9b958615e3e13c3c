"""``favchat eval`` end to end on a FaceSynth test split, with the judge behind a local HTTP server."""

from __future__ import annotations

import json
import re

import pytest

from favchat.cli import main
from favchat.data.manifest import read_manifest
from favchat.data.synth.generate import SynthConfig, generate
from favchat.eval import metrics


@pytest.fixture(scope="module")
def facesynth(tmp_path_factory):
    """12 FaceSynth clips: identities 0/1/2 are train/val/test, so clips 8..11 form the test split."""
    out = tmp_path_factory.mktemp("facesynth")
    path = generate(SynthConfig(min_frames=8, max_frames=8, min_size=32, max_size=32), 12, out, progress=False)
    return path


def judge_reply(body):
    text = body["messages"][-1]["content"]
    if text.startswith("Extract the events"):
        desc = re.search(r"^Description: (.*)$", text, re.M).group(1)
        return json.dumps([s.strip() + "." for s in desc.split(".") if s.strip()])
    if "Events:" in text:
        return json.dumps(["entailment"] * len(re.findall(r"^\d+\. ", text, re.M)))
    return json.dumps({"score": 3 if "from 0 to 5" in text else 7})


def write_predictions(manifest, path, extra=()):
    clips = read_manifest(manifest, split="test")
    lines = []
    for c in clips:
        lines.append({"id": c.id, "answer": c.summary.split(".")[0] + "."})  # the first sentence of the summary
        for k, q in enumerate(c.qa):
            lines.append({"id": f"{c.id}#qa{k}", "answer": q.answer})
            lines.append({"id": f"{c.id}#qa{k}~rephrased", "answer": q.answer})
    lines += [{"id": i, "answer": "x"} for i in extra]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return clips


def test_eval_manifest_route_writes_report_and_resumes(facesynth, tmp_path, openai_stub, capsys):
    stub = openai_stub(judge_reply)
    preds = tmp_path / "preds.jsonl"
    clips = write_predictions(facesynth, preds)
    out = tmp_path / "run"
    argv = ["eval", "manifest", "--manifest", str(facesynth), "--predictions", str(preds), "--out", str(out),
            "--judge.base_url", stub.base_url, "--judge.model", "stub", "--tokenizer", "simple", "--progress", "false"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    refs = {c.id: [c.summary] for c in clips}
    hyp = {c.id: c.summary.split(".")[0] + "." for c in clips}
    assert m["captions"]["cider"] == pytest.approx(metrics.cider(refs, hyp, "simple"))
    assert m["captions"]["rouge_l"] == pytest.approx(metrics.rouge_l(refs, hyp, "simple"))
    n_qa = sum(len(c.qa) for c in clips)
    s = m["qa"]["judge"]["summary"]
    assert s["correctness"] == {"mean": 3.0, "n": n_qa, "scale": 5} and s["overall"]["mean"] == 7.0
    assert s["consistency"]["n"] == n_qa
    assert m["captions"]["autodq"]["f1"] == 1.0
    report = (out / "report.md").read_text()
    assert "| Method | Test* (0–10) | Correctness | Detail | Context | Temporal | Consistency | CIDEr | ROUGE-L | AutoDQ |" in report
    cider = m["captions"]["cider"]
    assert f"| {cider:.3f} |" in report
    assert f"| FaVChat (QA, n={n_qa}) | 7.00 | 3.00 | 3.00 | 3.00 | 3.00 | 3.00 | – | – | – |" in report
    sent = len(stub.requests)
    assert sent == m["judge_usage"]["calls"] > 0
    assert main(argv) == 0  # a rerun: everything from the results file, nothing sent
    assert len(stub.requests) == sent
    again = json.loads((out / "metrics.json").read_text())
    # Every result of the first run (sent, or answered by the cache for identical requests) is resumed.
    assert again["judge_usage"]["calls"] == 0
    assert again["judge_usage"]["resumed"] == sent + m["judge_usage"]["cached"]
    assert again["qa"]["judge"]["summary"] == s


def test_eval_rejects_predictions_for_unknown_ids(facesynth, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    write_predictions(facesynth, preds, extra=["fs-999999", "fs-000008#qa9"])
    rc = main(["eval", "manifest", "--manifest", str(facesynth), "--predictions", str(preds), "--out", str(tmp_path / "o"),
               "--judge.enabled", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and "2 prediction id(s) not in the manifest" in err and "fs-999999" in err


def test_eval_unreachable_judge(facesynth, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    write_predictions(facesynth, preds)
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("base_url: http://127.0.0.1:9/v1\nmodel: nobody\nmax_retries: 0\ntimeout_s: 2.0\n")
    rc = main(["eval", "manifest", "--manifest", str(facesynth), "--predictions", str(preds), "--out", str(tmp_path / "o"),
               "--judge.config_file", str(cfg), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot reach the judge at http://127.0.0.1:9/v1 (model 'nobody')" in err
