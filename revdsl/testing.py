"""Testing helpers for generated models (also used by `revdsl test`).

* `concrete`: a symbolic shape made concrete (batch and free dimensions given values);
* `random_inputs`: random tensors for a program's inputs;
* `block_inverse_errors`: for every reversible block, inverse(forward(x)) against x;
* `gradient_errors`: the reversible backward against plain autograd, same seed.

Hypothesis strategies for random specs live in `revdsl.strategies`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sympy
import torch

from revdsl import ir
from revdsl.shapes import B, Shape


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
                  dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(concrete(n.shape, batch, sizes), generator=g, dtype=dtype)
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


@torch.no_grad()
def block_inverse_errors(model: torch.nn.Module, program: ir.Program, batch: int = 2,
                         sizes: dict[str, int] | None = None, seed: int = 0,
                         options: dict[str, Any] | None = None) -> list[float]:
    """inverse(forward(x)) vs x for every reversible block, on random stream values."""
    was = model.training
    model.eval()
    options = {**{o.name: o.default for o in program.options}, **(options or {})}
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
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


def gradient_errors(model: torch.nn.Module, inputs: list[torch.Tensor], seed: int = 1234,
                    **options: Any) -> dict[str, float]:
    """Relative errors (output, parameter and input gradients) of reversible vs plain."""
    out_r, g_r, x_r = _step(model, inputs, True, seed, options)
    out_b, g_b, x_b = _step(model, inputs, False, seed, options)
    if set(g_r) != set(g_b):
        raise AssertionError(f"gradients for different parameters: {sorted(set(g_r) ^ set(g_b))}")
    floor = grad_floor(g_b)
    errs = {"output": rel_err(out_r, out_b),
            "params": max((rel_err(g_r[n], g_b[n], floor) for n in g_b), default=0.0),
            "input": max((rel_err(a, b) for a, b in zip(x_r, x_b)), default=0.0)}
    errs["worst"] = max(errs.values())
    return errs


# ---- hypothesis strategies --------------------------------------------------------------------

from dataclasses import dataclass, field  # noqa: E402

from hypothesis import strategies as st  # noqa: E402

# update forms: (template, invertible?) -- t is the target, F and G functions of other streams
FORMS: dict[str, tuple[str, bool]] = {
    "add": ("{t} += {F}", True),
    "sub": ("{t} -= {F}", True),
    "affine_exp": ("{t} = {t} * exp(tanh({G})) + {F}", True),
    "sigmoid_eps": ("{t} = {t} * (sigmoid({G}) + 0.01) + {F}", True),
    "const_scale": ("{t} = {t} * -0.5 + {F}", True),
    "double": ("{t} = {t} * 2 - {F}", True),
    "zero_scale": ("{t} = {t} * 0 + {F}", False),
    "free_scale": ("{t} = {t} * {G} + {F}", False),
    "relu": ("{t} = relu({t}) + {F}", False),
    "square": ("{t} = {t} * {t} + {F}", False),
    "overwrite": ("{t} = {F}", False),
}


@dataclass
class RandomSpec:
    """A generated spec and what an independent oracle expects the verifier to say."""

    text: str
    valid: bool
    expected: list[str] = field(default_factory=list)  # why it is invalid, step by step


def _fn(reads: list[str], kind: int) -> str:
    terms = []
    for i, r in enumerate(reads):
        terms.append(f"linear({r}, out=8)" if (kind + i) % 2 else f"mlp(layernorm({r}))")
    return " + ".join(terms)


FAULTS = ("self_read", "stale_read", "form")


@st.composite
def coupling_specs(draw: st.DrawFn, min_streams: int = 2, max_streams: int = 4,
                   max_blocks: int = 2, max_steps: int = 4,
                   invalid: bool = True) -> RandomSpec:
    """Random reversible programs of coupling steps over 2-4 streams of shape [B, 4, 8].

    Each step picks a target, the streams its functions read, and an invertible update form.
    With `invalid`, half of the programs get one fault at a random step: the step reads its own
    target, reads a stale value through a local, or uses a non-invertible form; the oracle
    (`RandomSpec.valid`, `.expected`) records it."""
    n = draw(st.integers(min_streams, max_streams))
    names = [f"s{i}" for i in range(n)]
    good = [k for k, (_, ok) in FORMS.items() if ok]
    bad = [k for k, (_, ok) in FORMS.items() if not ok]
    shape = [draw(st.integers(1, max_steps)) for _ in range(draw(st.integers(1, max_blocks)))]
    total = sum(shape)
    fault_at = draw(st.integers(0, total - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(FAULTS)) if fault_at >= 0 else None
    lines: list[str] = []
    expected: list[str] = []
    k = 0
    for steps in shape:
        lines.append("    block {")
        for _ in range(steps):
            here = fault if k == fault_at else None
            k += 1
            t = draw(st.sampled_from(names))
            others = [x for x in names if x != t]
            reads = draw(st.lists(st.sampled_from(others), min_size=1, max_size=2, unique=True))
            if here == "self_read":
                reads = [*reads, t]
                expected.append(f"{t} reads {t}")
            elif here == "stale_read":
                # a local taken before another stream's update, used after it
                r = reads[0]
                local = f"u{k}"
                lines.append(f"        {local} = layernorm({r})")
                lines.append(f"        {r} += {_fn([x for x in names if x != r][:1], 0)}")
                reads = [local if x == r else x for x in reads]
                expected.append(f"{t} reads a stale {r}")
            form = draw(st.sampled_from(bad if here == "form" else good))
            if here == "form":
                expected.append(f"{t}: {form}")
            kind = draw(st.integers(0, 1))
            lines.append("        " + FORMS[form][0].format(t=t, F=_fn(reads, kind),
                                                            G=f"linear({reads[0]}, out=8)"))
        lines.append("    }")
    text = (
        "model Random\ninput x: [B, 4, 8]\nreversible r {\n"
        f"    streams {', '.join(names)} = dup(x, {n})\n" + "\n".join(lines) + "\n}\n"
        f"y = concat({', '.join(names)}, dim=-1)\noutput y\n"
    )
    return RandomSpec(text=text, valid=not expected, expected=expected)
