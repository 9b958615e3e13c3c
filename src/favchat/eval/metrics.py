"""Reference metrics of the paper's evaluation (§3.2–3.4, App. F, I), as plain functions.

- Classification (DFEW, MAFW): ``uar`` (mean per-class recall, = scikit-learn's balanced accuracy),
  ``war`` (accuracy), ``per_class_table``, ``confusion`` and ``plot_confusion`` (a PNG).
- Captions (DFEC, FaceSynth summaries): ``cider`` and ``rouge_l`` through pycocoevalcap's ``Cider`` and
  ``Rouge`` scorers after tokenisation. ``tokenizer="ptb"`` is the reference path (Stanford PTBTokenizer,
  needs Java); ``"simple"`` is a Java-free re-implementation of the rules that matter for captions;
  ``"auto"`` (default) uses PTB when ``java`` is on PATH. ``docs/evaluation.md`` lists where they differ.
- Verification (YouTube Faces pairs): ``verification_accuracy`` with the threshold chosen on the
  training folds of a k-fold split (the LFW / YTF "unrestricted" protocol), or plain accuracy of
  same/different decisions.

References: ``id -> list of reference strings``; predictions: ``id -> one string``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Classification


def _check_pairs(y_true: Sequence[Any], y_pred: Sequence[Any]) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no predictions to score")


def war(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Weighted average recall = plain accuracy (each clip weighs the same)."""
    from sklearn.metrics import accuracy_score

    _check_pairs(y_true, y_pred)
    return float(accuracy_score(list(y_true), list(y_pred)))


def uar(y_true: Sequence[Any], y_pred: Sequence[Any]) -> float:
    """Unweighted average recall: the mean over the classes present in ``y_true`` of their recall.

    A prediction outside the true classes (e.g. an unmatched answer) counts as a miss.
    """
    from sklearn.metrics import recall_score

    _check_pairs(y_true, y_pred)
    return float(recall_score(list(y_true), list(y_pred), labels=list(dict.fromkeys(y_true)), average="macro",
                              zero_division=0))


