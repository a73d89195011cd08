"""Testing helpers for generated models (also used by `revdsl test`).

* `concrete`: a symbolic shape made concrete (batch and free dimensions given values);
* `random_inputs`: random tensors for a program's inputs;
* `block_inverse_errors`: for every reversible block, inverse(forward(x)) against x;
* `gradient_errors`: the reversible backward against plain autograd, same seed.

* `form_errors`: the forms of one function (ViR's modes) against each other;
* `without_randomness`: a generated model with every random draw turned off;
* `inputs_for`: a hypothesis strategy of random inputs.

The strategies of random *specs* with what a verifier must say of them are in
`revdsl.strategies` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import sympy
import torch

from revdsl import ir
from revdsl.shapes import B, Shape


def without_randomness(model: torch.nn.Module) -> torch.nn.Module:
    """Turn off dropout, attention dropout and drop-path in a generated model (in place), for
    comparisons that cannot share random draws (several processes, compiled vs eager code)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif hasattr(m, "draws_random"):  # runtime layers say which rates they draw with
            for attr in m.RANDOM_RATES:
                setattr(m, attr, 0.0)
            assert not (m.training and m.draws_random()), f"{type(m).__name__} still draws"
    return model


def concrete(shape: Shape, batch: int = 2, sizes: dict[str, int] | None = None,
             default: int = 16) -> tuple[int, ...]:
    values: dict[sympy.Symbol, int] = {B: batch}
    out = []
    for d in shape:
        e = sympy.sympify(d)
        for s in e.free_symbols:
            if s not in values:
                values[s] = (sizes or {}).get(s.name, default)
        out.append(int(e.subs(values)))
    return tuple(out)


def random_inputs(program: ir.Program, batch: int = 2, sizes: dict[str, int] | None = None,
                  dtype: torch.dtype = torch.float64, seed: int = 0, device: str = "cpu",
                  default: int = 16) -> list[torch.Tensor]:
    """Standard-normal tensors for the program's inputs; free dimensions not in `sizes` take
    `default`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(concrete(n.shape, batch, sizes, default), generator=g,
                        dtype=dtype).to(device)
            for n in program.inputs]


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max |a - b| / max(max |b|, floor).

    `floor` keeps a gradient that is exactly zero in exact arithmetic (rounding noise in both
    runs, e.g. the bias of a key norm, which softmax cancels) from dividing noise by noise;
    gradient comparisons use `grad_floor`."""
    denom = b.abs().max().item() if b.numel() else 0.0
    denom = max(denom, floor)
    return (a - b).abs().max().item() / (denom if denom > 0 else 1.0)


def grad_floor(grads: dict[str, torch.Tensor] | list[torch.Tensor]) -> float:
    """The level below which a parameter's gradient is compared in absolute terms: 1e-6 of the
    model's largest gradient in float64, 1e-3 in float32 and below.

    A gradient that is exactly zero in exact arithmetic (e.g. the bias of a key LayerNorm, which
    softmax cancels) is pure rounding noise in both the reversible and the plain run (measured:
    ~1e-18 of the scale in float64, ~2e-10 in float32); without a floor its "relative error"
    would be noise divided by noise."""
    values = list(grads.values()) if isinstance(grads, dict) else list(grads)
    if not values:
        return 0.0
    scale = max(g.abs().max().item() for g in values)
    return scale * (1e-6 if values[0].dtype == torch.float64 else 1e-3)


def _blocks(model: torch.nn.Module, program: ir.Program) -> Iterator[tuple[ir.Block, Any]]:
    for seg in program.segments:
        module = getattr(model, seg.name)
        yield from zip(seg.blocks, module.blocks, strict=True)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a model computes in: its first floating parameter's or buffer's (float64 for a
    model with neither: a spec of pure permutations and formulas)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float64


@torch.no_grad()
def block_inverse_errors(model: torch.nn.Module, program: ir.Program, batch: int = 2,
                         sizes: dict[str, int] | None = None, seed: int = 0,
                         options: dict[str, Any] | None = None) -> list[float]:
    """inverse(forward(x)) vs x for every reversible block, on random stream values."""
    was = model.training
    model.eval()
    options = {**{o.name: o.default for o in program.options}, **(options or {})}
    g = torch.Generator().manual_seed(seed)
    dtype = model_dtype(model)
    errs = []
    try:
        for block, mod in _blocks(model, program):
            xs = [torch.randn(concrete(n.shape, batch, sizes), generator=g, dtype=dtype)
                  for n in block.inputs]
            used = {k: v for k, v in options.items() if k in _keywords(mod.forward)}
            ys = mod(*xs, **used)
            ys = ys if isinstance(ys, tuple) else (ys,)
            back = mod.inverse(*ys, **used)
            back = back if isinstance(back, tuple) else (back,)
            errs.append(max(rel_err(a, b) for a, b in zip(back, xs, strict=True)))
    finally:
        model.train(was)
    return errs


