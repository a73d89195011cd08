"""User-facing errors.

Every error a user can cause is a `RevdslError` with a span. It renders compiler-style:

    specs/bad.rev:7:11: error: x1 is updated by a function that reads x1, so ...
        7 |     x1 += attention(layernorm(x1))
          |           ^^^^^^^^^^^^^^^^^^^^^^^^
      note: ...

Internal bugs stay `assert`s and are not RevdslErrors. `Diagnostics` gathers several errors so a
stage can report all of them at once (the verifier does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from revdsl.source import Span


class RevdslError(Exception):
    """An error in a spec or in how revdsl was invoked, with an optional source position."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, notes: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = tuple(notes)

    def render(self, where: str | None = None) -> str:
        """The diagnostic text: `path:line:col: error: message`, source line, caret, notes."""
        if self.span is not None:
            head = f"{self.span.location}: {self.kind}: {self.message}"
            body = [head, self.span.excerpt()]
        else:
            prefix = f"{where}: " if where else ""
            body = [f"{prefix}{self.kind}: {self.message}"]
        body.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(body)

    def __str__(self) -> str:
        return self.render()


class SpecSyntaxError(RevdslError):
    """The text does not follow the grammar."""


class SpecNameError(RevdslError):
    """A name (parameter, value, stream, op, attribute) is unknown or used where it cannot be."""


class SpecTypeError(RevdslError):
    """A value has the wrong kind (a tensor where a number is needed, and the like)."""


class ShapeError(RevdslError):
    """An op's shape rule or a coupling's shape equality fails."""


class NotInvertibleError(RevdslError):
    """The verifier refuted, or could not prove, that a reversible step can be undone."""


class OpCheckError(RevdslError):
    """An op's own semantic check failed (e.g. a retention whose forms would differ)."""


class CodegenError(RevdslError):
    """The program is valid but cannot be emitted (should be rare)."""


class SpecWarning(RevdslError):
    """Something legal but almost certainly unintended (a layer that never reaches the output).
    Rendered like an error with `warning:`; it never stops a compile."""

    kind = "warning"


class RevdslWarning(UserWarning):
    """The Python-API form of a SpecWarning (`revdsl.load` issues it with `warnings.warn`)."""


class Diagnostics(RevdslError):
    """Several errors reported together; renders each, in source order."""

    def __init__(self, errors: Iterable[RevdslError]) -> None:
        self.errors = _once(sorted(errors, key=_order))
        assert self.errors, "Diagnostics needs at least one error"
        first = self.errors[0]
        super().__init__(first.message, first.span, first.notes)

    def render(self, where: str | None = None) -> str:
        parts = [e.render(where) for e in self.errors]
        if len(self.errors) > 1:
            parts.append(f"{len(self.errors)} errors")
        return "\n".join(parts)

    def __iter__(self) -> Iterator[RevdslError]:
        return iter(self.errors)


def _once(errors: list[RevdslError]) -> list[RevdslError]:
    """One error per mistake: the same error at the same place (a loop's iterations, a block
    repeated by `repeat`) is reported once, saying how often it occurs."""
    count: dict[tuple[str, tuple[str, int, int], str], int] = {}
    first: dict[tuple[str, tuple[str, int, int], str], RevdslError] = {}
    for e in errors:
        key = (type(e).__name__, _order(e), e.message)
        count[key] = count.get(key, 0) + 1
        first.setdefault(key, e)
    out = []
    for key, e in first.items():
        if count[key] > 1 and e.span is not None:
            e = type(e)(e.message, e.span, (*e.notes, f"the same problem occurs {count[key]} "
                                              "times (at each repetition of this line)"))
        out.append(e)
    return out


def _order(e: RevdslError) -> tuple[str, int, int]:
    if e.span is None:
        return ("", 0, 0)
    return (e.span.source.name, e.span.line, e.span.column)
