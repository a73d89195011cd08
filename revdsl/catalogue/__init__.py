"""The op catalogue: every op a spec can call, in one registry (see `revdsl.catalogue.base` for
what an entry says). Importing this package registers every family's entries."""

from __future__ import annotations

from revdsl.catalogue import (  # noqa: F401
    bifpn,
    conv,
    core,
    mvit,
    retention,
    supervit,
    swin,
    tensor,
    vit,
)
from revdsl.catalogue.base import (
    MAX_INT_ATTR,
    MAX_PARTS,
    NONNEGATIVE,
    POSITIVE,
    PROBABILITY,
    REQUIRED,
    UNIT,
    UNIT_OPEN_LOW,
    Attr,
    AttrError,
    Buffer,
    OpDef,
    OpShapeError,
    Ref,
    describe_domain,
    fmt_value,
    register,
    registry,
    render_template,
)


def get(name: str) -> OpDef | None:
    return registry().get(name)


def names() -> list[str]:
    """The ops a spec can call (not the compiler's internal ones)."""
    return sorted(n for n, op in registry().items() if not op.internal)


__all__ = [
    "MAX_INT_ATTR",
    "MAX_PARTS",
    "NONNEGATIVE",
    "POSITIVE",
    "PROBABILITY",
    "REQUIRED",
    "UNIT",
    "UNIT_OPEN_LOW",
    "Attr",
    "AttrError",
    "Buffer",
    "OpDef",
    "OpShapeError",
    "Ref",
    "describe_domain",
    "fmt_value",
    "get",
    "names",
    "register",
    "render_template",
]
