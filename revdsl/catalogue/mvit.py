"""MViT ops: multi-head pooling attention and the attention half of a stage transition.

Both take channels-last token maps [B, H, W, C]. Inside a reversible coupling, pooling attention
must keep the grid and the width (Q stride 1, out = C); the verifier's shape check enforces that,
and `coupling_hint` tells the user where a pooling step belongs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import Attr, OpDef, OpShapeError, register
from revdsl.catalogue.conv import conv_out
from revdsl.catalogue.core import need_rank
from revdsl.shapes import Shape, to_expr


def _out(s: Shape, a: dict[str, Any]) -> sympy.Expr:
    return to_expr(a["out"]) if a["out"] else to_expr(s[-1])


def _grid(h: Any, a: dict[str, Any], stride: int) -> sympy.Expr:
    if stride == 1 and a["kernel"] == 1:
        return to_expr(h)
    return conv_out(h, a["kernel"], stride, a["kernel"] // 2)


def _q_grid(s: Shape, a: dict[str, Any]) -> tuple[sympy.Expr, sympy.Expr]:
    if a["q_stride"] == 1:
        return to_expr(s[1]), to_expr(s[2])
    return _grid(s[1], a, a["q_stride"]), _grid(s[2], a, a["q_stride"])


def _check(s: Shape, a: dict[str, Any], what: str) -> None:
    need_rank(s, (4,), what)
    out, heads = _out(s, a), to_expr(a["heads"])
    if out.is_number and heads.is_number and int(out) % int(heads):
        raise OpShapeError(f"width {out} cannot be split into {heads} heads")
    if a.get("rel_pos") and not (to_expr(s[1]).is_number and to_expr(s[2]).is_number):
        raise OpShapeError("rel_pos needs a fixed token grid")


def _shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    _check(s, a, "pool_attention")
    qh, qw = _q_grid(s, a)
    return (s[0], qh, qw, _out(s, a))


def _params(s: Shape, a: dict[str, Any], with_norm: bool = False) -> sympy.Expr:
    c, out = to_expr(s[-1]), _out(s, a)
    d = out / to_expr(a["heads"])
    k2 = a["kernel"] ** 2
    n: sympy.Expr = 3 * c * out + (3 * out if a["qkv_bias"] else 0) + out * out + out
    pools = 2 + (1 if a["q_stride"] > 1 else 0)
    if a["kernel"] > 1 or a["kv_stride"] > 1:
        n += 2 * (d * k2 + 2 * d)
    if a["q_stride"] > 1:
        n += d * k2 + 2 * d
    del pools
    if a["rel_pos"]:
        size_q = int(s[1]) // a["q_stride"]
        size_kv = int(s[1]) // a["kv_stride"]
        n += 2 * (2 * max(size_q, size_kv) - 1) * d
    if with_norm:
        n += 2 * c
    return n


def _macs(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> sympy.Expr:
    s = i[0]
    b, c, out = s[0], to_expr(s[-1]), _out(s, a)
    n = to_expr(s[1]) * to_expr(s[2])
    qh, qw = _q_grid(s, a)
    nq = qh * qw
    kh, kw = _grid(s[1], a, a["kv_stride"]), _grid(s[2], a, a["kv_stride"])
    nk = kh * kw
    k2 = a["kernel"] ** 2
    m = 3 * n * c * out  # q, k, v projections
    m += nk * out * k2 * 2 + (nq * out * k2 if a["q_stride"] > 1 else 0)  # pooling convs
    m += 2 * nq * nk * out  # q k^T and attn v
    m += nq * out * out  # output projection
    if a["rel_pos"]:
        m += nq * (kh + kw) * out
    return b * m


def _saved(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> list[Shape]:
    s = i[0]
    b, out = s[0], _out(s, a)
    n = to_expr(s[1]) * to_expr(s[2])
    qh, qw = _q_grid(s, a)
    nq = qh * qw
    nk = _grid(s[1], a, a["kv_stride"]) * _grid(s[2], a, a["kv_stride"])
    heads = to_expr(a["heads"])
    saved: list[Shape] = [(b, n, s[-1])]  # the shared input of q, k and v
    saved += [(b, n, out)] * 2  # k and v before pooling (pool inputs)
    saved += [(b, nk, out)] * 4  # pooled k, v (norm inputs) and normed k, v
    if a["q_stride"] > 1:
        saved += [(b, n, out), (b, nq, out), (b, nq, out)]
    else:
        saved += [(b, nq, out)]
    saved += [(b, nq, out), (b, heads, nq)]  # attention output, logsumexp
    if a["rel_pos"]:
        saved += [(b, heads, nq, nk)] * 2
    saved += [(b, nq, out)]  # proj input
    return saved


_ATTRS = (
    Attr("heads", "int", minimum=1),
    Attr("out", "int", minimum=1, default=0),
    Attr("q_stride", "int", minimum=1, default=1, symbolic=False),
    Attr("kv_stride", "int", minimum=1, default=1, symbolic=False),
    Attr("kernel", "int", minimum=1, default=3, symbolic=False),
    Attr("qkv_bias", "bool", default=True),
    Attr("rel_pos", "bool", default=False),
    Attr("residual_pooling", "bool", default=False),
)


def _ctor(s: Sequence[Shape], a: dict[str, Any],
          extra: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    x = s[0]
    return [
        ("dim", x[-1]), ("heads", a["heads"]),
        ("out", a["out"] or None, None),
        ("q_stride", a["q_stride"], 1 if "residual" not in a else 2),
        ("kv_stride", a["kv_stride"], 1), ("kernel", a["kernel"], 3),
        ("size", (int(x[1]), int(x[2])) if a["rel_pos"] else (0, 0), (0, 0)),
        ("qkv_bias", a["qkv_bias"], True), ("rel_pos", a["rel_pos"], False),
        ("residual_pooling", a["residual_pooling"], False),
        *extra,
    ]


def _hint(a: dict[str, Any]) -> str | None:
    if a.get("q_stride", 1) > 1:
        return (f"pool_attention with q_stride={a['q_stride']} pools the token grid; a grid "
                "change belongs in a stage transition (a stored `block` between reversible "
                "segments)")
    if a.get("out"):
        return ("pool_attention with out= changes the width; a width change belongs in a "
                "stage transition (a stored `block` between reversible segments)")
    return None


register(
    OpDef(
        name="pool_attention",
        doc="pool_attention(x, heads, out=C, q_stride=1, kv_stride=1, kernel=3, qkv_bias=true, "
        "rel_pos=false, residual_pooling=false): MViT multi-head pooling attention over "
        "[B,H,W,C] (Q/K/V pooled per head by a strided depthwise conv + LayerNorm); no residual",
        module="PoolAttention", inputs=1, default_name="attn", attrs=_ATTRS, causal=False,
        shape=_shape, ctor=lambda s, a: _ctor(s, a, []),
        params=lambda s, a: _params(s[0], a), macs=_macs, saved=_saved,
        coupling_hint=_hint,
    )
)


def _res_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    _check(s, a, "pool_attention_residual")
    if a["out"] and a["out"] != s[-1]:
        raise OpShapeError("pool_attention_residual keeps the width (its residual is pooled, "
                           "not projected)")
    qh, qw = _q_grid(s, a)
    return (s[0], qh, qw, s[-1])


register(
    OpDef(
        name="pool_attention_residual",
        doc="pool_attention_residual(x, heads, q_stride=2, kv_stride=1, residual='conv'|'max', "
        "...): pool(x) + pool_attention(layernorm(x)); the residual is pooled with the "
        "attention's own Q-pooling conv and norm ('conv', Rev-MViT) or max pooling: the "
        "attention half of an MViT stage transition",
        module="PoolAttentionResidual", inputs=1, default_name="attn",
        attrs=(*[a if a.name != "q_stride" else Attr("q_stride", "int", minimum=1, default=2,
                                                    symbolic=False) for a in _ATTRS],
               Attr("residual", "str", default="conv", choices=("conv", "max"))),
        shape=_res_shape,
        ctor=lambda s, a: _ctor(s, a, [("residual", a["residual"], "conv")]),
        params=lambda s, a: _params(s[0], a, with_norm=True),
        macs=lambda i, o, a: _macs(i, o, a) + (
            o[0][0] * o[0][1] * o[0][2] * to_expr(i[0][-1]) * a["kernel"] ** 2
            if a["residual"] == "conv" else 0
        ),
        saved=lambda i, o, a: [i[0], *_saved(i, o, a), o[0]],
    )
)
