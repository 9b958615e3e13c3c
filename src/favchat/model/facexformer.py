"""FaceXFormer's backbone, the paper's facial encoder (docs/model.md, "The released backbones").

FaceXFormer takes torchvision's Swin v1 (Swin-B) without its head and reads, through forward hooks, each stage's
output BEFORE the patch merging that follows it: at 224 px four maps of 56², 28², 14² and 7² tokens with 128,
256, 512 and 1024 channels. ``SwinBackbone`` computes what torchvision's Swin computes, stage by stage, and
returns those four states; its weights load from FaceXFormer's ``ckpts/model.pt`` or a torchvision Swin
checkpoint (``favchat.model.checkpoints``, which maps torchvision's key names to these).

    from favchat.model import load_tower
    tower = load_tower("model.pt")               # FaceXFormer's Swin-B
    stages = tower(pixel_values)                 # (B, T, 3, 224, 224) → (B, T·56², 128) ... (B, T·7², 1024)

What torchvision does and this does too: the patch convolution floors a size that is not a multiple of the patch;
a stage pads its map with zeros at the bottom/right to a multiple of the window (the padding takes part in the
attention, unmasked); a block whose window covers the padded map does not shift along that axis; shifted
windows mask the pairs from different regions with -100; patch merging pads an odd map with zeros and
concatenates the 2×2 neighbours in the order (0,0), (1,0), (0,1), (1,1) (row, column); LayerNorm eps 1e-5.
``FaceXFormerTower`` is the model's facial encoder built on it (frames as a batch of images, a learned temporal
embedding per state read).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from favchat.model.configuration import FaceXFormerConfig
from favchat.model.layers import Mlp
from favchat.model.vision import BlockSelect, VisionTower


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²): for each pair of positions in a window, the row of the relative position bias table
    that holds their offset, (Δrow + w - 1)·(2w - 1) + (Δcol + w - 1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :] + window - 1  # (2, w², w²), each in 0..2w-2
    return delta[0] * (2 * window - 1) + delta[1]


def shifted_window_mask(height: int, width: int, window: int, shift: tuple[int, int],
                        device: torch.device) -> torch.Tensor:
    """(windows, window², window²) additive mask of a shifted-window layer on a padded (height, width) map: 0
    within a region, -100 across regions (what the cyclic shift brought together)."""
    def regions(size: int, s: int) -> torch.Tensor:  # 0, 1, 2: before the last window, in it, in the shift
        i = torch.arange(size, device=device)
        return (i >= size - window).long() + (i >= size - s).long()

    ids = regions(height, shift[0])[:, None] * 3 + regions(width, shift[1])[None, :]  # (height, width)
    ids = ids.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window * window)
    differ = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, -100.0)


class PatchEmbed(nn.Module):
    def __init__(self, config: FaceXFormerConfig):
        super().__init__()
        c = config
        self.proj = nn.Conv2d(c.num_channels, c.embed_dim, c.patch_size, stride=c.patch_size)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).permute(0, 2, 3, 1))  # (N, 3, H, W) → (N, H/p, W/p, C)


class WindowAttention(nn.Module):
    """Self-attention within window×window windows, with a learned relative position bias per head; the windows
    are shifted by ``shift`` (cyclically) in the odd blocks of a stage."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.num_heads, self.window, self.shift = num_heads, window, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        ws = self.window
        x = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))  # zeros to whole windows
        hp, wp = x.shape[1:3]
        # no shift along an axis that one window already covers
        shift = (0 if ws >= hp else self.shift, 0 if ws >= wp else self.shift)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        windows = x.view(n, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(n, -1, ws * ws, c)
        nw = windows.shape[1]
        qkv = self.qkv(windows).view(n, nw, ws * ws, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # each (N, windows, heads, w², C/heads)
        index = relative_position_index(ws).to(self.relative_position_bias_table.device)
        bias = self.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, w², w²)
        if any(shift):
            bias = bias + shifted_window_mask(hp, wp, ws, shift, x.device)[:, None]  # (windows, heads, w², w²)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (N, windows, heads, w², C/h)
        out = self.proj(out.transpose(2, 3).reshape(n, nw, ws * ws, c))
        out = out.view(n, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(n, hp, wp, c)
        if any(shift):
            out = torch.roll(out, shifts=shift, dims=(1, 2))
        return out[:, :h, :w]


class SwinBlock(GradientCheckpointingLayer):
    def __init__(self, dim: int, num_heads: int, config: FaceXFormerConfig, shift: int):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, num_heads, config.window_size, shift)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, H, W, C)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated ((0,0), (1,0), (0,1), (1,1) as (row, column)), LayerNorm, linear to 2C."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))  # (N, ⌈H/2⌉, ⌈W/2⌉, 2C)


