"""RevBiFPN ops: MBConv transforms, the channel-replicating stem, Hardswish / Hardsigmoid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl import algebra
from revdsl.catalogue.base import POSITIVE, PROBABILITY, UNIT, Attr, OpDef, OpShapeError, register
from revdsl.catalogue.conv import conv_out
from revdsl.catalogue.core import need_rank, same_shape
from revdsl.shapes import Shape, numel, to_expr


def _mid(c: Any, a: dict[str, Any]) -> sympy.Expr:
    return sympy.floor(to_expr(c) * sympy.nsimplify(a["expand"]))


def _se(c: Any, a: dict[str, Any]) -> sympy.Expr:
    return sympy.Max(1, sympy.floor(to_expr(c) * sympy.nsimplify(a["se"])))


def _mb_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "mbconv")
    if a["kernel"] < 1 or a["stride"] < 1:
        raise OpShapeError("kernel and stride must be positive")
    if not 0 <= a["se"] <= 1:
        raise OpShapeError("se is a ratio in [0, 1]")
    k, st = a["kernel"], a["stride"]
    return (s[0], to_expr(a["out"]), conv_out(s[2], k, st, (k - 1) // 2),
            conv_out(s[3], k, st, (k - 1) // 2))


def _mb_params(s: Sequence[Shape], a: dict[str, Any]) -> sympy.Expr:
    c = to_expr(s[0][1])
    mid = _mid(c, a)
    out = to_expr(a["out"])
    n: sympy.Expr = sympy.Integer(0)
    if a["expand"] != 1:
        n += c * mid + 2 * mid
    n += mid * a["kernel"] ** 2 + 2 * mid
    if 0 < a["se"] <= 1:
        se = _se(c, a)
        n += mid * se + se + se * mid + mid
    n += mid * out + 2 * out
    return n


def _mb_macs(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> sympy.Expr:
    s, out = i[0], o[0]
    c = to_expr(s[1])
    mid = _mid(c, a)
    hw_in = to_expr(s[2]) * to_expr(s[3])
    hw_out = to_expr(out[2]) * to_expr(out[3])
    m: sympy.Expr = sympy.Integer(0)
    if a["expand"] != 1:
        m += hw_in * c * mid
    m += hw_out * mid * a["kernel"] ** 2
    if 0 < a["se"] <= 1:
        m += 2 * mid * _se(c, a)
    m += hw_out * mid * to_expr(a["out"])
    return s[0] * m


def _mb_saved(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> list[Shape]:
    s, out = i[0], o[0]
    b, c = s[0], to_expr(s[1])
    mid = _mid(c, a)
    inner: list[Shape] = []
    if a["expand"] != 1:
        inner += [s, (b, mid, s[2], s[3]), (b, mid, s[2], s[3])]  # conv in, bn in, act in
    dw = (b, mid, out[2], out[3])
    inner += [(b, mid, s[2], s[3]), dw, dw]  # dw conv in, bn in, act in
    if 0 < a["se"] <= 1:
        small = (b, mid, 1, 1)
        se = (b, _se(c, a), 1, 1)
        inner += [dw, small, se, se, small]  # x * gate (x, gate); the squeeze's convs and acts
    inner += [dw, out]  # project conv in, bn in
    if a["drop"]:
        inner += [(b,)]
    return inner


register(
    OpDef(
        name="mbconv",
        doc="mbconv(x, out, kernel=3, stride=1, expand=1, se=0, drop=0, zero_init=false): "
        "inverted bottleneck over [B,C,H,W]: [1x1 expand] -> depthwise k x k -> [squeeze-excite "
        "with ratio se] -> 1x1 project + BatchNorm; stochastic depth `drop`; no identity skip",
        module="MBConv", inputs=1, default_name="mbconv",
        attrs=(
            Attr("out", "int", minimum=1),
            Attr("kernel", "int", minimum=1, default=3, symbolic=False),
            Attr("stride", "int", minimum=1, default=1, symbolic=False),
            Attr("expand", "number", default=1, symbolic=False, domain=POSITIVE),
            Attr("se", "number", default=0.0, symbolic=False, domain=UNIT),
            Attr("drop", "float", default=0.0, domain=PROBABILITY, random=True),
            Attr("zero_init", "bool", default=False),
        ),
        shape=_mb_shape, stochastic=True,
        ctor=lambda s, a: [
            ("in_ch", s[0][1]), ("out", a["out"]), ("kernel", a["kernel"], 3),
            ("stride", a["stride"], 1), ("expand", a["expand"], 1), ("se", a["se"], 0.0),
            ("drop", a["drop"], 0.0), ("zero_init", a["zero_init"], False),
        ],
        ctor_positional=2,
        params=_mb_params, macs=_mb_macs, saved=_mb_saved,
        coupling_hint=lambda a: (
            f"mbconv with stride {a['stride']} changes the resolution; within a silo, a "
            "strided transform belongs to the update of a coarser scale" if a.get("stride", 1) > 1
            else None),
    )
)


def _rep_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "replicate_channels")
    if a["channels"] < 1:
        raise OpShapeError("channels must be positive")
    return (s[0], to_expr(a["channels"]), s[2], s[3])


register(
    OpDef(
        name="replicate_channels",
        doc="replicate_channels(x, channels): copies of x's channels concatenated and cut to "
        "`channels` (RevBiFPN's stem: RGB repeated to fill the first scale's channels / 16)",
        kind="function", inputs=1, positional=("channels",),
        attrs=(Attr("channels", "int", minimum=1, symbolic=False),), shape=_rep_shape,
        template="replicate_channels({0}, {channels})", runtime=("replicate_channels",),
    )
)


def _hswish(x: sympy.Expr) -> sympy.Expr:
    return x * sympy.Min(sympy.Max(x + 3, 0), 6) / 6


def _hsigmoid(x: sympy.Expr) -> sympy.Expr:
    return sympy.Min(sympy.Max(x + 3, 0), 6) / 6


for _name, _tmpl, _model, _doc in (
    ("hardswish", "F.hardswish({0})", _hswish, "x * relu6(x + 3) / 6"),
    ("hardsigmoid", "F.hardsigmoid({0})", _hsigmoid, "relu6(x + 3) / 6"),
    ("relu6", "F.relu6({0})", lambda x: algebra.clamp(x, sympy.Integer(0), sympy.Integer(6)),
     "min(max(x, 0), 6)"),
):
    register(OpDef(name=_name, doc=_doc, kind="algebra", inputs=1, shape=same_shape,
                   template=_tmpl, sympy_model=_model, elementwise=True))

__all__ = ["numel"]
