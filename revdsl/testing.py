"""Testing helpers for generated models (also used by `revdsl test`).

* `concrete`: a symbolic shape made concrete (batch and free dimensions given values);
* `random_inputs`: random tensors for a program's inputs;
* `block_inverse_errors`: for every reversible block, inverse(forward(x)) against x;
* `gradient_errors`: the reversible backward against plain autograd, same seed.

* `form_errors`: the forms of one function (ViR's modes) against each other;
* `without_randomness`: a generated model with every random draw turned off;
* hypothesis strategies: random specs with what a verifier must say of them (`coupling_specs`,
  `silo_specs`, `transition_specs`, `any_specs`) and random inputs (`inputs_for`).
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
        elif hasattr(m, "draws_random"):  # the runtime's DropPath (rate) and attentions
            for attr in ("rate", "attn_drop"):
                if hasattr(m, attr):
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
    for p in model.parameters():
        r = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
        if p.dim() >= 2:
            p.copy_(r * (gain / math.sqrt(max(p[0].numel(), 1))))
        else:
            p.add_(r * (0.1 * gain))


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
    """A generated spec and what an independent oracle expects the verifier to say.

    `expected` says in words why it is invalid (empty when valid); `reasons` pins each fault to
    the line its error must point at and a phrase the error must contain; `transitions` is the
    number of stored transitions between segments the report must list."""

    text: str
    valid: bool
    expected: list[str] = field(default_factory=list)
    reasons: list[tuple[int, str]] = field(default_factory=list)
    transitions: int = 0
    family: str = "coupling"


def _fn(reads: list[str], kind: int) -> str:
    terms = []
    for i, r in enumerate(reads):
        terms.append(f"linear({r}, out=8)" if (kind + i) % 2 else f"mlp(layernorm({r}))")
    return " + ".join(terms)


FAULTS = ("self_read", "stale_read", "form")
_HEADER_LINES = 4  # model, input, `reversible r {`, `streams ...`


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
    reasons: list[tuple[int, str]] = []
    k = 0
    for steps in shape:
        lines.append("    block {")
        for _ in range(steps):
            here = fault if k == fault_at else None
            k += 1
            t = draw(st.sampled_from(names))
            others = [x for x in names if x != t]
            reads = draw(st.lists(st.sampled_from(others), min_size=1, max_size=2, unique=True))
            line = _HEADER_LINES + len(lines) + 1  # the line of this step, unless moved below
            if here == "self_read":
                reads = [*reads, t]
                expected.append(f"{t} reads {t}")
                reasons.append((line, f"{t} is updated by a function that reads {t}"))
            elif here == "stale_read":
                # a local taken before another stream's update, used after it
                r = reads[0]
                local = f"u{k}"
                lines.append(f"        {local} = layernorm({r})")
                lines.append(f"        {r} += {_fn([x for x in names if x != r][:1], 0)}")
                reads = [local if x == r else x for x in reads]
                expected.append(f"{t} reads a stale {r}")
                reasons.append((line + 2, f"reads an earlier value of {r}"))
            form = draw(st.sampled_from(bad if here == "form" else good))
            if here == "form":
                expected.append(f"{t}: {form}")
                reasons.append((line, f"the update of {t} cannot be undone"))
            kind = draw(st.integers(0, 1))
            lines.append("        " + FORMS[form][0].format(t=t, F=_fn(reads, kind),
                                                            G=f"linear({reads[0]}, out=8)"))
        lines.append("    }")
    text = (
        "model Random\ninput x: [B, 4, 8]\nreversible r {\n"
        f"    streams {', '.join(names)} = dup(x, {n})\n" + "\n".join(lines) + "\n}\n"
        f"y = concat({', '.join(names)}, dim=-1)\noutput y\n"
    )
    return RandomSpec(text=text, valid=not expected, expected=expected, reasons=reasons)


# ---- multi-scale silos ------------------------------------------------------------------------

SILO_FAULTS = ("later_read", "self_read", "resolution", "twice")


def _transform(i: int, j: int, wrong: bool = False) -> str:
    """s[i] brought to scale j's resolution (halved per scale): strided conv down, conv and
    upsample up; `wrong` lands one scale finer (a resolution change; never one that would
    broadcast, as a coarser 1x1 would)."""
    if i < j:
        stride = 2 ** (j - i) // (2 if wrong else 1)
        return f"conv2d(s[{i}], out=4, stride={stride})"
    if i > j:
        factor = 2 ** (i - j) * (2 if wrong else 1)
        return f"upsample(conv2d(s[{i}], out=4, kernel=1), {factor})"
    return f"conv2d(s[{i}], out=4, stride=2)" if wrong else f"conv2d(s[{i}], out=4)"


@st.composite
def silo_specs(draw: st.DrawFn, max_scales: int = 3, max_silos: int = 2,
               invalid: bool = True) -> RandomSpec:
    """Random multi-scale reversible programs (RevSilo-like) over scales s[0..n-1] of shape
    [B, 4, 8/2^i, 8/2^i]: silos that each add a new coarsest scale, then silos of one or two
    phases whose updates read only scales that are fixed at that point (updated earlier in the
    phase, or not in it). With `invalid`, half get one fault: a read of a scale the phase
    updates later, a read of the updated scale itself, a transform that changes the
    resolution, or a scale updated twice in one phase."""
    n = draw(st.integers(2, max_scales))
    lines = ["model RandomSilo", "input x: [B, 4, 8, 8]", "reversible r {",
             "    streams s[0] = x"]
    for j in range(1, n):
        lines += ["    silo {", "        phase {",
                  f"            stream s[{j}] = {_transform(j - 1, j)}", "        }", "    }"]
    silos: list[list[list[int]]] = []
    for _ in range(draw(st.integers(1, max_silos))):
        phases = []
        for _ in range(draw(st.integers(1, 2))):
            order = draw(st.permutations(list(range(n))))
            phases.append(list(order[: draw(st.integers(1, n))]))
        silos.append(phases)
    n_updates = sum(len(ph) for phases in silos for ph in phases)
    fault_at = draw(st.integers(0, n_updates - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(SILO_FAULTS)) if fault_at >= 0 else None
    expected: list[str] = []
    reasons: list[tuple[int, str]] = []
    k = 0
    for phases in silos:
        lines.append("    silo {")
        for ph in phases:
            lines.append("        phase {")
            for pos, j in enumerate(ph):
                here = fault if k == fault_at else None
                k += 1
                later = ph[pos + 1:]
                allowed = [i for i in range(n) if i != j and i not in later]
                if here == "later_read" and not later:
                    here = None  # nothing is updated later in this phase
                reads = draw(st.lists(st.sampled_from(allowed), min_size=1,
                                      max_size=min(2, len(allowed)), unique=True)
                             ) if allowed else []
                line = len(lines) + 1
                wrong = -1
                if here == "later_read":
                    bad = draw(st.sampled_from(later))
                    reads = [*reads, bad]
                    expected.append(f"s{j} reads s{bad}, updated later in the phase")
                    reasons.append((line, f"reads s{bad}, which this phase updates later"))
                elif here == "self_read":
                    reads = [*reads, j]
                    expected.append(f"s{j} reads itself")
                    reasons.append((line, f"s{j} is updated by a function that reads s{j}"))
                elif not reads:
                    continue  # a fault that needs a read, and nothing to read: leave it out
                elif here == "resolution":
                    reads = reads[:1]
                    wrong = reads[0]
                    expected.append(f"s{j} gets a value at another resolution")
                    reasons.append((line, "a reversible step cannot change a stream's shape"))
                terms = " + ".join(_transform(i, j, wrong=i == wrong) for i in reads)
                lines.append(f"            s[{j}] += {terms}")
                if here == "twice":
                    expected.append(f"s{j} updated twice in a phase")
                    reasons.append((line + 1, "is updated twice in one phase"))
                    lines.append(f"            s[{j}] += {terms}")
            if lines[-1] == "        phase {":
                lines.pop()  # an empty phase: drop it
            else:
                lines.append("        }")
        if lines[-1] == "    silo {":
            lines.pop()
        else:
            lines.append("    }")
    lines += ["}", "y = " + " + ".join(f"global_avg_pool(s[{i}])" for i in range(n)),
              "output y"]
    return RandomSpec(text="\n".join(lines) + "\n", valid=not expected, expected=expected,
                      reasons=reasons, family="silo")


# ---- segments with stored transitions -----------------------------------------------------

TRANSITION_FAULTS = ("width_in_coupling", "overwrite")


@st.composite
def transition_specs(draw: st.DrawFn, max_segments: int = 3, invalid: bool = True
                     ) -> RandomSpec:
    """Random chains of reversible segments of different widths joined by stored transitions
    (a plain statement or a named `block`), which the report must list as transitions. With
    `invalid`, half get one fault inside a segment: a coupling whose function changes the
    stream's width (which belongs in a transition), or a step that overwrites a stream."""
    n_seg = draw(st.integers(2, max_segments))
    widths = [draw(st.sampled_from([4, 8, 12])) for _ in range(n_seg)]
    steps = [draw(st.integers(1, 3)) for _ in range(n_seg)]
    total = sum(steps)
    fault_at = draw(st.integers(0, total - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(TRANSITION_FAULTS)) if fault_at >= 0 else None
    lines = ["model RandomStages", f"input x: [B, 5, {widths[0]}]", "z = layernorm(x)"]
    expected: list[str] = []
    reasons: list[tuple[int, str]] = []
    k = 0
    for i, w in enumerate(widths):
        if i > 0:
            if draw(st.booleans()):
                lines.append(f"z = linear(concat(a, b, dim=-1), out={w})")
            else:
                lines += [f"block stage{i} {{", "    h = concat(a, b, dim=-1)",
                          f"    z = linear(h + mlp(layernorm(h)), out={w})", "}"]
        lines += [f"reversible seg{i} {{", "    streams a, b = dup(z)"]
        for _ in range(steps[i]):
            here = fault if k == fault_at else None
            k += 1
            t, r = draw(st.sampled_from([("a", "b"), ("b", "a")]))
            line = len(lines) + 1
            if here == "width_in_coupling":
                lines.append(f"    {t} += linear({r}, out={w + 4})")
                expected.append(f"{t} gets width {w + 4} inside a coupling")
                reasons.append((line, "a reversible step cannot change a stream's shape"))
            elif here == "overwrite":
                lines.append(f"    {t} = mlp(layernorm({r}))")
                expected.append(f"{t} overwritten")
                reasons.append((line, f"the update of {t} cannot be undone"))
            else:
                fn = draw(st.sampled_from(["mlp(layernorm({r}))",
                                           "attention(layernorm({r}), heads=2)",
                                           "linear({r}, out={w})"]))
                lines.append(f"    {t} += " + fn.format(r=r, w=w))
        lines.append("}")
    lines += ["y = mean(concat(a, b, dim=-1), dim=1)", "output y"]
    return RandomSpec(text="\n".join(lines) + "\n", valid=not expected, expected=expected,
                      reasons=reasons, transitions=n_seg - 1, family="transition")


def any_specs(invalid: bool = True) -> st.SearchStrategy[RandomSpec]:
    """Random specs of every kind above."""
    return st.one_of(coupling_specs(invalid=invalid), silo_specs(invalid=invalid),
                     transition_specs(invalid=invalid))


def invalid_specs() -> st.SearchStrategy[RandomSpec]:
    """Random specs that the verifier must reject, each with its expected reasons."""
    return any_specs(invalid=True).filter(lambda s: not s.valid)


# ---- random inputs ----------------------------------------------------------------------------


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
