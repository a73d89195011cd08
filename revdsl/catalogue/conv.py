"""Convolutional and multi-scale ops on [B, C, H, W] maps: conv, batch norm, pooling, resampling,
and a learned tensor (`learned`, e.g. a RevCol-style scale)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import (
    IN0,
    POSITIVE,
    UNIT,
    Attr,
    Buffer,
    OpDef,
    OpShapeError,
    as_tuple,
    register,
)
from revdsl.catalogue.core import need_rank, same_shape
from revdsl.shapes import Shape, numel, simp, to_expr


def conv_out(size: Any, kernel: int, stride: int, padding: int) -> sympy.Expr:
    return simp(sympy.floor((to_expr(size) + 2 * padding - kernel) / stride) + 1)


def _pad(a: dict[str, Any]) -> int:
    return a["kernel"] // 2 if a["padding"] < 0 else a["padding"]


def _conv_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "conv2d")
    b, c, h, w = s
    groups = _groups(s, a)
    for n, what in ((c, "input"), (a["out"], "output")):
        if to_expr(n).is_number and to_expr(groups).is_number and int(n) % int(groups):
            raise OpShapeError(f"{n} {what} channels are not divisible by groups={groups}")
    k, st, p = a["kernel"], a["stride"], _pad(a)
    return (b, to_expr(a["out"]), conv_out(h, k, st, p), conv_out(w, k, st, p))


def _groups(s: Shape, a: dict[str, Any]) -> Any:
    return s[1] if a["groups"] == 0 else a["groups"]


register(
    OpDef(
        name="conv2d",
        doc="conv2d(x, out, kernel=3, stride=1, padding=-1 (same), groups=1 (0: depthwise), "
        "bias=true): a 2-d convolution",
        module="nn.Conv2d", inputs=1, positional=("out",), default_name="conv",
        attrs=(
            Attr("out", "int", minimum=1),
            Attr("kernel", "int", minimum=1, default=3, symbolic=False),
            Attr("stride", "int", minimum=1, default=1, symbolic=False),
            Attr("padding", "int", default=-1, symbolic=False),
            Attr("groups", "int", default=1, symbolic=False),
            Attr("bias", "bool", default=True),
        ),
        shape=_conv_shape,
        ctor=lambda s, a: [
            ("in_channels", s[0][1]), ("out_channels", a["out"]), ("kernel_size", a["kernel"]),
            ("stride", a["stride"], 1), ("padding", _pad(a), 0),
            ("groups", _groups(s[0], a), 1), ("bias", a["bias"], True),
        ],
        ctor_positional=3,
        params=lambda s, a: to_expr(a["out"]) * s[0][1] / _groups(s[0], a) * a["kernel"] ** 2
        + (to_expr(a["out"]) if a["bias"] else 0),
        macs=lambda i, o, a: numel(o[0]) * i[0][1] / _groups(i[0], a) * a["kernel"] ** 2,
        saved=lambda i, o, a: [IN0],
    )
)
register(
    OpDef(
        name="batchnorm",
        doc="batchnorm(x, eps=1e-5, momentum=0.1): BatchNorm over channels of [B,C,H,W]; its "
        "running statistics are updated once per step even when the reversible backward "
        "recomputes it",
        module="BatchNorm2d", inputs=1, default_name="bn",
        attrs=(Attr("eps", "float", default=1e-5, domain=POSITIVE),
               Attr("momentum", "float", default=0.1, domain=UNIT)),
        shape=lambda s, a: (need_rank(s[0], (4,), "batchnorm"), s[0])[1],
        ctor=lambda s, a: [
            ("num_features", s[0][1]), ("eps", a["eps"], 1e-5),
            ("momentum", a["momentum"], 0.1),
        ],
        params=lambda s, a: 2 * s[0][1],
        saved=lambda i, o, a: [IN0],
    )
)


def _pool_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "pooling")
    b, c, h, w = s
    k = a["kernel"]
    st = a["stride"] or k
    p = a["padding"]
    return (b, c, conv_out(h, k, st, p), conv_out(w, k, st, p))


for _name, _fn in (("avg_pool", "F.avg_pool2d"), ("max_pool", "F.max_pool2d")):
    register(
        OpDef(
            name=_name,
            doc=f"{_name}(x, kernel, stride=kernel, padding=0): {_name.split('_')[0]} pooling",
            kind="function", inputs=1, positional=("kernel",),
            attrs=(Attr("kernel", "int", minimum=1, symbolic=False),
                   Attr("stride", "int", minimum=1, default=0, symbolic=False),
                   Attr("padding", "int", default=0, symbolic=False)),
            shape=_pool_shape,
            template=(lambda fn: lambda args, a: f"{fn}({args[0]}, {a['kernel']}, "
                      f"{a['stride'] or a['kernel']}, {a['padding']})")(_fn),
            # the input; max pooling also keeps the argmax indices (int64)
            saved=(lambda i, o, a: [IN0, Buffer(o[0], 8)]) if _name == "max_pool"
            else (lambda i, o, a: [IN0]),
        )
    )


def _up_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "upsample")
    b, c, h, w = s
    f = a["factor"]
    return (b, c, h * f, w * f)


register(
    OpDef(
        name="upsample",
        doc="upsample(x, factor, mode='nearest'|'bilinear'): resize [B,C,H,W] by an integer "
        "factor (bilinear with align_corners=False)",
        kind="function", inputs=1, positional=("factor",),
        attrs=(Attr("factor", "int", minimum=1, symbolic=False),
               Attr("mode", "str", default="nearest", choices=("nearest", "bilinear"))),
        shape=_up_shape,
        template=lambda args, a: (
            f"F.interpolate({args[0]}, scale_factor={a['factor']}, mode='nearest')"
            if a["mode"] == "nearest" else
            f"F.interpolate({args[0]}, scale_factor={a['factor']}, mode='bilinear', "
            "align_corners=False)"
        ),
    )
)
register(
    OpDef(
        name="global_avg_pool",
        doc="global_avg_pool(x): [B,C,H,W] -> [B,C] (mean over space)",
        kind="function", inputs=1,
        shape=lambda s, a: (need_rank(s[0], (4,), "global_avg_pool"), (s[0][0], s[0][1]))[1],
        template="{0}.mean(dim=(2, 3))",
    )
)


register(
    OpDef(
        name="inv_conv1x1",
        doc="inv_conv1x1(x): Glow's invertible 1x1 convolution over the channels of [B, C, ...] "
        "(LU-parametrised); a step on a stream by itself: `x = inv_conv1x1(x)`",
        module="InvConv1x1", inputs=1, default_name="invconv",
        shape=lambda s, a: s[0],
        ctor=lambda s, a: [("channels", s[0][1])],
        params=lambda s, a: 2 * to_expr(s[0][1]) ** 2 + to_expr(s[0][1]),  # L, U, log_s
        macs=lambda i, o, a: numel(o[0]) * i[0][1],
        saved=lambda i, o, a: [IN0],
        bijective="W = P L U with L unit lower triangular and U upper triangular with diagonal "
        "sign * exp(log_s), never 0: det W != 0, undone by two triangular solves",
    )
)


register(
    OpDef(
        name="actnorm",
        doc="actnorm(x): Glow's activation normalisation, a learned per-channel scale exp(log_s) "
        "and shift over the channels of [B, C, ...]; a step on a stream by itself: "
        "`x = actnorm(x)`",
        module="ActNorm", inputs=1, default_name="actnorm",
        shape=lambda s, a: s[0],
        ctor=lambda s, a: [("channels", s[0][1])],
        params=lambda s, a: 2 * to_expr(s[0][1]),
        saved=lambda i, o, a: [IN0],
        bijective="y = x * exp(log_s) + b per channel, exp(log_s) > 0: undone by "
        "(y - b) * exp(-log_s)",
    )
)


def _learned_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    dims = as_tuple(a["shape"])
    if not dims or any(d <= 0 for d in dims):
        raise OpShapeError("learned(shape=...) needs positive dimensions")
    return tuple(to_expr(d) for d in dims)


register(
    OpDef(
        name="learned",
        doc="learned(shape=[...], init=0): a learned tensor (no inputs), e.g. a per-channel or "
        "scalar scale; broadcasts against streams",
        module="Learned", inputs=0, default_name="weight",
        attrs=(Attr("shape", "ints", symbolic=False), Attr("init", "float", default=0.0)),
        shape=_learned_shape,
        ctor=lambda s, a: [("shape", as_tuple(a["shape"])), ("init", a["init"])],
        params=lambda s, a: numel(_learned_shape(s, a)),
    )
)

__all__ = ["conv_out", "same_shape"]
