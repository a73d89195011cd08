"""The reversible engine embedded in every generated module.

This file is real, importable Python (tested directly), and code generation copies its
definitions verbatim into each generated file, which therefore imports only torch.

A generated block class describes itself to the engine with `STEPS`, a tuple of

* `Couple(target, reads, fn, modules, stochastic, forward, inverse, delta, keep)`: stream
  `target` is replaced by `forward(target, *atoms)` where `atoms = block.<fn>(*reads)`; `inverse`
  undoes it (derived by the prover); `delta(*atoms)` is given when the update is
  `target + delta`; a later step reads the replaced value as `keep` (`"b@0"`), when given;
* `Create(target, reads, fn, modules, stochastic, combine)`: a new stream `combine(*atoms)`;
* `Bijection(target, module)`: stream `target` goes through the block's layer `module`, a bijection
  by construction whose `inverse` method undoes it (Glow's invertible 1x1 convolution);
* `Permute(inputs, outputs, forward, inverse, keep)`: a rearrangement of streams (chunk, cat,
  space-to-depth) whose adjoint is its inverse (`keep` as for Couple).

A block undoes its steps in reverse order, or in the order `UNDO` (step indices) when a step
reads a value an update replaced (`"b@0"`): undoing that update first gives it back.

`ReversibleSegment` runs a list of blocks. With `reversible=True` under autograd it runs them inside
one `autograd.Function` that keeps only the segment's outputs; the backward walks the blocks in
reverse, recomputes each function once with grad enabled, rebuilds the step's input from its
output with the proved inverse, and computes the gradients in the same pass. Parameter gradients
are returned from the Function (not accumulated behind autograd's back), so DDP's hooks and
`torch.compile`'s view of the graph see an ordinary op.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, NamedTuple

import torch
from torch import nn

from revdsl.runtime.buffers import (
    _accumulate,
    _add_into,
    _alone,
    _atoms,
    _call_fn,
    _couple_in_chunks,
    _current,
    _finite,
    _free,
    _handed,
    _ptr,
    _Saved,
    _sole,
    _step_params,
    _undone,
)
from revdsl.runtime.hooks import (
    _as_in_forward,
    _autocast_state,
    _backward_hooks,
    _backward_pre_hooks,
    _Call,
    _fsdp_backward_done,
    _fsdp_unit,
    _is_fsdp,
    _no_double_backward,
    _post_hooks,
    _pre_hooks,
    _rng_state,
    _set_rng_state,
)


class Couple(NamedTuple):
    target: str
    reads: tuple[str, ...]
    fn: str
    modules: tuple[str, ...]
    stochastic: bool
    forward: Any
    inverse: Any
    delta: Any = None
    keep: str | None = None
    chunk: int | None = None  # a row-wise step: the dim its recompute may be chunked along


class Create(NamedTuple):
    target: str
    reads: tuple[str, ...]
    fn: str
    modules: tuple[str, ...]
    stochastic: bool
    combine: Any


class Permute(NamedTuple):
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    forward: Any
    inverse: Any
    keep: tuple[str, ...] = ()


class Bijection(NamedTuple):
    target: str
    module: str  # a layer of the block with `forward` and `inverse` (inv_conv1x1)


class _RecomputeFlag(threading.local):
    active = False


_RECOMPUTE = _RecomputeFlag()


def is_recomputing() -> bool:
    """True while the reversible backward recomputes a block's functions (BatchNorm checks this,
    so running statistics are updated once per training step, not twice)."""
    return _RECOMPUTE.active


@contextlib.contextmanager
def _recomputing() -> Any:
    previous = _RECOMPUTE.active
    _RECOMPUTE.active = True
    try:
        yield
    finally:
        _RECOMPUTE.active = previous


def _draws_random(block: nn.Module, step: Any) -> bool:
    """Whether running this step now draws random numbers (dropout or drop-path with a non-zero
    rate, in training mode), so that its generator state must be kept for the recompute."""
    if not step.stochastic or not block.training:
        return False
    for name in step.modules:
        for m in getattr(block, name).modules():
            draws = getattr(m, "draws_random", None)
            if draws is not None and draws():
                return True
            if isinstance(m, nn.Dropout) and m.p > 0:
                return True
    return False


def run_block(block: nn.Module, state: dict[str, torch.Tensor], options: dict[str, Any],
              rng: list[Any] | None) -> dict[str, torch.Tensor]:
    """Run one block's STEPS forward on `state` (stream name -> tensor). Before each step that
    draws random numbers, its generator state is appended to `rng` under the step's index."""
    state = dict(state)
    for k, step in enumerate(block.STEPS):
        if isinstance(step, Permute):
            for key in step.keep:
                state[key] = state[_current(key)]
            outs = step.forward(*[state.pop(n) for n in step.inputs])
            state.update(zip(step.outputs, _atoms(outs), strict=True))
            continue
        if isinstance(step, Bijection):
            state[step.target] = getattr(block, step.module)(state[step.target])
            continue
        if rng is not None and _draws_random(block, step):
            rng.append((k, _rng_state(next(iter(state.values())).device)))
        atoms = _call_fn(block, step, [state[r] for r in step.reads], options)
        if isinstance(step, Couple):
            if step.keep:
                state[step.keep] = state[step.target]
            state[step.target] = step.forward(state[step.target], *atoms)
        else:
            state[step.target] = step.combine(*atoms)
    return state


