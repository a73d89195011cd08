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

    def wrapped(self) -> str:
        """The text with every line longer than the house width wrapped."""
        return wrap_code(self.text())


# ---- line wrapping (the generated file keeps the house line length) ---------------------------

WIDTH = 100


def wrap_code(text: str, width: int = WIDTH) -> str:
    """Wrap every line longer than `width`: docstring and comment lines at spaces, code lines at
    the commas of their longest bracketed list (one item per line, recursively)."""
    out: list[str] = []
    in_doc = False
    for line in text.split("\n"):
        quotes = line.count('"""')
        if len(line) > width:
            stripped = line.strip()
            if quotes == 2 and stripped.startswith('"""') and stripped.endswith('"""'):
                # a one-line docstring: open it, wrap its text, close it on a line of its own
                indent = line[: len(line) - len(stripped)]
                out.extend(_wrap_words(indent + stripped[:-3], width, ""))
                out.append(indent + '"""')
                continue
            if in_doc or (quotes == 1 and stripped.startswith('"""')):
                out.extend(_wrap_words(line, width, ""))
            elif line.strip().startswith("#"):
                out.extend(_wrap_words(line, width, "#   "))
            else:
                out.extend(_wrap_line(line, width))
        else:
            out.append(line)
        if quotes % 2 == 1:
            in_doc = not in_doc
    return "\n".join(out)


def _wrap_words(line: str, width: int, marker: str) -> list[str]:
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip()
    if marker:
        body = body[1:].strip()
    lead = indent + ("# " if marker else "")
    more = indent + (marker if marker else "    ")
    lines: list[str] = []
    cur = lead
    for word in body.split(" "):
        if cur.strip() and len(cur) + 1 + len(word) > width and cur not in (lead, more):
            lines.append(cur.rstrip())
            cur = more + word
        else:
            cur = cur + (" " if cur not in (lead, more) else "") + word
    lines.append(cur.rstrip())
    return lines


def _wrap_line(line: str, width: int) -> list[str]:
    indent = line[: len(line) - len(line.lstrip())]
    pairs = _top_brackets(line)
    stripped = line.strip()
    if stripped.startswith("return ") and _top_commas(line, len(indent) + 7, len(line), 0):
        inner = line[len(indent) + 7:]
        return _wrap_line(f"{indent}return ({inner})", width) if len(
            f"{indent}return ({inner})") > width else [f"{indent}return ({inner})"]
    if not pairs:
        return [line]
    start, end = max(pairs, key=lambda p: p[1] - p[0])
    items = _split(line[start + 1:end], _top_commas(line, start + 1, end, 1), start + 1, line)
    if not items or (len(items) == 1 and len(items[0]) + len(indent) + 4 > width and
                     not _top_brackets(indent + "    " + items[0])):
        return [line]
    comma = "," if len(items) > 1 else ""
    body = []
    for item in items:
        body.extend(_wrap_line(f"{indent}    {item}{comma}", width) if len(
            f"{indent}    {item}{comma}") > width else [f"{indent}    {item}{comma}"])
    return [line[: start + 1], *body, indent + line[end:]]


def _scan(line: str) -> list[tuple[int, str, int]]:
    """(position, character, depth before it) of the brackets and commas outside strings."""
    out = []
    depth = 0
    quote = ""
    k = 0
    while k < len(line):
        ch = line[k]
        if quote:
            if ch == "\\":
                k += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            out.append((k, ch, depth))
            depth += 1
        elif ch in ")]}":
            depth -= 1
            out.append((k, ch, depth))
        elif ch == ",":
            out.append((k, ch, depth))
        elif ch == "#":
            break
        k += 1
    return out


def _top_brackets(line: str) -> list[tuple[int, int]]:
    pairs = []
    stack: list[int] = []
    for pos, ch, depth in _scan(line):
        if ch in "([{" and depth == 0:
            stack.append(pos)
        elif ch in ")]}" and depth == 0 and stack:
            pairs.append((stack.pop(), pos))
    return pairs


def _top_commas(line: str, start: int, end: int, depth: int) -> list[int]:
    """Positions of the commas between `start` and `end` at bracket depth `depth`."""
    return [pos for pos, ch, d in _scan(line) if ch == "," and d == depth and start <= pos < end]


def _split(text: str, commas: list[int], offset: int, line: str) -> list[str]:
    parts = []
    prev = offset
    for c in commas:
        parts.append(line[prev:c].strip())
        prev = c + 1
    parts.append(line[prev: offset + len(text)].strip())
    return [p for p in parts if p]
