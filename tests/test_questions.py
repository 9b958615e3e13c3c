"""Question wording (favchat.data.questions): many frames per kind, seen and unseen sets that never meet, drawn
per clip by seed, on FaceSynth's and the pipeline's questions alike, and scored by the answer whatever the
wording."""

from __future__ import annotations

from functools import cache
from itertools import permutations

import numpy as np
import pytest

from favchat.data.pipeline.annotate import ClipJob, template_qa, template_summary
from favchat.data.questions import FRAMES, HE, KINDS, NEUTRAL_SUBJECTS, SHE, all_wordings, ask, canonical
from favchat.data.synth import RENDERED, SynthConfig, render_clip
from favchat.data.synth.events import ACTIONS
from favchat.eval.qa_accuracy import SCORED_TYPES, QAItem, accuracy_by_type, answer_correct

# One clip per identity: 40 identities give 32 train, 4 val and 4 test clips.
CFG = SynthConfig(seed=4, min_frames=16, max_frames=16, min_size=64, max_size=64, clips_per_identity=1)


def _facesynth_asks() -> list[dict[str, str | None]]:
    """Every question FaceSynth can ask, as ``ask``'s arguments."""
    out: list[dict[str, str | None]] = [{"kind": k} for k in KINDS if k not in ("yesno", "when", "order")]
    out += [{"kind": "yesno", "label": n} for g in RENDERED for n in RENDERED[g] if n != "no_beard"]
    out += [{"kind": "when", "label": a} for a in ACTIONS]
    out += [{"kind": "order", "label": a, "other": b} for a, b in permutations(ACTIONS, 2)]
    return out


@cache
def _every(wording: str) -> frozenset[str]:
    return frozenset().union(*(all_wordings(wording=wording, **a) for a in _facesynth_asks()))


@cache
def _clips() -> tuple:
    return tuple(render_clip(CFG, i).clip for i in range(40))


def test_every_kind_has_many_seen_and_unseen_frames():
    for name, sets in FRAMES.items():
        assert len(set(sets["seen"])) >= 5 and len(set(sets["unseen"])) >= 4, name
    for a in _facesynth_asks():
        # distinct questions once subjects and label words are filled in
        assert len(all_wordings(wording="seen", **a)) >= 10 and len(all_wordings(wording="unseen", **a)) >= 6, a


def test_seen_and_unseen_wordings_never_meet():
    assert not _every("seen") & _every("unseen")
    # across kinds too: a yes/no about one label never words like another kind's question
    yesno_hat = all_wordings("yesno", "unseen", label="wearing_hat")
    assert "would you say he is wearing a hat" in yesno_hat and "is he wearing a hat" not in yesno_hat


def test_questions_are_drawn_deterministically_per_seed():
    draw = [ask("emotion", "seen", np.random.default_rng(7)) for _ in range(2)]
    assert draw[0] == draw[1]
    many = {ask("emotion", "seen", np.random.default_rng(s)) for s in range(40)}
    assert len(many) >= 15  # varied across seeds
    a, b = render_clip(CFG, 3).clip, render_clip(CFG, 3).clip
    assert [q.question for q in a.qa] == [q.question for q in b.qa]
    other = render_clip(SynthConfig(seed=5, min_frames=16, max_frames=16, min_size=64, max_size=64,
                                    clips_per_identity=1), 3).clip
    assert [q.question for q in a.qa] != [q.question for q in other.qa]


def test_train_and_val_clips_carry_only_seen_wordings_and_test_clips_both():
    by_split: dict[str, int] = {}
    for c in _clips():
        by_split[c.split] = by_split.get(c.split, 0) + 1
        if c.split != "test":
            assert {q.wording for q in c.qa} == {"seen"}
            for q in c.qa:
                assert canonical(q.question) in _every("seen") and canonical(q.question) not in _every("unseen"), q
            continue
        # each question twice, seen then unseen, with one answer
        assert len(c.qa) % 2 == 0
        for s, u in zip(c.qa[::2], c.qa[1::2], strict=True):
            assert (s.wording, u.wording) == ("seen", "unseen") and (s.answer, s.type) == (u.answer, u.type)
            assert canonical(s.question) in _every("seen") and canonical(u.question) in _every("unseen")
    assert by_split == {"train": 32, "val": 4, "test": 4}


def test_unseen_wordings_are_scored_by_their_answers():
    """qa_accuracy reads the answer, never the question: the unseen pair of a question has the seen pair's
    reference, which scores right, and a wrong answer scores wrong whatever the wording."""
    test = [c for c in _clips() if c.split == "test"]
    emotions = {c.labels["emotion"][0]: c for c in _clips()}
    items = []
    for c in test:
        for q in c.qa:
            if q.type not in SCORED_TYPES:
                continue
            assert answer_correct(q.type, q.answer, q.answer)
            items.append(QAItem(f"{c.id}-{q.wording}", q.type, q.question, q.answer, q.answer))
            if q.type == "yesno":
                flipped = ("No" + q.answer[3:]) if q.answer.startswith("Yes") else "Yes" + q.answer[2:]
                assert not answer_correct("yesno", q.answer, flipped)
            if q.type == "emotion":
                other = next(e for e in emotions if e != c.labels["emotion"][0])
                wrong = next(x.answer for x in emotions[other].qa if x.type == "emotion")
                assert not answer_correct("emotion", q.answer, wrong)
    acc = accuracy_by_type(items)
    assert acc["all"]["accuracy"] == 1.0 and acc["all"]["n"] == len(items) >= 4 * len(test) * 2


def test_the_pipeline_template_writer_words_the_same_way():
    feats = {"appearance": ["black_hair", "eyeglasses"], "action": ["nod"], "emotion": ["happy"]}
    train = ClipJob("clip-1", "v.mp4", (0, 48), 12.0, feats)
    summary = template_summary(train)
    qa = template_qa(train, summary, 4)
    assert qa == template_qa(train, summary, 4)  # seeded by the clip id
    assert len(qa) == 4 and {q.wording for q in qa} == {"seen"}
    kinds = ("appearance", "actions", "emotion")
    for q, kind in zip(qa, kinds, strict=False):
        assert canonical(q.question) in all_wordings(kind, "seen", subjects=NEUTRAL_SUBJECTS), q
    test = template_qa(ClipJob("clip-1", "v.mp4", (0, 48), 12.0, feats, split="test"), summary, 4)
    assert [q.wording for q in test] == ["seen", "unseen"] * 4
    for q, kind in zip(test[1::2], kinds, strict=False):
        assert canonical(q.question) in all_wordings(kind, "unseen", subjects=NEUTRAL_SUBJECTS), q
    # "he" only for clips the features call male; never "she"
    asked = [q.question.lower() for i in range(30) for q in template_qa(
        ClipJob(f"m{i}", "v", (0, 48), 12.0, {**feats, "appearance": ["male", "black_hair"]}), summary, 5)]
    assert any(f" {HE.nom} " in f" {x} " for x in asked)
    assert not any(f" {SHE.nom} " in f" {x} " for x in asked)


def test_bad_requests_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="kind"):
        ask("colour", "seen", rng)
    with pytest.raises(ValueError, match="wording"):
        ask("emotion", "held-out", rng)
    with pytest.raises(ValueError, match="needs the label"):
        ask("yesno", "seen", rng)
    with pytest.raises(ValueError, match="no wording for the action"):
        ask("yesno", "seen", rng, label="chew")
