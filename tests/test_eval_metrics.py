"""Evaluation metrics against their references: scikit-learn for UAR/WAR, pycocoevalcap for CIDEr/ROUGE-L."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from favchat.eval import metrics

needs_java = pytest.mark.skipif(not metrics.java_available(), reason="PTBTokenizer needs Java")

CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]

# Captions in the style of FaceSynth summaries and DFEC references, with the punctuation, contractions,
# possessives, brackets and quotes that tokenisation has to handle.
REFS = {
    "a": ["A young man with black hair smiles, then nods twice.", "The man (black-haired) smiles and nods."],
    "b": ["She doesn't blink; her eyes stay wide open -- she's surprised!", "A surprised woman stares."],
    "c": ["The person's gray hair is long. He frowns, looking angry.", "An angry man with long gray hair frowns."],
    "d": ["A woman wearing \"red\" lipstick yawns... then turns her head to the left.", "She yawns and turns."],
    "e": ["He can't stop laughing: a happy, cheerful face with a 5 o'clock shadow.", "A man laughs happily."],
}
PREDS = {
    "a": "A man with dark hair smiles and nods.",
    "b": "The woman is surprised; she stares without blinking.",
    "c": "A man with gray hair frowns angrily (long hair).",
    "d": "A woman yawns, then turns her head.",
    "e": "He isn't sad: he laughs, looking happy.",
}


def test_uar_war_equal_sklearn_on_random_predictions():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y_true = list(rng.choice(CLASSES, size=200, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05]))
        y_pred = list(rng.choice(CLASSES, size=200))
        assert metrics.uar(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert metrics.war(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)


def test_uar_counts_unmatched_answers_as_misses():
    y_true = ["happy", "happy", "sad", "sad"]
    y_pred = ["happy", "unmatched", "sad", "happy"]
    assert metrics.uar(y_true, y_pred) == pytest.approx(0.5)
    assert metrics.war(y_true, y_pred) == pytest.approx(0.5)


def test_per_class_table_and_confusion(tmp_path):
    rng = np.random.default_rng(1)
    y_true = list(rng.choice(CLASSES, size=120))
    y_pred = list(rng.choice(CLASSES + ["unmatched"], size=120))
    rows = metrics.per_class_table(y_true, y_pred, CLASSES)
    mat, cols = metrics.confusion(y_true, y_pred, CLASSES)
    ref = confusion_matrix(y_true, y_pred, labels=CLASSES + ["unmatched"])[: len(CLASSES)]
    assert cols == CLASSES + ["unmatched"]
    np.testing.assert_array_equal(mat, ref)
    for r, row in zip(rows, mat, strict=True):
        i = CLASSES.index(r["class"])
        assert r["support"] == row.sum() and r["recall"] == pytest.approx(row[i] / row.sum())
    assert np.mean([r["recall"] for r in rows]) == pytest.approx(metrics.uar(y_true, y_pred))
    png = metrics.plot_confusion(y_true, y_pred, CLASSES, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="not in the class list"):
        metrics.confusion(["joy"], ["happy"], CLASSES)
    with pytest.raises(ValueError, match="items"):
        metrics.uar(["happy"], [])


@needs_java
def test_cider_rouge_equal_pycocoevalcap():
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": PREDS[k]}] for k in REFS})
    ref_cider, _ = Cider().compute_score(gts, res)
    ref_rouge, _ = Rouge().compute_score(gts, res)
    assert metrics.cider(REFS, PREDS, tokenizer="ptb") == pytest.approx(ref_cider, abs=1e-12)
    assert metrics.rouge_l(REFS, PREDS, tokenizer="ptb") == pytest.approx(ref_rouge, abs=1e-12)
    assert ref_cider > 0.1 and 0.2 < ref_rouge < 1  # a non-degenerate caption set


@needs_java
def test_java_free_tokenizer_matches_ptb_on_captions():
    captions = {**REFS, **{f"p{k}": [v] for k, v in PREDS.items()}}
    assert metrics.tokenize(captions, "simple") == metrics.tokenize(captions, "ptb")
    # A line separator inside a caption must not shift later captions onto other ids.
    odd = {"a": ["He nods.\u2028Then he smiles."], "b": ["She frowns."]}
    assert metrics.tokenize(odd, "ptb") == metrics.tokenize(odd, "simple") == {"a": ["he nods then he smiles"],
                                                                                 "b": ["she frowns"]}
    assert metrics.cider(REFS, PREDS, "simple") == pytest.approx(metrics.cider(REFS, PREDS, "ptb"), abs=1e-12)
    assert metrics.rouge_l(REFS, PREDS, "simple") == pytest.approx(metrics.rouge_l(REFS, PREDS, "ptb"), abs=1e-12)


@needs_java
def test_java_free_tokenizer_documented_difference():
    # docs/evaluation.md: words with inner apostrophes other than clitics are split by PTB only.
    text = {"x": ["rock'n'roll is loud"]}
    assert metrics.tokenize(text, "ptb")["x"] == ["rock 'n' roll is loud"]
    assert metrics.tokenize(text, "simple")["x"] == ["rock'n'roll is loud"]


def test_java_free_tokenizer_rules():
    got = metrics.tokenize({"x": ["She doesn't smile (at all); he's 20% \"happier\" -- Mr. Smith's U.S. team."]},
                           "simple")["x"][0]
    assert got == "she does n't smile -lrb- at all -rrb- he 's 20 % happier mr. smith 's u.s. team"


def test_caption_inputs_checked():
    with pytest.raises(ValueError, match="share ids"):
        metrics.cider(REFS, {"a": "x"}, "simple")
    with pytest.raises(ValueError, match="tokenizer"):
        metrics.rouge_l(REFS, PREDS, "nltk")


def test_verification_threshold_protocol():
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.5
    scores = np.where(same, rng.normal(0.7, 0.1, 400), rng.normal(0.4, 0.1, 400))
    res = metrics.verification_accuracy(scores, same, folds=10)
    assert res["folds"] == 10 and len(res["thresholds"]) == 10
    assert all(0.5 < t < 0.6 for t in res["thresholds"])  # the two classes cross near 0.55
    assert 0.9 < res["accuracy"] < 0.99
    # Perfectly separable scores give perfect accuracy; inverted scores cannot be rescued by a threshold.
    assert metrics.verification_accuracy(same.astype(float), same)["accuracy"] == 1.0
    assert metrics.verification_accuracy(-scores, same)["accuracy"] < 0.6


def test_verification_threshold_comes_from_other_folds():
    # Fold 0 alone would pick a threshold near 5; the other folds near 0.5: fold 0 is scored with theirs.
    scores = [0.2, 0.8, 0.3, 0.7, 0.1, 0.9, 4.0, 6.0]
    same = [False, True, False, True, False, True, False, True]
    res = metrics.verification_accuracy(scores, same, fold_of=[1, 1, 2, 2, 3, 3, 0, 0])
    assert res["fold_accuracy"][0] == 0.5 and res["fold_accuracy"][1:] == [1.0, 1.0, 1.0]
    assert metrics.best_threshold([4.0, 6.0], [False, True]) == 5.0


def test_decision_accuracy():
    assert metrics.decision_accuracy([True, False, None, True], [True, False, True, False]) == 0.5
