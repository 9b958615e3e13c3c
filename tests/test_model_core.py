"""FaVChat model on the tiny preset: level shapes and masks, ablations, gradients, count check, cache,
padding, save/load, LoRA, gradient checkpointing. Run: python -m pytest -q tests/test_model_core.py"""

from __future__ import annotations

import pytest
import torch

from favchat import FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor
from favchat.model.lora import apply_lora
from favchat.model.modeling import COMPONENTS
from model_helpers import ANSWERS, QUESTIONS, batch, frames, tiny


def test_levels_shapes_and_masks():
    model, proc = tiny()
    cfg = model.config
    b = batch(proc)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    n_g, n_f = (cfg.image_size // 8) ** 2, (cfg.face_image_size // 8) ** 2
    assert set(feats.general) == {2}  # the penultimate of the 3-block general ViT: hidden state 2 of 0..3
    assert feats.general[2].shape == (2, cfg.num_general_frames * n_g, 48)
    assert set(feats.face) == {1, 2, 3} and feats.face[3].shape == (2, cfg.num_face_frames * n_f, 32)
    text = model.embed_question(b["question_ids"])
    assert text.shape == (*b["question_ids"].shape, cfg.pq_hidden_size)
    m_l, f_hat = model.low_level(text, [feats.face[i] for i in (1, 2, 3)])
    assert m_l.shape == text.shape and f_hat.shape == (2, cfg.num_face_frames * n_f, cfg.pq_hidden_size)
    tokens, weights = model.video_tokens(feats, b["question_ids"], b["question_mask"])
    assert tokens.shape == (2, cfg.num_query_tokens, cfg.text_config.hidden_size)
    assert weights.shape == (2, 2) and torch.allclose(weights.sum(-1), torch.ones(2))
    # Padded question positions are masked everywhere: changing the ids under the mask changes nothing.
    qm = b["question_mask"]
    assert (qm == 0).any()
    q2 = b["question_ids"].clone()
    q2[qm == 0] = 77
    tokens2, weights2 = model.video_tokens(feats, q2, qm)
    torch.testing.assert_close(tokens2, tokens)
    torch.testing.assert_close(weights2, weights)
    # ... while a real question token does change them.
    q3 = b["question_ids"].clone()
    q3[:, 0] = 77
    assert not torch.allclose(model.video_tokens(feats, q3, qm)[0], tokens)


def test_forward_loss_is_on_answer_tokens_only():
    model, proc = tiny()
    b = batch(proc)
    out = model(**b)
    logits, labels = out.logits[:, :-1], b["labels"][:, 1:]
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    # Only the answer (and the template's end-of-turn tokens) carries labels.
    decoded = proc.tokenizer.decode(b["labels"][0][b["labels"][0] != -100])
    assert decoded.startswith(ANSWERS[0])
    assert out.adapter_weights.shape == (2, 2)
    hs = model(**b, output_hidden_states=True).hidden_states
    assert len(hs) == model.config.text_config.num_hidden_layers + 1


def test_label_phrases_fill_the_video_slots():
    """Stage 0's input: one phrase per video slot (its mean token embedding), no video, no visual levels."""
    model, proc = tiny()
    b = proc(None, QUESTIONS, ANSWERS)
    assert "general_pixel_values" not in b
    ids, mask = proc.encode_phrases([["black hair", "smiles"], ["happy"]])
    assert ids.shape[:2] == (2, model.config.num_query_tokens)
    slots = model.phrase_slots(ids, mask)
    table = model.get_input_embeddings().weight
    black = proc.tokenizer(" black hair", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(slots[0, 0], table[black].mean(0))
    assert slots[1, 1:].abs().sum() == 0  # empty slots
    out = model(**b, slot_ids=ids, slot_mask=mask)
    assert out.adapter_weights is None and torch.isfinite(out.loss)
    # Each sample reads its own slots: other phrases change its logits, and only its own.
    ids2, mask2 = proc.encode_phrases([["blond hair", "smiles"], ["happy"]])
    out2 = model(**b, slot_ids=ids2, slot_mask=mask2)
    assert not torch.allclose(out2.logits[0], out.logits[0])
    torch.testing.assert_close(out2.logits[1], out.logits[1])
    out.loss.backward()
    assert table.grad[black[0]].abs().sum() > 0  # the phrase embeddings learn too
    many = proc.encode_phrases([[f"phrase {i}" for i in range(model.config.num_query_tokens + 3)]])[1]
    assert many.any(-1).sum() == model.config.num_query_tokens  # the first N_q phrases


def test_the_phrase_table_adds_a_learned_vector_per_label(tmp_path):
    """With config.phrase_embeddings a phrase in a slot is its token mean plus its label's row of a table that
    starts at zero, takes the gradient of what the slots hold, and round-trips with the phrases' token ids."""
    from favchat.data.taxonomy import LABELS

    cfg = FaVChatConfig.from_preset("tiny", phrase_embeddings=True)
    torch.manual_seed(0)
    model = FaVChatForConditionalGeneration.from_parts(cfg)
    proc = FaVChatProcessor.from_config(cfg)
    assert tiny()[0].phrase_embeddings is None
    table = model.phrase_embeddings
    assert table.weight.shape[0] == len(LABELS) and table.weight.abs().sum() == 0
    ids, mask = proc.encode_phrases([["black hair", "smiles"], ["happy"]])
    words = model.get_input_embeddings().weight
    black = proc.tokenizer(" black hair", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(model.phrase_slots(ids, mask)[0, 0], words[black].mean(0))  # zero residual
    row = next(i for i, lab in enumerate(LABELS) if lab.phrase == "black hair")
    with torch.no_grad():
        table.weight[row] += 1.0
    slots = model.phrase_slots(ids, mask)
    torch.testing.assert_close(slots[0, 0], words[black].mean(0) + 1.0)
    assert slots[1, 1:].abs().sum() == 0  # empty slots stay empty
    model(**proc(None, QUESTIONS, ANSWERS), slot_ids=ids, slot_mask=mask).loss.backward()
    assert table.weight.grad[row].abs().sum() > 0
    assert table.weight.grad.abs().sum(-1).count_nonzero() == 3  # the rows of the three phrases only
    with pytest.raises(ValueError, match="not a taxonomy label's"):
        model.phrase_slots(*proc.encode_phrases([["blue hair"]]))
    with pytest.raises(ValueError, match="set_phrases"):  # a model built without from_parts knows no phrases
        FaVChatForConditionalGeneration(cfg).phrase_slots(ids, mask)
    model.save_pretrained(tmp_path)
    loaded = FaVChatForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.phrase_slots(ids, mask), slots)


def test_slot_noise_perturbs_every_slot_by_a_fraction_of_the_phrases_norm():
    """Stage 0's ``slot_noise``: Gaussian noise on the video slots (filled and empty), its expected norm that
    fraction of the filled slots' RMS norm, drawn from torch's generator; 0 leaves the slots exact."""
    model, proc = tiny()
    b = proc(None, QUESTIONS, ANSWERS)
    ids, mask = proc.encode_phrases([["black hair", "smiles"], ["happy"]])
    video = b["input_ids"] == model.config.video_token_id

    def slots(**kw):
        out = model(**b, slot_ids=ids, slot_mask=mask, output_hidden_states=True, **kw)
        return out.hidden_states[0][video].view(2, -1, model.config.text_config.hidden_size), out.loss

    clean, loss = slots()
    assert torch.equal(slots(slot_noise=0.0)[1], loss)
    torch.manual_seed(0)
    noisy, noisy_loss = slots(slot_noise=0.5)
    torch.manual_seed(0)
    assert torch.equal(slots(slot_noise=0.5)[1], noisy_loss) and not torch.equal(noisy_loss, loss)
    filled = mask.bool().any(-1)
    rms = clean[filled].square().sum(-1).mean().sqrt()
    ratio = (noisy - clean).norm(dim=-1) / rms  # (2, N_q): every slot, the empty ones too
    assert (ratio > 0).all() and 0.4 < ratio.mean() < 0.6


def test_slot_loss_pulls_the_video_tokens_to_their_slots_phrases():
    """Stages 1-3 with label slots: each video token's squared distance to its slot's phrase (zero: empty),
    scaled by the phrases' mean squared norm; its gradient reaches the visual levels, not the embeddings."""
    from favchat.model.modeling import slot_loss

    model, proc = tiny()
    model.config.slot_labels = ["black_hair", "happy", "smile"]
    b = batch(proc)
    ids, mask = proc.encode_phrases([["black hair", "", "smiles"], ["", "happy"]])
    assert not mask[0, 1].any() and mask[0, 2].any()  # "" leaves its slot empty
    out = model(**b, target_slot_ids=ids, target_slot_mask=mask)
    tokens, _ = model.video_tokens(model.encode_video(b["general_pixel_values"], b["face_pixel_values"]),
                                   b["question_ids"], b["question_mask"])
    targets = model.phrase_slots(ids, mask).detach()
    filled = targets.square().sum(-1) > 0
    expected = (tokens - targets).square().sum((1, 2)).mean() / targets.square().sum(-1)[filled].mean()
    torch.testing.assert_close(out.slot_loss, expected)
    torch.testing.assert_close(slot_loss(targets, targets), torch.tensor(0.0))
    torch.testing.assert_close(slot_loss(torch.zeros_like(targets), targets), filled.sum(-1).float().mean())
    model.zero_grad()
    out.slot_loss.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad is None
    assert model(**b).slot_loss is None


def test_set_slot_loss_matches_the_clips_phrases_to_the_tokens_in_any_order():
    """Stages 1-3 without label slots: the clip's phrases, matched to the video tokens by a minimum-cost
    assignment, as a classification among the batch's phrases and the empty slot plus a squared distance."""
    from favchat.model.modeling import set_slot_loss

    model, proc = tiny()
    b = batch(proc)
    ids, mask = proc.encode_phrases([["black hair", "smiles", "happy"], ["happy"]])
    present = mask.bool().any(-1)
    out = model(**b, target_slot_ids=ids, target_slot_mask=mask)
    tokens, _ = model.video_tokens(model.encode_video(b["general_pixel_values"], b["face_pixel_values"]),
                                   b["question_ids"], b["question_mask"])
    targets = model.phrase_slots(ids, mask).detach()
    torch.testing.assert_close(out.slot_loss, set_slot_loss(tokens, targets, present, ids))
    # Any order of the tokens scores the same, and tokens on their phrases score less than any other tokens.
    perm = torch.randperm(tokens.shape[1])
    torch.testing.assert_close(set_slot_loss(tokens[:, perm], targets, present, ids), out.slot_loss)
    placed = targets[:, perm]
    best = set_slot_loss(placed, targets, present, ids)
    assert best < set_slot_loss(torch.zeros_like(targets), targets, present, ids) and best < out.slot_loss
    # By hand: one sample, one phrase (so two classes: empty and "happy") and one empty slot; token 0 is
    # empty and token 1 on the phrase, so the matching pairs them the other way round from the targets.
    p = targets[1:2, :2]  # "happy", then empty
    toks = p.flip(1)
    sq = p[0, 0].square().sum()
    d = torch.stack([torch.zeros(()), sq]) / sq  # token 0 (zero) to (empty, happy); token 1 the reverse
    ce0 = torch.log_softmax(-d / 0.2, 0)[0].neg()
    expected = ce0 + ce0  # the empty pair, then the phrase pair (both at distance zero)
    torch.testing.assert_close(set_slot_loss(toks, p, present[1:2, :2], ids[1:2, :2]), expected)
    none = torch.zeros_like(present)
    torch.testing.assert_close(set_slot_loss(tokens, torch.zeros_like(targets), none, ids), torch.tensor(0.0))
    model.zero_grad()
    out.slot_loss.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad is None


def _fix_params(model) -> None:
    """Break the symmetry of zero-initialised pieces so every switch shows in the outputs."""
    if model.static_weights is not None:
        model.static_weights.data = torch.tensor([0.3, -0.2])


def test_ablation_no_face_encoder():
    model, proc = tiny(use_face_encoder=False)
    for name in ("face_encoder", "face_qformer", "general_adapter", "face_adapter", "static_weights"):
        assert getattr(model, name) is None, name
    assert set(model.component_parameters()) == {"general_encoder", "text_proj", "low_level", "general_qformer",
                                                 "projector", "language_model"}
    # The chain runs on the general tower's blocks; face pixels are not read at all.
    assert model.general_encoder.groups["chain"] == [1, 2, 3]
    b = batch(proc, answers=False)
    out = model(**b)
    out2 = model(**(dict(b) | {"face_pixel_values": torch.randn_like(b["face_pixel_values"])}))
    torch.testing.assert_close(out.logits, out2.logits)
    torch.testing.assert_close(out.adapter_weights, torch.tensor([[1.0, 0.0]] * 2))
    full, _ = tiny()
    out_full = full(**b)
    assert not torch.allclose(full(**(dict(b) | {"face_pixel_values": torch.randn_like(b["face_pixel_values"])})).logits,
                              out_full.logits)


def test_ablation_no_m_chain():
    model, proc = tiny(use_m_chain=False)
    full, _ = tiny()
    assert len(model.low_level.blocks) == 1 and len(full.low_level.blocks) == 3
    assert model.face_encoder.groups["chain"] == [3] and full.face_encoder.groups["chain"] == [1, 2, 3]
    b = batch(proc, answers=False)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    assert set(feats.face) == {3}
    # The ablation reads the last block only; the chain reads the earlier blocks too.
    feats_full = full.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    base = full.video_tokens(feats_full, b["question_ids"], b["question_mask"])[0]
    feats_full.face[1] = feats_full.face[1] + 1.0
    assert not torch.allclose(full.video_tokens(feats_full, b["question_ids"], b["question_mask"])[0], base)


def test_ablation_no_adapters():
    model, proc = tiny(use_adapters=False)
    assert model.general_adapter is None and model.face_adapter is None
    assert model.static_weights is not None and model.static_weights.shape == (2,)
    _fix_params(model)
    b = batch(proc, answers=False)
    w = model(**b).adapter_weights
    # Question-independent weights: both samples (different questions) get softmax(static_weights).
    torch.testing.assert_close(w, torch.softmax(torch.tensor([0.3, -0.2]), 0).expand(2, 2))
    full, _ = tiny()
    wf = full(**b).adapter_weights
    assert not torch.allclose(wf[0], wf[1])  # the adapters depend on the question


def test_gradients_reach_exactly_the_trainable_parameters():
    model, proc = tiny()
    model.train()
    b = batch(proc)
    model(**b).loss.backward()
    # Everything influences the loss except the LLM's embedding table through T (E_llm is frozen there);
    # the table still gets gradients from the prompt tokens it embeds for the LLM.
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == [], no_grad

    # Stage-1-like schedule: LLM and Q-Formers frozen.
    model, proc = tiny()
    model.train()
    train = ["general_encoder", "face_encoder", "low_level", "general_adapter", "face_adapter", "projector",
             "text_proj"]
    model.set_trainable(train)
    model(**b).loss.backward()
    parts = model.component_parameters()
    for name, params in parts.items():
        for pname, p in params:
            if name in train:
                assert p.grad is not None and p.grad.abs().sum() > 0, pname
            else:
                assert p.grad is None, pname
    with pytest.raises(ValueError, match="unknown components"):
        model.set_trainable(["vision_tower"])


def test_text_embedding_does_not_train_the_llm_table():
    model, proc = tiny()
    model.train()
    model.set_trainable(["text_proj"])
    emb = model.get_input_embeddings().weight
    emb.requires_grad_(True)
    b = batch(proc)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    tokens, w = model.video_tokens(feats, b["question_ids"], b["question_mask"])
    (tokens.sum() + w.sum()).backward()
    assert emb.grad is None
    assert model.text_proj.proj.weight.grad is not None


def test_placeholder_count_check_fails_loudly():
    model, proc = tiny()
    b = batch(proc, answers=False)
    ids = b["input_ids"].clone()
    first = (ids[0] == model.config.video_token_id).nonzero()[0, 0]
    ids[0, first] = 100  # one placeholder fewer in sample 0
    with pytest.raises(ValueError, match=r"placeholder count mismatch.*\(0, 7\)"):
        model(**(dict(b) | {"input_ids": ids}))
    ids = b["input_ids"].clone()
    ids[1, -1] = model.config.video_token_id  # one too many in sample 1
    with pytest.raises(ValueError, match=r"\(1, 9\)"):
        model.generate(**(dict(b) | {"input_ids": ids}), max_new_tokens=2)


def test_video_feature_cache_gives_identical_outputs():
    model, proc = tiny()
    b = batch(proc)
    ref = model(**b)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    inputs = {k: v for k, v in b.items() if "pixel" not in k}
    cached = model(**inputs, video_features=feats)
    torch.testing.assert_close(cached.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(cached.loss, ref.loss, rtol=0, atol=0)
    # A second question about the first video, with the batch-1 cache broadcast over two questions.
    v0 = frames(seed=0)
    two = proc([v0, v0], QUESTIONS, ANSWERS)
    one_feats = model.encode_video(two["general_pixel_values"][:1], two["face_pixel_values"][:1])
    torch.testing.assert_close(model(**{k: v for k, v in two.items() if "pixel" not in k},
                                     video_features=one_feats).logits, model(**two).logits, rtol=0, atol=0)
    g_ref = model.generate(**{k: v for k, v in two.items() if k != "labels"}, max_new_tokens=6)
    g_c = model.generate(**{k: v for k, v in two.items() if k not in ("labels",) and "pixel" not in k},
                         video_features=one_feats, max_new_tokens=6)
    assert torch.equal(g_ref, g_c)


def test_padded_batch_equals_one_sample_at_a_time():
    model, proc = tiny()
    b = batch(proc)
    out = model(**b)
    assert (b["attention_mask"] == 0).any()  # the two samples differ in length: padding is exercised
    for i in range(2):
        single = proc([frames(seed=i)], [QUESTIONS[i]], [ANSWERS[i]])
        o = model(**single)
        n = single["input_ids"].shape[1]
        torch.testing.assert_close(out.logits[i, :n], o.logits[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.adapter_weights[i], o.adapter_weights[0], atol=1e-6, rtol=1e-6)
    # Generation with left padding: the same greedy tokens as one sample at a time.
    g = batch(proc, answers=False)
    assert g["attention_mask"][:, 0].min() == 0  # left padded
    both = model.generate(**g, max_new_tokens=5)
    for i in range(2):
        single = proc([frames(seed=i)], [QUESTIONS[i]])
        assert torch.equal(both[i], model.generate(**single, max_new_tokens=5)[0])


def test_generate_returns_new_tokens_only():
    model, proc = tiny()
    g = batch(proc, answers=False)
    ids = model.generate(**g, max_new_tokens=7)
    assert ids.shape == (2, 7)
    torch.manual_seed(1)
    s1 = model.generate(**g, max_new_tokens=7, do_sample=True, temperature=1.5, top_p=0.9)
    torch.manual_seed(1)
    s2 = model.generate(**g, max_new_tokens=7, do_sample=True, temperature=1.5, top_p=0.9)
    assert torch.equal(s1, s2) and s1.shape[0] == 2
    assert len(proc.batch_decode(ids)) == 2

    from transformers.generation.streamers import BaseStreamer

    class Collect(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.reshape(-1))

        def end(self):
            self.ended = True

    one = batch(proc, answers=False, n=1)
    streamer = Collect()
    streamed = model.generate(**one, max_new_tokens=5, streamer=streamer)
    assert streamer.ended and torch.equal(torch.cat(streamer.chunks)[-5:], streamed[0])


def test_save_load_round_trip_identical_logits(tmp_path):
    model, proc = tiny()
    b = batch(proc)
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    loaded = FaVChatForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded(**b).logits, model(**b).logits, rtol=0, atol=0)
    # AutoConfig reads the checkpoint's config (AutoTokenizer does, loading the processor saved beside it)
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tmp_path)
    assert type(cfg) is FaVChatConfig
    assert {**cfg.to_dict(), "_name_or_path": ""} == {**model.config.to_dict(), "_name_or_path": ""}


def test_lora_round_trip_and_trainable_set(tmp_path):
    model, proc = tiny()
    apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    lm_trainable = [n for n, p in model.language_model.named_parameters() if p.requires_grad]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    with torch.no_grad():  # LoRA B starts at zero: make it matter
        for n, p in model.language_model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    b = batch(proc)
    ref = model.eval()(**b).logits  # eval: the preset's LoRA dropout off
    model.save_pretrained(tmp_path)
    loaded = FaVChatForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.lora["r"] == 4
    torch.testing.assert_close(loaded(**b).logits, ref, rtol=0, atol=0)
    loaded.set_trainable(["language_model", "projector"])
    trainable = [n for n, p in loaded.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("projector.") for n in trainable)


def test_activation_checkpointing_same_loss_and_grads():
    b = None
    results = []
    for ckpt in (False, True):
        model, proc = tiny()
        model.train()
        b = b or batch(proc)
        if ckpt:
            model.activation_checkpointing_enable()
            assert model.low_level.blocks[0].gradient_checkpointing
        loss = model(**b).loss
        loss.backward()
        results.append((loss.detach(), model.projector[0].weight.grad.clone(),
                        model.face_encoder.patch_embed.weight.grad.clone()))
    for a, c in zip(*results, strict=True):
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)


def test_bfloat16_weights_run():
    model, proc = tiny()
    model.to(torch.bfloat16)
    out = model(**batch(proc))
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)


def test_component_names_cover_all_parameters():
    model, _ = tiny()
    parts = model.component_parameters()
    assert set(parts) <= set(COMPONENTS)
    named = {n for params in parts.values() for n, _ in params}
    assert named == {n for n, _ in model.named_parameters()}
