"""The op catalogue's types: `OpDef`, `Attr`, the registry they are entered in, and value
formatting. The entries themselves are in the family modules (core, conv, vit, mvit, retention,
supervit, bifpn); importing `revdsl.catalogue` registers them all.

An `OpDef` says everything the pipeline needs to know about an op, so that adding a family means
adding entries here and runtime classes in `revdsl/runtime/`, never touching the pipeline:

* `inputs`/`positional`/`attrs`: how it is called (tensor inputs, then attributes);
* `shape`: the shape rule over symbolic input shapes;
* `params`, `macs`: parameter and multiply-accumulate counts (symbolic, per sample for MACs);
* `saved`: what plain autograd keeps for backward (shapes), for the memory predictor;
* emission: a runtime class (`module`) with constructor arguments (`ctor`), or a code template
  (`template`) for functional ops;
* `sympy_model`: for elementwise algebra, the exact function the invertibility prover reasons about;
* flags: `stochastic` (needs RNG replay), `structural` bijections with their inverse, and so on.

Nothing here imports torch: the compile path must stay torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl.ir import RuntimeRef
from revdsl.shapes import Shape

REQUIRED = object()


class OpShapeError(Exception):
    """Raised by a shape rule; the elaborator attaches the call's position."""


MAX_INT_ATTR = 10**7  # the largest integer attribute (channels, kernel, ...) by default
MAX_PARTS = 1024  # the most copies or chunks of one tensor


class AttrError(Exception):
    """Raised when an attribute value is not acceptable; the elaborator attaches the position."""


@dataclass(frozen=True)
class Attr:
    """An op attribute.

    kind: 'int', 'float', 'bool', 'str', 'ints' (list of ints), 'floats', 'number' (int or float).
    `runtime`: may be a call-time option. `symbolic`: may depend on a model argument.
    `minimum` / `maximum`: bounds of an 'int' given in a spec (an attribute that counts things,
    such as heads or a kernel size, has minimum 1; the maximum keeps a mistyped number from
    building a model that exhausts memory or time). Defaults are not checked against them.
    """

    name: str
    kind: str
    default: Any = REQUIRED
    minimum: int | None = None
    maximum: int = MAX_INT_ATTR
    choices: tuple[Any, ...] | None = None
    runtime: bool = False
    symbolic: bool = True
    doc: str = ""
    # the values a number may take: (low, high, low_open, high_open); None bound: unbounded
    domain: tuple[float | None, float | None, bool, bool] | None = None
    # a probability of dropping something: a non-zero value makes the op draw random numbers
    random: bool = False

    def out_of_domain(self, v: float) -> str | None:
        """Why the number `v` is not an acceptable value of this attribute (None if it is)."""
        if self.domain is None:
            return None
        lo, hi, lo_open, hi_open = self.domain
        if (lo is not None and (v < lo or (lo_open and v == lo))) or (
            hi is not None and (v > hi or (hi_open and v == hi))
        ):
            return f"must be in {describe_domain(self.domain)}"
        return None


def describe_domain(d: tuple[float | None, float | None, bool, bool]) -> str:
    lo, hi, lo_open, hi_open = d
    if hi is None:
        return f"{'(' if lo_open else '['}{_num(lo)}, inf)" if lo is not None else "any number"
    return (f"{'(' if lo_open else '['}{_num(lo) if lo is not None else '-inf'}, "
            f"{_num(hi)}{')' if hi_open else ']'}")


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


# common domains
PROBABILITY = (0.0, 1.0, False, True)  # a drop rate: 1 would drop everything
POSITIVE = (0.0, None, True, False)
NONNEGATIVE = (0.0, None, False, False)
UNIT = (0.0, 1.0, False, False)
UNIT_OPEN_LOW = (0.0, 1.0, True, False)  # a keep rate: keeps at least one token


ShapeRule = Callable[[Sequence[Shape], dict[str, Any]], Shape | tuple[Shape, ...]]
CountRule = Callable[[Sequence[Shape], dict[str, Any]], Any]
SizeRule = Callable[[Sequence[Shape], dict[str, Any]], tuple[Any, tuple[int, ...]]]
@dataclass(frozen=True)
class Ref:
    """A tensor autograd saves that is one of the op's own inputs (`side="in"`) or outputs
    (`"out"`): the memory predictor counts a value once however many ops save it, as the
    allocator does. `when`: saved only when that input needs a gradient (`a * b` keeps b for
    a's gradient). A saved input that is a number (a constant) costs nothing."""

    side: str
    index: int = 0
    when: int | None = None


