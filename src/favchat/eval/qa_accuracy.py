"""Answer accuracy of free-text QA answers, read through the taxonomy's lexicon (no judge needed).

Used on FaceSynth, whose reference answers name taxonomy labels exactly. For a question of type:
- ``yesno``: the first "yes"/"no" of the prediction must equal the reference's;
- ``attribute``: every label the reference asserts is asserted by the prediction, and the prediction
  asserts nothing that contradicts them ("blond hair" against "black hair");
- ``action`` / ``emotion``: the labels of that group asserted by the prediction equal the reference's
  (these questions ask for all of them: a missing or an extra action is wrong);
- other types (``temporal``, ``description``) are not scored here (CIDEr, ROUGE-L and the judge are).

``f1_by_type`` and ``label_scores`` read the same answers label by label: the labels of the question's group
that the prediction asserts against those the reference asserts (F1), and per label the yes/no questions asked
about it (accuracy).

``blind_answers`` gives the baseline a model must beat: for each question, the answer most often given to it
in the training clips, whatever the video.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from favchat.data.manifest import Clip
from favchat.data.taxonomy import BY_NAME, contradicts, mentioned_labels

SCORED_TYPES = ("attribute", "action", "emotion", "yesno")
_YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass(frozen=True)
class QAItem:
    id: str
    type: str
    question: str
    reference: str
    prediction: str


def _yes_no(text: str) -> str | None:
    m = _YESNO.search(text)
    return m.group(1).lower() if m else None


def answer_correct(qa_type: str, reference: str, prediction: str) -> bool:
    """Whether ``prediction`` answers like ``reference`` for a question of ``qa_type`` (see the module doc)."""
    if qa_type == "yesno":
        ref = _yes_no(reference)
        if ref is None:
            raise ValueError(f"a yes/no reference answer has neither yes nor no: {reference!r}")
        return _yes_no(prediction) == ref
    if qa_type not in SCORED_TYPES:
        raise ValueError(f"question type {qa_type!r} is not scored by label accuracy (scored: {SCORED_TYPES})")
    ref, _ = mentioned_labels(reference)
    pred, _ = mentioned_labels(prediction)
    if qa_type == "attribute":
        return ref <= pred and not any(contradicts(p, r) for p in pred for r in ref)
    group = qa_type
    return {n for n in pred if BY_NAME[n].group == group} == {n for n in ref if BY_NAME[n].group == group}


def accuracy_by_type(items: Iterable[QAItem]) -> dict[str, dict[str, float]]:
    """``{type: {"accuracy": a, "n": n}}`` over the scored types present, plus ``"all"``."""
    hits: dict[str, list[bool]] = {}
    for it in items:
        if it.type in SCORED_TYPES:
            hits.setdefault(it.type, []).append(answer_correct(it.type, it.reference, it.prediction))
    out = {t: {"accuracy": sum(h) / len(h), "n": len(h)} for t, h in hits.items()}
    every = [x for h in hits.values() for x in h]
    if every:
        out["all"] = {"accuracy": sum(every) / len(every), "n": len(every)}
    return out


# the taxonomy group whose labels a question type's answers name
TYPE_GROUP = {"attribute": "appearance", "action": "action", "emotion": "emotion"}


def _asserted(text: str, group: str) -> set[str]:
    return {n for n in mentioned_labels(text)[0] if BY_NAME[n].group == group}


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def f1_by_type(items: Iterable[QAItem]) -> dict[str, dict[str, float]]:
    """``{type: {"f1": f, "n": n}}``: for attribute, action and emotion questions the micro-F1 of the labels of
    the type's group asserted by the predictions against the references (a label of that group named but not
    in the reference is a false positive); for yes/no questions the F1 of the "yes" answers."""
    counts: dict[str, list[int]] = {}  # type -> [tp, fp, fn, n]
    for it in items:
        if it.type not in SCORED_TYPES:
            continue
        c = counts.setdefault(it.type, [0, 0, 0, 0])
        if it.type == "yesno":
            ref, pred = _yes_no(it.reference) == "yes", _yes_no(it.prediction) == "yes"
            c[0], c[1], c[2] = c[0] + (ref and pred), c[1] + (pred and not ref), c[2] + (ref and not pred)
        else:
            ref, pred = _asserted(it.reference, TYPE_GROUP[it.type]), _asserted(it.prediction, TYPE_GROUP[it.type])
            c[0], c[1], c[2] = c[0] + len(ref & pred), c[1] + len(pred - ref), c[2] + len(ref - pred)
        c[3] += 1
    return {t: {"f1": _f1(*c[:3]), "n": c[3]} for t, c in counts.items()}


def label_scores(items: Iterable[QAItem]) -> dict[str, dict[str, float]]:
    """Per taxonomy label: ``f1`` (with ``support``, the reference answers naming it) over the answers to the
    questions of its group, as in ``f1_by_type``, and ``yesno_accuracy`` (with ``yesno_n``) over the yes/no
    questions asked about it. Labels that no reference names and no question asks about are left out."""
    counts: dict[str, list[int]] = {}  # label -> [tp, fp, fn, yes/no right, yes/no asked]
    for it in items:
        if it.type == "yesno":
            for label in mentioned_labels(it.question)[0]:
                c = counts.setdefault(label, [0] * 5)
                c[3] += answer_correct("yesno", it.reference, it.prediction)
                c[4] += 1
        elif it.type in TYPE_GROUP:
            ref, pred = _asserted(it.reference, TYPE_GROUP[it.type]), _asserted(it.prediction, TYPE_GROUP[it.type])
            for label in ref | pred:
                c = counts.setdefault(label, [0] * 5)
                c[0 if label in ref and label in pred else 1 if label in pred else 2] += 1
    out = {}
    for label, (tp, fp, fn, right, asked) in counts.items():
        row: dict[str, float] = {}
        if tp + fn:
            row |= {"f1": _f1(tp, fp, fn), "support": tp + fn}
        if asked:
            row |= {"yesno_accuracy": right / asked, "yesno_n": asked}
        if row:
            out[label] = row
    return out


def blind_answers(train: Iterable[Clip]) -> tuple[dict[str, str], dict[str, str]]:
    """The answers of a model that does not look at the video: ``(by question, by type)``, each the most
    frequent training answer to that question (to any question of that type, for a question never seen)."""
    by_question: dict[str, Counter] = {}
    by_type: dict[str, Counter] = {}
    for clip in train:
        for qa in clip.qa:
            if qa.type in SCORED_TYPES:
                by_question.setdefault(qa.question, Counter())[qa.answer] += 1
                by_type.setdefault(qa.type, Counter())[qa.answer] += 1

    def top(counts: dict[str, Counter]) -> dict[str, str]:
        return {k: c.most_common(1)[0][0] for k, c in counts.items()}

    return top(by_question), top(by_type)
