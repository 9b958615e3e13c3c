"""`favchat experiment ablations --quick` end to end as users run it (report, plots, paired comparison,
every variant trained from the shared facial encoder and LLM), and the scoring and statistics it reports.
Run: python -m pytest -q tests/test_experiment_ablations.py"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from favchat.cli import main
from favchat.eval.paired import paired_difference, sign_test
from favchat.eval.qa_accuracy import QAItem, answer_correct, f1_by_type, label_scores
from favchat.experiments.ablations import GROUPS, VARIANTS, _stats


def _weights(folder, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith(prefix)}


@pytest.mark.slow
def test_quick_run_writes_the_report_with_every_variant_and_the_paired_comparison(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["experiment", "ablations", "--quick", "--out", str(out), "--progress", "false"]) == 0
    report = out / "report"
    for name in ("report.md", "metrics.json", "groups.png", "frames.png"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "groups.png").read_bytes()[:4] == b"\x89PNG"
    m = json.loads((report / "metrics.json").read_text())
    assert set(m["variants"]) == set(VARIANTS) and m["seeds"] == [0]
    n = m["variants"]["full"]["n"]
    assert set(n) == set(GROUPS) and n["all"] == sum(n[g] for g in GROUPS if g != "all")
    for name, v in m["variants"].items():
        assert v["n"] == n, name  # every variant answered the same questions
        assert set(v["accuracy"]) == set(GROUPS) and set(v["f1"]) == set(GROUPS) - {"all"}
        for s in [*v["accuracy"].values(), *v["f1"].values()]:
            assert 0.0 <= s["mean"] <= 1.0 and s["sd"] == 0.0 and len(s["values"]) == 1
        assert v["labels"] and all(0.0 <= r["f1"]["mean"] <= 1.0 for r in v["labels"].values() if "f1" in r)
        # the sweep asks the full model and the prompt-agnostic one with each frame count
        assert sorted(v["frames"]) == (["32", "4"] if name in ("full", "prompt_agnostic") else [])
    assert set(m["comparisons"]) == set(VARIANTS) - {"full"}
    for comp in m["comparisons"].values():
        assert set(comp) == set(GROUPS)
        for c in comp.values():
            assert -1.0 <= c["ci"][0] <= c["diff"] <= c["ci"][1] <= 1.0 and 0.0 <= c["p"] <= 1.0
            assert c["verdict"] in ("worse", "better", "not distinguishable") and len(c["per_seed"]) == 1
    assert m["claim"] in ("supported", "contradicted", "not tested at this budget")

    # The paired difference is the one the saved answers give.
    def accuracy(variant: str) -> float:
        lines = [json.loads(x) for x in (out / "seed0" / variant / "eval" / "predictions.jsonl").read_text().splitlines()]
        return sum(answer_correct(p["type"], p["reference"], p["answer"]) for p in lines) / len(lines)

    assert m["comparisons"]["prompt_agnostic"]["all"]["diff"] == pytest.approx(
        accuracy("prompt_agnostic") - accuracy("full"))

    # Every variant starts from the seed's shared facial encoder and reader LLM, with its own model switches.
    shared = out / "seed0" / "stage0" / "final"
    for name, overrides in VARIANTS.items():
        config = json.loads((out / "seed0" / name / "stage3" / "final" / "config.json").read_text())
        assert all(config[k] == v for k, v in overrides.items()), name
        stage1 = out / "seed0" / name / "stage1" / "final"
        llm = _weights(stage1, "language_model.")  # stage 1 does not train the LLM
        assert llm and all(torch.equal(w, _weights(shared, "language_model.")[k]) for k, w in llm.items())
        face = _weights(out / "seed0" / name / "stage3" / "final", "face_encoder.")  # frozen after its pretraining
        assert (not face) == (name == "no_face_encoder")
        assert all(torch.equal(w, _weights(shared, "face_encoder.")[k]) for k, w in face.items())

    text = (report / "report.md").read_text()
    for heading in ("## The experiment, fixed before its runs", "Rule:", "## Accuracy per question group",
                    "## F1 per question group", "## Paired comparison with the full model", "## Frame sweep",
                    "## Per label"):
        assert heading in text, heading
    for name in VARIANTS:
        assert f"| {name} |" in text
    assert "Prompt guidance (prompt-agnostic vs full, all questions)" in capsys.readouterr().out


def test_bad_variants_stop_before_any_work(tmp_path, capsys):
    out = tmp_path / "abl"
    bad = json.dumps({"full": {}, "wide": {"low_level_blocks": [9]}})
    assert main(["experiment", "ablations", "--quick", "--out", str(out), "--variants", bad,
                 "--sweep_variants", '["full"]']) == 2
    assert "variants.wide" in capsys.readouterr().err
    assert main(["experiment", "ablations", "--quick", "--out", str(out), "--sweep_variants", '["nope"]']) == 2
    assert "sweep_variants" in capsys.readouterr().err
    assert not out.exists()


def test_label_and_group_scores():
    items = [
        QAItem("a#0", "attribute", "What colour is the person's hair?", "The person has black hair, with bangs.",
               "The person has black hair."),  # bangs missed
        QAItem("b#0", "emotion", "How does the person feel?", "The person looks happy: smiling.",
               "The person looks sad."),
        QAItem("a#1", "yesno", "Does the person smile in the video?", "Yes, the person smiles.", "Yes."),
        QAItem("b#1", "yesno", "Does the person smile in the video?", "No, the person does not smile.", "Yes."),
    ]
    f1 = f1_by_type(items)
    assert f1["attribute"] == {"f1": pytest.approx(2 / 3), "n": 1}  # tp 1, fn 1
    assert f1["emotion"]["f1"] == 0.0 and f1["yesno"]["f1"] == pytest.approx(2 / 3)  # tp 1, fp 1
    labels = label_scores(items)
    assert labels["black_hair"] == {"f1": 1.0, "support": 1} and labels["bangs"] == {"f1": 0.0, "support": 1}
    assert labels["happy"]["f1"] == 0.0 and "sad" not in labels  # named by no reference, asked by no question
    assert labels["smile"] == {"yesno_accuracy": 0.5, "yesno_n": 2}


def test_paired_difference_and_sign_test():
    assert sign_test(0, 5) == pytest.approx(2 / 32) and sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    ids = [f"c{c}#q{q}" for c in range(20) for q in range(3)]
    full = [{i: True for i in ids}, {i: True for i in ids}]
    # the variant misses every question of the first 6 clips with seed 0 and of the first 3 with seed 1
    variant = [{i: int(i.split("#")[0][1:]) >= 6 for i in ids}, {i: int(i.split("#")[0][1:]) >= 3 for i in ids}]
    c = paired_difference(variant, full, cluster=lambda q: q.split("#")[0], resamples=500)
    assert c["per_seed"] == pytest.approx([-0.3, -0.15]) and c["diff"] == pytest.approx(-0.225)
    assert c["ci"][0] < -0.225 < c["ci"][1] < 0 and (c["wins"], c["losses"], c["n"]) == (0, 27, 60)
    assert c["p"] < 1e-6
    same = paired_difference(full, full, cluster=lambda q: q.split("#")[0], resamples=200)
    assert same["diff"] == 0.0 and same["ci"] == [0.0, 0.0] and same["p"] == 1.0
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([{"a#0": True}], [{"b#0": True}], cluster=lambda q: q.split("#")[0])


def test_mean_and_spread_over_seeds():
    s = _stats([0.5, 0.7, 0.6])
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(0.1) and s["values"] == [0.5, 0.7, 0.6]
