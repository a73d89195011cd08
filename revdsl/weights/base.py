"""The vocabulary of checkpoint layouts: a link between tensors, a layout, the error."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from revdsl.errors import RevdslError


class ConversionError(RevdslError):
    """A checkpoint that does not fit the compiled model; the message says why, by name."""


@dataclass(frozen=True)
class Link:
    """Our tensor `ours` is made of the reference tensors `theirs` by `form`."""

    ours: str
    theirs: tuple[str, ...]
    form: str = "same"


@dataclass
class Layout:
    """One reference implementation's checkpoint format for the families it publishes."""

    name: str
    families: tuple[str, ...]           # the specs' `model` names this layout knows
    links: Callable[[torch.nn.Module], list[Link]]
    layers: Callable[[Mapping[str, Any]], int | None]  # how many blocks a checkpoint has
    our_layers: Callable[[torch.nn.Module], int]


