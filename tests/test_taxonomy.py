"""The 103-label taxonomy: counts, phrases, exclusive sets, the negation-aware lexicon, the textual mapping."""

from __future__ import annotations

import random

import pytest

from favchat.data.taxonomy import (
    BY_NAME,
    EXCLUSIVE_SETS,
    EXTRACTORS,
    GROUPS,
    LABEL_NAMES,
    LABELS,
    LABELS_BY_GROUP,
    PAPER_GROUP_COUNTS,
    contradicts,
    features_to_text,
    find_mentions,
    mentioned_labels,
    scores_to_features,
    text_to_features,
)


def test_counts_match_the_paper():
    assert len(LABELS) == 103 and len(set(LABEL_NAMES)) == 103
    assert {g: len(LABELS_BY_GROUP[g]) for g in GROUPS} == {"appearance": 48, "action": 45, "emotion": 10}
    assert PAPER_GROUP_COUNTS == {"appearance": 48, "action": 45, "emotion": 10}
    # App. B.2: E1 83, E2 42, E3 12 labels, 34 duplicates removed -> 103.
    assert {k: len(v) for k, v in EXTRACTORS.items()} == {"E1": 83, "E2": 42, "E3": 12}
    assert set().union(*map(set, EXTRACTORS.values())) == set(LABEL_NAMES)
    assert sum(len(set(v)) for v in EXTRACTORS.values()) - 103 == 34


def test_every_label_has_a_phrase_the_lexicon_reads_back():
    for lab in LABELS:
        assert lab.phrase.strip() and lab.paper_count > 0
        pos, neg = mentioned_labels(lab.phrase)
        assert lab.name in pos, (lab.name, lab.phrase, pos)
        assert not neg


def test_exclusive_sets_and_contradicts():
    for s in EXCLUSIVE_SETS:
        assert s <= set(LABEL_NAMES)
    assert contradicts("black_hair", "blond_hair") and contradicts("blond_hair", "black_hair")
    assert contradicts("happy", "sad") and contradicts("smile", "frown") and contradicts("no_beard", "mustache")
    assert not contradicts("black_hair", "eyeglasses") and not contradicts("happy", "smile")
    assert not contradicts("happy", "happy")


@pytest.mark.parametrize("text, asserted, denied", [
    ("A man with no glasses but a hat.", {"male", "wearing_hat"}, {"eyeglasses"}),
    ("She wears sunglasses.", {"sunglasses"}, set()),
    ("He doesn't smile at all.", set(), {"smile"}),
    ("She is not happy, she is sad.", {"sad"}, {"happy"}),
    ("The person has no beard.", {"no_beard"}, set()),
    ("Without earrings and without a hat, she nods.", {"nod"}, {"wearing_earrings", "wearing_hat"}),
    ("He never shakes his head; he nods.", {"nod"}, {"shake_head"}),
    ("Blonde hair, eyes closed.", {"blond_hair", "close_eyes"}, set()),
])
def test_lexicon_negation(text, asserted, denied):
    pos, neg = mentioned_labels(text)
    assert pos == asserted and neg == denied


def test_mentions_carry_spans():
    text = "a goatee and grey hair"
    ms = find_mentions(text)
    assert [m.label for m in ms] == ["goatee", "gray_hair"]
    assert all(text[m.start:m.end] == m.text for m in ms)


def test_scores_to_features_threshold_and_exclusivity():
    feats = scores_to_features({"black_hair": 0.9, "blond_hair": 0.7, "smile": 0.6, "sad": 0.4, "happy": 0.55})
    assert feats == {"appearance": ["black_hair"], "action": ["smile"], "emotion": ["happy"]}
    with pytest.raises(ValueError, match="unknown taxonomy labels"):
        scores_to_features({"purple_hair": 1.0})


def test_textual_mapping_round_trips_on_random_feature_dicts():
    rng = random.Random(0)
    for _ in range(300):
        scores = {n: rng.random() for n in rng.sample(LABEL_NAMES, rng.randint(0, 12))}
        feats = scores_to_features(scores)  # a self-consistent dictionary
        text = features_to_text(feats)
        assert text_to_features(text) == feats, text
    assert features_to_text({}).count("none") == 3
    assert BY_NAME["close_eyes"].group == "action"
