"""Runtime layers for SuperViT (one model, several input sizes and token keep rates).

* `MultiPosEmbed`: one learned position table per input size; the table is chosen by the token
  count, so an image resized to any of the sizes uses its own table (no interpolation).
* `AttentionCls`: self-attention that also returns the class token's attention to every patch
  (softmax probabilities averaged over heads), the score SuperViT prunes by.
* `KeepTokens`: keep the class token and the ceil(r * N) most attended patches (N counting the
  class token), sorted by score; at r = 1 nothing is pruned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from revdsl.runtime.layers import Attention


class MultiPosEmbed(nn.Module):
    """Learned position tables, one per input size (tokens = (size / patch)^2 + 1 with the
    class token); the one matching the input's token count is added."""

    def __init__(self, dim: int, sizes: tuple[int, ...], patch: int) -> None:
        super().__init__()
        self.sizes = tuple(sizes)
        self.tokens = tuple((s // patch) ** 2 + 1 for s in sizes)
        self.tables = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, n, dim)) for n in self.tokens]
        )
        for t in self.tables:
            nn.init.trunc_normal_(t, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n not in self.tokens:
            raise ValueError(
                f"an input of {n - 1} patches matches none of the sizes this model was built "
                f"for ({', '.join(f'{s}x{s}' for s in self.sizes)} pixels)"
            )
        return x + self.tables[self.tokens.index(n)]


class AttentionCls(Attention):
    """Multi-head self-attention over [B, N, C] (class token first) that also returns the class
    token's attention to each patch, averaged over heads: [B, N - 1]."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        q, k, v = self.split_heads(x)
        scale = q.shape[-1] ** -0.5
        cls = ((q[:, :, :1] * scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, H, 1, N]
        return self.attend(q, k, v), cls[:, :, 0, 1:].mean(dim=1)


class KeepTokens(nn.Module):
    """Keep the class token and the ceil(keep_rate * N) highest-scoring patches of each stream
    (N counts the class token), in descending score order."""

    def forward(self, score: torch.Tensor, *streams: torch.Tensor,
                keep_rate: float = 1.0) -> tuple[torch.Tensor, ...]:
        if keep_rate >= 1.0:
            return streams
        n = streams[0].shape[1]
        k = min(math.ceil(keep_rate * n), n - 1)
        index = score.topk(k, dim=1, largest=True, sorted=True).indices
        out = []
        for x in streams:
            idx = index.unsqueeze(-1).expand(-1, -1, x.shape[-1])
            out.append(torch.cat([x[:, :1], x[:, 1:].gather(1, idx)], dim=1))
        return tuple(out)
