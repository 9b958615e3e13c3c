"""Tests of favchat.rl.rewards: hand-computed soft F1 on crafted responses, λ, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from favchat.rl import rewards

LAB = {"appearance": ["black_hair", "eyeglasses"], "emotion": ["happy"]}


def test_synonyms_hand_computed():
    # dark hair -> black_hair, spectacles -> eyeglasses, joyful -> happy; "man" -> male (extra, cost 0.5)
    # appearance: TP=2, FP=0.5, FN=0 -> 4/4.5; emotion: 1; action: no labels -> renormalised away
    s = rewards.group_scores(["A man with dark hair and spectacles looks joyful."], LAB)[0]
    assert s[0].item() == pytest.approx(4 / 4.5)
    assert math.isnan(s[1].item())
    assert s[2].item() == pytest.approx(1.0)
    total = rewards.facial_reward(["A man with dark hair and spectacles looks joyful."], LAB)
    assert total == [pytest.approx((4 / 4.5 + 1.0) / 2)]


def test_negation_is_not_a_mention_and_a_denied_truth_costs_precision():
    # "no glasses": eyeglasses denied (contradiction cost 1); black hair matched.
    # appearance TP=1, FP=1 (denied truth), FN=1 -> 2/4; emotion: nothing -> 0
    s = rewards.group_scores(["Black hair, but no glasses."], LAB)[0]
    assert s[0].item() == pytest.approx(0.5)
    assert s[2].item() == 0.0
    # the negated label alone gives no credit
    assert rewards.group_scores(["He wears no glasses."], {"appearance": ["eyeglasses"]})[0, 0].item() == 0.0


def test_contradictions_cost_more_than_extras():
    lab = {"appearance": ["black_hair"], "emotion": ["happy"]}
    # blond contradicts black_hair (cost 1): TP=0 -> 0. sad contradicts happy: 0.
    s = rewards.group_scores(["She has blond hair and looks sad."], lab)[0]
    assert s[0].item() == 0.0 and s[2].item() == 0.0
    # black + blond: TP=1, FP=1 (contradiction) -> 2/3 ; black + hat: FP=0.5 -> 2/2.5
    both = rewards.group_scores(["black hair and blond hair", "black hair and a hat"], lab)[:, 0]
    assert both.tolist() == pytest.approx([2 / 3, 2 / 2.5])


def test_weights_and_range():
    lab = {"appearance": ["black_hair"], "action": ["smile"], "emotion": ["happy"]}
    text = ["Black hair, and she smiles."]  # appearance 1, action 1, emotion 0
    assert rewards.facial_reward(text, lab, weights=[1, 1, 2]) == [pytest.approx(0.5)]
    assert rewards.facial_reward(text, lab, weights={"appearance": 1, "action": 0, "emotion": 0}) == [pytest.approx(1.0)]
    with pytest.raises(ValueError, match="weights"):
        rewards.facial_reward(text, lab, weights=[1, 1])


def test_bad_input_never_crashes_or_nans():
    # empty completion, special tokens only, no labels at all
    out = rewards.facial_reward(["", "<|im_end|></s>", "A man with black hair."], LAB)
    assert out[:2] == [0.0, 0.0]
    assert rewards.facial_reward(["A man with black hair."], {}) == [0.0]
    assert rewards.make_group_reward("action")(None, ["smiles"], labels=[LAB]) == [None]
    combined = rewards.combine_rewards({"nan_fn": [float("nan"), 0.5], "other": [None, 1.0]}, 2)
    assert combined.tolist() == [0.0, 0.75]
    with pytest.raises(ValueError, match="unknown taxonomy labels"):
        rewards.facial_reward(["x"], {"appearance": ["purple_hair"]})
    with pytest.raises(ValueError, match="not in group"):
        rewards.facial_reward(["x"], {"appearance": ["smile"]})


def test_format_length_reward():
    good = "The person smiles and nods while talking to the camera calmly."
    out = rewards.format_length_reward(None, [good, "no no no no", "", "<|im_end|>"])
    assert out[0] == 1.0
    assert out[1] == pytest.approx(0.5 * 0 + 0.5 * 4 / 8)  # loop: no format credit; 4 of 8 words
    assert out[2:] == [0.0, 0.0]


def test_learnable_weights_move_toward_the_separating_facet():
    # appearance varies within the group, action and emotion are constant
    scores = torch.tensor([[1.0, 0.5, 0.5], [0.0, 0.5, 0.5], [1.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)
    w = rewards.RewardWeights(lr=1.0, kl_coef=0.01)
    before = w.weights.clone()
    w.update(scores, group_size=4)
    assert w.weights[0] > before[0] and w.weights[1] < before[1]
    fixed = rewards.RewardWeights(learnable=False)
    fixed.update(scores, group_size=4)
    assert torch.equal(fixed.weights, before)
    # the KL pull alone moves λ back toward uniform
    skew = rewards.RewardWeights(init=[0.8, 0.1, 0.1], lr=1.0, kl_coef=1.0)
    skew.update(torch.full((4, 3), 0.3, dtype=torch.float64), group_size=4)
    assert skew.weights[0] < 0.8


@pytest.mark.slow
def test_embedding_backend_matches_paraphrase():
    lab = {"emotion": ["happy"]}
    out = rewards.facial_reward(["The person looks really happy today."], lab, backend="embedding")
    assert out == [pytest.approx(1.0)]
    # negated clauses never assert through embeddings
    assert rewards.facial_reward(["The person is not happy."], lab, backend="embedding") == [0.0]
