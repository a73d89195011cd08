"""The IR: a fully elaborated program, the only type later stages see.

`lower.py` turns an `ast.Spec` into a `Program`. Loops, conditionals and parameter arithmetic are
gone; what is left is

* dataflow nodes (`Node` and subclasses) forming a DAG: inputs, op applications, constants, and
  reads of a stream's value at a given version;
* plain statements (`Assign`), run under ordinary autograd: stems, transitions, heads;
* reversible `Segment`s: streams created at entry, then `Block`s of steps (`Update`, `Create`,
  `Restructure`, and `Phase` groups of simultaneous updates), then the streams' final versions.

Nodes compare by identity (they are shared in a DAG); everything else is a frozen dataclass.
Attribute values are python numbers, strings, tuples, sympy expressions (when they depend on a
model argument) or `RuntimeRef`s (a call-time option).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy

from revdsl.shapes import Shape
from revdsl.source import Span


def _span() -> Any:
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RuntimeRef:
    """A call-time option used as an op attribute (e.g. `mode`, `keep_rate`)."""

    name: str
    symbol: sympy.Symbol | None = None

    def __str__(self) -> str:
        return self.name


# ---- dataflow nodes ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class Node:
    """A tensor value. `id` is unique in a program and follows creation order."""

    id: int
    shape: Shape
    span: Span | None = _span()
    dtype: str = "float"


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class InputNode(Node):
    name: str


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class StreamNode(Node):
    """The value of stream `stream` after its `version`-th change in segment `segment`."""

    segment: str
    stream: str
    version: int


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class ConstNode(Node):
    # a number; or, between segments and in the head, a model argument or call-time option
    # (a sympy expression of argument symbols, or a RuntimeRef) read when the model runs
    value: Any


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class OpNode(Node):
    """An application of catalogue op `op`.

    `module` names the submodule that holds its parameters (None for functional ops). For ops
    with several outputs `n_out` > 1, `shape` is the first output's and `OutNode`s select each.
    """

    op: str
    inputs: tuple[Node, ...]
    attrs: tuple[tuple[str, Any], ...]
    module: str | None = None
    n_out: int = 1
    out_shapes: tuple[Shape, ...] = ()
    # an elementwise op inside a coupling whose shape rule failed: the elaborator keeps going so
    # that the verifier can report the shape change at the step, with this message
    problem: str | None = None

    def attr(self, name: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)


@dataclass(frozen=True, eq=False, slots=True, kw_only=True)
class OutNode(Node):
    """Output `index` of a multi-output op."""

    source: OpNode
    index: int


# ---- program structure ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """A spec parameter: `kind` 'param' (compile time) or 'arg' (model constructor argument)."""

    name: str
    kind: str
    value: Any
    default: Any
    symbol: sympy.Symbol | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """A call-time option: an argument of the model's forward with a fixed set of choices."""

    name: str
    choices: tuple[Any, ...]
    default: Any
    symbol: sympy.Symbol | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign:
    """A plain statement: `targets = value` (one target per output of value)."""

    targets: tuple[str, ...]
    values: tuple[Node, ...]
    head: bool = False
    list_name: str | None = None  # `h = [a, b]`: the list whose elements the targets name
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """A coupling step: stream `target` goes from `before` to `after` = `expr`.

    `expr` is the whole right-hand side; the verifier splits it into the update formula h(t, ...)
    and the opaque functions it adds or multiplies in.
    """

    target: str
    before: StreamNode
    after: StreamNode
    expr: Node
    written: str  # how it was written: '+=', '-=', '*=', '/=' or '='
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Create:
    """`stream target = expr`: a new stream computed from others (an injective extension)."""

    target: str
    after: StreamNode
    expr: Node
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Restructure:
    """A bijective rearrangement of streams (chunk, cat, space-to-depth): inputs are consumed."""

    op: str
    attrs: tuple[tuple[str, Any], ...]
    inputs: tuple[StreamNode, ...]
    outputs: tuple[StreamNode, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """Simultaneous updates: every read inside sees the values the phase started from.

    `steps` are in the order written (the phase order).
    """

    name: str | None
    steps: tuple[Update | Create, ...]
    span: Span | None = _span()


Step = Update | Create | Restructure | Phase


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """One unit of the reversible backward: its steps are undone together, in reverse."""

    kind: str  # 'block' or 'silo'
    name: str | None
    index: int
    steps: tuple[Step, ...]
    inputs: tuple[StreamNode, ...]
    outputs: tuple[StreamNode, ...]
    modules: tuple[tuple[str, OpNode], ...]
    locals: tuple[tuple[str, Node], ...] = ()  # values named inside the block (for messages)
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """How a segment's stream starts: `node` is a value computed outside the segment."""

    stream: str
    node: Node
    start: StreamNode


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    name: str
    entry: tuple[Entry, ...]
    entry_assign: tuple[Assign, ...]
    blocks: tuple[Block, ...]
    exits: tuple[StreamNode, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlainBlock:
    """`block name { ... }` outside a segment: ordinary (stored) computation grouped into one
    module, e.g. a stage transition. In reversible mode it is recomputed from its inputs in the
    backward, so only its inputs are kept."""

    name: str
    label: str  # the name as written (several blocks from one loop share it)
    assigns: tuple[Assign, ...]
    modules: tuple[tuple[str, OpNode], ...]
    inputs: tuple[Node, ...]  # values from outside the block that it reads
    head: bool = False
    span: Span | None = _span()


Item = Assign | Segment | PlainBlock


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    name: str
    source_name: str
    params: tuple[Param, ...]
    options: tuple[Option, ...]
    inputs: tuple[InputNode, ...]
    items: tuple[Item, ...]
    output: Node
    output_name: str
    # `output a, b`: the outputs after the first (forward returns them all, as a tuple)
    more_outputs: tuple[tuple[str, Node], ...] = ()
    model_modules: tuple[tuple[str, OpNode], ...]
    overrides: tuple[tuple[str, Any], ...] = ()
    span: Span | None = _span()
    # positioned warnings found while elaborating (a segment left with no blocks, say)
    warnings: tuple[Any, ...] = ()
    # user functions: (name, the definition's span, the spans of its calls)
    functions: tuple[tuple[str, Span | None, tuple[Span | None, ...]], ...] = ()

    def in_function(self, span: Span | None) -> str | None:
        """A note for a diagnostic inside a function's body: which calls reach it."""
        if span is None:
            return None
        for name, where, calls in self.functions:
            if where is not None and where.line <= span.line <= where.end_line:
                lines = ", ".join(str(c.line) for c in calls if c is not None) or "nowhere"
                return (f"in function '{name}' (line {where.line}), expanded at its "
                        f"call{'s' if len(calls) != 1 else ''} on line"
                        f"{'s' if len(calls) != 1 else ''} {lines}")
        return None

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(i for i in self.items if isinstance(i, Segment))

    @property
    def plain_blocks(self) -> tuple[PlainBlock, ...]:
        return tuple(i for i in self.items if isinstance(i, PlainBlock))

    def regions(self) -> list[tuple[Item, str]]:
        """Each item with the part of the model it belongs to: 'segment' for a reversible
        segment; for stored computation 'stem' (before the first segment), 'transition'
        (between segments) or 'head' (after the last, or marked `head`). The one place this
        is decided (the graph, the memory accounting and the drawings all ask here)."""
        n = len(self.segments)
        seen = 0
        out: list[tuple[Item, str]] = []
        for item in self.items:
            if isinstance(item, Segment):
                out.append((item, "segment"))
                seen += 1
            elif item.head or (seen == n and n):
                out.append((item, "head"))
            else:
                out.append((item, "stem" if seen == 0 else "transition"))
        return out

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    @property
    def args(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.kind == "arg")

    @property
    def arg_defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if p.kind == "arg"}


def walk(roots: tuple[Node, ...] | list[Node], stop: set[int] | None = None) -> list[Node]:
    """All nodes reachable from `roots` through op inputs, in a deterministic post-order."""
    seen: set[int] = set(stop or ())
    order: list[Node] = []
    stack: list[tuple[Node, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node.id in seen:
            continue
        seen.add(node.id)
        stack.append((node, True))
        for child in reversed(children(node)):
            if child.id not in seen:
                stack.append((child, False))
    return order


def op_nodes(program: Program) -> list[OpNode]:
    """Every op application in the program (stems, steps, blocks, head), in a fixed order."""
    roots: list[Node] = [program.output, *(n for _, n in program.more_outputs)]
    for item in program.items:
        if isinstance(item, Assign):
            roots.extend(item.values)
        elif isinstance(item, PlainBlock):
            roots.extend(v for a in item.assigns for v in a.values)
        else:
            roots.extend(v for a in item.entry_assign for v in a.values)
            for block in item.blocks:
                for step in block.steps:
                    inner = step.steps if isinstance(step, Phase) else (step,)
                    roots.extend(s.expr for s in inner if not isinstance(s, Restructure))
    return [n for n in walk(roots) if isinstance(n, OpNode)]


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, OpNode):
        return node.inputs
    if isinstance(node, OutNode):
        return (node.source,)
    return ()