def per_class_table(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class: support, predicted count, recall, precision, F1 (0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    _check_pairs(y_true, y_pred)
    prec, rec, f1, support = precision_recall_fscore_support(list(y_true), list(y_pred), labels=list(classes),
                                                             zero_division=0)
    return [{"class": c, "support": int(support[k]), "predicted": sum(p == c for p in y_pred),
             "recall": float(rec[k]), "precision": float(prec[k]), "f1": float(f1[k])} for k, c in enumerate(classes)]


def confusion(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Confusion counts (rows: true class, columns: predicted class). Predictions outside ``classes``
    get one extra column, ``unmatched``, so that every clip is counted."""
    from sklearn.metrics import confusion_matrix

    _check_pairs(y_true, y_pred)
    unknown = sorted({t for t in y_true} - set(classes))
    if unknown:
        raise ValueError(f"true labels not in the class list {list(classes)}: {unknown}")
    cols = list(classes) + (["unmatched"] if any(p not in classes for p in y_pred) else [])
    pred = [p if p in classes else "unmatched" for p in y_pred]
    mat = confusion_matrix(list(y_true), pred, labels=cols)[: len(classes)]  # (C, C or C+1)
    return mat.astype(np.int64), cols


def plot_confusion(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str], path: str | os.PathLike,
                   title: str = "") -> Path:
    """Write a row-normalised confusion matrix as a PNG (counts in the cells)."""
    from favchat.plotting import pyplot, save_figure

    plt = pyplot()

    mat, cols = confusion(y_true, y_pred, classes)
    norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)  # rows: recall per true class
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(cols), 1.0 + 0.55 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, i, str(mat[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path, dpi=120)


# ---------------------------------------------------------------------------------------------
# Caption metrics

# pycocoevalcap removes these tokens after PTB tokenisation. It runs PTB with -lowerCase, so the bracket
# tokens come out as -lrb- etc., which its (upper-case) list does not remove: they stay, here too.
_PTB_PUNCT = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# Words PTB splits in two although they hold no apostrophe.
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"),
                "gimme": ("gim", "me"), "lemme": ("lem", "me")}
_CLITIC = re.compile(r"^(.+?)('s|'m|'d|'ll|'re|'ve)$")
_LEAD = "\"'`$#"
_ABBREV = {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.", "inc.", "ltd.", "co."}
_TRAIL = "\"'`.,;:!?%"


def _simple_tokens(text: str) -> list[str]:
    """Java-free approximation of ``PTBTokenizer -preserveLines -lowerCase`` plus pycocoevalcap's punctuation
    filter. Exact on ordinary caption text; see docs/evaluation.md for the known differences."""
    text = text.lower().replace("\n", " ").replace("’", "'").replace("“", '"').replace("”", '"')
    for b, tok in _BRACKETS.items():
        text = text.replace(b, f" {tok} ")
    text = re.sub(r"(?<=\w)--+(?=\w)|--+", " -- ", text)
    text = text.replace("&", " & ")
    out: list[str] = []
    for raw in text.split():
        lead: list[str] = []
        trail: list[str] = []
        tok = raw
        while tok and tok[0] in _LEAD:
            lead.append(tok[0])
            tok = tok[1:]
        while tok and tok[-1] in _TRAIL:
            # Keep the final period of an abbreviation such as "u.s." or "e.g." (PTB does too).
            if tok[-1] == "." and (tok in _ABBREV or re.fullmatch(r"(\w\.){2,}", tok)):
                break
            trail.insert(0, tok[-1])
            tok = tok[:-1]
        words: list[str] = []
        if tok in _SPLIT_WORDS:
            words.extend(_SPLIT_WORDS[tok])
        elif tok.endswith("n't") and len(tok) > 3:
            words.extend([tok[:-3], "n't"])
        elif m := _CLITIC.match(tok):
            words.extend([m.group(1), m.group(2)])
        elif tok:
            words.append(tok)
        # "$" and "#" are tokens of their own in PTB; quotes and the rest are filtered below.
        out.extend(c for c in lead if c in "$#")
        out.extend(words)
        out.extend(c for c in trail if c == "%")
    return [t for t in out if t not in _PTB_PUNCT]


def java_available() -> bool:
    return shutil.which("java") is not None


def tokenize(captions: Mapping[str, Sequence[str]], tokenizer: str = "auto") -> dict[str, list[str]]:
    """Tokenise ``id -> list of captions`` into ``id -> list of space-joined token strings``.

    ``tokenizer``: "ptb" (pycocoevalcap's PTBTokenizer; needs Java), "simple" (Java-free), or "auto".
    """
    if tokenizer == "auto":
        tokenizer = "ptb" if java_available() else "simple"
    # One line per caption: PTB runs with -preserveLines, so a stray line or paragraph separator inside a
    # caption would shift every later caption onto the wrong id.
    captions = {k: [" ".join(c.split()) for c in v] for k, v in captions.items()}
    if tokenizer == "simple":
        return {k: [" ".join(_simple_tokens(c)) for c in v] for k, v in captions.items()}
    if tokenizer != "ptb":
        raise ValueError(f"tokenizer must be 'auto', 'ptb' or 'simple', got {tokenizer!r}")
    if not java_available():
        raise RuntimeError("tokenizer='ptb' needs Java on PATH (pycocoevalcap runs Stanford's PTBTokenizer); "
                           "install a JRE or use tokenizer='simple' (see docs/evaluation.md)")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})


def _caption_inputs(references: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
                    tokenizer: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    missing = sorted(set(references) - set(predictions))
    extra = sorted(set(predictions) - set(references))
    if missing or extra:
        raise ValueError(f"references and predictions must share ids: {len(missing)} without a prediction "
                         f"{missing[:5]}, {len(extra)} without references {extra[:5]}")
    if not references:
        raise ValueError("no captions to score")
    empty = [k for k, v in references.items() if not v]
    if empty:
        raise ValueError(f"ids with no reference caption: {empty[:5]}")
    ids = sorted(references)
    gts = tokenize({k: list(references[k]) for k in ids}, tokenizer)
    res = tokenize({k: [predictions[k]] for k in ids}, tokenizer)
    return gts, res


def cider(references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], tokenizer: str = "auto") -> float:
    """Corpus CIDEr-D as pycocoevalcap computes it (n = 4, sigma = 6; document frequencies from the references)."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _caption_inputs(references, predictions, tokenizer)
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def rouge_l(references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], tokenizer: str = "auto") -> float:
    """Mean ROUGE-L (beta = 1.2, best reference per id) as pycocoevalcap computes it."""
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _caption_inputs(references, predictions, tokenizer)
    score, _ = Rouge().compute_score(gts, res)
    return float(score)


# ---------------------------------------------------------------------------------------------
# Verification


def best_threshold(scores: Sequence[float], same: Sequence[bool]) -> float:
    """The threshold (score >= t means "same") with the highest accuracy on these pairs; ties: the smallest."""
    s = np.asarray(scores, dtype=np.float64)  # (P,)
    y = np.asarray(same, dtype=bool)  # (P,)
    cands = np.unique(s)
    # Midpoints between consecutive distinct scores, plus one below and one above all of them.
    cuts = np.concatenate([[cands[0] - 1.0], (cands[:-1] + cands[1:]) / 2, [cands[-1] + 1.0]])
    acc = [np.mean((s >= t) == y) for t in cuts]
    return float(cuts[int(np.argmax(acc))])


def verification_accuracy(scores: Sequence[float], same: Sequence[bool], folds: int = 10,
                          fold_of: Sequence[int] | None = None) -> dict[str, Any]:
    """Pair accuracy with the threshold chosen on the other folds (LFW / YTF protocol).

    ``fold_of`` gives each pair's fold (YTF's ``splits.txt`` has 10 splits); otherwise pairs are dealt to
    ``folds`` folds in order. For each fold the threshold maximising accuracy on the remaining folds is
    applied to it; the result is the mean and standard deviation of the per-fold accuracies.
    """
    if len(scores) != len(same):
        raise ValueError(f"{len(scores)} scores but {len(same)} labels")
    if len(scores) < 2:
        raise ValueError("need at least 2 pairs")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    f = np.asarray(fold_of) if fold_of is not None else np.arange(len(s)) % folds
    if len(f) != len(s):
        raise ValueError(f"{len(s)} pairs but {len(f)} fold ids")
    fold_ids = sorted(set(f.tolist()))
    if len(fold_ids) < 2:
        raise ValueError("the threshold protocol needs at least 2 folds")
    accs, thresholds = [], []
    for k in fold_ids:
        test = f == k
        t = best_threshold(s[~test], y[~test])
        thresholds.append(t)
        accs.append(float(np.mean((s[test] >= t) == y[test])))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "fold_accuracy": accs,
            "thresholds": thresholds, "pairs": int(len(s)), "folds": len(fold_ids)}


def decision_accuracy(decisions: Sequence[bool | None], same: Sequence[bool]) -> float:
    """Accuracy of direct same/different answers; an answer that said neither (None) counts as wrong."""
    if len(decisions) != len(same) or not same:
        raise ValueError(f"{len(decisions)} decisions for {len(same)} pairs")
    return float(np.mean([d is not None and bool(d) == bool(t) for d, t in zip(decisions, same, strict=True)]))
