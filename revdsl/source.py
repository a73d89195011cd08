"""Source text and positions.

`Source` is one spec file (its display name and text). `Span` is a region of it, 1-based line and
column as lark reports them, and knows how to print itself compiler-style: `path:line:col`, the
source line, and a caret run under the region.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """A spec's text and the name it is reported under (usually the path given by the user)."""

    name: str
    text: str = field(repr=False)

    def line(self, lineno: int) -> str:
        """The text of 1-based line `lineno`, without its newline ('' when out of range)."""
        lines = self.text.splitlines()
        if 1 <= lineno <= len(lines):
            return lines[lineno - 1]
        return ""


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source: start and end (inclusive line, exclusive column), both 1-based."""

    source: Source = field(repr=False)
    line: int
    column: int
    end_line: int
    end_column: int

    @property
    def location(self) -> str:
        """`path:line:col`, the prefix of every diagnostic."""
        return f"{self.source.name}:{self.line}:{self.column}"

    def excerpt(self) -> str:
        """The source line with a caret run under the span (clipped to its first line)."""
        text = self.source.line(self.line).expandtabs(1)
        start = max(self.column, 1)
        end = self.end_column if self.end_line == self.line else len(text) + 1
        end = min(max(end, start + 1), max(len(text) + 1, start + 1))
        gutter = f"{self.line:>5} | "
        caret = " " * (len(gutter) - 2) + "| " + " " * (start - 1) + "^" * (end - start)
        return f"{gutter}{text}\n{caret}"

    def __str__(self) -> str:
        return self.location


def span_from_meta(source: Source, meta: object) -> Span | None:
    """Build a Span from a lark `Meta` (None when lark recorded no position)."""
    if getattr(meta, "empty", True):
        return None
    return Span(
        source,
        meta.line,  # type: ignore[attr-defined]
        meta.column,  # type: ignore[attr-defined]
        meta.end_line,  # type: ignore[attr-defined]
        meta.end_column,  # type: ignore[attr-defined]
    )


def span_from_token(source: Source, token: object) -> Span:
    """Build a Span covering one lark `Token`."""
    line = token.line  # type: ignore[attr-defined]
    col = token.column  # type: ignore[attr-defined]
    end_line = getattr(token, "end_line", None) or line
    end_col = getattr(token, "end_column", None) or col + len(str(token))
    return Span(source, line, col, end_line, end_col)
