"""UMT-L, the paper's general encoder, as VideoChat2 runs it (docs/model.md, "The released backbones").

A ViT over a whole clip: a tubelet patch embedding (a Conv3d, kernel (tubelet, p, p)) turns (B, 3, T, H, W) into
(B, T'·N, C) tokens (T' = T / tubelet, N = (H/p)·(W/p), time-major, row-major within a frame), a FIXED sine-cosine
position table is added once, then pre-norm blocks with joint space-time attention. The weights' names are UMT's
(``patch_embed.proj``, ``blocks.{i}.attn.q_bias`` ...), so a checkpoint's ``encoder.*`` loads as it is
(``favchat.model.checkpoints``).

    from favchat.model import load_tower
    tower = load_tower("l16_25m.pth")            # UMT-L: 24 blocks, width 1024
    states = tower(pixel_values)                 # (B, T, 3, 224, 224) → 24 × (B, T·196, 1024)

``UMTTower`` is the model's general encoder built on it: the blocks up to the last one the model reads, and
VideoChat2's ``vision_layernorm`` on the block the general Q-Former reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from favchat.model.configuration import UMTConfig
from favchat.model.layers import Mlp
from favchat.model.vision import BlockSelect, VisionTower

# UMT's position table is built for the clips it was pretrained on: 4 frames (of tubelets) of 14×14 patches.
PRETRAIN_FRAMES = 4
PRETRAIN_GRID = 14


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """The transformer's 1-D sine-cosine table (num_positions, dim): position / 10000^(2⌊j/2⌋/dim), sine on even
    and cosine on odd channels. Computed in float64 (as the original, in numpy), returned in float32."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), (2 * (j // 2)).double() / dim)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).float()


def position_table(frames: int, grid: int, image_size: int, dim: int) -> torch.Tensor:
    """UMT's fixed position embedding for ``frames`` (tubelet) frames of grid×grid patches: (frames·grid², dim).

    As VideoChat2 builds it: the 1-D table over the positions t·grid² + row·grid + col of 4 frames, seen as
    (4 frames, grid, grid, dim); for an input other than 224 px the table is built at UMT's 14×14 grid and
    resized bicubically in space (align_corners False); then resized linearly in time to ``frames`` (align_corners
    False) unless that is 4. One frame (an image) takes the first frame's table, as VideoChat2's image path."""
    base = grid if image_size == 224 else PRETRAIN_GRID  # the original's rule: 224 px → built at the grid itself
    table = sinusoid_table(PRETRAIN_FRAMES * base * base, dim).view(PRETRAIN_FRAMES, base, base, dim)
    if base != grid:
        table = F.interpolate(table.permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1)  # (4, grid, grid, dim)
    if frames == 1:
        return table[0].reshape(grid * grid, dim)
    if frames != PRETRAIN_FRAMES:
        table = table.permute(1, 2, 3, 0).reshape(grid * grid, dim, PRETRAIN_FRAMES)
        table = F.interpolate(table, size=frames, mode="linear", align_corners=False)  # (grid², dim, frames)
        table = table.view(grid, grid, dim, frames).permute(3, 0, 1, 2)
    return table.reshape(frames * grid * grid, dim)


class PatchEmbed(nn.Module):
    def __init__(self, config: UMTConfig):
        super().__init__()
        c = config
        self.proj = nn.Conv3d(c.num_channels, c.hidden_size, (c.tubelet_size, c.patch_size, c.patch_size),
                              stride=(c.tubelet_size, c.patch_size, c.patch_size))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.proj(video).flatten(2).transpose(1, 2)  # (B, 3, T, H, W) → (B, T'·N, C)


class UMTAttention(nn.Module):
    """Multi-head self-attention whose qkv projection has a bias on q and v only (``q_bias``, ``v_bias``)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, N, C/h)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C/h)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class UMTBlock(GradientCheckpointingLayer):
    def __init__(self, config: UMTConfig):
        super().__init__()
        c = config
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.attn = UMTAttention(c.hidden_size, c.num_attention_heads)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = Mlp(c.hidden_size, c.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class UMTEncoder(nn.Module):
    """UMT's ViT (``num_blocks`` of its blocks, all by default). Called on pixel values (B, T, 3, H, W), already
    normalised, it returns every block's output, each (B, T'·N, C)."""

    def __init__(self, config: UMTConfig, num_blocks: int | None = None):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        n = config.num_hidden_layers if num_blocks is None else num_blocks
        self.blocks = nn.ModuleList(UMTBlock(config) for _ in range(n))
        self._tables: dict[tuple[int, int, int], torch.Tensor] = {}  # position tables built so far (CPU)

    def position_embedding(self, frames: int, grid: int, image_size: int) -> torch.Tensor:
        key = (frames, grid, image_size)
        if key not in self._tables:
            self._tables[key] = position_table(frames, grid, image_size, self.config.hidden_size)
        return self._tables[key]

    def hidden_states(self, pixel_values: torch.Tensor, num_blocks: int | None = None) -> list[torch.Tensor]:
        """[embedding output, block 1, ..., block ``num_blocks``] (all blocks by default), each (B, T'·N, C)."""
        c = self.config
        if pixel_values.ndim != 5 or pixel_values.shape[2] != c.num_channels:
            raise ValueError(f"pixel values must be (B, T, {c.num_channels}, H, W), got {tuple(pixel_values.shape)}")
        _, t, _, h, w = pixel_values.shape
        if h != w or h % c.patch_size or t % c.tubelet_size:
            raise ValueError(f"UMT takes square frames whose side is a multiple of the patch size {c.patch_size}, "
                             f"and a multiple of the tubelet size {c.tubelet_size} of frames; got {t} frames of "
                             f"{h}x{w}")
        weight = self.patch_embed.proj.weight
        x = self.patch_embed(pixel_values.to(weight.dtype).transpose(1, 2))  # (B, T'·N, C)
        pos = self.position_embedding(t // c.tubelet_size, h // c.patch_size, h)
        states = [x + pos.to(device=x.device, dtype=x.dtype)]
        for block in self.blocks[:num_blocks]:
            states.append(block(states[-1]))
        return states

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return self.hidden_states(pixel_values)[1:]


class UMTTower(VisionTower):
    """The general encoder of the paper: UMT's blocks up to the last one the model reads (hidden state i is the
    output of block i, 0 the embedded patches), and VideoChat2's ``vision_layernorm`` on the memory block when the
    config has one. UMT's position table already orders the frames: no learned temporal embedding."""

    def __init__(self, config: UMTConfig, select: BlockSelect):
        super().__init__()
        self.config = config
        self.num_states = config.num_hidden_layers + 1
        self.state_dims = [config.hidden_size] * self.num_states
        self.groups = select(self.num_states)
        self.blocks = sorted({i for g in self.groups.values() for i in g})
        # Blocks after the last one read are never built: they would get no gradient (and trip DDP).
        self.encoder = UMTEncoder(config, num_blocks=max(self.blocks))
        self.vision_layernorm = (nn.LayerNorm(config.hidden_size, eps=config.vision_layernorm_eps)
                                 if config.vision_layernorm else None)

    def forward(self, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        states = self.encoder.hidden_states(pixel_values, max(self.blocks))
        return {i: states[i] for i in self.blocks}

    def memory(self, states: dict[int, torch.Tensor]) -> torch.Tensor:
        g = super().memory(states)
        return g if self.vision_layernorm is None else self.vision_layernorm(g)