def _keywords(fn: Any) -> set[str]:
    import inspect

    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind == p.KEYWORD_ONLY}


def _step(model: torch.nn.Module, inputs: list[torch.Tensor], reversible: bool, seed: int,
          options: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                            list[torch.Tensor]]:
    model.reversible = reversible
    model.train()
    model.zero_grad(set_to_none=True)
    xs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    torch.manual_seed(seed)
    out = model(*xs, **options)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o.float() * torch.linspace(-1, 1, o.numel(), dtype=torch.float32).view(o.shape))
               .sum() for o in outs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return torch.cat([o.detach().flatten() for o in outs]), grads, [
        x.grad.detach().clone() for x in xs if x.grad is not None]


class Overflow(ArithmeticError):
    """Plain autograd itself is not finite at this example (random weights that make chained
    `exp` scales overflow, say): nothing to compare, and not an invertibility failure."""


def _all_finite(out: torch.Tensor, grads: dict[str, torch.Tensor]) -> bool:
    return bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(g).all())
                                                   for g in grads.values())


def gradient_errors(model: torch.nn.Module, inputs: list[torch.Tensor], seed: int = 1234,
                    program: ir.Program | None = None, where: dict[str, str] | None = None,
                    **options: Any) -> dict[str, float]:
    """Relative errors of one training step, reversible vs plain autograd (same seed, so the
    same dropout masks): `output`, `params` (worst parameter gradient), `input` (input
    gradients) and, given the `program`, `rebuilt:SEGMENT` for each reversible segment: how far
    the block inputs the backward rebuilt with the proved inverse are from the forward's (the
    first block's error is the whole segment's inverse(forward(x)) against x). `worst` is the
    largest. A non-finite value counts as infinitely wrong."""
    traces: dict[str, list[Any]] = {}
    if program is not None:
        for seg in program.segments:
            traces[seg.name] = []
            getattr(model, seg.name).trace = traces[seg.name]
    try:
        out_r, g_r, x_r = _step(model, inputs, True, seed, options)
    except FloatingPointError:
        # the reversible backward found a non-finite reconstruction: an overflow of the
        # plain model too (nothing to compare), or a real failure of the inverse
        out_b, g_b, _ = _step(model, inputs, False, seed, options)
        if not _all_finite(out_b, g_b):
            raise Overflow("plain autograd is not finite either") from None
        raise
    finally:
        for name in traces:
            getattr(model, name).trace = None
    out_b, g_b, x_b = _step(model, inputs, False, seed, options)
    if not _all_finite(out_b, g_b):
        raise Overflow("plain autograd is not finite at this example")
    if set(g_r) != set(g_b):
        raise AssertionError(f"gradients for different parameters: {sorted(set(g_r) ^ set(g_b))}")
    floor = grad_floor(g_b)
    per_param = {n: rel_err(g_r[n], g_b[n], floor) for n in g_b}
    worst_name = max(per_param, key=lambda n: _finite(per_param[n]), default="")
    if where is not None:
        where["params"] = worst_name
    errs = {"output": rel_err(out_r, out_b),
            "params": per_param[worst_name] if worst_name else 0.0,
            "input": max((rel_err(a, b) for a, b in zip(x_r, x_b)), default=0.0)}
    for name, trace in traces.items():
        fwd = [v for kind, v in trace if kind == "forward"]
        bwd = [v for kind, v in trace if kind == "backward"][::-1]
        if len(fwd) != len(bwd):
            raise AssertionError(f"segment {name}: {len(fwd)} blocks ran forward but "
                                 f"{len(bwd)} were rebuilt in the backward")
        errs[f"rebuilt:{name}"] = max(
            (rel_err(b[k], f[k]) for f, b in zip(fwd, bwd, strict=True) for k in f),
            default=0.0)
    errs = {k: _finite(v) for k, v in errs.items()}
    errs["worst"] = max(errs.values())
    return errs


