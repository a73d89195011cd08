"""Runtime layers for transformer-style ops (copied into generated modules as needed).

Each class here is what a catalogue op with `module="<Class>"` constructs. They import only torch
and keep timm's parameter layout where there is one (qkv/proj, fc1/fc2), so weights are familiar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from revdsl.runtime.engine import is_recomputing


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's update with probability `rate` (training only)."""

    RANDOM_RATES = ("rate",)  # what `without_randomness` sets to 0

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def draws_random(self) -> bool:
        return self.training and self.rate > 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class PatchEmbed(nn.Module):
    """A strided convolution from an image to tokens: [B, C, H, W] -> [B, N, dim]
    (or [B, H', W', dim] with flatten=False)."""

    def __init__(self, in_chans: int, dim: int, patch: int, stride: int | None = None,
                 padding: int = 0, flatten: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride or patch, padding)
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.flatten:
            return x.flatten(2).transpose(1, 2)
        return x.permute(0, 2, 3, 1)


class PosEmbed(nn.Module):
    """A learned table added to every sample (absolute position embedding)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, *shape))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


class Attention(nn.Module):
    """Multi-head self-attention over all tokens of x ([B, *tokens, C]); no residual inside."""

    RANDOM_RATES = ("attn_drop",)  # what `without_randomness` sets to 0

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def draws_random(self) -> bool:
        return self.training and self.attn_drop > 0.0

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, N, C] -> q, k, v, each [B, heads, N, C / heads]."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of q over k, v ([B, heads, N, D]), heads merged and projected: [B, N, C]."""
        drop = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        b, h, n, d = x.shape
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, h * d)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.flatten(1, -2) if x.dim() > 3 else x  # [B, *tokens, C] -> [B, N, C] (B may be 0)
        return self.attend(*self.split_heads(x)).reshape(shape)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear over the last dim."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Multiply by a learned per-channel scale, initialised small (CaiT's LayerScale); the
    channels are the last dim, or dim 1 with `channels_first`."""

    def __init__(self, dim: int, init: float = 1e-5, channels_first: bool = False) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:
            return x * self.gamma.view(-1, *([1] * (x.dim() - 2)))
        return x * self.gamma


class LayerNormChannelsFirst(nn.LayerNorm):
    """LayerNorm over dim 1 of [B, C, ...] (ConvNeXt's channels-first LayerNorm); the same
    parameters as nn.LayerNorm(C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class ClassToken(nn.Module):
    """Insert a learned class token before (or after) the tokens of a [B, N, C] sequence."""

    def __init__(self, dim: int, position: str = "first") -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.token, std=0.02)
        self.position = position

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = self.token.expand(x.shape[0], -1, -1)
        if self.position == "last":
            return torch.cat([x, token], dim=1)
        return torch.cat([token, x], dim=1)


class Learned(nn.Module):
    """A learned tensor of a fixed shape (no inputs)."""

    def __init__(self, shape: tuple[int, ...], init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full(tuple(shape), float(init)))

    def forward(self) -> torch.Tensor:
        return self.weight


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose running statistics are updated once per training step.

    While the reversible backward recomputes a block (`is_recomputing()`), it normalises with the
    batch statistics exactly as the forward did but leaves the running mean and variance (and
    the batch counter) alone, so they match plain training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and is_recomputing() and self.track_running_stats:
            # the same op as the forward (so a checkpoint sees the same saved tensors), but the
            # statistics it updates are throwaway copies and the batch counter does not move
            return F.batch_norm(x, self.running_mean.clone(), self.running_var.clone(),
                                self.weight, self.bias, True, self.momentum or 0.0, self.eps)
        return super().forward(x)


def space_to_depth(x: torch.Tensor, factor: int, pixel_major: bool = False) -> torch.Tensor:
    """[B, C, H, W] -> [B, C*r*r, H/r, W/r]: output channel c*r*r + dy*r + dx (pixel_unshuffle's
    order), or with `pixel_major` (dy*r + dx)*C + c (RevBiFPN's stem). An empty batch keeps its
    meaning (torch's pixel_unshuffle returns it unchanged)."""
    if x.shape[0] == 0:
        _, c, h, w = x.shape
        return x.reshape(0, c * factor * factor, h // factor, w // factor)
    y = F.pixel_unshuffle(x, factor)
    if pixel_major:
        b, _, h, w = y.shape
        y = y.reshape(b, x.shape[1], factor * factor, h, w).transpose(1, 2).reshape(b, -1, h, w)
    return y


def depth_to_space(x: torch.Tensor, factor: int, pixel_major: bool = False) -> torch.Tensor:
    """The inverse of space_to_depth (with the same `pixel_major`)."""
    if x.shape[0] == 0:
        _, c, h, w = x.shape
        return x.reshape(0, c // (factor * factor), h * factor, w * factor)
    if pixel_major:
        b, c, h, w = x.shape
        x = x.reshape(b, factor * factor, c // (factor * factor), h, w).transpose(1, 2).reshape(
            b, c, h, w)
    return F.pixel_shuffle(x, factor)


def init_weights(module: nn.Module) -> None:
    """ViT-style initialisation: truncated-normal(0.02) linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_weights_outside(model: nn.Module, keep: tuple[type, ...]) -> None:
    """`init_weights` on every layer except those inside a module of a class in `keep` (a
    spec's extern modules keep the initialisation their authors gave them)."""
    skip: set[int] = set()
    for m in model.modules():
        if isinstance(m, keep):
            skip.update(id(x) for x in m.modules())
    for m in model.modules():
        if id(m) not in skip:
            init_weights(m)


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution over the channels of [B, C, ...], LU-parametrised:
    W = P L (U + diag(sign * exp(log_s))), with P a fixed permutation, L unit lower triangular
    and U strictly upper triangular, so det W = prod(sign * exp(log_s)) is never 0 and
    `inverse` undoes it exactly (two triangular solves). Starts as a random rotation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    @torch.no_grad()
    def randomize(self, generator: torch.Generator, gain: float = 1.0) -> None:
        """Random parameters for testing: a random rotation with the diagonal of U scaled by
        exp(N(0, (0.1 gain)^2)) (random triangular factors would be badly conditioned)."""
        c = self.lower.shape[0]
        q = torch.linalg.qr(torch.randn(c, c, generator=generator, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        dtype = self.lower.dtype
        self.perm.copy_(p.to(self.perm.dtype))
        self.sign_s.copy_(torch.sign(s).to(self.sign_s.dtype))
        self.lower.copy_(lower.to(dtype))
        self.upper.copy_(torch.triu(upper, 1).to(dtype))
        noise = torch.randn(c, generator=generator, dtype=torch.float64) * 0.1 * gain
        self.log_s.copy_((torch.log(torch.abs(s)) + noise).to(dtype))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> torch.Tensor:
        lower, upper = self._factors()
        return self.perm.to(lower.dtype) @ lower @ upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,bc...->bo...", self.weight(), x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        c = y.shape[1]
        flat = y.movedim(1, -1).reshape(-1, c).T  # C, N
        z = self.perm.to(y.dtype).T @ flat
        z = torch.linalg.solve_triangular(lower, z, upper=False, unitriangular=True)
        z = torch.linalg.solve_triangular(upper, z, upper=True)
        return z.T.reshape(*y.movedim(1, -1).shape).movedim(-1, 1)


class ActNorm(nn.Module):
    """Glow's activation normalisation: a learned per-channel scale exp(log_s) > 0 and shift over
    the channels of [B, C, ...]; a bijection by construction (`inverse` undoes it)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_s = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._view(torch.exp(self.log_s), x) + self._view(self.bias, x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self._view(self.bias, y)) * self._view(torch.exp(-self.log_s), y)
