"""Differential testing: a compiled spec must compute what the reference evaluator computes.

`program_specs()` is a hypothesis strategy of valid specs that exercise compile-time control flow
around couplings: assignments inside segments (between blocks, inside `repeat` and `block`),
`for`/`if`, lists, model arguments in attributes, stochastic layers, simplifying and
broadcasting updates, several segments joined by stored statements. `compare(text)` compiles a
spec, loads the module, runs it in both modes and the `Reference` evaluator on the same
parameters, inputs and random seed, and returns the worst relative differences of the outputs
and of every parameter's and input's gradient. A wrong compile shows as a difference far above
float64 round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from revdsl.reference import Reference

# ---- the strategy ------------------------------------------------------------------------------

_RATES = ("0.0", "0.5", "r", "r * 0.5", "rate", "rate * 0.5 + 0.1")


@st.composite
def _rate_expr(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(_RATES))


def _coupling(target: str, other: str, kind: int, w: str) -> str:
    f = f"linear({other}, out={w})"
    return [
        f"{target} += drop_path({f}, rate=rate)",
        f"{target} += linear(gelu({other}), out={w})",
        f"{target} -= mlp(layernorm({other}), ratio=2)",
        f"{target} = {target} * exp(tanh({f})) + linear({other}, out={w})",
        f"{target} = {target} * (sigmoid({f}) + 0.5) - {f}",
        f"{target} += mean({other}, dim=1, keepdim=true)",
        f"{target} += dropout({f}, p=rate)",
        f"{target} = {target} * (softplus({f}) + 0.01) + linear({other}, out={w})",
        f"{target} = {target} * (softsign({f}) + 2) - {f}",
        f"{target}, {other} = [{other}, {target} + linear({other}, out={w})]",
        "a, b = [b, a]",
    ][kind]


@st.composite
def _statements(draw: st.DrawFn, depth: int, w: str) -> list[str]:
    """Statements of a segment body (couplings alternate between the two streams)."""
    out: list[str] = []
    n = draw(st.integers(1, 4))
    for _ in range(n):
        choice = draw(st.integers(0, 6 if depth == 0 else 3))
        if choice == 0:
            out.append(f"rate = {draw(_rate_expr())}")
        elif choice in (1, 2):
            t, o = ("a", "b") if draw(st.booleans()) else ("b", "a")
            out.append(_coupling(t, o, draw(st.integers(0, 10)), w))
        elif choice == 3:
            out.append("k = k + 1")
            out.append(f"if k % 2 == 0 {{ {_coupling('a', 'b', 0, w)} }} "
                       f"else {{ {_coupling('b', 'a', 3, w)} }}")
        elif choice == 4:
            inner = draw(_statements(depth + 1, w))
            var = draw(st.sampled_from(["i", "_"]))
            rate = f"rate = r * {var} / n" if var != "_" else "rate = rate"
            head = f"repeat {var} in range(n)" if var != "_" else "repeat n"
            out.append(head + " {\n        " + rate + "\n        "
                       + "\n        ".join(inner) + "\n    }")
        elif choice == 5:
            inner = draw(_statements(depth + 1, w))
            out.append("block {\n        g = sigmoid(linear(b, out=w))\n"
                       "        a = a * g + a * (1 - g) + linear(b, out=w)\n        "
                       + "\n        ".join(inner) + "\n    }")
        else:
            inner = draw(_statements(depth + 1, w))
            out.append("for j in widths {\n        rate = rate * j / 4\n        "
                       + "\n        ".join(inner) + "\n    }")
    return out


@st.composite
def program_specs(draw: st.DrawFn) -> str:
    """A valid spec with compile-time control flow around couplings (see the module doc)."""
    w = draw(st.sampled_from([4, 6, 8]))
    n = draw(st.integers(1, 2))
    r = draw(st.sampled_from(["0.0", "0.25"]))
    segments = draw(st.integers(1, 2))
    lines = [
        "model Gen",
        f"param w = {w}",
        f"param n = {n}",
        "param widths = [1, 2]",
        f"arg r = {r}",
        "input img: [B, 3, w]",
        "x = linear(img, out=w)",
        "k = 0",
    ]
    for s in range(segments):
        if s > 0:
            lines.append("x = layernorm(concat(a, b, dim=-1))")
            lines.append("x = linear(x, out=w)")
        lines.append(f"reversible seg{s} {{")
        lines.append("    streams a, b = dup(x)")
        lines.append(f"    rate = {draw(st.sampled_from(['0.0', 'r']))}")
        lines.extend("    " + t for t in draw(_statements(0, "w")))
        lines.append("}")
    lines.append("z = concat(a, b, dim=-1)")
    if draw(st.booleans()):
        lines.append("head {\n    y = linear(mean(z, dim=1), out=3) as head\n}")
    else:
        lines.append("y = linear(mean(z, dim=1), out=3) as head")
    lines.append("output y")
    return "\n".join(lines) + "\n"


# ---- the comparison ----------------------------------------------------------------------------


@dataclass
class Difference:
    """Worst relative differences against the reference evaluator, per mode."""

    output: dict[str, float]
    params: dict[str, float]
    inputs: dict[str, float]
    worst_param: dict[str, str]

    @property
    def worst(self) -> float:
        return max([*self.output.values(), *self.params.values(), *self.inputs.values()])


def _run(model: torch.nn.Module, xs: list[torch.Tensor], seed: int, **options: Any
         ) -> tuple[torch.Tensor, list[torch.Tensor | None], list[torch.Tensor | None]]:
    model.zero_grad(set_to_none=True)
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    torch.manual_seed(seed)
    out = model(*xs, **options)
    outs = out if isinstance(out, tuple) else (out,)  # (`output a, b`: every output counts)
    sum(o.square().mean() for o in outs).backward()
    out = torch.cat([o.detach().flatten() for o in outs])
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    return out.detach(), grads, [x.grad for x in xs]


def compare(text: str, overrides: dict[str, Any] | None = None, batch: int = 2, seed: int = 0,
            args: dict[str, Any] | None = None, sizes: dict[str, int] | None = None,
            name: str = "<spec>", **options: Any) -> Difference:
    """Compile `text`, run the module (reversible and plain) and the reference evaluator on the
    same parameters, inputs and seed, in training mode, in float64."""
    from revdsl.loader import load
    from revdsl.pipeline import elaborate
    from revdsl.testing import grad_floor, random_inputs, rel_err

    overrides = dict(overrides or {})
    from revdsl import sizes as free

    module = load(text, **overrides)
    model = module.create_model(**(args or {})).double().train()
    program = elaborate(text, name, overrides)
    sizes = {**{k: v[-1] for k, v in free.choices(program).items()}, **(sizes or {})}
    xs = random_inputs(program, batch=batch, seed=seed, sizes=sizes)
    ref = Reference(text, name, overrides, args).double().train()
    with torch.no_grad():
        torch.manual_seed(seed)
        ref(*xs, **options)  # builds its layers
    ref.copy_parameters_from(model)
    out_r, g_r, x_r = _run(ref, xs, seed + 1, **options)
    diff = Difference({}, {}, {}, {})
    names = [n for n, _ in model.named_parameters()]
    for mode in (True, False):
        model.reversible = mode
        key = "reversible" if mode else "plain"
        out, g, x = _run(model, xs, seed + 1, **options)
        diff.output[key] = rel_err(out, out_r)
        worst, where = 0.0, ""
        # a gradient that is zero in exact arithmetic (a norm bias before a norm) is compared
        # against a floor relative to the largest gradient, not against its own rounding noise
        floor = grad_floor([t for t in g_r if t is not None])
        for name, a, b in zip(names, g, g_r, strict=True):
            a = torch.zeros_like(b) if a is None and b is not None else a
            b = torch.zeros_like(a) if b is None and a is not None else b
            if a is None or b is None:
                continue
            err = rel_err(a, b, floor)
            if err > worst:
                worst, where = err, name
        diff.params[key] = worst
        diff.worst_param[key] = where
        diff.inputs[key] = max((rel_err(a, b) for a, b in zip(x, x_r, strict=True)
                                if a is not None and b is not None), default=0.0)
    return diff
