"""Windowed attention (Swin): split a [B, H, W, C] map into non-overlapping windows, attend within
each window with a learned relative position bias, and put the windows back. A shifted layer
rolls the map first; the attention mask keeps tokens that the roll brought together from
different regions from attending to each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, (H / window) * (W / window), window * window, C], windows in row
    order, tokens in row order within each."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def window_reverse(x: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """The inverse of window_partition: [B, nW, window * window, C] -> [B, H, W, C]."""
    b, _, _, c = x.shape
    x = x.reshape(b, height // window, width // window, window, window, c).permute(
        0, 1, 3, 2, 4, 5)
    return x.reshape(b, height, width, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window of [B, nW, N = window * window, C], with a
    relative position bias table ((2 window - 1)^2 rows, one column per head). With `shift` > 0
    the windows come from a map rolled by -shift (height x width before the roll): the mask
    gives -100 to pairs of tokens from different regions of the unrolled map."""

    def __init__(self, dim: int, heads: int, window: int, shift: int = 0, height: int = 0,
                 width: int = 0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, N
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1)
                             + rel[..., 1])
        mask = None
        if shift > 0:
            regions = torch.zeros(1, height, width, 1)
            cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            label = 0
            for hs in cuts:
                for ws in cuts:
                    regions[:, hs, ws, :] = label
                    label += 1
            r = window_partition(regions, window).reshape(-1, window * window)  # nW, N
            diff = r.unsqueeze(1) - r.unsqueeze(2)
            mask = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, nw, n, c = x.shape
        qkv = self.qkv(x).reshape(b, nw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each [B, nW, heads, N, D]
        table = self.relative_position_bias_table
        bias = table[self.relative_position_index.reshape(-1)].reshape(n, n, -1)
        bias = bias.permute(2, 0, 1).to(q.dtype)  # heads, N, N
        if self.attn_mask is not None:
            bias = bias + self.attn_mask.to(q.dtype).unsqueeze(1)  # nW, heads, N, N
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, window={self.window}"
