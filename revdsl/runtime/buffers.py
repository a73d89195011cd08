"""Gradient sums, buffer reuse and chunked recompute in the reversible backward (copied into
generated modules with the rest of the runtime).

The values and gradients one reversible block's backward hands to the block before it are
tensors the engine has just made and nobody else holds. The receiving block writes into them:
a stream rebuilt by a proved inverse goes into the buffer of the output it was rebuilt from, and
a stream's gradient is summed in place. That keeps one buffer per stream and per gradient alive
while a block is undone, instead of two (the autograd engine holds a node's incoming tensors
until its backward returns). Ownership is tracked by storage: a tensor is written only when its
storage was handed over by the previous block, it is not a view, and no other live entry shares
it; a segment's outputs while anyone else holds them, and any gradient a user's hook has
seen, are never written. The value of an additive update (F(x2) of `x1 += F(x2)`) is freed as
soon as the inverse has used it, when nothing its backward saved shares its buffer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from revdsl.runtime.hooks import _set_rng_state


def _finite(t: torch.Tensor) -> torch.Tensor:
    """Whether every value is finite, as a 0-d tensor (read once per segment): NaN and inf
    propagate through the extremes, one pass without a temporary (isfinite().all() is three).
    Only an update that is not additive is checked: y - F of finite values is finite."""
    if not t.numel():
        return torch.ones((), dtype=torch.bool)
    lo, hi = torch.aminmax(t)
    return torch.isfinite(lo) & torch.isfinite(hi)


def _accumulate(slots: list[Any], index: dict[int, int] | None, params: list[nn.Parameter],
                grads: tuple[Any, ...]) -> None:
    """Sum parameter gradients into the Function's slots; `index` None (an FSDP-sharded block):
    onto the gathered parameters' .grad, which FSDP reduce-scatters."""
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        if index is None:
            p.grad = g if p.grad is None else p.grad + g
            continue
        i = index[id(p)]
        slots[i] = g if slots[i] is None else slots[i] + g


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _shared(t: torch.Tensor, *tables: dict[str, Any], entry: bool = False) -> bool:
    """Whether an entry of `tables` (the block's values and gradients) shares t's storage; with
    `entry`, t is one of them and only the others count."""
    p = _ptr(t)
    return any(v is not None and not (entry and v is t) and _ptr(v) == p
               for table in tables for v in table.values())


def _sole(t: torch.Tensor | None, own: set[int] | None, *tables: dict[str, Any]) -> bool:
    """Whether the engine may write into `t`: its storage was handed over (is in `own`), it is
    not a view, and no other entry of `tables` shares it."""
    if t is None or not own or t._is_view() or _ptr(t) not in own:
        return False
    return not _shared(t, *tables, entry=True)


def _add_into(grads: dict[str, Any], name: str, g: torch.Tensor | None, own: set[int] | None,
              state: dict[str, Any], dy: torch.Tensor | None) -> None:
    """grads[name] += g: in place when the engine holds that buffer alone, or else into g when
    g is a fresh gradient (not a view, not the incoming `dy` or any live entry); otherwise a new
    sum (a broadcast update's gradient, autocast's mixed dtypes)."""
    a = grads[name]
    if a is None or g is None or a.shape != g.shape or a.dtype != g.dtype:
        grads[name] = _add(a, g)
    elif _sole(a, own, grads, state):
        a.add_(g)
    elif not g._is_view() and (dy is None or _ptr(g) != _ptr(dy)) and \
            not _shared(g, grads, state):
        grads[name] = g.add_(a)
    else:
        grads[name] = a + g


def _undone(step: Any, y: torch.Tensor, atoms: tuple[torch.Tensor, ...],
            out: torch.Tensor | None, writable: bool) -> torch.Tensor:
    """The target rebuilt from its updated value y: for an additive update (`out` its value),
    y - out, computed in y's own buffer when `writable` (the engine holds y alone); otherwise
    the proved inverse, stored in y's buffer when it can be."""
    with torch.no_grad():
        if out is not None and writable and torch.result_type(y, out) == y.dtype:
            return y.sub_(out.detach())
        x = step.inverse(y, *[a.detach() for a in atoms])
        if writable and x.shape == y.shape and x.dtype == y.dtype:
            return y.copy_(x)
        return x


