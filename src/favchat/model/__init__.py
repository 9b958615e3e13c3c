"""The FaVChat model: configuration, vision towers, prompt-query levels, the model, its processor, presets.

Import from the submodules (``favchat.model.modeling`` ...) or the package root (``from favchat import
FaVChatConfig, FaVChatForConditionalGeneration, FaVChatProcessor``); see docs/model.md.
"""
