"""Core ops shared by every family: elementwise algebra, stream structure, common layers.

Elementwise algebra (`kind='algebra'`) carries a sympy model: the prover reasons about exactly these
when they appear in a coupling's update formula (`x1 = x1 * exp(s) + b`). Structural ops rearrange
streams (dup, chunk, cat, space-to-depth); the bijective ones name their inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl import algebra
from revdsl.catalogue.base import (
    DROPOUT_MASK_BYTES,
    IN0,
    MAX_PARTS,
    OUT0,
    POSITIVE,
    PROBABILITY,
    Attr,
    Buffer,
    OpDef,
    OpShapeError,
    Ref,
    as_tuple,
    fmt_value,
    register,
)
from revdsl.shapes import Shape, broadcast, fmt_shape, numel, same, simp, to_expr

# ---- shape helpers ----------------------------------------------------------------------------


def elementwise(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    out = broadcast(shapes)
    if out is None:
        raise OpShapeError(
            "shapes do not broadcast: " + ", ".join(fmt_shape(s) for s in shapes)
        )
    return out


def same_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    return shapes[0]


def norm_axis(shape: Shape, dim: int) -> int:
    rank = len(shape)
    axis = dim + rank if dim < 0 else dim
    if not 0 <= axis < rank:
        raise OpShapeError(f"dim={dim} is out of range for a tensor of shape {fmt_shape(shape)}")
    return axis


def need_rank(shape: Shape, ranks: tuple[int, ...], what: str) -> None:
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise OpShapeError(f"{what} expects a {want}-d input, got shape {fmt_shape(shape)}")


def tokens(shape: Shape) -> sympy.Expr:
    """Rows a per-token layer is applied to, per sample (all but batch and last dim)."""
    n: sympy.Expr = sympy.Integer(1)
    for d in shape[1:-1]:
        n = n * d
    return n


# ---- elementwise algebra ----------------------------------------------------------------------


def _binary(name: str, sym: str, prec: int, model: Any, doc: str, saved: Any = None) -> None:
    register(
        OpDef(
            name=name, doc=doc, kind="algebra", inputs=2, shape=elementwise,
            template="{0} " + sym + " {1}", sympy_model=model, elementwise=True,
            precedence=prec, **({"saved": saved} if saved else {}),
        )
    )


def _unary(name: str, template: str, model: Any, doc: str, **kw: Any) -> None:
    register(
        OpDef(
            name=name, doc=doc, kind="algebra", inputs=1, shape=same_shape, template=template,
            sympy_model=model, elementwise=True, **kw,
        )
    )


_binary("add", "+", 10, lambda a, b: a + b, "a + b (elementwise, broadcasting)")
_binary("sub", "-", 10, lambda a, b: a - b, "a - b (elementwise, broadcasting)")
# a * b keeps each factor for the other's gradient; a / b keeps b, and a for b's gradient
_binary("mul", "*", 20, lambda a, b: a * b, "a * b (elementwise, broadcasting)",
        saved=lambda i, o, a: [Ref("in", 1, when=0), Ref("in", 0, when=1)])
_binary("div", "/", 20, lambda a, b: a / b, "a / b (elementwise, broadcasting)",
        saved=lambda i, o, a: [Ref("in", 1), Ref("in", 0, when=1)])
register(
    OpDef(
        name="neg", doc="-a", kind="algebra", inputs=1, shape=same_shape, template="-{0}",
        sympy_model=lambda a: -a, elementwise=True, precedence=30,
    )
)
register(
    OpDef(
        name="pow", doc="a ** exponent, for a numeric exponent", kind="algebra", inputs=1,
        positional=("exponent",), attrs=(Attr("exponent", "number"),), shape=same_shape,
        template="{0} ** {exponent}", precedence=40, elementwise=True,
        saved=lambda i, o, a: [IN0],
        sympy_model=lambda a, exponent: a ** to_expr(exponent),
    )
)
# what autograd keeps: the result (exp, sqrt, sigmoid, tanh, relu) or the argument
_KEEP_OUT = {"saved": lambda i, o, a: [OUT0]}
_KEEP_IN = {"saved": lambda i, o, a: [IN0]}
_unary("exp", "torch.exp({0})", sympy.exp, "e ** x", **_KEEP_OUT)
_unary("log", "torch.log({0})", sympy.log, "natural logarithm", **_KEEP_IN)
_unary("sqrt", "torch.sqrt({0})", sympy.sqrt, "square root", **_KEEP_OUT)
_unary("square", "torch.square({0})", lambda a: a**2, "x ** 2", **_KEEP_IN)
_unary("sigmoid", "torch.sigmoid({0})", algebra.sigmoid, "1 / (1 + exp(-x))", **_KEEP_OUT)
_unary("tanh", "torch.tanh({0})", sympy.tanh, "hyperbolic tangent", **_KEEP_OUT)
_unary("abs", "torch.abs({0})", sympy.Abs, "absolute value", **_KEEP_IN)
_unary("relu", "torch.relu({0})", algebra.relu, "max(x, 0)", **_KEEP_OUT)
_unary("gelu", "F.gelu({0})", algebra.gelu, "x * Phi(x), the exact GELU", **_KEEP_IN)
_unary("softplus", "F.softplus({0})", algebra.softplus,
       "log(1 + exp(x)), in (0, inf): the usual positive scale of an affine coupling", **_KEEP_IN)
register(
    OpDef(
        name="leaky_relu",
        doc="leaky_relu(x, slope=0.01): x where x >= 0, slope * x below; with slope > 0 a "
        "strictly increasing bijection, usable on the updated stream (`a = leaky_relu(a) + f`)",
        kind="algebra", inputs=1, positional=("slope",),
        attrs=(Attr("slope", "float", default=0.01, symbolic=False),),
        shape=same_shape, elementwise=True,
        template="F.leaky_relu({0}, {slope})", saved=lambda i, o, a: [IN0],
        sympy_model=lambda a, slope=0.01: algebra.leaky_relu(a, sympy.nsimplify(slope)),
    )
)
_unary("softsign", "F.softsign({0})", algebra.softsign, "x / (1 + |x|), in (-1, 1)",
       saved=lambda i, o, a: [IN0, i[0]])  # x, and 1 + |x| (the divisor)
register(
    OpDef(
        name="clamp", doc="clamp(x, min=lo, max=hi): x limited to [lo, hi] (either may be absent)",
        kind="algebra", inputs=1,
        attrs=(Attr("min", "number", default=None), Attr("max", "number", default=None)),
        shape=same_shape, elementwise=True,
        template="torch.clamp({0}, min={min}, max={max})", saved=lambda i, o, a: [IN0],
        sympy_model=lambda a, min=None, max=None: algebra.clamp(
            a, None if min is None else to_expr(min), None if max is None else to_expr(max)
        ),
    )
)

# ---- structure --------------------------------------------------------------------------------


def _dup_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> tuple[Shape, ...]:
    return tuple(shapes[0] for _ in range(attrs["n"]))


register(
    OpDef(
        name="dup",
        doc="dup(x, n=2): n copies of x; starts a reversible segment's streams (injective, so "
        "its input is stored; the gradient is the sum of the copies' gradients)",
        kind="structural", inputs=1, positional=("n",),
        attrs=(Attr("n", "int", minimum=2, maximum=MAX_PARTS, default=2),),
        shape=_dup_shape, n_outputs=lambda a: a["n"], injective_only=True, views_input=True,
        template=lambda args, a: ", ".join(args[0] for _ in range(a["n"])),
    )
)


def _chunk_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> tuple[Shape, ...]:
    s = shapes[0]
    axis = norm_axis(s, attrs["dim"])
    n = attrs["chunks"]
    if n < 1:
        raise OpShapeError("chunks must be at least 1")
    size = s[axis]
    part = size / n
    if not to_expr(part).is_integer and to_expr(size).is_number:
        raise OpShapeError(f"cannot split size {size} of dim {attrs['dim']} into {n} equal chunks")
    out = list(s)
    out[axis] = simp(part)
    return tuple(tuple(out) for _ in range(n))


register(
    OpDef(
        name="chunk",
        doc="chunk(x, chunks, dim=1): split into equal parts (a bijection; undone by cat)",
        kind="structural", inputs=1, positional=("chunks",),
        attrs=(Attr("chunks", "int", minimum=1, maximum=MAX_PARTS, default=2, symbolic=False),
               Attr("dim", "int", default=1, symbolic=False)),
        shape=_chunk_shape, n_outputs=lambda a: a["chunks"], inverse="cat", views_input=True,
        inverse_attrs=lambda a, n_in: {"dim": a["dim"]},
        template="torch.chunk({0}, {chunks}, dim={dim})",
    )
)


def _cat_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    first = shapes[0]
    axis = norm_axis(first, attrs["dim"])
    total: sympy.Expr = sympy.Integer(0)
    for s in shapes:
        if len(s) != len(first) or any(
            i != axis and not same(a, b) for i, (a, b) in enumerate(zip(s, first, strict=True))
        ):
            raise OpShapeError(
                f"cat along dim {attrs['dim']} needs equal other dims, got "
                + ", ".join(fmt_shape(x) for x in shapes)
            )
        total = total + s[axis]
    out = list(first)
    out[axis] = simp(total)
    return tuple(out)


for _name in ("cat", "concat"):
    register(
        OpDef(
            name=_name,
            doc=f"{_name}(a, b, ..., dim=-1): concatenate (a bijection onto its parts: undone "
            "by chunk)",
            kind="structural", inputs="*", attrs=(Attr("dim", "int", default=-1, symbolic=False),),
            shape=_cat_shape, inverse="chunk", template="torch.cat([{args}], dim={dim})",
            inverse_attrs=lambda a, n_in: {"chunks": n_in, "dim": a["dim"]},
        )
    )


def _s2d_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "space_to_depth")
    r = attrs["factor"]
    b, c, h, w = s
    for d in (h, w):
        if to_expr(d).is_number and int(d) % r:
            raise OpShapeError(f"spatial size {d} is not divisible by {r}")
    return (b, c * r * r, simp(h / r), simp(w / r))


def _d2s_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (4,), "depth_to_space")
    r = attrs["factor"]
    b, c, h, w = s
    if to_expr(c).is_number and int(c) % (r * r):
        raise OpShapeError(f"{c} channels are not divisible by {r * r}")
    return (b, simp(c / (r * r)), h * r, w * r)


_ORDER = Attr("order", "str", default="channel_major", choices=("channel_major", "pixel_major"),
              symbolic=False,
              doc="output channel c*r*r + dy*r + dx (channel_major, pixel_unshuffle's order) or "
                  "(dy*r + dx)*C + c (pixel_major, RevBiFPN's stem)")


def _s2d_code(name: str) -> Any:
    def code(args: list[str], a: dict[str, Any]) -> str:
        extra = ", pixel_major=True" if a.get("order") == "pixel_major" else ""
        return f"{name}({args[0]}, {a['factor']}{extra})"
    return code


register(
    OpDef(
        name="space_to_depth",
        doc="space_to_depth(x, factor, order='channel_major'): [B,C,H,W] -> [B,C*r*r,H/r,W/r], "
        "each r x r patch of pixels into channels (a permutation: invertible); order: "
        "channel_major (c*r*r + dy*r + dx, pixel_unshuffle) or pixel_major ((dy*r + dx)*C + c)",
        kind="structural", inputs=1, positional=("factor",),
        attrs=(Attr("factor", "int", minimum=1, symbolic=False), _ORDER), shape=_s2d_shape,
        inverse="depth_to_space", template=_s2d_code("space_to_depth"),
        runtime=("space_to_depth",),
    )
)
register(
    OpDef(
        name="depth_to_space",
        doc="depth_to_space(x, factor, order='channel_major'): the inverse of space_to_depth",
        kind="structural", inputs=1, positional=("factor",),
        attrs=(Attr("factor", "int", minimum=1, symbolic=False), _ORDER), shape=_d2s_shape,
        inverse="space_to_depth", template=_s2d_code("depth_to_space"),
        runtime=("depth_to_space",),
    )
)

register(
    OpDef(
        name="rename",
        doc="(written as a list assignment of streams, `x1, x2 = [x2, x1]`): the streams "
        "permuted onto new names; undone by the inverse permutation",
        kind="structural", inputs="*", shape=lambda s, a: tuple(s),
        n_outputs=lambda a: 0, inverse="rename", internal=True, views_input=True,
        template=lambda args, a: "(" + ", ".join(args) + ("," if len(args) == 1 else "") + ")",
    )
)

# ---- reductions and selection -----------------------------------------------------------------


def _mean_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    s = shapes[0]
    dims = as_tuple(attrs["dim"])
    axes = {norm_axis(s, d) for d in dims}
    if attrs["keepdim"]:
        return tuple(sympy.Integer(1) if i in axes else d for i, d in enumerate(s))
    return tuple(d for i, d in enumerate(s) if i not in axes)


register(
    OpDef(
        name="mean",
        doc="mean(x, dim=1, keepdim=false): average over a dim (tokens by default)",
        kind="function", inputs=1, positional=("dim",),
        attrs=(Attr("dim", "ints", default=1, symbolic=False),
               Attr("keepdim", "bool", default=False)),
        shape=_mean_shape,
        template=lambda args, a: f"{args[0]}.mean(dim={fmt_value(a['dim'])}"
        + (", keepdim=True)" if a["keepdim"] else ")"),
    )
)


def _token_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (3,), "token")
    return (s[0], s[2])


register(
    OpDef(
        name="token",
        doc="token(x, index=0): the token at `index` of a [B, N, C] sequence, as [B, C] (a copy: "
        "a view would keep the whole sequence alive for the backward of what consumes it)",
        kind="function", inputs=1, positional=("index",),
        attrs=(Attr("index", "int", default=0, symbolic=False),),
        shape=_token_shape, template="{0}[:, {index}].contiguous()",
    )
)

# ---- common layers ----------------------------------------------------------------------------


def _linear_shape(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Shape:
    s = shapes[0]
    return (*s[:-1], to_expr(attrs["out"]))


register(
    OpDef(
        name="linear",
        doc="linear(x, out, bias=true): a fully connected layer over the last dim",
        module="nn.Linear", inputs=1, positional=("out",),
        attrs=(Attr("out", "int", minimum=1), Attr("bias", "bool", default=True)),
        shape=_linear_shape, default_name="linear", rowwise=lambda a: True,
        ctor=lambda s, a: [("in_features", s[0][-1]), ("out_features", a["out"]),
                           ("bias", a["bias"], True)],
        ctor_positional=2,
        params=lambda s, a: s[0][-1] * to_expr(a["out"]) + (to_expr(a["out"]) if a["bias"] else 0),
        macs=lambda i, o, a: numel(i[0]) * to_expr(a["out"]),
        saved=lambda i, o, a: [IN0],
    )
)
LAYOUT = Attr("layout", "str", default=None, choices=("channels_last", "channels_first"),
              symbolic=False,
              doc="where the channels are in a tensor of rank 4 or more: required there")


def channel_dim(shape: Shape, a: dict[str, Any], what: str) -> int:
    """The dimension holding the channels of a per-channel op's input: the last one for
    [B, C] and [B, N, C]; for images and videos the spec must say (`layout=`), since both
    [B, C, H, W] (convolutions) and [B, H, W, C] (MViT) occur."""
    layout = a.get("layout")
    if len(shape) >= 4 and layout is None:
        raise OpShapeError(
            f"a {len(shape)}-d input {fmt_shape(shape)} is ambiguous: say where the "
            "channels are, layout=\"channels_first\" ([B, C, H, W]) or "
            "layout=\"channels_last\" ([B, H, W, C])")
    if layout == "channels_first":
        if len(shape) < 3:
            raise OpShapeError(f"{what}: layout=\"channels_first\" needs a [B, C, ...] input "
                               f"of rank 3 or more, got {fmt_shape(shape)}")
        return 1
    return len(shape) - 1


def _channels(shape: Shape, a: dict[str, Any], what: str) -> Any:
    return shape[channel_dim(shape, a, what)]


def _norm_saved(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> list[Any]:
    d = channel_dim(i[0], a, "layernorm")
    stats = tuple(x for k, x in enumerate(i[0]) if k != d)
    return [IN0, stats, stats]  # input, mean, rstd


register(
    OpDef(
        name="layernorm",
        doc="layernorm(x, eps=1e-6, layout=None): LayerNorm over the channels: the last dim, or "
        "dim 1 with layout=\"channels_first\" (a tensor of rank 4 or more must say which)",
        module="nn.LayerNorm", inputs=1,
        attrs=(Attr("eps", "float", default=1e-6, domain=POSITIVE), LAYOUT),
        shape=same_shape, default_name="norm",
        rowwise=lambda a: a.get("layout") != "channels_first",
        checks=(lambda s, a: (channel_dim(s[0], a, "layernorm"), None)[1],),
        module_for=lambda a: "LayerNormChannelsFirst" if a.get("layout") == "channels_first"
        else "nn.LayerNorm",
        ctor=lambda s, a: [("dim", _channels(s[0], a, "layernorm")), ("eps", a["eps"])],
        params=lambda s, a: 2 * _channels(s[0], a, "layernorm"),
        saved=_norm_saved,
    )
)
register(
    OpDef(
        name="dropout",
        doc="dropout(x, p=0): elementwise dropout (replayed exactly in the reversible backward)",
        module="nn.Dropout", inputs=1, positional=("p",),
        attrs=(Attr("p", "float", default=0.0, domain=PROBABILITY, random=True),),
        shape=same_shape, default_name="drop", stochastic=True,
        rowwise=lambda a: a["p"] == 0,  # its mask's draws depend on the shape
        ctor=lambda s, a: [("p", a["p"])],
        saved=lambda i, o, a: [Buffer(i[0], DROPOUT_MASK_BYTES)] if a["p"] else [],  # the mask
    )
)
register(
    OpDef(
        name="drop_path",
        doc="drop_path(x, rate=0): stochastic depth, one keep/drop draw per sample",
        module="DropPath", inputs=1, positional=("rate",),
        attrs=(Attr("rate", "float", default=0.0, domain=PROBABILITY, random=True),),
        shape=same_shape, default_name="drop_path", stochastic=True,
        rowwise=lambda a: True,  # one draw per sample, the same for every chunk of its tokens
        ctor=lambda s, a: [("drop_path", a["rate"])],
        saved=lambda i, o, a: [(i[0][0],)] if a["rate"] else [],
    )
)

# ---- user modules -----------------------------------------------------------------------------


def _extern_params(shapes: Sequence[Shape], attrs: dict[str, Any]) -> Any:
    raise KeyError("an extern module's parameters are known only when it is built")


register(
    OpDef(
        name="extern",
        doc="(written through an `extern` declaration) a user's nn.Module, built with the call's "
        "keyword arguments; an opaque function to the verifier",
        kind="module", module="extern", inputs="*", internal=True,
        module_for=lambda a: str(a["path"]),
        shape=lambda s, a: a["out"][0] if len(a["out"]) == 1 else tuple(a["out"]),
        n_outputs=lambda a: len(a["out"]),
        ctor=lambda s, a: [(k, v) for k, v in a["kwargs"]], ctor_positional=0,
        params=_extern_params,
        saved=lambda i, o, a: [IN0],  # (unknown: at least its input, as any layer keeps)
    )
)
