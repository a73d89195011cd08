"""Measuring training memory on CPU (and GPU when there is one), truthfully.

Two figures, as in the project's measuring notes:

* `saved_bytes`: what the forward keeps for the backward, from `saved_tensors_hooks`, counting
  each storage once and leaving parameters out. Exact, but blind to recompute temporaries.
* `peak_bytes`: the profiler's allocator events (+alloc/-free) summed in time order during a whole
  training step; the running maximum minus the parameter gradients is activation plus working
  memory, recompute included. On CUDA, `torch.cuda.max_memory_allocated` instead.

This module imports torch; it is used by tests and benchmarks, never by the compile path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Memory:
    saved: int  # bytes kept for backward (saved tensors, unique storages, no parameters)
    peak: int  # peak during forward+backward beyond parameters and their gradients
    grads: int  # bytes of parameter gradients


def _loss(out: object) -> torch.Tensor:
    """A loss that saves nothing itself (sum), so measurements see only the model."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    assert isinstance(out, tuple | list)
    return sum(_loss(o) for o in out)  # type: ignore[return-value]


def saved_bytes(model: nn.Module, *inputs: torch.Tensor,
                call: Callable[..., object] | None = None) -> int:
    """Bytes of unique non-parameter storages the forward saves for the backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in params and ptr != 0:
            storages[ptr] = max(storages.get(ptr, 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = (call or model)(*inputs)
        loss = _loss(out)
    del out, loss
    return sum(storages.values())


def peak_bytes(model: nn.Module, *inputs: torch.Tensor,
               call: Callable[..., object] | None = None) -> tuple[int, int]:
    """(peak memory of a training step beyond the parameters and their gradients, grad bytes).

    The gradients are allocated (zeroed) before measuring, so the peak is activations plus
    working memory whenever it happens (start of the backward for plain autograd, a block's
    recompute for the reversible one); transient gradient tensors on their way into `.grad`
    count as working memory."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    grads = sum(p.numel() * p.element_size() for p in params)
    device = params[0].device if params else torch.device("cpu")
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            loss = _loss((call or model)(*inputs))
            loss.backward()
            del loss
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - base, grads
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            loss = _loss((call or model)(*inputs))
            loss.backward()
            del loss
        # the raw allocator events (every allocation and free, in time order); the per-op
        # totals of prof.events() fold allocations into ops and count them again in parents
        raw = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        events = sorted((e.start_ns(), e.nbytes()) for e in raw if e.name() == "[memory]")
        cur = peak = 0
        for _, nbytes in events:
            cur += nbytes
            peak = max(peak, cur)
        return peak, grads
    finally:
        model.zero_grad(set_to_none=True)


def measure(model: nn.Module, *inputs: torch.Tensor,
            call: Callable[..., object] | None = None) -> Memory:
    model.train()
    saved = saved_bytes(model, *inputs, call=call)
    peak, grads = peak_bytes(model, *inputs, call=call)
    model.zero_grad(set_to_none=True)
    return Memory(saved=saved, peak=peak, grads=grads)


def stats_against_saved(text: str, name: str, overrides: dict[str, object] | None = None,
                        batch: int = 2, sizes: dict[str, int] | None = None
                        ) -> dict[str, tuple[int, float]]:
    """`revdsl stats`' prediction of the bytes per sample kept for the backward (from shapes
    alone) against what the generated model keeps (`saved_bytes`), for the spec `text` at its
    default input sizes: {'reversible': (predicted, measured), 'baseline': (...)}."""
    from revdsl import sizes as free
    from revdsl.loader import load_source
    from revdsl.pipeline import compile_text
    from revdsl.stats import stats
    from revdsl.testing import random_inputs

    compiled = compile_text(text, name, dict(overrides or {}))
    sizes = free.first(free.resolve(compiled.program, sizes))
    predicted = stats(compiled.report, sizes)
    torch.manual_seed(0)
    model = load_source(compiled.source).create_model()
    model.train()
    xs = random_inputs(compiled.program, batch, sizes, dtype=torch.float32, default=224)
    out = {}
    for mode, want in (("reversible", predicted.stored), ("baseline", predicted.baseline)):
        model.reversible = mode == "reversible"
        out[mode] = (want, saved_bytes(model, *xs) / batch)
    return out
