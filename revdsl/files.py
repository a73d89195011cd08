"""Reading specs and writing outputs, and the `--set NAME=VALUE` values, for every command.

The CLI and the tools (viz, stats, test, bench) share these; none of them imports the CLI.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from revdsl.errors import RevdslError


class UsageError(RevdslError):
    """A bad command line or file argument (reported without a source position)."""


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """`--set NAME=VALUE` values: numbers, strings, booleans and lists, as in the spec language."""
    from revdsl.lower import eval_constant
    from revdsl.parse import parse_expr

    out: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"--set expects NAME=VALUE, got {item!r}")
        try:
            value = eval_constant(parse_expr(text.strip(), f"--set {name}"))
        except RevdslError as exc:
            raise UsageError(
                f"--set {name}: cannot read {text!r} as a value ({exc.message})"
            ) from None
        if name in out:
            raise UsageError(f"--set {name} is given twice")
        out[name] = value
    return out


def read_spec(spec: str | Path) -> str:
    """The text of a spec file, or a UsageError saying why it cannot be read."""
    path = Path(spec)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such spec file: {spec}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise UsageError(f"cannot read {spec}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"cannot read {spec}: it is not UTF-8 text (byte {exc.start}); is it a spec?"
        ) from None


def check_output(path: Path, inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an output path that is not (or would not be) a regular file, or that is one of
    the command's inputs, before any work is written."""
    if path.is_dir():
        raise UsageError(f"-o {path} is a folder; give a file name")
    if path.exists() or path.is_symlink():
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            mode = path.stat().st_mode if path.exists() else stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise UsageError(f"-o {path} is not a regular file (a device, pipe or socket); "
                             "give a file name")
        for other in inputs:
            try:
                if os.path.samefile(path, other):
                    raise UsageError(f"-o {path} is the input spec; give another file name")
            except FileNotFoundError:
                continue
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"-o {path}: {parent} is not a folder")


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` through a temporary file in the same folder and a
    rename, so a reader sees the old file or the whole new one. The new file gets the mode an
    ordinary `open(path, "w")` would (0666 less the umask), or the old file's mode."""
    check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if isinstance(text, bytes):
            with os.fdopen(fd, "wb") as fb:
                fb.write(text)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