def _handed(own: set[int], incoming: tuple[Any, ...], outgoing: tuple[Any, ...]) -> set[int]:
    """The storages a block's backward hands to the block before it as its own: each outgoing
    tensor that is not a view, appears once, and was made by the engine (in this block, or
    handed to it); whatever came from outside (a segment's outputs, a gradient from the loss)
    stays foreign however often it is passed on."""
    foreign = {_ptr(t) for t in incoming if t is not None} - own
    seen: dict[int, int] = {}
    for t in outgoing:
        if t is not None:
            seen[_ptr(t)] = seen.get(_ptr(t), 0) + (2 if t._is_view() else 1)
    return {p for p, n in seen.items() if n == 1 and p not in foreign}


def _alone(t: torch.Tensor) -> bool:
    """Whether `t` is the only tensor on its storage (the temporary storage object asked adds
    one): then nothing outside the engine can read it. A segment's last block uses it for its
    outputs, whose buffers are free once whoever used them downstream has done its backward."""
    try:
        return not t._is_view() and torch._C._storage_Use_Count(t.untyped_storage()._cdata) == 2
    except (AttributeError, RuntimeError):  # another torch: never written
        return False


class _Saved:
    """Records the storages the recompute saves for its backward (a saved-tensors hook that
    keeps every tensor as it is), so that the update's value, once the inverse has used it, can
    be freed before its backward runs when nothing saved shares its buffer. Off (`ptrs` None)
    when the user has saved-tensors hooks of their own (offloading, say): theirs apply."""

    def __init__(self) -> None:
        hooks = torch._C._autograd
        self.ptrs: set[int] | None = None
        if hooks._top_saved_tensors_default_hooks(False) is None and \
                hooks._saved_tensors_hooks_is_enabled():
            self.ptrs = set()

    def __enter__(self) -> _Saved:
        if self.ptrs is not None:
            torch._C._autograd._push_saved_tensors_default_hooks(self._pack, _unpack)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ptrs is not None:
            torch._C._autograd._pop_saved_tensors_default_hooks()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.ptrs.add(_ptr(t))  # type: ignore[union-attr]
        return t


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _free(out: torch.Tensor, saved: _Saved, *tables: dict[str, Any]) -> None:
    """Free the storage of an additive update's value (F(x2) of `x1 += F(x2)`) once the
    inverse has used it: its backward needs only the graph, unless a node saved that buffer, a
    live stream or gradient shares it, it views a leaf (a parameter, a read), or a Python
    autograd Function in the graph might keep it on its ctx."""
    if saved.ptrs is None or out.grad_fn is None:
        return
    if out._is_view() and (out._base is None or out._base.grad_fn is None):
        return
    if _ptr(out) in saved.ptrs or _shared(out, *tables):
        return
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            return
        todo.extend(n for n, _ in node.next_functions)
    out.untyped_storage().resize_(0)


# ---- what a step's recompute calls, and the chunked recompute of a row-wise step ----


