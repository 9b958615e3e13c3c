"""The demo's recipe (favchat.recipes.tiny_demo): the reader's data, the phrase table through the model's
video_embeds seam, the slot loss on its video_hidden_states, and both as trainer hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from favchat.data.datasets import QADataset
from favchat.data.manifest import read_manifest
from favchat.data.synth import SynthConfig, generate
from favchat.data.taxonomy import BY_NAME, LABELS
from favchat.recipes.tiny_demo.hooks import PhraseCollator
from favchat.recipes.tiny_demo.phrase_table import PhraseTable, slot_vectors
from favchat.recipes.tiny_demo.reader import LabelReadingDataset, encode_phrases, label_phrases
from favchat.recipes.tiny_demo.slot_loss import slot_loss
from model_helpers import ANSWERS, QUESTIONS, batch, tiny


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fs")
    cfg = SynthConfig(seed=4, min_frames=16, max_frames=16, min_size=64, max_size=64, clips_per_identity=1)
    return generate(cfg, 6, out, progress=False)


def test_the_reader_sees_each_clips_label_phrases_in_the_video_slots(manifest):
    def no_decoding(path, frame_range=None):
        raise AssertionError("stage 0 must not decode videos")

    _, proc = tiny()
    clips = read_manifest(manifest)
    ds = LabelReadingDataset(manifest, no_decoding)
    assert len(ds) == sum(len(c.qa) + 1 for c in clips)  # every QA pair and the summary of each clip
    clip = next(c for c in clips if len(c.labels["action"]) >= 2 and c.events)
    phrases = label_phrases(clip)
    assert phrases[:len(clip.labels["appearance"])] == [BY_NAME[n].phrase for n in clip.labels["appearance"]]
    first = {}
    for e in clip.events:
        first.setdefault(e.label, e.start)
    by_phrase = {lab.phrase: name for name, lab in BY_NAME.items()}
    acts = phrases[len(clip.labels["appearance"]):-1]
    assert [first[by_phrase[a]] for a in acts] == sorted(first[a] for a in clip.labels["action"])
    assert phrases[-1] == BY_NAME[clip.labels["emotion"][0]].phrase
    items = [ds[i] for i in range(len(ds)) if ds.samples[i].clip.id == clip.id]
    assert all(sorted(it["phrases"]) == sorted(phrases) and it["video"] is None for it in items)
    assert len({tuple(it["phrases"]) for it in items}) > 1  # each sample its own order
    again = LabelReadingDataset(manifest, no_decoding)
    assert [again[i]["phrases"] for i in range(len(ds))] == [ds[i]["phrases"] for i in range(len(ds))]

    n_q = proc.num_query_tokens
    out = PhraseCollator(proc, num_slots=n_q)([ds[0], ds[1], ds[2]])
    assert "general_pixel_values" not in out["inputs"]  # text only
    ids, mask = out["phrase_ids"], out["phrase_mask"]
    assert ids.shape[:2] == (3, n_q) and mask.shape == ids.shape
    for b in range(3):
        shown = ds[b]["phrases"][:n_q]
        assert mask[b].any(-1).sum() == len(shown)
        for k, phrase in enumerate(shown):
            assert proc.tokenizer.decode(ids[b, k][mask[b, k].bool()].tolist()) == " " + phrase
    # Samples with a video are told every label phrase of their clip (the slot loss's targets).
    by_id = {c.id: c for c in clips}
    items = [QADataset(manifest, proc.load_video)[i] for i in range(3)]
    out = PhraseCollator(proc, num_slots=n_q)(items)
    assert "general_pixel_values" in out["inputs"]
    for b, it in enumerate(items):
        got = [proc.tokenizer.decode(out["phrase_ids"][b, k][out["phrase_mask"][b, k].bool()].tolist()).strip()
               for k in range(n_q) if out["phrase_mask"][b, k].any()]
        assert got and sorted(got) == sorted(label_phrases(by_id[it["clip_id"]])[:n_q])


def test_phrases_enter_the_model_through_its_video_slots():
    """The model's seam: vectors given as ``video_embeds`` fill the video slots (no tower, no level runs), and
    each sample reads its own; the phrase table adds a learned row per label to its phrase's token mean."""
    model, proc = tiny()
    b = proc(None, QUESTIONS, ANSWERS)
    assert "general_pixel_values" not in b
    table = PhraseTable(model.config.text_config.hidden_size, proc.tokenizer)
    assert table.weight.shape[0] == len(LABELS) and table.weight.abs().sum() == 0
    words = model.get_input_embeddings()
    ids, mask = encode_phrases(proc.tokenizer, [["black hair", "smiles"], ["happy"]], model.config.num_query_tokens)
    black = proc.tokenizer(" black hair", add_special_tokens=False)["input_ids"]
    slots = slot_vectors(words, table, ids, mask)
    torch.testing.assert_close(slots[0, 0], words.weight[black].mean(0))  # a zero row: the token mean
    assert slots[1, 1:].abs().sum() == 0  # empty slots
    out = model(**b, video_embeds=slots)
    assert out.adapter_weights is None and torch.isfinite(out.loss)
    torch.testing.assert_close(out.video_hidden_states, slots)
    ids2, mask2 = encode_phrases(proc.tokenizer, [["blond hair", "smiles"], ["happy"]], model.config.num_query_tokens)
    out2 = model(**b, video_embeds=slot_vectors(words, table, ids2, mask2))
    assert not torch.allclose(out2.logits[0], out.logits[0])
    torch.testing.assert_close(out2.logits[1], out.logits[1])

    row = next(i for i, lab in enumerate(LABELS) if lab.phrase == "black hair")
    with torch.no_grad():
        table.weight[row] += 1.0
    slots = slot_vectors(words, table, ids, mask)
    torch.testing.assert_close(slots[0, 0], words.weight[black].mean(0) + 1.0)
    model(**b, video_embeds=slots).loss.backward()
    assert table.weight.grad.abs().sum(-1).count_nonzero() == 3  # the rows of the three phrases only
    assert words.weight.grad[black[0]].abs().sum() > 0  # the words' embeddings learn too
    with pytest.raises(ValueError, match="not a taxonomy label's"):
        table(*encode_phrases(proc.tokenizer, [["blue hair"]], 2))
    with pytest.raises(ValueError, match="set_phrases"):
        PhraseTable(8)(ids, mask)


