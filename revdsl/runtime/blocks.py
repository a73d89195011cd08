"""What a generated block class's own `forward` and `inverse` call: its STEPS run forward, or
undone with the proved inverses (copied into generated modules with the rest of the runtime)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from revdsl.runtime.engine import _undo, run_block, undo_order


def forward_steps(block: nn.Module, streams: tuple[torch.Tensor, ...], **options: Any) -> Any:
    """A block's forward: its STEPS run on its input streams (what `block.forward` calls, in
    plain autograd and under checkpointing; the reversible Function runs the same STEPS)."""
    state = run_block(block, dict(zip(block.INPUTS, streams, strict=True)), options, None)
    outs = tuple(state[name] for name in block.OUTPUTS)
    return outs if len(outs) > 1 else outs[0]


def inverse_steps(block: nn.Module, streams: tuple[torch.Tensor, ...], **options: Any) -> Any:
    """A block's inputs rebuilt from its outputs with the proved inverses of its STEPS, in
    reverse order (the same inverses the reversible backward applies)."""
    state = dict(zip(block.OUTPUTS, streams, strict=True))
    for k in undo_order(block):
        _undo(block, block.STEPS[k], state, options)
    ins = tuple(state[name] for name in block.INPUTS)
    return ins if len(ins) > 1 else ins[0]
