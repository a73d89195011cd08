"""Values that exist only while a spec is elaborated: tensors, streams and the segment, block,
phase and stored-block being built."""

from __future__ import annotations

from dataclasses import dataclass, field

from revdsl import ir
from revdsl.shapes import Shape
from revdsl.source import Span

# ---- elaboration-time values -----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TVal:
    """A tensor value during elaboration."""

    node: ir.Node
    scope: int  # index of the scope it was defined in (to refuse reads across a segment wall)


@dataclass(eq=False)
class StreamSlot:
    """A live stream of the segment being elaborated."""

    name: str
    current: ir.StreamNode


@dataclass(eq=False)
class StreamArray:
    """`s` in `s[0]`, `s[1]`: indices -> stream names."""

    base: str
    names: dict[int, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Tomb:
    """A stream that a restructure consumed (reading it again is an error)."""

    name: str
    span: Span | None
    op: str = ""
    into: tuple[str, ...] = ()

    def message(self, shown: str | None = None) -> str:
        """Why the stream cannot be read: where its value went."""
        line = self.span.line if self.span is not None else "?"
        where = f" into {', '.join(self.into)}" if self.into else ""
        return (f"stream '{shown or self.name}' no longer exists: {self.op or 'a rearrangement'} "
                f"at line {line} moved its value{where} (a rearrangement moves values, it does "
                "not copy them); read " + (", ".join(self.into) if self.into else "its result")
                + " instead")


@dataclass(eq=False)
class _Block:
    kind: str
    name: str | None
    span: Span | None
    steps: list[ir.Step] = field(default_factory=list)
    inputs: tuple[ir.StreamNode, ...] = ()
    modules: list[tuple[ir.OpNode, str, Span | None]] = field(default_factory=list)
    locals: list[tuple[str, ir.Node]] = field(default_factory=list)
    implicit: bool = False
    calls: dict[str, int] = field(default_factory=dict)  # user-function calls so far, by name


@dataclass(eq=False)
class _Phase:
    name: str | None
    span: Span | None
    snapshot: dict[str, ir.StreamNode]
    steps: list[ir.Update | ir.Create] = field(default_factory=list)
    updated: dict[str, Span | None] = field(default_factory=dict)


@dataclass(eq=False)
class _Plain:
    name: str
    span: Span | None
    scope: int = 0
    first_id: int = 0  # nodes with smaller ids were created before the block: its inputs
    assigns: list[ir.Assign] = field(default_factory=list)
    modules: list[tuple[ir.OpNode, str, Span | None]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)  # user-function calls so far, by name


@dataclass(eq=False)
class _Segment:
    key: str
    name: str | None
    span: Span | None
    scope: int
    entry: list[ir.Entry] = field(default_factory=list)
    entry_assign: list[ir.Assign] = field(default_factory=list)
    blocks: list[ir.Block] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    order: dict[str, int] = field(default_factory=dict)
    live: dict[str, StreamSlot] = field(default_factory=dict)
    shapes: dict[str, Shape] = field(default_factory=dict)
    started: bool = False
    context: dict[int, str] = field(default_factory=dict)  # outside value id -> its stream
    # user-function calls in the block a segment's next step opens (by its index), by name
    next_block_calls: dict[int, dict[str, int]] = field(default_factory=dict)