def undo_order(block: nn.Module) -> Any:
    """The order a block's steps are undone in (the verifier's schedule, or reverse)."""
    return getattr(block, "UNDO", None) or range(len(block.STEPS) - 1, -1, -1)


def _undo(block: nn.Module, step: Any, state: dict[str, torch.Tensor],
          options: dict[str, Any]) -> None:
    """Undo one step on `state` (no gradient involved)."""
    if isinstance(step, Permute):
        outs = [state.pop(n) for n in step.outputs]
        state.update(zip(step.inputs, _atoms(step.inverse(*outs)), strict=True))
    elif isinstance(step, Bijection):
        state[step.target] = getattr(block, step.module).inverse(state[step.target])
    elif isinstance(step, Couple):
        atoms = _call_fn(block, step, [state[_current(r)] for r in step.reads], options)
        state[step.target] = step.inverse(state[step.target], *atoms)
    else:
        state.pop(step.target)


def backward_block(block: nn.Module, state: dict[str, torch.Tensor],
                   grads: dict[str, torch.Tensor | None], options: dict[str, Any],
                   rng: list[Any], index: dict[int, int] | None, slots: list[Any],
                   checks: list[Any] | None = None, chunks: int = 1,
                   every: list[nn.Parameter] | None = None, own: set[int] | None = None) -> None:
    """Undo one block in place on `state`/`grads`: rebuild its inputs and backpropagate.

    Each step's functions are recomputed once; with grad enabled the same values serve the
    reconstruction (through the proved inverse) and the gradient. A gradient of None means "no
    gradient flows here" (as in plain autograd): such a step is only inverted, without a graph.
       `checks` collects, per undone update, whether the rebuilt value is finite (one small tensor
    each, read once per segment), so a vanishing scale is reported instead of returning NaN.
       `own`: the storages handed over by the block undone before, which may be written (see
    buffers.py): rebuilt streams go into their outputs' buffers, gradients are summed in place.
    """
    saved = dict(rng)
    for k in undo_order(block):
        step = block.STEPS[k]
        if isinstance(step, Permute):
            outs = [state.pop(n) for n in step.outputs]
            gouts = [grads.pop(n) for n in step.outputs]
            state.update(zip(step.inputs, _atoms(step.inverse(*outs)), strict=True))
            if all(g is None for g in gouts):
                grads.update((n, None) for n in step.inputs)
            else:
                gouts = [torch.zeros_like(o) if g is None else g for g, o in zip(gouts, outs)]
                grads.update(zip(step.inputs, _atoms(step.inverse(*gouts)), strict=True))
            continue
        if isinstance(step, Bijection):
            _backward_bijection(block, step, state, grads, index, slots)
            if checks is not None:
                checks.append((k, step, _finite(state[step.target])))
            continue
        replay = saved.pop(k, None)
        if replay is not None:
            _set_rng_state(next(iter(state.values())).device, replay)
        if chunks > 1 and getattr(step, "chunk", None) is not None and \
                grads[step.target] is not None:
            _couple_in_chunks(block, k, step, state, grads, options, index, slots, checks,
                              chunks, replay, every, own)
            continue
        dy = grads.pop(step.target)
        if dy is None:
            # nothing to backpropagate: undo the step without building a graph
            with torch.no_grad():
                _undo(block, step, state, options)
            if isinstance(step, Couple):
                grads[step.target] = None
                if checks is not None and step.delta is None:
                    checks.append((k, step, _finite(state[step.target])))
            continue
        reads = [state[_current(r)].detach().requires_grad_(True) for r in step.reads]
        # the block's parameters (unused ones get None): no module walk per step
        params = every if every is not None else _step_params(block, step)
        with torch.enable_grad(), _Saved() as kept:
            atoms = _call_fn(block, step, reads, options)
        if isinstance(step, Couple):
            y, out = state[step.target], None
            if step.delta is not None:
                with torch.enable_grad(), kept:
                    out = step.delta(*atoms)
                    if out.shape != dy.shape:  # a broadcast update (`a += mean(b, keepdim)`)
                        out = out.expand(dy.shape)
            x = _undone(step, y, atoms, out, _sole(y, own, state, grads))
            if checks is not None and out is None:  # y - F: finite when the forward was
                checks.append((k, step, _finite(x)))
            del y
            if out is not None:
                _free(out, kept, state, grads)  # the inverse has used it: only its graph is left
                inputs = [*reads, *params]
                dx: torch.Tensor | None = dy
            else:
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = step.forward(x, *atoms)
                inputs = [x, *reads, *params]
                dx = None
            got = (torch.autograd.grad(out, inputs, dy, allow_unused=True)
                   if out.requires_grad else (None,) * len(inputs))
            del out, atoms
            if dx is None:
                dx, got = got[0], got[1:]
                x = x.detach()
            state[step.target] = x
            grads[step.target] = dx
        else:
            state.pop(step.target)
            with torch.enable_grad():
                out = step.combine(*atoms)
            inputs = [*reads, *params]
            got = (torch.autograd.grad(out, inputs, dy, allow_unused=True)
                   if out.requires_grad else (None,) * len(inputs))
            del out, atoms
        for name, g in zip(step.reads, got[: len(reads)], strict=True):
            _add_into(grads, _current(name), g, own, state, dy)
        _accumulate(slots, index, params, got[len(reads):])


