"""The model's component names: what a stage's freezing schedule names (``favchat.train.config``) and what
``FaVChatForConditionalGeneration.component_parameters`` groups the parameters by. A module of its own, free
of torch, so that reading a training config imports no torch."""

COMPONENTS = (
    "general_encoder", "face_encoder", "text_proj", "low_level", "general_qformer", "face_qformer",
    "general_adapter", "face_adapter", "static_weights", "projector", "language_model",
)

# Components a model may lack, which a schedule may still name: those the ablation switches remove (no facial
# encoder: its tower, Q-Former and both adapters; ``static_weights`` exists only in the no-adapter ablation and
# trains with the adapters), so that one schedule trains every variant.
OPTIONAL_COMPONENTS = ("face_encoder", "face_qformer", "general_adapter", "face_adapter", "static_weights")
