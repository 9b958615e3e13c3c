"""The RL trainer on the tiny preset: parameters move where they should, state save/resume is bit-exact."""

from __future__ import annotations

import copy

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
    with pytest.raises(ValueError, match="log_every must be ≥ 1"):
        RLConfig(log_every=0)
    with pytest.raises(ValueError, match="de_grpo needs reward: facial"):
        RLConfig(algorithm="de_grpo", reward="format_length")
    with pytest.raises(ConfigError, match="'bogus' is not accepted"):
        load_config(RLConfig, overrides={"algorithm": "grpo", "bogus": 1})
    with pytest.raises(ConfigError, match="tau_low < tau_high"):
        load_config(RLConfig, overrides=["--tau_low", "0.9"])
    c = RLConfig()
    assert (c.beta, c.tau_low, c.tau_high, c.gamma, c.clip_eps, c.beta_kl) == (0.8, 0.2, 0.8, 0.5, 0.2, 0.01)


def _trained_lora_model():
    """The tiny model with LoRA on its LLM whose B matrices are not zero, as stage 3 leaves them."""
    from favchat.model.lora import apply_lora

    model, proc = _tiny()
    apply_lora(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model, proc


def _ref_and_policy_logps(tr, samples):
    batch = tr._prompt_batch(samples[:2])
    feats, prompt, ids, mask = tr._rollouts(batch, 2)
    with torch.no_grad():
        policy = tr._forward_logps(tr._policy(), feats, prompt, ids, mask, False)[0]
    return tr._ref_logps(feats, prompt, ids, mask), policy, (feats, prompt, ids, mask)


@pytest.mark.parametrize("trainable", [["language_model"], ["projector", "face_qformer", "language_model"]])
def test_lora_reference_is_the_start_with_adapters_off_and_no_model_copy(tmp_path, samples, trainable):
    model, proc = _trained_lora_model()
    start = copy.deepcopy(model).eval()
    cfg = RLConfig(output_dir=str(tmp_path), num_generations=3, batch_size=2, max_new_tokens=6, max_steps=2,
                   save_every=0, trainable=trainable, learning_rate=1e-2)
    tr = RLTrainer(cfg, model=model, processor=proc, train_samples=samples)
    ref = tr.reference
    # stage 3's adapters folded into the base: the same policy; the adapters restart at B = 0
    assert ref.adapters_off and not any("lora_" in n for n in ref.copies)
    assert sorted({n.split(".")[0] for n in ref.copies}) == sorted(c for c in trainable if c != "language_model")
    assert all(t.dtype == torch.bfloat16 for t in ref.copies.values())
    assert all(torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)
    ref_lp, policy_lp, (feats, prompt, ids, mask) = _ref_and_policy_logps(tr, samples)
    with torch.no_grad():
        start_lp = tr._forward_logps(start, feats, prompt, ids, mask, False)[0]
    assert torch.allclose(policy_lp, start_lp, atol=1e-5)
    assert torch.allclose(ref_lp, start_lp, atol=2e-2)  # bf16 copies of the small components
    assert all("lora_" in n for n in tr.probe_names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tr.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert changed and all(n.split(".")[0] in trainable and ("lora_" in n or not n.startswith("language_model"))
                           for n in changed)
    ref_after, policy_after, _ = _ref_and_policy_logps(tr, samples)
    assert not torch.allclose(ref_after, policy_after, atol=1e-3)  # the policy moved, the reference did not
    ref_lp2 = tr._ref_logps(feats, prompt, ids, mask)
    assert torch.allclose(ref_lp2, ref_lp, atol=1e-6)


def test_full_llm_reference_is_a_bf16_copy_of_the_trainable_parts(tmp_path, samples):
    tr = _trainer(tmp_path, samples, max_steps=1)
    model = tr._policy()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not tr.reference.adapters_off and set(tr.reference.copies) == trainable
    towers = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("general_encoder", "face_encoder")))
    assert towers and tr.reference.nbytes() == 2 * sum(p.numel() for n, p in model.named_parameters() if n in trainable)


def test_several_policy_updates_per_batch(tmp_path, samples):
    tr = _trainer(tmp_path, samples, max_steps=1, num_iterations=2)
    res = tr.train()
    row = next(r for r in res["history"] if "policy_loss" in r)
    # the second update sees π ≠ π_old, so the ratio and the KL to the reference are no longer trivial
    assert np.isfinite(row["policy_loss"]) and row["kl"] > 0


@pytest.fixture(scope="module")
def facesynth_descriptions(tmp_path_factory):
    from favchat.data.manifest import read_manifest
    from favchat.data.synth.generate import SynthConfig, generate

    out = tmp_path_factory.mktemp("rl_facesynth")
    manifest = generate(SynthConfig(seed=3, min_frames=8, max_frames=8, min_size=32, max_size=32), 8, out, progress=False)
    return samples_from_clips(read_manifest(manifest), types=["description"])


