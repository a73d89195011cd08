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
import math
import threading
from typing import Any, NamedTuple

import torch
from torch import nn

from revdsl.runtime.hooks import (
    _as_in_forward,
    _backward_hooks,
    _backward_pre_hooks,
    _Call,
    _modes,
    _no_double_backward,
    _post_hooks,
    _pre_hooks,
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


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype, bool]:
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return enabled, dtype, torch.is_autocast_cache_enabled()


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator that ops on `device` draw from (5 KiB on CPU, 16 B on CUDA).

    Catalogued ops draw only from their tensors' device generator, so that one is enough."""
    if device.type == "cpu":
        return torch.get_rng_state()
    return getattr(torch, device.type).get_rng_state(device)


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cpu":
        torch.set_rng_state(state)
    else:
        getattr(torch, device.type).set_rng_state(state, device)


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


def _current(key: str) -> str:
    # when a step reading an earlier value ("b@0") is undone, b holds that value again
    return key.partition("@")[0]


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


def _accumulate(slots: list[Any], index: dict[int, int], params: list[nn.Parameter],
                grads: tuple[Any, ...]) -> None:
    for p, g in zip(params, grads, strict=True):
        if g is None:
            continue
        i = index[id(p)]
        slots[i] = g if slots[i] is None else slots[i] + g


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def backward_block(block: nn.Module, state: dict[str, torch.Tensor],
                   grads: dict[str, torch.Tensor | None], options: dict[str, Any],
                   rng: list[Any], index: dict[int, int], slots: list[Any],
                   checks: list[Any] | None = None) -> None:
    """Undo one block in place on `state`/`grads`: rebuild its inputs and backpropagate.

    Each step's functions are recomputed once; with grad enabled the same values serve the
    reconstruction (through the proved inverse) and the gradient. A gradient of None means "no
    gradient flows here" (as in plain autograd): such a step is only inverted, without a graph.
       `checks` collects, per undone update, whether the rebuilt value is finite (one small tensor
    each, read once per segment), so a vanishing scale is reported instead of returning NaN.
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
                checks.append((k, step, torch.isfinite(state[step.target]).all()))
            continue
        if k in saved:
            _set_rng_state(next(iter(state.values())).device, saved.pop(k))
        dy = grads.pop(step.target)
        if dy is None:
            # nothing to backpropagate: undo the step without building a graph
            with torch.no_grad():
                _undo(block, step, state, options)
            if isinstance(step, Couple):
                grads[step.target] = None
                if checks is not None:
                    checks.append((k, step, torch.isfinite(state[step.target]).all()))
            continue
        reads = [state[_current(r)].detach().requires_grad_(True) for r in step.reads]
        params = _step_params(block, step)
        with torch.enable_grad():
            atoms = _call_fn(block, step, reads, options)
        if isinstance(step, Couple):
            y = state[step.target]
            with torch.no_grad():
                x = step.inverse(y, *[a.detach() for a in atoms])
                if checks is not None:
                    checks.append((k, step, torch.isfinite(x).all()))
            del y
            if step.delta is not None:
                with torch.enable_grad():
                    out = step.delta(*atoms)
                    if out.shape != dy.shape:  # a broadcast update (`a += mean(b, keepdim)`)
                        out = out.expand(dy.shape)
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
            grads[_current(name)] = _add(grads[_current(name)], g)
        _accumulate(slots, index, params, got[len(reads):])


def _backward_bijection(block: nn.Module, step: Bijection, state: dict[str, torch.Tensor],
                        grads: dict[str, torch.Tensor | None], index: dict[int, int],
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
        ctx.modes = _modes(block)
        ctx.rng = [] if block.training and block.STOCHASTIC else None
        state = dict(zip(block.INPUTS, streams, strict=True))
        if call.trace is not None:
            call.trace.append(("forward", {k: v.clone() for k, v in state.items()}))
        with torch.no_grad():
            state = run_block(block, state, options, ctx.rng)
        outs = tuple(state[name] for name in block.OUTPUTS)
        return (*outs, *(_carrier(o) for o in outs))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        _no_double_backward()
        block, n, call = ctx.block, ctx.n, ctx.call
        m = len(block.OUTPUTS)
        values = grads[m:]
        assert all(v is not None for v in values), "a reversible block got no outputs to undo"
        state = {k: v.detach() for k, v in zip(block.OUTPUTS, values, strict=True)}
        gout = _backward_pre_hooks(block, tuple(grads[:m]))
        dstate: dict[str, torch.Tensor | None] = dict(zip(block.OUTPUTS, gout, strict=True))
        params = ctx.params
        index = {id(p): i for i, p in enumerate(params)}
        slots: list[Any] = [None] * len(params)
        rng = list(ctx.rng) if ctx.rng else []
        device = values[0].device
        enabled, dtype, cache = ctx.autocast
        forked = torch.random.fork_rng(
            devices=[device.index or 0] if device.type != "cpu" else [], enabled=bool(rng),
            device_type=device.type if device.type != "cpu" else "cuda",
        )
        checks: list[Any] = []
        with forked, _recomputing(), _as_in_forward(block, ctx.modes), torch.autocast(
            device.type, dtype=dtype, enabled=enabled, cache_enabled=cache
        ):
            backward_block(block, state, dstate, ctx.options, rng, index, slots, checks)
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
        return (None, None, None, None, None, *din, *rebuilt, *slots)


class _Seed(torch.autograd.Function):
    """The end of a segment: keeps its outputs (the only activations a segment stores) and, in
    the backward, hands them to the last block as the values to undo."""

    @staticmethod
    def forward(ctx: Any, n: int, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.set_materialize_grads(False)
        outs = args[:n]
        ctx.save_for_backward(*outs)
        return tuple(o.detach() for o in outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:
        return (None, *grads, *(t.detach() for t in ctx.saved_tensors))


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
        for i, block in enumerate(blocks):
            n = len(block.INPUTS)
            params = [p for p in block.parameters() if p.requires_grad]
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
        outs = _Seed.apply(len(last), *[state[k] for k in last], *[carriers[k] for k in last])
        return dict(zip(last, outs, strict=True))


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's update with probability `rate` (training only)."""

    RANDOM_RATES = ("rate",)  # what `without_randomness` sets to 0

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def draws_random(self) -> bool:
        return self.training and self.rate > 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


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
