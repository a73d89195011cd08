"""A line emitter: the generated code is built line by line with explicit indentation."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator


def docstring_safe(text: str) -> str:
    """`text` made safe inside a triple-quoted docstring or a comment: backslashes, quotes that
    could close the string, and characters Python or an editor would take as a line break or
    hide are escaped."""
    out = []
    for ch in text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"'):
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def display_name(path: str) -> str:
    """A spec's file name as generated code shows it: the last path component, with anything
    but letters, digits and `._+-<>` replaced by `_` (the name is not validated by the grammar)."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._+<>\-]", "_", base) or "_"


class Emitter:
    def __init__(self, indent: str = "    ") -> None:
        self._lines: list[str] = []
        self._depth = 0
        self._indent = indent

    def line(self, text: str = "") -> None:
        assert "\n" not in text and "\r" not in text, "one line at a time"
        self._lines.append(self._indent * self._depth + text if text else "")

    def lines(self, text: str) -> None:
        for t in text.splitlines():
            self.line(t)

    def blank(self, n: int = 1) -> None:
        """Make sure the text ends with (at least) n empty lines; none at the very start."""
        if not self._lines:
            return
        have = 0
        while have < len(self._lines) and self._lines[-1 - have] == "":
            have += 1
        self._lines.extend([""] * max(0, n - have))

    def raw(self, text: str) -> None:
        """Append text as is (already indented), e.g. copied runtime source."""
        self._lines.extend(text.splitlines())

    @contextlib.contextmanager
    def indented(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def docstring(self, text: str) -> None:
        body = [docstring_safe(t) for t in text.strip("\n").split("\n")]
        if len(body) == 1:
            self.line(f'"""{body[0]}"""')
            return
        self.line(f'"""{body[0]}')
        for t in body[1:]:
            self.line(t)
        self.line('"""')

    def text(self) -> str:
        out = "\n".join(line.rstrip() for line in self._lines)
        return out.rstrip("\n") + "\n"
