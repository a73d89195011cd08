"""Input checks of the generated forward: shapes against the spec, options against their
choices (copied into generated modules with the rest of the runtime)."""

from __future__ import annotations

import math
from typing import Any

import torch


def check_input(name: str, x: torch.Tensor, shape: tuple[int | str | None, ...],
                sizes: dict[str, int] | None = None,
                allowed: dict[str, tuple[int, ...]] | None = None) -> None:
    """Refuse an input whose shape differs from the spec's, before broadcasting could hide the
    mismatch (a 16-pixel image against a 224-pixel position table, say). A dimension is a
    number, None (any size: the batch) or the name of a free size: every use of one name must
    agree, within one input and across the inputs sharing `sizes`, and take one of its
    `allowed` values when the model has only some (a position table per size)."""
    seen = dict(sizes or {})
    ok = x.dim() == len(shape)
    if ok:
        for got, want in zip(x.shape, shape):
            if isinstance(want, str):
                if seen.setdefault(want, got) != got:
                    ok = False
            elif want is not None and got != want:
                ok = False
    if not ok:
        spec = ", ".join("*" if d is None else str(d) for d in shape)
        raise ValueError(f"{name} must have shape [{spec}], got {list(x.shape)}")
    for key, values in (allowed or {}).items():
        if key in seen and seen[key] not in values:
            raise ValueError(f"{name}: {key} must be one of {', '.join(map(str, values))} "
                             f"(the sizes this model was built for), got {seen[key]}")
    if sizes is not None:
        sizes.update(seen)


def check_option(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise a clear error when a call-time option is not one of the spec's choices."""
    for c in choices:
        if value == c or (isinstance(c, float) and isinstance(value, int | float)
                          and math.isclose(value, c)):
            return
    raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