def test_the_phrase_table_round_trips_beside_a_checkpoint(tmp_path):
    _, proc = tiny()
    table = PhraseTable(16, proc.tokenizer)
    with torch.no_grad():
        table.weight.normal_()
    table.save(tmp_path)
    loaded = PhraseTable.load(tmp_path)
    assert torch.equal(loaded.weight, table.weight) and torch.equal(loaded.token_ids, table.token_ids)
    with pytest.raises(FileNotFoundError, match="no phrase table"):
        PhraseTable.load(tmp_path / "elsewhere")


def test_the_slot_loss_matches_the_clips_phrases_to_the_video_tokens_in_any_order():
    """A classification among the batch's phrases and the empty slot plus a squared distance, on the pairs
    of a minimum-cost assignment; its gradient reaches the visual levels through video_hidden_states."""
    model, proc = tiny()
    b = batch(proc)
    table = PhraseTable(model.config.text_config.hidden_size, proc.tokenizer)
    ids, mask = encode_phrases(proc.tokenizer, [["black hair", "smiles", "happy"], ["happy"]],
                               model.config.num_query_tokens)
    present = mask.bool().any(-1)
    out = model(**b)
    tokens = out.video_hidden_states
    targets = slot_vectors(model.get_input_embeddings(), table, ids, mask).detach()
    loss = slot_loss(tokens, targets, present, ids)
    # Any order of the tokens scores the same, and tokens on their phrases score less than any other tokens.
    perm = torch.randperm(tokens.shape[1])
    torch.testing.assert_close(slot_loss(tokens[:, perm], targets, present, ids), loss)
    best = slot_loss(targets[:, perm], targets, present, ids)
    assert best < slot_loss(torch.zeros_like(targets), targets, present, ids) and best < loss
    # By hand: one sample, one phrase (so two classes: empty and "happy") and one empty slot; token 0 is
    # empty and token 1 on the phrase, so the matching pairs them the other way round from the targets.
    p = targets[1:2, :2]  # "happy", then empty
    sq = p[0, 0].square().sum()
    d = torch.stack([torch.zeros(()), sq]) / sq  # token 0 (zero) to (empty, happy); token 1 the reverse
    ce0 = torch.log_softmax(-d / 0.2, 0)[0].neg()
    torch.testing.assert_close(slot_loss(p.flip(1), p, present[1:2, :2], ids[1:2, :2]), ce0 + ce0)
    none = torch.zeros_like(present)
    torch.testing.assert_close(slot_loss(tokens, torch.zeros_like(targets), none, ids), torch.tensor(0.0))
    loss.backward()
    assert model.projector[0].weight.grad.abs().sum() > 0
    assert model.get_input_embeddings().weight.grad is None  # the targets take no gradient


def test_the_recipes_stages_train_through_the_trainers_hooks(tmp_path, manifest):
    """Stage 0 trains the LLM and the phrase table on the reader's data and writes the table beside the model;
    stage 1 then learns the slot loss toward that table's phrases (logged, and falling)."""
    from safetensors.torch import load_file

    from favchat.config import load_config
    from favchat.recipes.tiny_demo.config import DemoStageConfig
    from favchat.recipes.tiny_demo.hooks import stage_hooks
    from favchat.train.metrics_log import read_metrics
    from favchat.train.trainer import train

    def cfg(stage, name, **kw):
        return load_config(DemoStageConfig, None, {
            "stage": stage, "output_dir": str(tmp_path / name), "tensorboard": False,
            "data": {"train_manifest": str(manifest)}, "log_every": 1, "save_every": 100,
            "optim": {"lr": 3e-3, "max_steps": 12 if stage else 3, "batch_size": 2, "scheduler": "constant"}, **kw})

    s0 = cfg(0, "s0")
    res = train(s0, hooks=stage_hooks(s0))
    assert load_file(res.final_dir / "phrase_table.safetensors")["weight"].abs().sum() > 0
    s1 = cfg(1, "s1", init_from=str(res.final_dir), slot_loss_weight=1.0)
    train(s1, hooks=stage_hooks(s1))
    rows = read_metrics(tmp_path / "s1" / "metrics.csv")
    assert len(rows) == 12 and rows[-1]["slot_loss"] < rows[0]["slot_loss"]
    assert torch.equal(load_file(tmp_path / "s1" / "final" / "phrase_table.safetensors")["weight"],
                       load_file(res.final_dir / "phrase_table.safetensors")["weight"])  # frozen after stage 0
    assert stage_hooks(cfg(2, "s2", init_from="x")) is None  # no slot loss weight: the paper's stage
    with pytest.raises(ValueError, match="applies to stages 1-3 only"):
        cfg(0, "x", slot_loss_weight=1.0)