@pytest.fixture(scope="module")
def describer(facesynth_descriptions):
    """The tiny model whose LLM learnt the clips' descriptions as plain text (no video): its samples name
    labels, right or wrong, so rewards differ within and between groups as a trained model's do."""
    model, proc = _tiny()
    answers = [next(q.answer for q in s.clip.qa if q.question == s.question) for s in facesynth_descriptions]
    ids = proc.tokenizer(answers, padding=True, return_tensors="pt")
    labels = ids.input_ids.masked_fill(ids.attention_mask == 0, -100)
    opt = torch.optim.AdamW(model.language_model.parameters(), lr=3e-3)
    for _ in range(400):  # FaceSynth v2 words its descriptions in more ways: 150 steps left every h under τ_high
        loss = model.language_model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, proc


def test_default_de_grpo_removes_and_decays_then_resumes_mid_round(tmp_path, facesynth_descriptions, describer):
    """DE-GRPO with its defaults (Table 6, 3 rounds of 5 passes, batch 8, h0 0.5) on FaceSynth: samples leave
    the pool and rewards decay within the run; a run stopped mid-round resumes to the same state."""
    pool = facesynth_descriptions
    assert len(pool) == 8

    def trainer(out, save_every=0):
        model, proc = describer
        # only the scale is reduced (shorter responses); the mechanism runs at its defaults
        cfg = RLConfig(output_dir=str(out), max_new_tokens=16, save_every=save_every, deterministic=True,
                       num_workers=0)
        return RLTrainer(cfg, model=copy.deepcopy(model), processor=proc, train_samples=pool)

    straight = trainer(tmp_path / "a", save_every=2)  # also checkpoints inside the rounds
    assert straight.steps_per_round() == 5  # 5 passes over 8 samples in batches of 8
    res = straight.train()
    st = straight.state
    assert res["round"] == 3 and straight.step == 15  # all three rounds ran
    assert (st.removed_round >= 0).any(), f"no sample removed: h = {st.h.tolist()}"
    assert st.times_decayed.sum() > 0, f"no reward decayed: h = {st.h.tolist()}"
    assert [r for r in res["history"] if "pool_size" in r][-1]["pool_size"] < len(pool)

    saved = {torch.load(c / "rl_state.pt", weights_only=False)["step"]: c
             for c in (tmp_path / "a" / "checkpoints").iterdir()}
    # every 2 steps and every round's end (5, 10, 15), step 10 once
    assert sorted(saved) == [2, 4, 5, 6, 8, 10, 12, 14, 15] and len(saved) == 9
    inside_round_2 = saved[8]
    resumed = trainer(tmp_path / "b")
    resumed.train(resume=inside_round_2)
    assert resumed.step == 15
    for k, v in st.state_dict().items():
        assert torch.equal(v, resumed.state.state_dict()[k]), k
    for (n, p), (_, q) in zip(straight._policy().named_parameters(), resumed._policy().named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert torch.equal(straight.weights.eta, resumed.weights.eta)


def test_video_lru_keeps_the_most_recent_clips(samples):
    from favchat.rl.data import VideoLRU

    decoded = []
    lru = VideoLRU(lambda path, frame_range: decoded.append(path) or str(path), size=2)
    a, b, c = samples[0], samples[1], samples[2]
    lru(a), lru(b), lru(a), lru(c)  # c pushes out b, the least recently used
    assert lru.get(b) is None and lru.get(a) is not None and len(lru) == 2
    lru(b)
    assert len(decoded) == 4  # a, b, c, then b again
    none = VideoLRU(lambda path, frame_range: str(path), size=0)
    assert none(a) is not None and len(none) == 0


def test_videos_decoded_in_workers_train_the_same(tmp_path, samples):
    runs = []
    for workers in (0, 2):
        tr = _trainer(tmp_path / str(workers), samples, max_steps=2, num_workers=workers, video_cache_size=1)
        tr.train()
        runs.append(tr)
    for (n, p), (_, q) in zip(runs[0]._policy().named_parameters(), runs[1]._policy().named_parameters(), strict=True):
        assert torch.equal(p, q), n
    assert len(runs[1].videos) == 1


def test_console_gets_every_log_every_step_and_every_heldout_reward(tmp_path, samples, caplog):
    from favchat.train.metrics_log import read_metrics

    tr = _trainer(tmp_path, samples, max_steps=4, log_every=2)
    with caplog.at_level("INFO", logger="favchat.train"):
        tr.train()
    printed = [r.getMessage().split(" |")[0] for r in caplog.records if r.getMessage().startswith("step ")]
    # the start's and the end's held-out reward (steps 0 and 4), and training steps 2 and 4
    assert printed == ["step 0", "step 2", "step 4", "step 4"]
    assert [int(r["step"]) for r in read_metrics(tmp_path / "metrics.csv")] == [0, 1, 2, 3, 4, 4]  # every row


def test_metrics_csv_widens_for_the_training_rows_after_the_heldout_row(tmp_path):
    from favchat.train.metrics_log import CSVTracker, read_metrics

    tracker = CSVTracker(tmp_path / "metrics.csv")
    tracker.log({"round": 0.0, "heldout_reward": 0.5}, step=0)  # the RL run's first row: the start's held-out reward
    tracker.log({"round": 0.0, "reward": 0.25, "kl": 0.125}, step=1)
    assert read_metrics(tmp_path / "metrics.csv") == [{"step": 0, "round": 0.0, "heldout_reward": 0.5},
                                                      {"step": 1, "round": 0.0, "reward": 0.25, "kl": 0.125}]
