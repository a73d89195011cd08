"""Runtime layers for MViT (copied into generated modules as needed).

Tokens are channels-last maps [B, H, W, C], so that pooling changes H and W visibly in the shape.
The math follows MViT (Fan et al. 2021) and MViTv2 (Li et al. 2022): Q, K and V are projected by
separate linear layers, then pooled per head by a depthwise 3x3 convolution (stride s_q for Q,
s_kv for K and V) followed by LayerNorm over the head channels; MViTv2 adds decomposed relative
position terms and a residual (Q added to the attention output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _pool_heads(t: torch.Tensor, pool: nn.Module | None, norm: nn.Module | None, h: int,
                w: int) -> tuple[torch.Tensor, int, int]:
    """Pool per-head tokens [B, heads, h*w, d] spatially; returns the tokens and the new h, w."""
    if pool is None:
        return t, h, w
    b, n, _, d = t.shape
    t = t.reshape(b * n, h, w, d).permute(0, 3, 1, 2)
    t = pool(t)
    h, w = t.shape[-2], t.shape[-1]
    t = t.reshape(b, n, d, h * w).transpose(2, 3)
    if norm is not None:
        t = norm(t)
    return t, h, w


def _rel_pos_bias(attn: torch.Tensor, q: torch.Tensor, q_hw: tuple[int, int],
                  k_hw: tuple[int, int], rel_h: torch.Tensor, rel_w: torch.Tensor
                  ) -> torch.Tensor:
    """Add MViTv2's decomposed relative position terms (q · R_h and q · R_w) to the logits."""
    (qh, qw), (kh, kw) = q_hw, k_hw

    def table(size_q: int, size_k: int, rel: torch.Tensor) -> torch.Tensor:
        rq, rk = max(size_k / size_q, 1.0), max(size_q / size_k, 1.0)
        dist = (torch.arange(size_q, device=rel.device)[:, None] * rq
                - torch.arange(size_k, device=rel.device)[None, :] * rk + (size_k - 1) * rk)
        return rel[dist.long()]

    b, n, _, d = q.shape
    r_q = q.reshape(b, n, qh, qw, d)
    rel_hq = torch.einsum("bnhwc,hkc->bnhwk", r_q, table(qh, kh, rel_h))
    rel_wq = torch.einsum("bnhwc,wkc->bnhwk", r_q, table(qw, kw, rel_w))
    attn = attn.view(b, n, qh, qw, kh, kw) + rel_hq[..., :, None] + rel_wq[..., None, :]
    return attn.view(b, n, qh * qw, kh * kw)


class PoolAttention(nn.Module):
    """Multi-head pooling attention over [B, H, W, C] -> [B, H/q_stride, W/q_stride, out].

    No internal residual (a reversible coupling supplies it)."""

    RANDOM_RATES = ("attn_drop",)  # what `without_randomness` sets to 0

    def __init__(self, dim: int, heads: int, out: int | None = None, q_stride: int = 1,
                 kv_stride: int = 1, kernel: int = 3, size: tuple[int, int] = (0, 0),
                 qkv_bias: bool = True, rel_pos: bool = False, residual_pooling: bool = False,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        out = out or dim
        self.heads = heads
        self.out = out
        head_dim = out // heads
        self.scale = head_dim**-0.5
        self.q = nn.Linear(dim, out, bias=qkv_bias)
        self.k = nn.Linear(dim, out, bias=qkv_bias)
        self.v = nn.Linear(dim, out, bias=qkv_bias)
        self.proj = nn.Linear(out, out)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)
        pad = kernel // 2

        def pool(stride: int) -> tuple[nn.Module | None, nn.Module | None]:
            if kernel == 1 and stride == 1:
                return None, None
            conv = nn.Conv2d(head_dim, head_dim, kernel, stride, pad, groups=head_dim, bias=False)
            return conv, nn.LayerNorm(head_dim, eps=1e-6)

        # Q is pooled only where it is strided (MViT); K and V always when the kernel is > 1
        self.pool_q, self.norm_q = pool(q_stride) if q_stride > 1 else (None, None)
        self.pool_k, self.norm_k = pool(kv_stride)
        self.pool_v, self.norm_v = pool(kv_stride)
        self.rel_pos = rel_pos
        if rel_pos:
            size_q = size[0] // q_stride
            size_kv = size[0] // kv_stride
            span = 2 * max(size_q, size_kv) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(span, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(span, head_dim))
            nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
            nn.init.trunc_normal_(self.rel_pos_w, std=0.02)
        self.residual_pooling = residual_pooling

    def draws_random(self) -> bool:
        return self.training and self.attn_drop > 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, h * w, self.heads, t.shape[-1] // self.heads).transpose(1, 2)

        q, qh, qw = _pool_heads(heads(self.q(x)), self.pool_q, self.norm_q, h, w)
        k, kh, kw = _pool_heads(heads(self.k(x)), self.pool_k, self.norm_k, h, w)
        v, _, _ = _pool_heads(heads(self.v(x)), self.pool_v, self.norm_v, h, w)
        drop = self.attn_drop if self.training else 0.0
        if self.rel_pos:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = _rel_pos_bias(attn, q, (qh, qw), (kh, kw), self.rel_pos_h, self.rel_pos_w)
            attn = F.dropout(attn.softmax(dim=-1), drop, self.training)
            o = attn @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        if self.residual_pooling:
            o = o + q
        o = o.transpose(1, 2).reshape(b, qh * qw, self.out)
        return self.proj_drop(self.proj(o)).reshape(b, qh, qw, self.out)


class PoolAttentionResidual(nn.Module):
    """`residual(x) + attention(norm(x))`: the attention half of an MViT stage transition.

    The attention pools Q with `q_stride`; the residual is pooled to the same grid, with the
    attention's own Q-pooling convolution and norm ('conv', as Rev-MViT) or by max pooling."""

    def __init__(self, dim: int, heads: int, q_stride: int = 2, kv_stride: int = 1,
                 kernel: int = 3, size: tuple[int, int] = (0, 0), qkv_bias: bool = True,
                 residual: str = "conv", rel_pos: bool = False,
                 residual_pooling: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolAttention(dim, heads, q_stride=q_stride, kv_stride=kv_stride,
                                  kernel=kernel, size=size, qkv_bias=qkv_bias, rel_pos=rel_pos,
                                  residual_pooling=residual_pooling)
        self.residual = residual
        self.heads = heads
        if residual == "max":
            self.pool_skip = nn.MaxPool2d(q_stride + 1, q_stride, (q_stride + 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if self.residual == "conv":
            t = x.reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2)
            r, rh, rw = _pool_heads(t, self.attn.pool_q, self.attn.norm_q, h, w)
            r = r.transpose(1, 2).reshape(b, rh, rw, c)
        else:
            r = self.pool_skip(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return r + self.attn(self.norm(x))
