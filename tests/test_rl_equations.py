"""Hand-computed small cases of each DE-GRPO equation (favchat.rl.de_grpo) and TRL parity of the loss."""

from __future__ import annotations

import math

import pytest
import torch

from favchat.rl import de_grpo


def test_pairs_and_separability():
    r = torch.tensor([0.9, 0.1, 0.5])
    pairs = de_grpo.preference_pairs(r, margin=0.1)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (2, 1)]
    # gaps 0.8, 0.4, 0.4 -> mean 1.6/3
    assert de_grpo.separability(r, pairs).item() == pytest.approx(1.6 / 3)
    assert de_grpo.preference_pairs(r, margin=0.5).tolist() == [[0, 1]]


def test_equal_rewards_give_no_pairs_and_zero_d():
    r = torch.full((4,), 0.7)
    pairs = de_grpo.preference_pairs(r)
    assert pairs.shape == (0, 2)
    assert de_grpo.separability(r, pairs).item() == 0.0
    assert de_grpo.gradient_sensitivity(torch.randn(4, 5), pairs).item() == 0.0


def test_gradient_sensitivity():
    g = torch.tensor([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])
    pairs = torch.tensor([[0, 1], [0, 2]])
    # ‖(3,-4)‖ = 5, ‖(3,0)‖ = 3 -> 4
    assert de_grpo.gradient_sensitivity(g, pairs).item() == pytest.approx(4.0)


def test_utility_minmax():
    d = torch.tensor([0.0, 0.5, 1.0])
    g = torch.tensor([2.0, 4.0, 3.0])
    # D̃ = (0, .5, 1), G̃ = (0, 1, .5)
    assert de_grpo.utility(d, g).tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert de_grpo.minmax(torch.tensor([0.3, 0.3])).tolist() == [1.0, 1.0]
    assert de_grpo.minmax(torch.zeros(2)).tolist() == [0.0, 0.0]


def test_recurrent_state_hand_computed():
    h = torch.tensor([0.5, 0.5])
    u = torch.tensor([0.0, 1.0])  # δ = 0.5
    out = de_grpo.recurrent_state(h, u, beta=0.8, tau=0.1)
    s = 1 / (1 + math.exp(5.0))
    assert out.tolist() == pytest.approx([0.8 * 0.5 + 0.2 * s, 0.8 * 0.5 + 0.2 * (1 - s)])


def test_zero_separability_sample_falls_toward_removal():
    # sample 0: all G rewards equal -> D = 0 -> U = 0; sample 1 separable. h_0 drops below τ_low.
    rewards = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.6, 0.2]])
    grads = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    h = torch.full((2,), 0.5)
    history = []
    for _ in range(8):
        d, g = [], []
        for i in range(2):
            p = de_grpo.preference_pairs(rewards[i])
            d.append(de_grpo.separability(rewards[i], p))
            g.append(de_grpo.gradient_sensitivity(grads[i], p))
        assert d[0].item() == 0.0
        h = de_grpo.recurrent_state(h, de_grpo.utility(torch.stack(d), torch.stack(g)), beta=0.8, tau=0.1)
        history.append(h[0].item())
    assert all(b < a for a, b in zip(history, history[1:], strict=False))
    remove, decay = de_grpo.filter_decay(h, 0.2, 0.8)
    assert remove.tolist() == [True, False] and decay.tolist() == [False, True]


def test_advantages_decay_and_reduce_to_grpo():
    r = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.2, 0.4, 0.2, 0.4]])
    h = torch.tensor([1.0, 1.0])
    v = r.mean(1)
    no = torch.tensor([False, False])
    base = de_grpo.advantages(r, h, v, no, gamma=0.5)
    # with h ≡ 1, no decay and V = group mean: the GRPO advantage
    assert torch.allclose(base, de_grpo.group_advantages(r))
    std0 = r[0].std().item()
    assert base[0, 0].item() == pytest.approx(0.5 / (std0 + 1e-4))
    dec = de_grpo.advantages(r, h, v, torch.tensor([True, False]), gamma=0.5)
    assert torch.allclose(dec[0], 0.5 * base[0]) and torch.equal(dec[1], base[1])
    assert dec[0].abs().sum() < base[0].abs().sum()
    half = de_grpo.advantages(r, torch.tensor([0.3, 1.0]), v, no, gamma=0.5)
    assert torch.allclose(half[0], 0.3 * base[0])