@dataclass(frozen=True)
class Buffer:
    """A new tensor autograd saves, with its element size in bytes (max-pool indices are int64:
    8; a dropout mask is float32 on CPU, bool on CUDA: DROPOUT_MASK_BYTES)."""

    shape: Shape
    itemsize: int


# dropout's mask: on CPU torch multiplies by a float mask (4 bytes an element, measured); its
# fused CUDA kernel keeps a bool mask (1 byte). The predictor counts the CPU figure.
DROPOUT_MASK_BYTES = 4

IN0 = Ref("in", 0)
OUT0 = Ref("out", 0)

# what plain autograd keeps for an op: its own inputs/outputs (Ref) or new tensors (Shape)
SavedRule = Callable[[Sequence[Shape], Sequence[Shape], dict[str, Any]],
                     Sequence["Shape | Ref | Buffer"]]


def _zero(_shapes: Sequence[Shape], _attrs: dict[str, Any]) -> Any:
    return sympy.Integer(0)


def _nothing_saved(_i: Sequence[Shape], _o: Sequence[Shape], _a: dict[str, Any]) -> list[Shape]:
    return []


@dataclass(frozen=True)
class OpDef:
    name: str
    doc: str
    shape: ShapeRule
    inputs: int | str = 1  # number of tensor inputs, or '*' for one or more
    positional: tuple[str, ...] = ()  # attributes that may be given positionally after inputs
    attrs: tuple[Attr, ...] = ()
    n_outputs: Callable[[dict[str, Any]], int] = lambda a: 1
    # emission
    module: str | None = None  # runtime class holding the op's parameters
    # when the class depends on the attributes (e.g. a layout): attributes -> class
    module_for: Callable[[dict[str, Any]], str] | None = None
    # constructor arguments, named (the names also name a block class's arguments when the value
    # differs between blocks); the first `ctor_positional` are passed positionally
    ctor: Callable[[Sequence[Shape], dict[str, Any]], list[tuple[str, Any]]] | None = None
    ctor_positional: int = 1
    call_kwargs: tuple[str, ...] = ()  # attributes passed at call time (runtime options)
    # functional ops: code with {0}, {1}, {args} and {attr} fields, or a function of the argument
    # code strings and the attribute dict
    template: str | Callable[[list[str], dict[str, Any]], str] | None = None
    precedence: int = 100  # for infix templates: 10 (+ -), 20 (* /), 30 (unary -), 40 (**)
    runtime: tuple[str, ...] = ()  # extra runtime definitions the emitted code needs
    default_name: str | None = None  # base of the submodule name
    # semantics
    kind: str = "module"  # 'module' | 'function' | 'algebra' | 'structural'
    sympy_model: Callable[..., sympy.Expr] | None = None
    stochastic: bool = False
    elementwise: bool = False
    # each row (all dims but the last) of the output depends only on the same row of the inputs,
    # reproducibly per piece (no draws whose number depends on the shape): the reversible
    # backward may recompute such a step in chunks of tokens (attributes -> whether it is)
    rowwise: Callable[[dict[str, Any]], bool] | None = None
    inverse: str | None = None  # for 'structural' bijections: the op that undoes it
    # made by the compiler only (e.g. the permutation of a simultaneous stream assignment): a
    # spec cannot call it, and `revdsl ops` does not list it
    internal: bool = False
    # the inverse op's attributes, from this op's attributes and number of inputs (default: the
    # same attributes, as for space_to_depth / depth_to_space)
    inverse_attrs: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    injective_only: bool = False  # e.g. dup: injective, not onto (a stored boundary)
    # its outputs share their first input's storage (dup's copies, chunk's pieces, a renaming):
    # the memory predictor counts what they keep as that storage
    views_input: bool = False
    # a layer that is a bijection of its one input by construction, with an `inverse` method:
    # usable as a step on the stream itself (`x = inv_conv1x1(x)`); the text says why
    bijective: str | None = None
    boundary_only: bool = False  # discards information (pruning): never inside a reversible step
    causal: bool | None = None  # token mixers: whether output n depends only on inputs <= n
    # why this op cannot sit inside a coupling when it changes the stream's shape (for messages)
    coupling_hint: Callable[[dict[str, Any]], str | None] | None = None
    # a semantic check run by the verifier: (attributes, call-time option choices) -> problem
    verify: Callable[[dict[str, Any], dict[str, tuple[Any, ...]]], str | None] | None = None
    # attributes that pick one of several forms of the same function (e.g. retention's `mode`):
    # a call-time option used only through them must not change the result (`revdsl test`)
    forms: tuple[str, ...] = ()
    # (an input size expression, its allowed values): e.g. the token counts that have a position
    # table; tells `revdsl stats/test/bench` which values a free input dimension may take
    size_choices: SizeRule | None = None
    # costs
    params: CountRule = _zero
    macs: Callable[[Sequence[Shape], Sequence[Shape], dict[str, Any]], Any] = (
        lambda i, o, a: sympy.Integer(0)
    )
    saved: SavedRule = _nothing_saved
    checks: tuple[Callable[[Sequence[Shape], dict[str, Any]], str | None], ...] = field(
        default=()
    )

    def attr(self, name: str) -> Attr | None:
        for a in self.attrs:
            if a.name == name:
                return a
        return None

    def is_rowwise(self, attrs: dict[str, Any]) -> bool:
        if self.rowwise is not None:
            return bool(self.rowwise(attrs))
        return self.elementwise and not self.stochastic

    @property
    def has_module(self) -> bool:
        return self.module is not None

    def has_parameters(self, shapes: Sequence[Shape], attrs: dict[str, Any]) -> bool:
        """Whether a call with these input shapes and attributes holds learned parameters (a
        count that cannot be evaluated counts as yes)."""
        try:
            n = self.params(shapes, attrs)
        except (TypeError, ValueError, KeyError):
            return True
        return not (getattr(n, "is_zero", False) or n == 0)

    def module_class(self, attrs: dict[str, Any]) -> str:
        """The runtime class emitted for a call with these attributes."""
        assert self.module is not None, self.name
        return self.module_for(attrs) if self.module_for is not None else self.module


