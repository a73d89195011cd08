"""Swin's windows: window_partition / window_reverse (rearrangements of a [B, H, W, C] map) and
window_attention (attention within windows, relative position bias, the shifted-window mask).
A shifted-window layer is written with `roll` around these (see specs/rev_swin.rev)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from revdsl.catalogue.base import IN0, Attr, OpDef, OpShapeError, register
from revdsl.shapes import Shape, fmt_shape, simp, to_expr


def _divides(d: Any, w: int, what: str) -> None:
    e = simp(to_expr(d) / w)
    if e.is_number and not e.is_integer:
        raise OpShapeError(f"{what}: {d} is not a multiple of the window {w}")


def _partition_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = s[0]
    if len(x) != 4:
        raise OpShapeError(f"window_partition takes a [B, H, W, C] map, got {fmt_shape(x)}")
    w = int(a["window"])
    _divides(x[1], w, "window_partition")
    _divides(x[2], w, "window_partition")
    return (x[0], simp(to_expr(x[1]) / w * to_expr(x[2]) / w), to_expr(w * w), x[3])


register(
    OpDef(
        name="window_partition",
        doc="window_partition(x, window): a [B, H, W, C] map as [B, (H/window)(W/window), "
        "window*window, C] windows (row order; a rearrangement)",
        kind="function", inputs=1, positional=("window",),
        attrs=(Attr("window", "int", minimum=1, symbolic=False),),
        shape=_partition_shape, template="window_partition({0}, {window})",
        runtime=("window_partition",),
    )
)


def _reverse_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = s[0]
    w, h, wd = int(a["window"]), to_expr(a["height"]), to_expr(a["width"])
    if len(x) != 4 or simp(to_expr(x[2]) - w * w) != 0:
        raise OpShapeError(f"window_reverse takes [B, nW, {w * w}, C] windows, got "
                           f"{fmt_shape(x)}")
    _divides(h, w, "window_reverse")
    _divides(wd, w, "window_reverse")
    if simp(to_expr(x[1]) - h / w * wd / w) != 0:
        raise OpShapeError(f"window_reverse: {x[1]} windows do not tile a {h}x{wd} map")
    return (x[0], h, wd, x[3])


register(
    OpDef(
        name="window_reverse",
        doc="window_reverse(x, window, height, width): windows back into the [B, H, W, C] map "
        "(the inverse of window_partition)",
        kind="function", inputs=1, positional=("window", "height", "width"),
        attrs=(Attr("window", "int", minimum=1, symbolic=False),
               Attr("height", "int", minimum=1, symbolic=False),
               Attr("width", "int", minimum=1, symbolic=False)),
        shape=_reverse_shape, template="window_reverse({0}, {window}, {height}, {width})",
        runtime=("window_reverse",),
    )
)


def _wattn_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = s[0]
    w = int(a["window"])
    if len(x) != 4 or simp(to_expr(x[2]) - w * w) != 0:
        raise OpShapeError(f"window_attention takes [B, nW, {w * w}, C] windows, got "
                           f"{fmt_shape(x)}")
    c, h = to_expr(x[3]), int(a["heads"])
    if c.is_number and int(c) % h:
        raise OpShapeError(f"{c} channels cannot be split into {h} heads")
    shift = int(a["shift"])
    if shift:
        if not 0 < shift < w:
            raise OpShapeError(f"window_attention: shift {shift} must lie in (0, {w})")
        if not (a["height"] and a["width"]):
            raise OpShapeError("window_attention: a shifted window needs the map's height and "
                               "width (for its mask)")
        if simp(to_expr(x[1]) - to_expr(a["height"]) / w * to_expr(a["width"]) / w) != 0:
            raise OpShapeError(f"window_attention: {x[1]} windows do not tile a "
                               f"{a['height']}x{a['width']} map")
    return x


register(
    OpDef(
        name="window_attention",
        doc="window_attention(x, heads, window, shift=0, height=0, width=0, qkv_bias=true): "
        "self-attention within each window of [B, nW, window*window, C], with a relative "
        "position bias; shift > 0: the windows of a map rolled by -shift, masked by region",
        module="WindowAttention", inputs=1, default_name="attn",
        attrs=(Attr("heads", "int", minimum=1), Attr("window", "int", minimum=1, symbolic=False),
               Attr("shift", "int", default=0, symbolic=False),
               Attr("height", "int", default=0, symbolic=False),
               Attr("width", "int", default=0, symbolic=False),
               Attr("qkv_bias", "bool", default=True)),
        shape=_wattn_shape,
        ctor=lambda s, a: [("dim", s[0][-1]), ("heads", a["heads"]), ("window", a["window"]),
                           ("shift", a["shift"], 0),
                           ("height", a["height"] if a["shift"] else 0, 0),
                           ("width", a["width"] if a["shift"] else 0, 0),
                           ("qkv_bias", a["qkv_bias"], True)],
        ctor_positional=3,
        params=lambda s, a: 4 * to_expr(s[0][-1]) ** 2 + (4 if a["qkv_bias"] else 1)
        * to_expr(s[0][-1]) + (2 * int(a["window"]) - 1) ** 2 * int(a["heads"]),
        macs=lambda i, o, a: to_expr(i[0][1]) * to_expr(i[0][2]) * to_expr(i[0][3]) * (
            4 * to_expr(i[0][3]) + 2 * to_expr(i[0][2])),
        # qkv input, q, k, v, the attention probabilities (a float mask: the math path) and
        # proj's input (measured with saved-tensor hooks on CPU)
        saved=lambda i, o, a: [IN0, i[0], i[0], i[0], i[0],
                               (i[0][0], i[0][1], to_expr(a["heads"]), i[0][2], i[0][2])],
    )
)
