"""The recipe of ``favchat demo``: the paper's model at laptop scale, with a tiny LLM built from scratch.

A from-scratch LLM has no language and no habit of reading its video slots; the paper's Qwen2.5-7B has both.
Two mechanisms stand in for that pretraining (docs/demo.md; their experiments: docs/experiments/demo_log.md):

- **The reader (stage 0).** Before the visual stages, the LLM alone learns every summary and QA pair of the
  training clips with the clip's labels put as phrases in the video slots, one phrase a slot, in any order
  (``reader.LabelReadingDataset``): it learns the answers' language *and* to answer from what the slots hold.
  A phrase in a slot is its words' mean embedding plus its label's row of the phrase table
  (``phrase_table.PhraseTable``), which trains here with the LLM so that "long hair" and "wavy hair" can
  move apart.
- **The slot loss (stages 1-3).** The visual levels are pulled toward writing the clip's label phrases into
  the slots, the set the reader learned to read (``slot_loss.slot_loss``, weighted by the stage config's
  ``slot_loss_weight``).

Both enter the trainer as ``StageHooks`` (``hooks.py``); the model sees only ``video_embeds`` (stage 0) and
gives back ``video_hidden_states`` (stages 1-3). The phrase table travels beside each checkpoint's model as
``phrase_table.safetensors``.
"""