_REGISTRY: dict[str, OpDef] = {}


def registry() -> dict[str, OpDef]:
    """Every registered op by name (complete once `revdsl.catalogue` is imported)."""
    return _REGISTRY


_ORIGIN: dict[str, str] = {}


def family_of(name: str) -> str:
    """The catalogue file that registered op `name` (`core`, `vit`, `swin`, ...)."""
    return _ORIGIN.get(name, "core")


def register(op: OpDef) -> OpDef:
    import sys

    assert op.name not in _REGISTRY, f"op {op.name} registered twice"
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if caller == __name__:  # (a helper in this file registering for its caller)
        caller = sys._getframe(2).f_globals.get("__name__", "")
    _ORIGIN[op.name] = str(caller).rsplit(".", 1)[-1]
    assert op.kind in ("module", "function", "algebra", "structural"), op.kind
    if op.kind == "module":
        assert op.module is not None and op.ctor is not None, op.name
    if op.kind in ("function", "algebra"):
        assert op.template is not None, op.name
    if op.kind == "algebra":
        assert op.sympy_model is not None, op.name
    _REGISTRY[op.name] = op
    return op


def render_template(op: OpDef, args: list[str], attrs: dict[str, Any]) -> str:
    """The code of a functional op applied to argument code `args`."""
    assert op.template is not None, op.name
    if callable(op.template):
        return op.template(args, attrs)
    fields = {k: fmt_value(v) for k, v in attrs.items()}
    return op.template.format(*args, args=", ".join(args), **fields)


def as_tuple(value: Any) -> tuple[Any, ...]:
    """An attribute that takes one value or several (`dim=1`, `dim=[1, 2]`) as a tuple."""
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def fmt_value(value: Any) -> str:
    """Python source for an attribute value (numbers, strings, tuples, runtime refs)."""
    if isinstance(value, RuntimeRef):
        return value.name
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "None"
    if isinstance(value, tuple | list):
        inner = ", ".join(fmt_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, sympy.Basic):
        from revdsl.pyprint import py_expr

        return py_expr(value)
    raise TypeError(f"cannot format attribute value {value!r}")
