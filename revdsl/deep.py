"""Run a compile stage with room for deeply nested specs.

A spec is a tree, and every stage walks it recursively: a 500-term sum or 300 nested `if`s is
deeper than Python's default recursion limit allows. `run_deep` runs a stage in a thread with a
large stack and a raised recursion limit; the elaborator bounds nesting itself (MAX_NESTING, with
a positioned error), so a RecursionError here is a last resort turned into a RevdslError.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from revdsl.errors import RevdslError

R = TypeVar("R")

STACK_BYTES = 512 * 1024 * 1024  # virtual: only the pages a deep spec touches are used
RECURSION_LIMIT = 100_000
_lock = threading.Lock()


def run_deep(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """`fn(*args, **kwargs)` in a thread with a big stack; exceptions propagate as raised."""
    if getattr(_local, "inside", False):
        return fn(*args, **kwargs)
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        _local.inside = True
        try:
            result.append(fn(*args, **kwargs))
        except RecursionError:
            error.append(RevdslError("the spec is nested too deeply to compile"))
        except BaseException as exc:
            error.append(exc)

    with _lock:
        old_stack = threading.stack_size()
        old_limit = sys.getrecursionlimit()
        threading.stack_size(STACK_BYTES)
        sys.setrecursionlimit(max(old_limit, RECURSION_LIMIT))
        try:
            t = threading.Thread(target=target, name="revdsl-compile")
            t.start()
        finally:
            threading.stack_size(old_stack)
        t.join()
        sys.setrecursionlimit(old_limit)
    if error:
        raise error[0].with_traceback(error[0].__traceback__)
    return result[0]  # type: ignore[no-any-return]


_local = threading.local()