def _backward_bijection(block: nn.Module, step: Bijection, state: dict[str, torch.Tensor],
                        grads: dict[str, torch.Tensor | None], index: dict[int, int] | None,
                        slots: list[Any]) -> None:
    """Undo a bijective layer (its `inverse`) and backpropagate through it (recomputed once)."""
    layer = getattr(block, step.module)
    with torch.no_grad():
        x = layer.inverse(state[step.target])
    dy = grads.pop(step.target)
    if dy is None:
        state[step.target], grads[step.target] = x, None
        return
    x = x.detach().requires_grad_(True)
    params = [p for p in layer.parameters() if p.requires_grad]
    with torch.enable_grad():
        out = layer(x)
    got = torch.autograd.grad(out, [x, *params], dy, allow_unused=True)
    state[step.target], grads[step.target] = x.detach(), got[0]
    _accumulate(slots, index, params, got[1:])


def _carrier(t: torch.Tensor) -> torch.Tensor:
    """A zero-cost tensor of t's shape: its gradient slot carries rebuilt activations backward."""
    return t.new_zeros(()).expand(t.shape)


class _Block(torch.autograd.Function):
    """One reversible block. The forward keeps nothing; the backward receives the block's
    outputs (through the gradient slots of the carriers it returned) together with their
    gradients, rebuilds the inputs with the proved inverse, and returns the inputs' gradients,
    the rebuilt inputs (as the carriers' "gradients", for the block before) and the gradients of
    this block's parameters, which go to AccumulateGrad (and DDP's hooks) right away."""

    @staticmethod
    def forward(ctx: Any, block: nn.Module, options: dict[str, Any], call: _Call, i: int,
                n: int, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)  # unused outputs send None: no work, no zero grads
        streams, params = args[:n], args[2 * n:]
        ctx.block, ctx.options, ctx.call, ctx.i, ctx.n = block, options, call, i, n
        ctx.params = params
        device = streams[0].device
        ctx.autocast = _autocast_state(device.type)
        ctx.mods = list(block.modules())
        ctx.modes = tuple(m.training for m in ctx.mods)
        ctx.rng = [] if block.training and block.STOCHASTIC else None
        state = dict(zip(block.INPUTS, streams, strict=True))
        if call.trace is not None:
            call.trace.append(("forward", {k: v.clone() for k, v in state.items()}))
        ctx.fsdp = _fsdp_unit(block)
        if ctx.fsdp:
            block.unshard()
        with torch.no_grad():
            state = run_block(block, state, options, ctx.rng)
        if ctx.fsdp:
            block.reshard()
        outs = tuple(state[name] for name in block.OUTPUTS)
        return (*outs, *(_carrier(o) for o in outs))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        _no_double_backward()
        block, n, call = ctx.block, ctx.n, ctx.call
        m = len(block.OUTPUTS)
        values = grads[m:]
        assert all(v is not None for v in values), "a reversible block got no outputs to undo"
        # what the block undone before handed over may be written (buffers.py), and outputs
        # no one else holds any more, except the gradients a hook of this block sees
        hooked = bool(block._backward_pre_hooks or block._backward_hooks)
        own, call.owned = call.owned, set()
        own = own | {_ptr(v) for v in values if _ptr(v) not in own and _alone(v)}
        state = {k: v.detach() for k, v in zip(block.OUTPUTS, values, strict=True)}
        if hooked:
            own = own - {_ptr(g) for g in grads[:m] if g is not None}
        gout = _backward_pre_hooks(block, tuple(grads[:m]))
        dstate: dict[str, torch.Tensor | None] = dict(zip(block.OUTPUTS, gout, strict=True))
        params = ctx.params
        index = None if ctx.fsdp else {id(p): i for i, p in enumerate(params)}
        slots: list[Any] = [None] * len(params)
        if ctx.fsdp:  # gather this block, and start gathering the one undone next
            block.unshard()
            if ctx.i > 0 and _is_fsdp(call.blocks[ctx.i - 1]):
                call.blocks[ctx.i - 1].unshard(async_op=True)
        rng = list(ctx.rng) if ctx.rng else []
        device = values[0].device
        enabled, dtype, cache = ctx.autocast
        forked = torch.random.fork_rng(
            devices=[device.index or 0] if device.type != "cpu" else [], enabled=bool(rng),
            device_type=device.type if device.type != "cpu" else "cuda",
        )
        checks: list[Any] = []
        with forked, _recomputing(), _as_in_forward(block, ctx.modes, ctx.mods), torch.autocast(
            device.type, dtype=dtype, enabled=enabled, cache_enabled=cache
        ):
            backward_block(block, state, dstate, ctx.options, rng, index, slots, checks,
                           call.segment.recompute_chunks, None if ctx.fsdp else list(params),
                           own)
        if ctx.fsdp:
            _fsdp_backward_done(block)
        call.checks.append((ctx.i, block, checks))
        if call.trace is not None:
            call.trace.append(("backward", {k: v.clone() for k, v in state.items()}))
        din = tuple(dstate[k] for k in block.INPUTS)
        din = _backward_hooks(block, din, gout)
        if ctx.i == 0:
            call.finish(state)
        rebuilt = tuple(
            state[k] if ctx.needs_input_grad[5 + n + i] else None
            for i, k in enumerate(block.INPUTS)
        )
        if ctx.i > 0:
            call.owned = _handed(own, grads, rebuilt if hooked else (*rebuilt, *din))
        return (None, None, None, None, None, *din, *rebuilt, *slots)


