"""Retention (ViR / RetNet without gating): a causal token mixer with three equivalent forms.

The form is an attribute that may be a call-time option (`mode=mode`). The op's `verify` check
refuses a retention that may be asked for its recurrent or chunkwise form while its parallel form
is not causal or normalises its scores: those forms could not compute the same function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import Attr, OpDef, OpShapeError, register
from revdsl.catalogue.core import need_rank
from revdsl.ir import RuntimeRef
from revdsl.shapes import Shape, to_expr

FORMS = ("parallel", "recurrent", "chunkwise")


def _shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (3,), "retention")
    c, h = to_expr(s[-1]), to_expr(a["heads"])
    if c.is_number and h.is_number and int(c) % int(h):
        raise OpShapeError(f"{c} channels cannot be split into {h} heads")
    if a["chunk"] < 1:
        raise OpShapeError("chunk must be at least 1")
    return s


def _verify(a: dict[str, Any], options: dict[str, tuple[Any, ...]]) -> str | None:
    mode = a["mode"]
    forms = options.get(mode.name, ()) if isinstance(mode, RuntimeRef) else (mode,)
    bad = [f for f in forms if f not in FORMS]
    if bad:
        return f"retention has no form {bad[0]!r} (its forms: {', '.join(FORMS)})"
    sequential = [f for f in forms if f != "parallel"]
    if not sequential:
        return None
    how = (f"mode can be {sequential[0]!r}" if isinstance(mode, RuntimeRef)
           else f"mode={sequential[0]!r}")
    if not a["causal"]:
        return (f"retention is used in its {sequential[0]} form ({how}) but is not causal: a "
                "recurrence that reads tokens in order cannot let a token see the ones after it")
    if a["scores"] != "decay":
        return (f"retention is used in its {sequential[0]} form ({how}) but its scores are "
                f"normalised ({a['scores']!r}): a row's normaliser needs all of the row's scores, "
                "which the recurrent state does not keep, so the forms would differ")
    return None


def _macs(i: Sequence[Shape], o: Sequence[Shape], a: dict[str, Any]) -> sympy.Expr:
    s = i[0]
    b, n, c = s[0], to_expr(s[1]), to_expr(s[2])
    return b * (3 * n * c * c + 2 * n * n * c + n * c * c)  # qkv, (QK^T*D)V, out_proj


register(
    OpDef(
        name="retention",
        doc="retention(x, heads, mode='parallel'|'recurrent'|'chunkwise', chunk=64, "
        "qkv_bias=true, causal=true, scores='decay'|'softmax'|'rownorm'): multi-head retention "
        "over [B,N,C] with per-head decays 1-2^-5 ... 1-2^-9; mode may be a call-time option",
        module="Retention", inputs=1, default_name="retention", causal=True, forms=("mode",),
        attrs=(
            Attr("heads", "int", minimum=1),
            Attr("mode", "str", default="parallel", runtime=True, choices=FORMS),
            Attr("chunk", "int", minimum=1, default=64, symbolic=False),
            Attr("qkv_bias", "bool", default=True),
            Attr("causal", "bool", default=True),
            Attr("scores", "str", default="decay", choices=("decay", "softmax", "rownorm")),
        ),
        shape=_shape,
        ctor=lambda s, a: [
            ("dim", s[0][-1]), ("heads", a["heads"]), ("chunk", a["chunk"], 64),
            ("qkv_bias", a["qkv_bias"], True), ("causal", a["causal"], True),
            ("scores", a["scores"], "decay"),
        ],
        call_kwargs=("mode",),
        params=lambda s, a: 4 * to_expr(s[0][-1]) ** 2 + (4 if a["qkv_bias"] else 1)
        * to_expr(s[0][-1]),
        macs=_macs,
        # qkv input, q/k/v, decayed scores, their input, out_proj input
        saved=lambda i, o, a: [i[0], i[0], i[0], i[0],
                               (i[0][0], to_expr(a["heads"]), i[0][1], i[0][1]),
                               (i[0][0], to_expr(a["heads"]), i[0][1], i[0][1]), i[0]],
        verify=_verify,
    )
)
