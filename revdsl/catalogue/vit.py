"""Vision-transformer ops: patch and position embedding, attention, MLP, LayerScale, class token.

Token tensors are [B, N, C] for ViT-style models; ops that mix tokens also accept [B, H, W, C]
(channels last), which MViT uses so that pooling changes H and W visibly in the shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import (
    DROPOUT_MASK_BYTES,
    IN0,
    POSITIVE,
    PROBABILITY,
    Attr,
    Buffer,
    OpDef,
    OpShapeError,
    register,
)
from revdsl.catalogue.core import LAYOUT, channel_dim, need_rank, same_shape, tokens
from revdsl.shapes import Shape, fmt_shape, numel, simp, to_expr


def _conv_out(size: Any, kernel: int, stride: int, padding: int) -> sympy.Expr:
    return sympy.floor((to_expr(size) + 2 * padding - kernel) / stride) + 1


def _patch_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "patch_embed")
    b, _c, h, w = s
    k = a["patch"]
    stride = a["stride"] or k
    pad = a["padding"]
    for d in (h, w):  # non-overlapping patches must tile the image exactly
        if stride == k and pad == 0 and to_expr(d).is_number and int(d) % k:
            raise OpShapeError(
                f"image size {d} is not covered exactly by patches of {k} with stride {stride}"
            )
    oh, ow = _conv_out(h, k, stride, pad), _conv_out(w, k, stride, pad)
    if a["flatten"]:
        return (b, simp(oh * ow), to_expr(a["dim"]))
    return (b, oh, ow, to_expr(a["dim"]))


register(
    OpDef(
        name="patch_embed",
        doc="patch_embed(img, dim, patch, stride=patch, padding=0, flatten=true): a strided "
        "convolution into tokens, [B,C,H,W] -> [B,N,dim] (or [B,H',W',dim] with flatten=false)",
        module="PatchEmbed", inputs=1, default_name="patch_embed",
        attrs=(
            Attr("dim", "int", minimum=1),
            Attr("patch", "int", minimum=1, symbolic=False),
            Attr("stride", "int", minimum=1, default=0, symbolic=False),
            Attr("padding", "int", default=0, symbolic=False),
            Attr("flatten", "bool", default=True),
        ),
        shape=_patch_shape,
        ctor=lambda s, a: [
            ("in_chans", s[0][1]), ("dim", a["dim"]), ("patch", a["patch"]),
            ("stride", a["stride"] or a["patch"], a["patch"]),
            ("padding", a["padding"], 0), ("flatten", a["flatten"], True),
        ],
        ctor_positional=2,
        params=lambda s, a: s[0][1] * a["patch"] ** 2 * to_expr(a["dim"]) + to_expr(a["dim"]),
        macs=lambda i, o, a: tokens(o[0]) * o[0][0] * i[0][1] * a["patch"] ** 2
        * to_expr(a["dim"]),
        saved=lambda i, o, a: [IN0],
    )
)


def _pos_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    for d in s[1:]:
        if not to_expr(d).is_number:
            raise OpShapeError(
                f"pos_embed needs a fixed token layout, but the input has shape {fmt_shape(s)}"
            )
    return s


register(
    OpDef(
        name="pos_embed",
        doc="pos_embed(x): adds a learned table of x's shape (without the batch dim)",
        module="PosEmbed", inputs=1, default_name="pos_embed", shape=_pos_shape,
        ctor=lambda s, a: [(f"size{i}", d) for i, d in enumerate(s[0][1:])],
        ctor_positional=99,
        params=lambda s, a: numel(s[0][1:]),
    )
)


def _attn_checks(shapes: Sequence[Shape], a: dict[str, Any]) -> str | None:
    c = to_expr(shapes[0][-1])
    h = to_expr(a["heads"])
    if c.is_number and h.is_number and int(c) % int(h):
        return f"{c} channels cannot be split into {h} heads"
    return None


def _attention_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    need_rank(shapes[0], (3, 4), "attention")
    msg = _attn_checks(shapes, a)
    if msg:
        raise OpShapeError(msg)
    return shapes[0]


def _attention_macs(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> Any:
    s = i[0]
    n, c = tokens(s), s[-1]
    return s[0] * (n * c * 3 * c + 2 * n * n * c + n * c * c)


register(
    OpDef(
        name="attention",
        doc="attention(x, heads, qkv_bias=true, attn_drop=0, proj_drop=0): multi-head "
        "self-attention over all tokens, no internal residual",
        module="Attention", inputs=1, default_name="attn", causal=False,
        attrs=(
            Attr("heads", "int", minimum=1),
            Attr("qkv_bias", "bool", default=True),
            Attr("attn_drop", "float", default=0.0, domain=PROBABILITY, random=True),
            Attr("proj_drop", "float", default=0.0, domain=PROBABILITY, random=True),
        ),
        shape=_attention_shape, stochastic=False,
        ctor=lambda s, a: [
            ("dim", s[0][-1]), ("heads", a["heads"]), ("qkv_bias", a["qkv_bias"], True),
            ("attn_drop", a["attn_drop"], 0.0), ("proj_drop", a["proj_drop"], 0.0),
        ],
        params=lambda s, a: 4 * s[0][-1] ** 2 + (4 if a["qkv_bias"] else 1) * s[0][-1],
        macs=_attention_macs,
        # qkv input, q/k/v (one storage), sdpa output (laid out [B, N, heads, D], so proj's
        # input is a view of it) and logsumexp (measured: saved-tensor hooks)
        saved=lambda i, o, a: [IN0, i[0], i[0], i[0], i[0],
                               (i[0][0], to_expr(a["heads"]), tokens(i[0]))],
    )
)


def _mlp_hidden(s: Shape, a: dict[str, Any]) -> sympy.Expr:
    if a["hidden"]:
        return to_expr(a["hidden"])
    return sympy.floor(to_expr(s[-1]) * to_expr(a["ratio"]))


def _mlp_out(s: Shape, a: dict[str, Any]) -> sympy.Expr:
    return to_expr(a["out"]) if a["out"] else to_expr(s[-1])


def _mlp_saved(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> list[Any]:
    hidden = (*i[0][:-1], _mlp_hidden(i[0], a))
    out: list[Any] = [IN0, hidden, hidden]  # fc1's input, GELU's input, fc2's input
    if a["drop"]:
        out += [Buffer(hidden, DROPOUT_MASK_BYTES), Buffer(o[0], DROPOUT_MASK_BYTES)]  # masks
    return out


register(
    OpDef(
        name="mlp",
        doc="mlp(x, ratio=4, hidden=0, out=0, drop=0): Linear -> GELU -> Linear over the last "
        "dim (hidden = ratio * C unless given; out = C unless given)",
        module="Mlp", inputs=1, default_name="mlp",
        attrs=(
            Attr("ratio", "number", default=4.0, domain=POSITIVE),
            Attr("hidden", "int", minimum=1, default=0),
            Attr("out", "int", minimum=1, default=0),
            Attr("drop", "float", default=0.0, domain=PROBABILITY, random=True),
        ),
        shape=lambda s, a: (*s[0][:-1], _mlp_out(s[0], a)),
        stochastic=False, rowwise=lambda a: a["drop"] == 0,
        ctor=lambda s, a: [
            ("dim", s[0][-1]), ("hidden", _mlp_hidden(s[0], a)),
            ("out", a["out"] or None, None), ("drop", a["drop"], 0.0),
        ],
        params=lambda s, a: s[0][-1] * _mlp_hidden(s[0], a) + _mlp_hidden(s[0], a)
        + _mlp_hidden(s[0], a) * _mlp_out(s[0], a) + _mlp_out(s[0], a),
        macs=lambda i, o, a: numel(i[0][:-1]) * _mlp_hidden(i[0], a)
        * (i[0][-1] + _mlp_out(i[0], a)),
        saved=_mlp_saved,
    )
)

register(
    OpDef(
        name="layer_scale",
        doc="layer_scale(x, init=1e-5, layout=None): multiply by a learned per-channel scale "
        "(LayerScale); channels as for layernorm",
        module="LayerScale", inputs=1, default_name="ls",
        rowwise=lambda a: a.get("layout") != "channels_first",
        attrs=(Attr("init", "float", default=1e-5), LAYOUT),
        shape=same_shape,
        checks=(lambda s, a: (channel_dim(s[0], a, "layer_scale"), None)[1],),
        ctor=lambda s, a: [("dim", s[0][channel_dim(s[0], a, "layer_scale")]),
                           ("init", a["init"]),
                           ("channels_first", a.get("layout") == "channels_first", False)],
        params=lambda s, a: s[0][channel_dim(s[0], a, "layer_scale")],
        saved=lambda i, o, a: [IN0],
    )
)


def _cls_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (3,), "cls_token")
    return (s[0], s[1] + 1, s[2])


register(
    OpDef(
        name="cls_token",
        doc="cls_token(x, position='first'): insert a learned class token before (or, with "
        "position='last', after) the tokens",
        module="ClassToken", inputs=1, default_name="cls_token",
        attrs=(Attr("position", "str", default="first", choices=("first", "last")),),
        shape=_cls_shape,
        ctor=lambda s, a: [("dim", s[0][-1]), ("position", a["position"], "first")],
        params=lambda s, a: s[0][-1],
    )
)
