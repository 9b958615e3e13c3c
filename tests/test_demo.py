"""`favchat demo --quick` end to end (FaceSynth -> stages 1-3 -> held-out eval -> report), and QA scoring."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from favchat.cli import main
from favchat.data.manifest import read_manifest
from favchat.demo import EvalSection, evaluate_facesynth, render_report
from favchat.eval.qa_accuracy import QAItem, accuracy_by_type, answer_correct, blind_answers
from favchat.rl.trainer import RL_STATE_FILE


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    """``favchat demo --quick`` run once, uninterrupted: its --out folder and what it printed."""
    out = tmp_path_factory.mktemp("quick") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--out", str(out), "--progress", "false", "--seed", "3"]) == 0
    return out, printed.getvalue()


@pytest.mark.slow
def test_demo_quick_writes_the_report(quick_demo, tmp_path):
    out, printed = quick_demo
    report = out / "report"
    for name in ("metrics.json", "report.md", "loss.png", "adapter_weights.png"):
        assert (report / name).stat().st_size > 0, name
    m = json.loads((report / "metrics.json").read_text())
    assert m["clips"] >= 1
    assert {"attribute", "action", "emotion", "yesno", "all"} <= set(m["accuracy"])
    for v in m["accuracy"].values():
        assert 0.0 <= v["accuracy"] <= 1.0 and v["n"] >= 1
    assert {t: v["n"] for t, v in m["blind_baseline"].items()} == {t: v["n"] for t, v in m["accuracy"].items()}
    assert set(m["captions"]) == {"n", "cider", "rouge_l"}
    assert m["example"]["question"] and isinstance(m["example"]["answer"], str)
    assert (out / "stage3" / "final" / "model.safetensors").is_file()
    # the facial encoder was task-pretrained first, and its heads were read on val
    assert 0.0 <= m["face_pretrain"]["label_accuracy"] <= 1.0 and "face_pretrain_s" in m["timings"]
    stage0 = yaml.safe_load((out / "stage0" / "config.yaml").read_text())
    assert stage0["init_from"] == str(out / "face_pretrain" / "final")
    # the recipe's training seed reaches the encoder pretraining and every stage
    assert stage0["seed"] == 3 and yaml.safe_load((out / "face_pretrain" / "config.yaml").read_text())["seed"] == 3
    assert yaml.safe_load((out / "stage3" / "config.yaml").read_text())["seed"] == 3
    # stages 1-3 also train on the slot loss toward the clip's label phrases, and log it
    for k in (1, 2, 3):
        assert yaml.safe_load((out / f"stage{k}" / "config.yaml").read_text())["slot_loss_weight"] == 3.0
        assert "slot_loss" in (out / f"stage{k}" / "metrics.csv").read_text().splitlines()[0]
    assert stage0["cache_frozen_towers"] and stage0["data"]["cache_videos"]  # the demo encodes each clip once
    assert "face_encoder" not in stage0["schedule"][1] + stage0["schedule"][2]  # the recipe's schedule, not the default
    # the slots' phrases are rows of the recipe's phrase table, which stage 0 trains with the LLM and every
    # checkpoint after carries beside its model
    assert stage0["schedule"][0] == ["language_model"]
    assert (out / "stage3" / "final" / "phrase_table.safetensors").is_file()
    # the demo's checkpoint loads through transformers' Auto classes
    from transformers import AutoModel, AutoProcessor

    assert type(AutoProcessor.from_pretrained(out / "stage3" / "final")).__name__ == "FaVChatProcessor"
    assert type(AutoModel.from_pretrained(out / "stage3" / "final")).__name__ == "FaVChatForConditionalGeneration"
    assert "Answer accuracy on held-out identities" in printed and "| attribute |" in printed
    assert "Facial encoder pretraining" in printed and "| blind baseline |" in printed
    # test clips ask every question in a seen and an unseen wording: the report sets them side by side
    by_wording = m["accuracy_by_wording"]
    assert set(by_wording) == {"seen", "unseen"} and by_wording["seen"]["all"]["n"] == by_wording["unseen"]["all"]["n"]
    assert by_wording["seen"]["all"]["n"] + by_wording["unseen"]["all"]["n"] == m["accuracy"]["all"]["n"]
    assert "| question type | seen wordings | unseen wordings |" in printed

    # DE-GRPO after stage 3, from its checkpoint with the recipe's seed; the same questions asked of its policy
    rl = yaml.safe_load((out / "rl" / "config.yaml").read_text())
    assert (rl["algorithm"], rl["model_path"], rl["seed"]) == ("de_grpo", str(out / "stage3" / "final"), 3)
    assert (out / "rl" / "final" / "model.safetensors").is_file() and (report / "rl_reward.png").stat().st_size > 0
    after = m["rl"]
    assert {t: v["n"] for t, v in after["accuracy"].items()} == {t: v["n"] for t, v in m["accuracy"].items()}
    assert len(after["heldout_reward"]) == rl["num_rounds"] + 1 and len(after["train_reward"]) == rl["num_rounds"]
    assert after["steps"] == 4 and {"rl_s", "eval_s", "eval_rl_s"} <= set(m["timings"])
    assert "## After RL (DE-GRPO)" in printed and "after round 2" in printed

    # A recipe is tuned on the val split, never on test: the same evaluation reads the other held-out clips.
    val = evaluate_facesynth(out / "stage3" / "final", out / "data" / "manifest.jsonl", tmp_path / "val_eval",
                             EvalSection(max_new_tokens=8, max_clips=3, split="val"), progress=False)
    lines = (tmp_path / "val_eval" / "predictions.jsonl").read_text().splitlines()
    asked = {json.loads(line)["id"].split("#")[0] for line in lines}
    splits = {c.id: c.split for c in read_manifest(out / "data" / "manifest.jsonl")}
    assert val["split"] == "val" and val["clips"] == len(asked) == 3
    assert {splits[c] for c in asked} == {"val"}
    assert set(val["accuracy_by_wording"]) == {"seen"}  # val clips carry only wordings training uses


def test_demo_rejects_a_bad_recipe(tmp_path, capsys):
    bad = tmp_path / "demo.yaml"
    bad.write_text("synth: {clips: 3}\n")
    assert main(["demo", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "clips" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("qa_type", "reference", "prediction", "correct"),
    [
        ("attribute", "The person has brown hair.", "They have brown hair and glasses.", True),
        ("attribute", "The person has brown hair.", "The person has blond hair.", False),
        ("attribute", "The person has brown hair.", "Brown hair, or maybe black hair.", False),  # contradiction
        ("attribute", "The person wears eyeglasses.", "The person wears no glasses.", False),  # negated
        ("action", "The person nods and smiles.", "The person smiles, then nods.", True),
        ("action", "The person nods and smiles.", "The person nods.", False),  # a missing action
        ("action", "The person shakes the head.", "The person shakes the head and winks.", False),  # an extra one
        ("emotion", "The person looks happy.", "They seem cheerful.", True),  # a synonym
        ("emotion", "The person looks happy.", "They look sad.", False),
        ("yesno", "Yes, the person blinks.", "yes.", True),
        ("yesno", "No, the person does not look angry.", "Yes, they look angry.", False),
        ("yesno", "No, the person does not look angry.", "", False),
    ],
)
def test_answer_correct(qa_type, reference, prediction, correct):
    assert answer_correct(qa_type, reference, prediction) is correct


def test_the_report_sets_seen_and_unseen_wordings_side_by_side():
    acc = {"emotion": {"accuracy": 0.75, "n": 4}, "all": {"accuracy": 0.75, "n": 4}}
    m = {"checkpoint": "c", "split": "test", "clips": 2, "accuracy": acc, "blind_baseline": acc, "captions": {},
         "accuracy_by_wording": {"seen": {"emotion": {"accuracy": 1.0, "n": 2}, "all": {"accuracy": 1.0, "n": 2}},
                                 "unseen": {"emotion": {"accuracy": 0.5, "n": 2}, "all": {"accuracy": 0.5, "n": 2}}},
         "example": {"video": "v", "clip": "c0", "ground_truth": {}, "question": "q", "answer": "a"}, "timings": {}}
    text = render_report(m)
    assert "| emotion | 100.0% | 50.0% | -50.0 pts | 2 |" in text and "| all | 100.0% | 50.0% | -50.0 pts | 2 |" in text
    del m["accuracy_by_wording"]["unseen"]
    assert "unseen wordings" not in render_report(m)


def test_accuracy_by_type_counts_only_scored_types():
    items = [QAItem("a", "attribute", "q", "Black hair.", "black hair"), QAItem("b", "attribute", "q", "Black hair.", ""),
             QAItem("c", "temporal", "q", "At the start.", "x"), QAItem("d", "yesno", "q", "No.", "no")]
    acc = accuracy_by_type(items)
    assert acc == {"attribute": {"accuracy": 0.5, "n": 2}, "yesno": {"accuracy": 1.0, "n": 1},
                   "all": {"accuracy": 2 / 3, "n": 3}}
    with pytest.raises(ValueError, match="not scored"):
        answer_correct("temporal", "a", "b")


def test_the_shipped_recipes_load():
    from pathlib import Path

    from favchat.demo import load_recipe

    full, quick = load_recipe(), load_recipe(["--quick"])
    assert sorted(full.stages) == sorted(quick.stages) == [0, 1, 2, 3]
    assert full.stages[2].optim.max_steps == 700 and quick.stages[2].optim.max_steps == 12
    assert "num_query_tokens" not in quick.stages[0].model.overrides  # --quick replaces the model, not merges
    smol = load_recipe(["--config", str(Path(__file__).parents[1] / "configs" / "demo_smollm2.yaml")])
    assert smol.face_pretrain.model.preset == "smollm2" and sorted(smol.stages) == [1, 2, 3]
    assert full.rl_run() is not None and smol.rl_run() is None and smol.rl.pool_fraction == full.rl.pool_fraction


def test_the_slot_loss_weighs_stages_one_to_three_only():
    from favchat.config import ConfigError
    from favchat.demo import load_recipe

    assert load_recipe(["--stages.2.slot_loss_weight", "1.0"]).stages[2].slot_loss_weight == 1
    with pytest.raises(ConfigError, match="applies to stages 1-3 only"):
        load_recipe(["--stages.0.slot_loss_weight", "1.0"])


def test_the_recipe_resolves_every_run_and_chains_the_checkpoints(tmp_path):
    from favchat.demo import load_recipe

    runs = load_recipe(["--seed", "4", "--out", str(tmp_path)]).runs()
    manifest = str(tmp_path / "data" / "manifest.jsonl")
    face, stages = runs[0], runs[1:]
    assert face.data.train_manifest == manifest and face.seed == 4
    assert [s.stage for s in stages] == [0, 1, 2, 3]
    chain = [str(tmp_path / "face_pretrain" / "final")] + [str(tmp_path / f"stage{k}" / "final") for k in range(3)]
    assert [s.init_from for s in stages] == chain
    assert {(c.data.train_manifest, c.seed) for c in stages} == {(manifest, 4)}
    assert [s.slot_loss_weight for s in stages] == [0.0, 3.0, 3.0, 3.0]
    assert "face_encoder" not in stages[1].trainable + stages[2].trainable  # the recipe's schedule
    rl = load_recipe(["--seed", "4", "--out", str(tmp_path)]).rl_run()  # DE-GRPO from stage 3's final/
    assert (rl.model_path, rl.train_manifest, rl.eval_manifest) == (str(tmp_path / "stage3" / "final"), manifest, manifest)
    assert (rl.output_dir, rl.seed, rl.algorithm) == (str(tmp_path / "rl"), 4, "de_grpo")
    assert load_recipe(["--rl.num_rounds", "0"]).rl_run() is None  # no RL: the demo ends at stage 3


@pytest.mark.parametrize(("override", "message"), [
    (["--face_pretrain.model.overrides.num_query_token", "8"],
     r"model: unknown FaVChatConfig field\(s\) \['num_query_token'\]"),
    (["--face_pretrain.model.overrides.num_query_tokens", "x"], "model.overrides: a value of the wrong type"),
    (["--stages.2.schedule", "{2: [bogus]}"], r"schedule.2 names unknown components \['bogus'\]"),
    (["--stages.3.optim.max_steps", "0"], "optim.max_steps"),
    (["--stages.3.stage", "2"], "stages.3 trains stage 2"),
    (["--synth.min_size", "8"], "need 32 <= min_size"),
    (["--face_pretrain.slot_loss_weight", "1.0"], "slot_loss_weight"),  # a stage key, not the pretraining's
    (["--rl.num_generations", "1"], "num_generations must be ≥ 2"),
    (["--rl.model_path", "elsewhere"], "rl.model_path: the demo's RL starts from stage 3's final/"),
])
def test_a_bad_value_anywhere_in_the_recipe_stops_the_demo_before_it_writes_anything(tmp_path, capsys, override,
                                                                                     message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--progress", "false", *override]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_the_blind_baseline_answers_each_question_as_training_most_often_did():
    from favchat.data.manifest import QA, Clip

    def clip(i, *qa):
        return Clip(id=f"c{i}", video="v.mp4", qa=[QA(q, a, t) for q, a, t in qa])

    hair = "What colour is the person's hair?"
    train = [clip(0, (hair, "The person has black hair.", "attribute"), ("Is it?", "No.", "yesno")),
             clip(1, (hair, "The person has blond hair.", "attribute"), ("Is it?", "Yes.", "yesno")),
             clip(2, (hair, "The person has blond hair.", "attribute"), ("Describe.", "A face.", "description"))]
    by_question, by_type = blind_answers(train)
    assert by_question == {hair: "The person has blond hair.", "Is it?": "No."}  # a tie: the first seen
    assert by_type == {"attribute": "The person has blond hair.", "yesno": "No."}  # descriptions are not scored


def _demo(out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "favchat", "demo", "--quick", "--out", str(out), "--progress",
                           "false", "--seed", "3", *extra], capture_output=True, text=True, check=True, timeout=900)


@pytest.mark.slow
def test_an_interrupted_demo_goes_on_from_where_it_stopped(quick_demo, tmp_path):
    whole, _ = quick_demo  # the same command, never interrupted

    # Ctrl-C during stage 2, once its first checkpoint (step 6 of 12) is written
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "favchat", "demo", "--quick", "--out", str(out), "--progress", "false",
               "--seed", "3"]
    # Ctrl-C's default action even where the tests run in the background (which starts children ignoring SIGINT)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 900
    while not list((out / "stage2" / "checkpoints").glob("checkpoint_*/trainer_state.json")):
        assert proc.poll() is None, "the demo ended before stage 2 wrote a checkpoint"
        assert time.monotonic() < deadline, "stage 2 wrote no checkpoint in 15 minutes"
        time.sleep(0.02)
    proc.send_signal(signal.SIGSTOP)  # held where it is while the interrupt is queued
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(120) != 0
    assert not (out / "stage2" / "final").exists() and not (out / "stage3").exists()

    log = _demo(out).stderr  # the same command again
    for step in ("synth", "face_pretrain", "stage0", "stage1"):
        assert f"{step}: kept" in log, step
    assert "stage2: interrupted earlier: resuming" in log and "resumed from" in log
    weights = "stage3/final/model.safetensors"
    assert (out / weights).read_bytes() == (whole / weights).read_bytes(), "the resumed demo trained other weights"
    policy = "rl/final/model.safetensors"  # and DE-GRPO after it trained the same policy
    assert (out / policy).read_bytes() == (whole / policy).read_bytes(), "the resumed demo's RL trained another policy"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["accuracy"] == json.loads((whole / "report" / "metrics.json").read_text())["accuracy"]
    assert metrics["kept"] == ["synth", "face_pretrain", "stage0", "stage1"]

    # RL stopped after its third step (its checkpoint written, the fourth not) goes on from that checkpoint
    step = json.loads((out / "rl" / "demo_step.json").read_text())
    (out / "rl" / "demo_step.json").write_text(json.dumps({**step, "done": False}))
    shutil.rmtree(out / "rl" / "final")
    for checkpoint in (out / "rl" / "checkpoints").glob("checkpoint_*"):
        if torch.load(checkpoint / RL_STATE_FILE, weights_only=False)["step"] > 3:
            shutil.rmtree(checkpoint)
    log = _demo(out).stderr
    assert "rl: interrupted earlier: resuming" in log
    assert (out / policy).read_bytes() == (whole / policy).read_bytes(), "the resumed RL trained another policy"

    # a changed config reruns from the first step it changes, and says so
    before = (out / weights).read_bytes()
    log = _demo(out, "--stages.3.optim.lr", "5e-4").stderr
    assert all(f"{step}: kept" in log for step in ("synth", "face_pretrain", "stage0", "stage1", "stage2"))
    assert "stage3: its config changed" in log
    assert "rl: it starts from stage3, which reruns" in log
    assert (out / weights).read_bytes() != before
    assert json.loads((out / "report" / "metrics.json").read_text())["kept"] == [
        "synth", "face_pretrain", "stage0", "stage1", "stage2"]