class _Seed(torch.autograd.Function):
    """The end of a segment: keeps its outputs (the only activations a segment stores) and, in
    the backward, hands them to the last block as the values to undo, with copies of their
    gradients, which the blocks may sum into in place (buffers.py; the originals may be views
    of a larger gradient, or kept by a hook); the copies are made before any block is undone,
    when little else is alive, and the originals are freed when this returns."""

    @staticmethod
    def forward(ctx: Any, n: int, call: _Call, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        outs = args[:n]
        ctx.save_for_backward(*outs)
        ctx.call = call
        return tuple(o.detach() for o in outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        mine = tuple(None if g is None else g.clone() for g in grads)
        ctx.call.owned = {_ptr(g) for g in mine if g is not None}
        return (None, None, *mine, *(t.detach() for t in ctx.saved_tensors))


class ReversibleSegment(nn.Module):
    """A sequence of reversible blocks over named streams.

    `forward(*streams, reversible=True, checkpoint=False, **options)`: with `reversible` (and
    autograd active) activations inside the segment are not stored, only the outputs; without it
    the blocks run under plain autograd (optionally each under `torch.utils.checkpoint`).
    Set `trace` to a list to record block inputs in the forward and their reconstructions in the
    backward (for testing).
    """

    def __init__(self, blocks: list[nn.Module], inputs: tuple[str, ...],
                 outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.inputs = inputs
        self.outputs = outputs
        self.trace: list[Any] | None = None
        # the reconstruction guard: None (off), or a relative error above which the backward
        # warns; when on, the segment's inputs are kept to compare with their reconstruction
        self.guard: float | None = None
        self.last_reconstruction_error: float | None = None
        self.plan: tuple[bool, ...] | None = None  # per block: reversible (True) or kept
        self.recompute_chunks = 1  # row-wise steps recomputed in this many chunks of tokens

    def forward(self, *streams: torch.Tensor, reversible: bool = True, checkpoint: bool = False,
                **options: Any) -> tuple[torch.Tensor, ...]:
        if reversible and torch.is_grad_enabled() and (
            any(s.requires_grad for s in streams) or any(
                p.requires_grad for p in self.parameters())
        ):
            return self._reversible(streams, options)
        state = dict(zip(self.inputs, streams, strict=True))
        for block in self.blocks:
            args = [state[n] for n in block.INPUTS]
            if checkpoint and torch.is_grad_enabled():
                outs = torch.utils.checkpoint.checkpoint(
                    block, *args, use_reentrant=False, **options
                )
            else:
                outs = block(*args, **options)
            state = dict(zip(block.OUTPUTS, _atoms(outs), strict=True))
        return tuple(state[n] for n in self.outputs)

    @torch.compiler.disable
    def _reversible(self, streams: tuple[torch.Tensor, ...], options: dict[str, Any]
                    ) -> tuple[torch.Tensor, ...]:
        # The one place torch.compile stops: a custom Function whose backward rebuilds inputs
        # (with the forward's RNG state) cannot be traced, so under torch.compile a reversible
        # segment is a graph break and runs eagerly; what comes before and after is compiled.
        # With a plan (`set_plan`), blocks planned as kept run under plain autograd (their
        # activations stored: no recompute) and each run of reversible blocks between them is
        # a chain of its own, which keeps only its outputs.
        state = dict(zip(self.inputs, streams, strict=True))
        plan = self.plan or (True,) * len(self.blocks)
        i = 0
        while i < len(self.blocks):
            if not plan[i]:
                block = self.blocks[i]
                outs = block(*[state[k] for k in block.INPUTS], **options)
                state = dict(zip(block.OUTPUTS, _atoms(outs), strict=True))
                i += 1
                continue
            j = i
            while j < len(self.blocks) and plan[j]:
                j += 1
            state = self._chain(list(self.blocks)[i:j], state, options, first=i == 0)
            i = j
        return tuple(state[k] for k in self.outputs)

    def _chain(self, blocks: list[nn.Module], state: dict[str, torch.Tensor],
               options: dict[str, Any], first: bool) -> dict[str, torch.Tensor]:
        carriers = {k: _carrier(v) for k, v in state.items()}
        kept = (tuple(state[k].detach() for k in self.inputs)
                if first and self.guard is not None else None)
        call = _Call(self, kept)
        call.blocks = blocks
        for i, block in enumerate(blocks):
            n = len(block.INPUTS)
            # a sharded block's gradients go to FSDP, not through the Function: it gets one
            # empty tensor that requires grad instead, so that its backward runs
            params = ([torch.empty(0, requires_grad=True)] if _is_fsdp(block) else
                      [p for p in block.parameters() if p.requires_grad])
            args = tuple(state[k] for k in block.INPUTS)
            if block._forward_pre_hooks:
                _pre_hooks(block, args, options)
            outs = _Block.apply(block, options, call, i, n, *args,
                                *[carriers[k] for k in block.INPUTS], *params)
            m = len(block.OUTPUTS)
            state = dict(zip(block.OUTPUTS, outs[:m], strict=True))
            carriers = dict(zip(block.OUTPUTS, outs[m:], strict=True))
            if block._forward_hooks:
                out = outs[0] if m == 1 else tuple(outs[:m])
                _post_hooks(block, args, options, out)
        last = blocks[-1].OUTPUTS
        outs = _Seed.apply(len(last), call, *[state[k] for k in last],
                           *[carriers[k] for k in last])
        return dict(zip(last, outs, strict=True))
