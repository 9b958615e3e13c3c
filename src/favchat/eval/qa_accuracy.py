"""Answer accuracy of free-text QA answers, read through the taxonomy's lexicon (no judge needed).

Used on FaceSynth, whose reference answers name taxonomy labels exactly. For a question of type:
- ``yesno``: the first "yes"/"no" of the prediction must equal the reference's;
- ``attribute``: every label the reference asserts is asserted by the prediction, and the prediction
  asserts nothing that contradicts them ("blond hair" against "black hair");
- ``action`` / ``emotion``: the labels of that group asserted by the prediction equal the reference's
  (these questions ask for all of them: a missing or an extra action is wrong);
- other types (``temporal``, ``description``) are not scored here (CIDEr, ROUGE-L and the judge are).

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
