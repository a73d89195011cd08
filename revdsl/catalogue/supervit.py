"""SuperViT ops: per-size position tables, attention with class-token scores, token keeping.

`keep_tokens` discards tokens, so it can never be part of a reversible step (`boundary_only`):
it belongs in a stored block between segments, recomputed from that block's (stored) inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sympy

from revdsl.catalogue.base import PROBABILITY, UNIT_OPEN_LOW, Attr, OpDef, OpShapeError, register
from revdsl.catalogue.core import need_rank
from revdsl.catalogue.vit import _attention_macs
from revdsl.ir import RuntimeRef
from revdsl.shapes import Shape, same, to_expr


def _pos_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    need_rank(s, (3,), "pos_embed_multi")
    n = to_expr(s[1])
    allowed = [(size // a["patch"]) ** 2 + 1 for size in a["sizes"]]
    if n.is_number and int(n) not in allowed:
        raise OpShapeError(f"{n} tokens match none of the sizes {list(a['sizes'])}")
    return s


register(
    OpDef(
        name="pos_embed_multi",
        doc="pos_embed_multi(x, sizes, patch): one learned position table per input size "
        "(tokens = (size/patch)^2 + 1); the table matching x's token count is added",
        module="MultiPosEmbed", inputs=1, default_name="pos_embed",
        attrs=(Attr("sizes", "ints", symbolic=False),
               Attr("patch", "int", minimum=1, symbolic=False)),
        shape=_pos_shape,
        size_choices=lambda s, a: (s[0][1], tuple((size // a["patch"]) ** 2 + 1
                                                   for size in a["sizes"])),
        ctor=lambda s, a: [("dim", s[0][-1]), ("sizes", tuple(a["sizes"])),
                           ("patch", a["patch"])],
        params=lambda s, a: sum(((size // a["patch"]) ** 2 + 1) for size in a["sizes"])
        * to_expr(s[0][-1]),
    )
)


def _attn_cls_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> tuple[Shape, ...]:
    s = shapes[0]
    need_rank(s, (3,), "attention_cls")
    c, h = to_expr(s[-1]), to_expr(a["heads"])
    if c.is_number and h.is_number and int(c) % int(h):
        raise OpShapeError(f"{c} channels cannot be split into {h} heads")
    return (s, (s[0], s[1] - 1))


register(
    OpDef(
        name="attention_cls",
        doc="attention_cls(x, heads, ...) -> (out, score): self-attention over [B,N,C] (class "
        "token first) and the class token's attention to each patch, averaged over heads",
        module="AttentionCls", inputs=1, default_name="attn", n_outputs=lambda a: 2,
        attrs=(Attr("heads", "int", minimum=1), Attr("qkv_bias", "bool", default=True),
               Attr("attn_drop", "float", default=0.0, domain=PROBABILITY, random=True),
               Attr("proj_drop", "float", default=0.0, domain=PROBABILITY, random=True)),
        shape=_attn_cls_shape,
        ctor=lambda s, a: [("dim", s[0][-1]), ("heads", a["heads"]),
                           ("qkv_bias", a["qkv_bias"], True), ("attn_drop", a["attn_drop"], 0.0),
                           ("proj_drop", a["proj_drop"], 0.0)],
        params=lambda s, a: 4 * s[0][-1] ** 2 + (4 if a["qkv_bias"] else 1) * s[0][-1],
        macs=_attention_macs,
        saved=lambda i, o, a: [i[0]] * 6 + [(i[0][0], to_expr(a["heads"]), i[0][1])],
    )
)


def kept(n: Any, rate: Any) -> sympy.Expr:
    """Tokens after keeping: the class token and ceil(rate * n) patches, or all at rate 1."""
    n = to_expr(n)
    if isinstance(rate, RuntimeRef):
        rate = rate.symbol
    r = to_expr(rate)
    if r.is_number and r >= 1:
        return n
    return sympy.Min(n, 1 + sympy.ceiling(r * n))


def _keep_shape(shapes: Sequence[Shape], a: dict[str, Any]) -> tuple[Shape, ...]:
    score, *streams = shapes
    if len(streams) < 1:
        raise OpShapeError("keep_tokens needs a score and at least one stream")
    first = streams[0]
    for s in streams:
        need_rank(s, (3,), "keep_tokens")
        if not same(s[1], first[1]):
            raise OpShapeError("the streams have different token counts")
    if len(score) != 2 or not same(score[1], to_expr(first[1]) - 1):
        raise OpShapeError("the score must be [B, N - 1]: one value per patch")
    n2 = kept(first[1], a["keep_rate"])
    return tuple((s[0], n2, s[2]) for s in streams)


register(
    OpDef(
        name="keep_tokens",
        doc="keep_tokens(score, x1, x2, keep_rate=1): keep the class token and the ceil(r*N) "
        "patches with the highest score in every stream (N counts the class token); not "
        "invertible: a stored boundary between reversible segments",
        module="KeepTokens", inputs=3, default_name="keep", n_outputs=lambda a: 2,
        attrs=(Attr("keep_rate", "float", default=1.0, runtime=True, domain=UNIT_OPEN_LOW),),
        shape=_keep_shape, ctor=lambda s, a: [], call_kwargs=("keep_rate",),
        boundary_only=True,
        saved=lambda i, o, a: [(i[0][0], to_expr(i[1][1]) - 1)],  # the kept indices
    )
)
