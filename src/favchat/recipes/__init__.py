"""Recipes: how runs of the paper's model are set up for a setting the paper does not cover.

A recipe adds what its setting needs around the model (data, extra weights, extra losses) through the
seams the model and the trainer leave for it: ``video_embeds`` / ``video_hidden_states`` of
``FaVChatForConditionalGeneration.forward`` and the trainer's ``StageHooks``. ``tiny_demo`` is the recipe of
``favchat demo``.
"""
