"""Stored blocks (stage transitions, pruning, necks): in reversible mode they keep only their
inputs and run again in the backward, under torch.utils.checkpoint, with the recompute flag set
so that BatchNorm statistics are not updated twice."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from revdsl.runtime.engine import _recomputing
from revdsl.runtime.hooks import _as_in_forward, _modes


@contextlib.contextmanager
def _recompute_stored(block: nn.Module, modes: tuple[bool, ...]) -> Any:
    with _recomputing(), _as_in_forward(block, modes):
        yield


def run_stored(block: nn.Module, *inputs: torch.Tensor, recompute: bool = False,
               **options: Any) -> Any:
    """Run a non-invertible block (a stage transition, say). With `recompute` (and autograd
    active) only its inputs are kept: its activations are recomputed in the backward, with the
    forward's RNG and autocast state, and BatchNorm statistics are not updated again. A memory
    plan (`set_plan`) may keep a stored block's activations instead (`recompute_planned`)."""
    if recompute and torch.is_grad_enabled() and getattr(block, "recompute_planned", True):
        return _checkpointed(block, *inputs, **options)
    return block(*inputs, **options)


@torch.compiler.disable
def _checkpointed(block: nn.Module, *inputs: torch.Tensor, **options: Any) -> Any:
    # Under torch.compile this is a graph break: the stored block runs eagerly, recomputed by
    # torch.utils.checkpoint with the recompute flag set (a compiled checkpoint cannot take
    # that context, and inductor fails on some recomputed convolutions).
    modes = _modes(block)
    return torch.utils.checkpoint.checkpoint(
        block, *inputs, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _recompute_stored(block, modes)),
        **options,
    )
