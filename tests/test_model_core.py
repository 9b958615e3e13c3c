"""FaVChat model on the tiny preset: level shapes and masks, ablations, gradients, count check, cache,
padding, save/load, LoRA, gradient checkpointing. Run: python -m pytest -q tests/test_model_core.py"""

from __future__ import annotations

import pytest
import torch

from favchat import FaVChatConfig, FaVChatForConditionalGeneration
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


def test_ablation_prompt_agnostic():
    model, proc = tiny(use_prompt_guidance=False)
    assert model.text_proj.tokens.shape == (model.config.num_query_tokens, model.config.pq_hidden_size)
    b = batch(proc, answers=False)
    feats = model.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    tokens, weights = model.video_tokens(feats, b["question_ids"], b["question_mask"])
    # Another question about the same video gives the same video tokens and stream weights ...
    other = torch.full_like(b["question_ids"], 77)
    tokens2, weights2 = model.video_tokens(feats, other, torch.ones_like(b["question_mask"]))
    torch.testing.assert_close(tokens2, tokens)
    torch.testing.assert_close(weights2, weights)
    # ... while the learned tokens feed every level, and the guided model reads the question.
    model.text_proj.tokens.data += 1.0
    assert not torch.allclose(model.video_tokens(feats, b["question_ids"], b["question_mask"])[0], tokens)
    full, _ = tiny()
    feats = full.encode_video(b["general_pixel_values"], b["face_pixel_values"])
    assert not torch.allclose(full.video_tokens(feats, other, torch.ones_like(b["question_mask"]))[0],
                              full.video_tokens(feats, b["question_ids"], b["question_mask"])[0])
    # The learned tokens train where the question's projection would (the schedule's text_proj), and the
    # whole model still learns from its loss.
    model.train()
    out = model(**batch(proc))
    out.loss.backward()
    assert model.text_proj.tokens.grad is not None and model.text_proj.tokens.grad.abs().sum() > 0
    assert [n for n, _ in model.component_parameters()["text_proj"]] == ["text_proj.tokens"]


def test_other_frame_counts_read_the_trained_temporal_rows_interpolated():
    from favchat.model.vision import temporal_rows

    table = torch.randn(16, 5)
    torch.testing.assert_close(temporal_rows(table, 8, 8), table[:8])  # the trained count: unchanged
    for t in (4, 32):
        rows = temporal_rows(table, 8, t)
        assert rows.shape == (t, 5)
        # The first and last frames keep the trained ends; the rows past the trained count are never read.
        torch.testing.assert_close(rows[[0, -1]], table[[0, 7]])
    torch.testing.assert_close(temporal_rows(table, 8, 15)[::2], table[:8])
    model, proc = tiny()
    assert model.config.num_face_frames == 8
    for t in (4, 32):  # the Fig. 8 sweep asks the model with 4 to 32 frames (the tiny preset trains with 8)
        asked = FaVChatConfig.from_preset("tiny", num_general_frames=t, num_face_frames=t)
        b = batch(type(proc).from_config(asked), answers=False)
        assert b["general_pixel_values"].shape[1] == t
        assert model(**b).logits.isfinite().all()


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