def _atoms(value: Any) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def _call_fn(block: nn.Module, step: Any, reads: list[torch.Tensor],
             options: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The step's opaque functions (none when the update is a formula of the stream alone)."""
    if not step.fn:
        return ()
    return _atoms(getattr(block, step.fn)(*reads, **options))


def _step_params(block: nn.Module, step: Any) -> list[nn.Parameter]:
    return [
        p for name in step.modules for p in getattr(block, name).parameters() if p.requires_grad
    ]


def _current(key: str) -> str:
    # when a step reading an earlier value ("b@0") is undone, b holds that value again
    return key.partition("@")[0]


def _couple_in_chunks(block: nn.Module, k: int, step: Any, state: dict[str, torch.Tensor],
                      grads: dict[str, Any], options: dict[str, Any], index: Any,
                      slots: list[Any], checks: list[Any] | None, n: int, replay: Any,
                      every: list[nn.Parameter] | None, own: set[int] | None) -> None:
    """Undo and backpropagate a row-wise step (each token's update depends on that token alone)
    in `n` chunks of tokens: the same result as in one piece, with the working set of one chunk
    (an MLP's hidden activations, say). The generator state is restored before every chunk, so
    a per-sample draw (drop-path) is the same for all of them."""
    d = step.chunk
    assert d is not None
    y, dy = state[step.target], grads.pop(step.target)
    reads_all = [state[_current(r)] for r in step.reads]
    params = every if every is not None else _step_params(block, step)
    parts = [t.tensor_split(n, d) for t in (y, dy, *reads_all)]
    # results are written into whole tensors chunk by chunk (no second copy to concatenate):
    # into y and dy themselves when the engine holds them alone (chunk c is read before written)
    x_all = y if _sole(y, own, state, grads) else torch.empty_like(y)
    dx_all = dy if step.delta is not None or _sole(dy, own, state, grads) else \
        torch.zeros_like(y)  # an additive step passes dy on
    # a read's gradient: summed into its buffer when the engine holds it alone, else each
    # chunk's sum (with the gradient it had, chunk by chunk when shapes agree) into a new one
    before = [grads[_current(name)] for name in step.reads]
    dreads = [a if a is not None and a.shape == r.shape and a.dtype == r.dtype and
              _sole(a, own, grads, state) else torch.empty_like(r)
              for r, a in zip(reads_all, before, strict=True)]
    split = [a.tensor_split(n, d) if a is not None and a is not w and a.shape == w.shape and
             a.dtype == w.dtype else None for a, w in zip(before, dreads, strict=True)]
    acc: list[Any] = [None] * len(params)
    start = 0
    for c, piece in enumerate(zip(*parts, strict=True)):
        if replay is not None:
            _set_rng_state(y.device, replay)
        yc, dyc, size = piece[0], piece[1], piece[0].shape[d]
        reads = [r.detach().requires_grad_(True) for r in piece[2:]]
        with torch.enable_grad(), _Saved() as kept:
            atoms = _call_fn(block, step, reads, options)
            if step.delta is not None:  # y - delta into y's own chunk when it is writable
                out, inputs = step.delta(*atoms), [*reads, *params]
                x = _undone(step, yc, atoms, out.expand(yc.shape), x_all is y)
                _free(out, kept, state, grads)
            else:
                x = _undone(step, yc, atoms, None, False).requires_grad_(True)
                out, inputs = step.forward(x, *atoms), [x, *reads, *params]
        got = (torch.autograd.grad(out, inputs, dyc, allow_unused=True)
               if out.requires_grad else (None,) * len(inputs))
        del out, atoms
        dx = dyc if step.delta is not None else got[0]
        got = got if step.delta is not None else got[1:]
        if x is not yc:
            x_all.narrow(d, start, size).copy_(x.detach())
        if dx is not None and step.delta is None:
            dx_all.narrow(d, start, size).copy_(dx)
        elif step.delta is None and dx_all is dy:
            dx_all.narrow(d, start, size).zero_()
        for whole, a, parts_a, g in zip(dreads, before, split, got[: len(reads)], strict=True):
            _sum_chunk(whole.narrow(d, start, size), None if parts_a is None else parts_a[c],
                       g, whole is a)
        for j, g in enumerate(got[len(reads):]):  # summed in place: one set of buffers
            if g is not None and acc[j] is None:
                shared = g.untyped_storage().data_ptr() == dyc.untyped_storage().data_ptr()
                acc[j] = g.clone() if shared else g
            elif g is not None:
                acc[j].add_(g)
        start += size
    _accumulate(slots, index, params, tuple(acc))
    state[step.target], grads[step.target] = x_all, dx_all
    if checks is not None and step.delta is None:
        checks.append((k, step, _finite(x_all)))
    for name, whole, a, parts_a in zip(step.reads, dreads, before, split, strict=True):
        if whole is not a:  # else summed in place
            grads[_current(name)] = whole if parts_a is not None else _add(a, whole)


def _sum_chunk(part: torch.Tensor, a: torch.Tensor | None, g: torch.Tensor | None,
               inplace: bool) -> None:
    """One chunk of a read's gradient: `part` += g (in place), or part = a + g (a: that chunk of
    the gradient it had, when there was one of the same shape), or part = g."""
    if inplace:
        if g is not None:
            part.add_(g)
    elif a is not None:
        torch.add(a, g, out=part) if g is not None else part.copy_(a)
    elif g is not None:
        part.copy_(g)
    else:
        part.zero_()
