"""General tensor ops: softmax, group norm, reshape, permute, flip, roll.

Each keeps the batch as the first dimension (what the memory accounting and the generated
input checks rely on): `reshape` and `permute` act on the dimensions after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import (
    IN0,
    OUT0,
    POSITIVE,
    Attr,
    OpDef,
    OpShapeError,
    as_tuple,
    register,
)
from revdsl.catalogue.core import norm_axis, same_shape
from revdsl.shapes import Shape, fmt_shape, numel, simp, to_expr

register(
    OpDef(
        name="softmax",
        doc="softmax(x, dim=-1): exp(x) normalised to sum 1 along `dim`",
        kind="function", inputs=1, positional=("dim",),
        attrs=(Attr("dim", "int", default=-1, symbolic=False),),
        shape=lambda s, a: (norm_axis(s[0], a["dim"]), s[0])[1],
        template="torch.softmax({0}, dim={dim})",
        saved=lambda i, o, a: [OUT0],
    )
)


def _groups_check(s: Sequence[Shape], a: dict[str, Any]) -> str | None:
    if len(s[0]) < 2:
        return f"groupnorm needs [B, C, ...], got {fmt_shape(s[0])}"
    c = to_expr(s[0][1])
    g = to_expr(a["groups"])
    if c.is_number and g.is_number and int(c) % int(g):
        return f"groupnorm: {int(c)} channels do not split into {int(g)} groups"
    return None


def _groupnorm_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    problem = _groups_check(s, a)
    if problem:
        raise OpShapeError(problem)
    return s[0]


register(
    OpDef(
        name="groupnorm",
        doc="groupnorm(x, groups, eps=1e-5): GroupNorm over the channels of [B, C, ...] "
        "(channels first), in `groups` groups, with a learned per-channel scale and shift",
        module="nn.GroupNorm", inputs=1, positional=("groups",), default_name="gn",
        attrs=(Attr("groups", "int", minimum=1), Attr("eps", "float", default=1e-5,
                                                       domain=POSITIVE)),
        shape=_groupnorm_shape,
        ctor=lambda s, a: [("num_groups", a["groups"]), ("num_channels", s[0][1]),
                           ("eps", a["eps"], 1e-5)],
        ctor_positional=2,
        params=lambda s, a: 2 * to_expr(s[0][1]),
        saved=lambda i, o, a: [IN0, (i[0][0], to_expr(a["groups"])),
                               (i[0][0], to_expr(a["groups"]))],
    )
)


def _reshape_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = s[0]
    dims = [to_expr(d) for d in as_tuple(a["shape"])]
    free = [i for i, d in enumerate(dims) if d == -1]
    if len(free) > 1:
        raise OpShapeError("reshape: at most one dimension may be -1")
    total = simp(numel(x) / x[0]) if len(x) > 1 else sympy.Integer(1)
    known = sympy.Integer(1)
    for i, d in enumerate(dims):
        if i not in free:
            if d.is_number and d < 1:
                raise OpShapeError(f"reshape: dimension {d} must be positive (or -1)")
            known = known * d
    if free:
        rest = simp(total / known)
        if rest.is_number and not rest.is_integer:
            raise OpShapeError(f"reshape: {fmt_shape(x)} does not divide into "
                               f"{fmt_shape(tuple(dims))}")
        dims[free[0]] = rest
    elif simp(total - known) != 0:
        raise OpShapeError(f"reshape: {fmt_shape(x)} has {total} elements per sample, "
                           f"{fmt_shape(tuple(dims))} has {simp(known)}")
    return (x[0], *dims)


register(
    OpDef(
        name="reshape",
        doc="reshape(x, [d1, d2, ...]): the same elements of each sample as [B, d1, d2, ...] "
        "(the batch stays first; one d may be -1)",
        kind="function", inputs=1, positional=("shape",),
        attrs=(Attr("shape", "ints", symbolic=False),),
        shape=_reshape_shape,
        template=lambda args, a: f"{args[0]}.reshape({args[0]}.shape[0], "
        + ", ".join(str(int(d)) for d in as_tuple(a["shape"])) + ")",
    )
)


def _permute_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = s[0]
    order = [int(d) for d in as_tuple(a["dims"])]
    if sorted(order) != list(range(len(x))):
        raise OpShapeError(f"permute: {order} is not an order of the {len(x)} dims of "
                           f"{fmt_shape(x)}")
    if order[0] != 0:
        raise OpShapeError("permute: the batch (dim 0) must stay first")
    return tuple(x[i] for i in order)


register(
    OpDef(
        name="permute",
        doc="permute(x, [0, ...]): the dims of x in a new order (the batch, dim 0, stays first)",
        kind="function", inputs=1, positional=("dims",),
        attrs=(Attr("dims", "ints", symbolic=False),),
        shape=_permute_shape,
        template=lambda args, a: f"{args[0]}.permute("
        + ", ".join(str(int(d)) for d in as_tuple(a["dims"])) + ")",
    )
)


def _axes_shape(what: str) -> Any:
    def rule(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
        for d in as_tuple(a["dims"]):
            if norm_axis(s[0], int(d)) == 0:
                raise OpShapeError(f"{what}: dim 0 is the batch; {what} the other dims")
        return s[0]
    return rule


register(
    OpDef(
        name="flip",
        doc="flip(x, dims=[...]): x reversed along the given dims (a permutation of elements)",
        kind="function", inputs=1, positional=("dims",),
        attrs=(Attr("dims", "ints", symbolic=False),),
        shape=_axes_shape("flip"),
        template=lambda args, a: f"torch.flip({args[0]}, dims=("
        + "".join(f"{int(d)}, " for d in as_tuple(a["dims"])).rstrip(" ") + "))",
    )
)


def _roll_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    if len(as_tuple(a["shifts"])) != len(as_tuple(a["dims"])):
        raise OpShapeError("roll: give one shift per dim")
    return _axes_shape("roll")(s, a)  # type: ignore[no-any-return]


register(
    OpDef(
        name="roll",
        doc="roll(x, shifts=[...], dims=[...]): x shifted cyclically along the given dims (Swin's "
        "shifted windows)",
        kind="function", inputs=1, positional=("shifts", "dims"),
        attrs=(Attr("shifts", "ints", symbolic=False), Attr("dims", "ints", symbolic=False)),
        shape=_roll_shape,
        template=lambda args, a: f"torch.roll({args[0]}, shifts=("
        + "".join(f"{int(d)}, " for d in as_tuple(a["shifts"])).rstrip(" ") + "), dims=("
        + "".join(f"{int(d)}, " for d in as_tuple(a["dims"])).rstrip(" ") + "))",
    )
)

def _pad_shape(s: Sequence[Shape], a: dict[str, Any]) -> Shape:
    x = list(s[0])
    widths = [int(d) for d in as_tuple(a["widths"])]
    if len(widths) % 2 or len(widths) // 2 > len(x) - 1 or any(w < 0 for w in widths):
        raise OpShapeError(f"pad: give (before, after) pairs of non-negative widths for the last "
                           f"dims of {fmt_shape(s[0])}, the last dim first (not the batch)")
    for k in range(len(widths) // 2):
        d = len(x) - 1 - k
        x[d] = simp(to_expr(x[d]) + widths[2 * k] + widths[2 * k + 1])
    return tuple(x)


register(
    OpDef(
        name="pad",
        doc="pad(x, [before, after, ...]): zeros added around the last dims (the last dim's pair "
        "first, as torch's F.pad), e.g. pad(x, [0, 0, 0, 0, 8, 8]) adds 8 zero channels on each "
        "side of [B, C, H, W]",
        kind="function", inputs=1, positional=("widths",),
        attrs=(Attr("widths", "ints", symbolic=False),),
        shape=_pad_shape,
        template=lambda args, a: f"F.pad({args[0]}, ("
        + ", ".join(str(int(d)) for d in as_tuple(a["widths"])) + "))",
    )
)

__all__ = ["same_shape"]
