"""Reference implementations of the released backbones, written for the tests from a reading of the original code:
VideoChat2's ViT module (UMT's ViT as VideoChat2 builds it, OpenGVLab/Ask-Anything) and torchvision's Swin
Transformer module (Swin v1), with FaceXFormer's forward hooks on its stages (Kartik-3004/facexformer). They keep the originals'
module structure, hence their state-dict key names, and their way of computing (numpy position tables, an explicit
softmax, the shifted-window mask drawn region by region), and share no code with ``favchat.model``: the towers
under test must reproduce what these compute.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------- UMT (VideoChat2)


def np_sinusoid(n: int, d: int) -> np.ndarray:
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(n)])
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return angles


def _temporal(table: torch.Tensor, frames: int, new_frames: int, grid: int, d: int) -> torch.Tensor:
    table = table.reshape(-1, frames, grid, grid, d).permute(0, 2, 3, 4, 1).reshape(-1, d, frames)
    table = F.interpolate(table, size=new_frames, mode="linear")
    return table.reshape(1, grid, grid, d, new_frames).permute(0, 4, 1, 2, 3).flatten(1, 3)


def videochat2_pos_embed(n_position: int, d: int, cur_frame: int, img_size: int, ckpt_frame: int = 4,
                         image: bool = False) -> torch.Tensor:
    """(1, n_position, d) as VideoChat2's encoder builds ``pos_embed`` (``image``: ``img_pos_embed``)."""
    if img_size == 224:  # get_sinusoid_encoding_table
        if image or cur_frame == ckpt_frame:
            return torch.tensor(np_sinusoid(n_position, d), dtype=torch.float).unsqueeze(0)
        n_ckpt = n_position // cur_frame * ckpt_frame
        table = torch.tensor(np_sinusoid(n_ckpt, d), dtype=torch.float).unsqueeze(0)
        return _temporal(table, ckpt_frame, cur_frame, int((n_ckpt // ckpt_frame) ** 0.5), d)
    # get_sinusoid_encoding_table2: the table of 14x14 patches resized in space, then in time
    frames, pre_n = (1, 196) if image else (ckpt_frame, 784)
    cur = 1 if image else cur_frame
    table = torch.tensor(np_sinusoid(pre_n, d), dtype=torch.float).unsqueeze(0)
    if n_position != pre_n:
        new_grid = int((n_position // cur) ** 0.5)
        table = table.reshape(-1, frames, 14, 14, d).reshape(-1, 14, 14, d).permute(0, 3, 1, 2)
        table = F.interpolate(table, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        table = table.permute(0, 2, 3, 1).reshape(-1, frames, new_grid, new_grid, d).flatten(1, 3)
    if cur != frames:
        table = _temporal(table, frames, cur, int((n_position // cur) ** 0.5), d)
    return table


class RefUMTAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class RefUMTMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefUMTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefUMTAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefUMTMlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchEmbed3d(nn.Module):
    def __init__(self, dim: int, patch: int, tubelet: int):
        super().__init__()
        self.proj = nn.Conv3d(3, dim, (tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class RefUMTEncoder(nn.Module):
    def __init__(self, dim, depth, heads, hidden, patch, tubelet, img_size, num_frames, return_index=-1):
        super().__init__()
        self.patch_embed = RefPatchEmbed3d(dim, patch, tubelet)
        grid = img_size // patch
        n = grid * grid * (num_frames // tubelet)
        self.pos_embed = videochat2_pos_embed(n, dim, num_frames // tubelet, img_size)
        self.img_pos_embed = videochat2_pos_embed(grid * grid, dim, 1, img_size, image=True)
        self.blocks = nn.ModuleList(RefUMTBlock(dim, heads, hidden) for _ in range(depth + return_index + 1))

    def forward(self, x, use_image=False):
        x = self.patch_embed(x)
        x = x + (self.img_pos_embed if use_image else self.pos_embed).type_as(x)
        for block in self.blocks:
            x = block(x)
        return x


class RefVideoChat2ViT(nn.Module):
    """PretrainVisionTransformer (with_ln=False): ``encoder.*`` keys. ``block_outputs`` collects every block's
    output through forward hooks, as one would read them from the original."""

    def __init__(self, dim, depth, heads, hidden, patch=16, tubelet=1, img_size=224, num_frames=4):
        super().__init__()
        self.encoder = RefUMTEncoder(dim, depth, heads, hidden, patch, tubelet, img_size, num_frames)

    def block_outputs(self, video_bcthw: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in self.encoder.blocks]
        with torch.no_grad():
            self.encoder(video_bcthw, use_image=video_bcthw.shape[2] == 1)
        for h in hooks:
            h.remove()
        return outs


# ---------------------------------------------------------------------------------------------------- Swin (torchvision)


class RefPermute(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


def ref_window_attention(x, qkv_w, qkv_b, proj_w, proj_b, bias, window, heads, shift):
    b, h, w, c = x.shape
    pad_r, pad_b = (window - w % window) % window, (window - h % window) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, ph, pw, _ = x.shape
    shift = list(shift)
    if window >= ph:
        shift[0] = 0
    if window >= pw:
        shift[1] = 0
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    nw = (ph // window) * (pw // window)
    x = x.view(b, ph // window, window, pw // window, window, c).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b * nw, window * window, c)
    qkv = F.linear(x, qkv_w, qkv_b).reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1)) + bias
    if sum(shift) > 0:
        region = x.new_zeros((ph, pw))
        label = 0
        for hs in ((0, -window), (-window, -shift[0]), (-shift[0], None)):
            for ws in ((0, -window), (-window, -shift[1]), (-shift[1], None)):
                region[hs[0]:hs[1], ws[0]:ws[1]] = label
                label += 1
        region = region.view(ph // window, window, pw // window, window).permute(0, 2, 1, 3).reshape(nw, -1)
        mask = region.unsqueeze(1) - region.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(b, nw, heads, x.size(1), x.size(1)) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, x.size(1), x.size(1))
    attn = attn.softmax(-1)
    x = F.linear(attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), c), proj_w, proj_b)
    x = x.view(b, ph // window, pw // window, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


class RefShiftedWindowAttention(nn.Module):
    def __init__(self, dim, window, shift, heads):
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        flat = torch.stack([ys.flatten(), xs.flatten()])  # (2, w²)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        self.register_buffer("relative_position_index", rel.sum(-1).flatten())

    def forward(self, x):
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index].view(n, n, -1)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        return ref_window_attention(x, self.qkv.weight, self.qkv.bias, self.proj.weight, self.proj.bias, bias,
                                    self.window, self.heads, [self.shift, self.shift])


class RefSwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = RefShiftedWindowAttention(dim, window, shift, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(4 * dim, dim),
                                 nn.Dropout(0.0))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class RefPatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=1e-5)

    def forward(self, x):
        h, w = x.shape[-3:-1]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        parts = [x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class RefTorchvisionSwin(nn.Module):
    """torchvision's SwinTransformer: ``features`` (0: conv + permute + norm; odd: stages; even: merging),
    ``norm``, ``avgpool``, ``head``."""

    def __init__(self, patch, embed, depths, heads, window, num_classes=10):
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, embed, patch, stride=patch), RefPermute([0, 2, 3, 1]),
                                                 nn.LayerNorm(embed, eps=1e-5))]
        for s, depth in enumerate(depths):
            dim = embed * 2 ** s
            layers.append(nn.Sequential(*[RefSwinBlock(dim, heads[s], window, 0 if j % 2 == 0 else window // 2)
                                          for j in range(depth)]))
            if s < len(depths) - 1:
                layers.append(RefPatchMerging(dim))
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(embed * 2 ** (len(depths) - 1), eps=1e-5)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(embed * 2 ** (len(depths) - 1), num_classes)


class RefFaceXFormer(nn.Module):
    """FaceXFormer's structure around its backbone: ``backbone = Sequential(*swin.children()[:-1])`` with forward
    hooks on ``0.1``, ``0.3``, ``0.5``, ``0.7``, plus stand-ins for its decoder's keys (not read by the towers)."""

    def __init__(self, patch=4, embed=16, depths=(2, 2, 2, 2), heads=(1, 2, 2, 4), window=7):
        super().__init__()
        swin = RefTorchvisionSwin(patch, embed, list(depths), list(heads), window)
        self.backbone = nn.Sequential(*list(swin.children())[:-1])
        self.pe_layer = nn.Module()
        self.pe_layer.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, 8))
        self.face_decoder = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
        self.linear_c = nn.ModuleList(nn.Linear(embed * 2 ** s, 8) for s in range(len(depths)))
        self.linear_fuse = nn.Conv2d(8 * len(depths), 8, 1, bias=False)
        self.features: list[torch.Tensor] = []
        for name, module in self.backbone.named_modules():
            if name in ("0.1", "0.3", "0.5", "0.7"):
                module.register_forward_hook(lambda m, i, o: self.features.append(o.permute(0, 3, 1, 2).contiguous()))

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each hooked stage's output, (N, C_i, H_i, W_i)."""
        self.features.clear()
        with torch.no_grad():
            self.backbone(images)
        return list(self.features)