def _batch(n=6, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(n, t, generator=g) * 3
    old = logps + 0.3 * torch.randn(n, t, generator=g)  # ratios well outside [0.8, 1.2] on some tokens
    ref = logps + 0.2 * torch.randn(n, t, generator=g)
    adv = torch.randn(n, generator=g)
    mask = torch.ones(n, t)
    mask[0, 3:] = 0
    mask[2, 1:] = 0
    mask[5] = 0  # an empty completion must not produce NaN
    return logps, old, ref, adv, mask


def test_policy_loss_hand_computed():
    logps = torch.tensor([[math.log(0.5), math.log(0.5)]])
    old = torch.tensor([[math.log(0.25), math.log(0.5)]])  # ratios 2.0, 1.0
    ref = logps.clone()  # k3 = 0
    loss, m = de_grpo.policy_loss(logps, old, ref, torch.tensor([1.0]), torch.ones(1, 2), clip_eps=0.2, beta_kl=0.01)
    # token 1: -min(2, 1.2) = -1.2; token 2: -1 -> mean -1.1
    assert loss.item() == pytest.approx(-1.1)
    assert m["clip_fraction"].item() == pytest.approx(0.5)
    assert m["kl"].item() == 0.0


def test_policy_loss_with_empty_completion_is_finite():
    logps, old, ref, adv, mask = _batch()
    loss, _ = de_grpo.policy_loss(logps, old, ref, adv, mask)
    assert torch.isfinite(loss)


def _trl_loss(logps, old, ref, adv, mask, eps, beta, is_correction):
    """TRL's own GRPOTrainer._compute_loss on a minimally constructed trainer (no model forward)."""
    pytest.importorskip("trl")
    from accelerate import Accelerator
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir="/tmp/favchat-trl-parity", report_to=[], use_cpu=True, bf16=False,
                      epsilon=eps, beta=beta, loss_type="grpo",
                      use_bias_correction_kl=is_correction)
    tr = GRPOTrainer.__new__(GRPOTrainer)
    # The attributes GRPOTrainer.__init__ derives from args, set the way it sets them.
    tr.args = args
    tr.beta, tr.loss_type = args.beta, args.loss_type
    tr.epsilon_low = args.epsilon
    tr.epsilon_high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    tr.importance_sampling_level = args.importance_sampling_level
    tr.top_entropy_quantile = args.top_entropy_quantile
    tr.off_policy_mask_threshold = getattr(args, "off_policy_mask_threshold", None)
    tr.use_vllm, tr.vllm_importance_sampling_correction = False, False
    tr.aux_loss_enabled = False
    tr._entropy_bonus_enabled = False
    tr.current_gradient_accumulation_steps = 1
    tr.accelerator = Accelerator(cpu=True)
    tr.model = torch.nn.Linear(1, 1).eval()
    from collections import defaultdict

    tr._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    # The policy's per-token log-probs are the fixed batch's: replace only the forward that computes them.
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    n, t = logps.shape
    inputs = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long), "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long), "completion_mask": mask.long(),
        "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
    }
    return tr._compute_loss(tr.model, inputs), tr._metrics["eval"]


@pytest.mark.parametrize(("eps", "beta", "is_correction"),
                         [(0.2, 0.01, False), (0.2, 0.01, True), (0.1, 0.0, False), (0.3, 0.5, True)])
def test_grpo_loss_matches_trl(eps, beta, is_correction):
    logps, old, ref, adv, mask = _batch(seed=int(eps * 100))
    ours, m = de_grpo.policy_loss(logps, old, ref, adv, mask, clip_eps=eps, beta_kl=beta, kl_is_correction=is_correction)
    theirs, tm = _trl_loss(logps, old, ref, adv, mask, eps, beta, is_correction)
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert m["clip_fraction"].item() == pytest.approx(tm["clip_ratio/region_mean"][-1], abs=1e-6)
    if beta:
        assert m["kl"].item() == pytest.approx(tm["kl"][-1], abs=1e-6)