def stage_dims(config: FaceXFormerConfig) -> list[int]:
    return [config.embed_dim * 2 ** s for s in range(len(config.depths))]


class SwinBackbone(nn.Module):
    """torchvision's Swin v1 features (the first ``num_stages`` stages, all by default). Called on pixel values
    (B, T, 3, H, W), already normalised, it returns each stage's output before patch merging, each
    (B, T·H_i·W_i, C_i), the frames one after the other and each frame's tokens in row-major order."""

    def __init__(self, config: FaceXFormerConfig, num_stages: int | None = None):
        super().__init__()
        self.config = config
        n = len(config.depths) if num_stages is None else num_stages
        dims = stage_dims(config)
        self.patch_embed = PatchEmbed(config)
        self.stages = nn.ModuleList(
            nn.ModuleList(SwinBlock(dims[s], config.num_heads[s], config, 0 if j % 2 == 0 else config.window_size // 2)
                          for j in range(config.depths[s]))
            for s in range(n))
        self.merges = nn.ModuleList(PatchMerging(dims[s], config.layer_norm_eps) for s in range(n - 1))

    def hidden_states(self, images: torch.Tensor, num_stages: int | None = None) -> list[torch.Tensor]:
        """[patch embedding output, stage 1, ..., stage ``num_stages``] of (N, 3, H, W) images, each (N, H_i·W_i,
        C_i) (stages before merging)."""
        x = self.patch_embed(images.to(self.patch_embed.proj.weight.dtype))  # (N, H/p, W/p, C)
        states = [x.flatten(1, 2)]
        for s, stage in enumerate(self.stages[:num_stages]):
            if s > 0:
                x = self.merges[s - 1](x)
            for block in stage:
                x = block(x)
            states.append(x.flatten(1, 2))  # (N, H_s·W_s, C_s), row-major
        return states

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if pixel_values.ndim != 5 or pixel_values.shape[2] != self.config.num_channels:
            raise ValueError(f"pixel values must be (B, T, {self.config.num_channels}, H, W), "
                             f"got {tuple(pixel_values.shape)}")
        b, t = pixel_values.shape[:2]
        states = self.hidden_states(pixel_values.flatten(0, 1))[1:]
        return [s.reshape(b, t * s.shape[1], s.shape[2]) for s in states]  # (B, T·H_i·W_i, C_i)


class FaceXFormerTower(VisionTower):
    """The facial encoder of the paper: hidden state 0 is the patch embedding, i the output of stage i before its
    patch merging. Only the stages up to the last one read are built."""

    def __init__(self, config: FaceXFormerConfig, select: BlockSelect, max_frames: int):
        super().__init__()
        self.config = config
        self.num_states = len(config.depths) + 1
        self.state_dims = [config.embed_dim, *stage_dims(config)]
        self.setup_blocks(select, max_frames)
        self.backbone = SwinBackbone(config, num_stages=max(self.blocks))

    def _states(self, pixel_values: torch.Tensor, last: int) -> list[torch.Tensor]:
        return self.backbone.hidden_states(pixel_values.flatten(0, 1), last)  # frames as a batch of images
