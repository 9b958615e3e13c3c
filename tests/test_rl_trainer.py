"""The RL trainer on the tiny preset: parameters move where they should, state save/resume is bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from favchat.config import ConfigError, load_config
from favchat.data.manifest import Clip
from favchat.data.video import write_video
from favchat.rl.config import RLConfig
from favchat.rl.data import samples_from_clips
from favchat.rl.probe import ProbeCapture, per_response_grads, probe_parameters
from favchat.rl.state import SampleState
from favchat.rl.trainer import RLTrainer, completion_mask, token_logps

LABELS = [
    {"appearance": ["black_hair", "eyeglasses"], "action": ["smile"], "emotion": ["happy"]},
    {"appearance": ["blond_hair"], "action": ["nod"], "emotion": ["sad"]},
    {"appearance": ["gray_hair"], "action": [], "emotion": ["surprise"]},
    {"appearance": [], "action": [], "emotion": []},  # no labels at all: reward 0, never NaN
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny model's ops are far too small to gain from intra-op threads; on a busy 2-core machine
    # two threads per op thrash (measured 10x slower). Restored after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl_videos")
    rng = np.random.default_rng(0)
    clips = []
    for i, lab in enumerate(LABELS):
        path = write_video(root / f"c{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
        clips.append(Clip(id=f"c{i}", video=str(path), labels=lab))
    return samples_from_clips(clips)


def _tiny():
    from favchat.model.configuration import FaVChatConfig
    from favchat.model.modeling import FaVChatForConditionalGeneration
    from favchat.model.processing import FaVChatProcessor

    torch.manual_seed(0)
    cfg = FaVChatConfig.from_preset("tiny")
    proc = FaVChatProcessor.from_config(cfg)
    return FaVChatForConditionalGeneration(cfg), proc


def _trainer(tmp_path, samples, **kw):
    model, proc = _tiny()
    cfg = RLConfig(output_dir=str(tmp_path), num_generations=3, batch_size=2, max_new_tokens=6, num_rounds=2,
                   save_every=0, seed=0, learning_rate=1e-3, **kw)
    return RLTrainer(cfg, model=model, processor=proc, train_samples=samples, eval_samples=samples[:2])


def test_completion_mask_and_token_logps():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert completion_mask(ids, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    logits = torch.randn(1, 5, 9)
    out = token_logps(logits, torch.tensor([[3, 4]]), prompt_len=3, temperature=2.0)
    ref = torch.log_softmax(logits[0, 2:4] / 2.0, -1)
    assert torch.allclose(out[0], torch.stack([ref[0, 3], ref[1, 4]]))
    # a suppressed token (the video placeholder) leaves the distribution: the others renormalise
    sup = token_logps(logits, torch.tensor([[3, 4]]), prompt_len=3, temperature=1.0, suppressed=[0])
    kept = torch.log_softmax(logits[0, 2:4, 1:], -1)
    assert torch.allclose(sup[0], torch.stack([kept[0, 2], kept[1, 3]]))


def test_per_response_grads_match_one_backward_each():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 7)
    head = torch.nn.Linear(7, 11)
    x = torch.randn(4, 3, 5)
    logp = torch.log_softmax(head(torch.tanh(lin(x))), -1)[..., 2].mean(-1)  # (4,) a per-response mean log-prob
    probe = list(lin.parameters())
    got = per_response_grads(logp, probe, [0, 2, 3])
    for k, r in enumerate([0, 2, 3]):
        ref = torch.cat([g.flatten() for g in torch.autograd.grad(logp[r], probe, retain_graph=True)])
        assert torch.allclose(got[k], ref, atol=1e-6)


@pytest.mark.parametrize("prefixes", [[], ["language_model.model.layers.1.mlp.down_proj"]])
def test_probe_capture_equals_per_response_backward(prefixes):
    model, _ = _tiny()
    model.set_trainable(["projector", "language_model"])
    names = [n for n, _ in probe_parameters(model, prefixes)]
    assert names == (["language_model.model.norm.weight"] if not prefixes else
                     ["language_model.model.layers.1.mlp.down_proj.weight"])
    cap = ProbeCapture(model, names)
    ids = torch.randint(4, 200, (5, 9))
    with cap.recording():
        logits = model.language_model(input_ids=ids).logits
    seq_logp = token_logps(logits, ids[:, 4:], prompt_len=4, temperature=0.7).mean(-1)  # (5,)
    fast = cap.grads(seq_logp, [0, 3, 4])
    ref = per_response_grads(seq_logp, cap.params, [0, 3, 4])
    assert fast.shape == ref.shape and torch.allclose(fast, ref, atol=1e-5, rtol=1e-4)
    cap.remove()


@pytest.mark.parametrize("algorithm", ["de_grpo", "grpo"])
def test_steps_move_trainable_and_keep_frozen(tmp_path, samples, algorithm):
    kw = {"reward": "format_length"} if algorithm == "grpo" else {}  # varied rewards even from a random policy
    tr = _trainer(tmp_path, samples, algorithm=algorithm, max_steps=2, **kw)
    model = tr._policy()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and any(n.startswith("general_encoder") for n in before)
    res = tr.train()
    after = dict(model.named_parameters())
    moved = [n for n in trainable if not torch.equal(before[n], after[n])]
    assert moved, "no trainable parameter changed"
    frozen_changed = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert frozen_changed == []
    for row in res["history"]:
        assert all(np.isfinite(v) for k, v in row.items() if k != "heldout_reward")
    assert (tmp_path / "metrics.csv").exists()


def test_resume_is_bit_exact(tmp_path, samples):
    straight = _trainer(tmp_path / "a", samples, max_steps=4, deterministic=True)  # bit for bit on a GPU too
    straight.train()
    first = _trainer(tmp_path / "b", samples, max_steps=2, deterministic=True)
    first.train()
    resumed = _trainer(tmp_path / "b", samples, max_steps=4, deterministic=True)
    resumed.train(resume="latest")
    assert resumed.step == straight.step == 4
    for (n, p), (_, q) in zip(straight._policy().named_parameters(), resumed._policy().named_parameters(), strict=True):
        assert torch.equal(p, q), n
    for p, q in zip(straight.value_head.parameters(), resumed.value_head.parameters(), strict=True):
        assert torch.equal(p, q)
    for k, v in straight.state.state_dict().items():
        assert torch.equal(v, resumed.state.state_dict()[k]), k
    assert torch.equal(straight.weights.eta, resumed.weights.eta)
    assert straight.state.visits.sum() == 4 * 2


def test_sample_state_roundtrip(tmp_path):
    st = SampleState.create(5)
    st.update(torch.tensor([1, 3]), torch.tensor([0.1, 0.9], dtype=torch.float64), torch.tensor([True, False]),
              torch.tensor([False, True]), round_idx=2)
    torch.save(st.state_dict(), tmp_path / "s.pt")
    back = SampleState.from_state_dict(torch.load(tmp_path / "s.pt"))
    for k, v in st.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    assert back.active().tolist() == [0, 2, 3, 4]
    assert back.removed_round.tolist() == [-1, 2, -1, -1, -1]


def test_config_rejects_bad_combinations():
    with pytest.raises(ValueError, match="tau_low < tau_high"):
        RLConfig(tau_low=0.9, tau_high=0.8)
    with pytest.raises(ValueError, match="num_generations"):
        RLConfig(num_generations=1)
    with pytest.raises(ValueError, match="de_grpo needs reward: facial"):
        RLConfig(algorithm="de_grpo", reward="format_length")
    with pytest.raises(ConfigError, match="'bogus' is not accepted"):
        load_config(RLConfig, overrides={"algorithm": "grpo", "bogus": 1})
    with pytest.raises(ConfigError, match="tau_low < tau_high"):
        load_config(RLConfig, overrides=["--tau_low", "0.9"])
    c = RLConfig()
    assert (c.beta, c.tau_low, c.tau_high, c.gamma, c.clip_eps, c.beta_kl) == (0.8, 0.2, 0.8, 0.5, 0.2, 0.01)


def test_lora_policy_uses_the_adapter_disabled_base_as_reference(tmp_path, samples):
    from favchat.model.lora import apply_lora

    model, proc = _tiny()
    apply_lora(model)
    cfg = RLConfig(output_dir=str(tmp_path), num_generations=3, batch_size=2, max_new_tokens=6, max_steps=2,
                   save_every=0, trainable=["language_model"], learning_rate=1e-2)
    tr = RLTrainer(cfg, model=model, processor=proc, train_samples=samples)
    assert tr.ref_mode == "disable_adapter" and tr.reference is None
    assert all("lora_" in n for n in tr.probe_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all("lora_" in n for n in changed)


def test_several_policy_updates_per_batch(tmp_path, samples):
    tr = _trainer(tmp_path, samples, max_steps=1, num_iterations=2)
    res = tr.train()
    row = res["history"][0]
    # the second update sees π ≠ π_old, so the ratio and the KL to the reference are no longer trivial
    assert np.isfinite(row["policy_loss"]) and row["kl"] > 0