def _finite(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def form_options(program: ir.Program) -> list[ir.Option]:
    """The call-time options that only choose between forms of the same function (used only
    through attributes that ops declare as `forms`, e.g. retention's mode): every choice must
    give the same result."""
    from revdsl import catalogue

    uses: dict[str, bool] = {}
    for node in ir.op_nodes(program):
        opdef = catalogue.get(node.op)
        for key, value in node.attrs:
            if isinstance(value, ir.RuntimeRef):
                ok = opdef is not None and key in opdef.forms
                uses[value.name] = uses.get(value.name, True) and ok
    return [o for o in program.options if uses.get(o.name)]


@torch.no_grad()
def form_errors(model: torch.nn.Module, inputs: list[torch.Tensor], option: ir.Option,
                **options: Any) -> dict[Any, float]:
    """For each choice of a forms option, the relative error of the output (eval mode) against
    the option's default choice."""
    was = model.training
    model.eval()
    try:
        ref = model(*inputs, **{**options, option.name: option.default})
        return {c: _finite(rel_err(model(*inputs, **{**options, option.name: c}), ref))
                for c in option.choices if c != option.default}
    finally:
        model.train(was)


@torch.no_grad()
def randomize_parameters(model: torch.nn.Module, seed: int, gain: float = 1.0) -> None:
    """Random parameters: weights (2-D and up) ~ N(0, gain^2 / fan_in); vectors (norm scales,
    biases, LayerScale) moved by N(0, (0.1 gain)^2) from where they were, so a LayerScale of 1e-5
    no longer hides its branch."""
    g = torch.Generator().manual_seed(seed)
    own: set[int] = set()
    for m in model.modules():  # a layer that knows how to draw itself (a random rotation for
        if hasattr(m, "randomize"):  # an invertible 1x1 conv: random triangular factors are
            m.randomize(g, gain)  # badly conditioned whatever their scale)
            own.update(id(p) for p in m.parameters())
    for p in model.parameters():
        if id(p) in own:
            continue
        r = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        if p.dim() >= 2:
            p.copy_(r * (gain / math.sqrt(max(p[0].numel(), 1))))
        else:
            p.add_(r * (0.1 * gain))


# ---- hypothesis strategies --------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from hypothesis import strategies as st  # noqa: E402


@dataclass
class Inputs:
    """Random inputs for a program: how they were drawn (shown in a failing example) and the
    tensors themselves (not shown)."""

    batch: int
    sizes: dict[str, int]
    seed: int
    scale: float
    tensors: list[torch.Tensor] = field(repr=False, default_factory=list)


def inputs_for(program: ir.Program, max_batch: int = 3, dtype: torch.dtype = torch.float64,
               sizes: dict[str, tuple[int, ...]] | None = None) -> st.SearchStrategy[Inputs]:
    """Random inputs of the program's input shapes: a batch size, values for the free input
    dimensions (among those the spec allows: `revdsl.sizes`), and Gaussian values at a random
    scale (1, 0.1 or 10)."""
    from revdsl import sizes as sizes_mod

    allowed = sizes if sizes is not None else sizes_mod.resolve(program, every=True)

    @st.composite
    def draw_inputs(draw: st.DrawFn) -> Inputs:
        batch = draw(st.integers(1, max_batch))
        chosen = {k: draw(st.sampled_from(v)) for k, v in sorted(allowed.items())}
        seed = draw(st.integers(0, 2**16))
        scale = draw(st.sampled_from([1.0, 0.1, 10.0]))
        xs = [x * scale for x in random_inputs(program, batch, chosen, dtype, seed)]
        return Inputs(batch=batch, sizes=chosen, seed=seed, scale=scale, tensors=xs)

    return draw_inputs()


def replay_inputs(program: ir.Program, given: dict[str, Any], dtype: torch.dtype,
                  allowed: dict[str, tuple[int, ...]]) -> Inputs:
    """The inputs of one example as `revdsl test` prints it (batch, input_seed, input_scale;
    free sizes: the given or first allowed value)."""
    batch = int(given.get("batch", 1))
    seed = int(given.get("input_seed", 0))
    scale = float(given.get("input_scale", 1.0))
    chosen = {k: v[0] for k, v in sorted(allowed.items())}
    xs = [x * scale for x in random_inputs(program, batch, chosen, dtype, seed)]
    return Inputs(batch=batch, sizes=chosen, seed=seed, scale=scale, tensors=xs)


from revdsl.strategies import (  # noqa: E402 - re-exported: `from revdsl.testing import any_specs`
    FAULTS,
    SILO_FAULTS,
    TRANSITION_FAULTS,
    RandomSpec,
    any_specs,
    coupling_specs,
    invalid_specs,
    silo_specs,
    transition_specs,
)

__all__ = [
    "FAULTS", "SILO_FAULTS", "TRANSITION_FAULTS", "Inputs", "Overflow", "RandomSpec",
    "any_specs", "block_inverse_errors", "concrete", "coupling_specs", "form_errors",
    "form_options", "grad_floor", "gradient_errors", "inputs_for", "invalid_specs",
    "random_inputs", "randomize_parameters", "rel_err", "replay_inputs", "silo_specs",
    "transition_specs", "without_randomness",
]
