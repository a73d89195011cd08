"""revdsl: a compiler for reversible neural networks.

A `.rev` spec is parsed (parse), elaborated into an IR (lower), viewed as a graph (graph), proved
invertible (verify) and emitted as a standalone PyTorch module (codegen). The functions below chain
those stages; `revdsl.load` is the in-process entry point for notebooks and tests.
"""

from revdsl.errors import (
    CodegenError,
    NotInvertibleError,
    RevdslError,
    ShapeError,
    SpecNameError,
    SpecSyntaxError,
    SpecTypeError,
)
from revdsl.version import __version__


def compile_spec(spec, **overrides):  # type: ignore[no-untyped-def]
    """Compile a spec (a path or its text) and return the generated module's source."""
    from revdsl.loader import compile_spec as _compile

    return _compile(spec, **overrides)


def load(spec, **overrides):  # type: ignore[no-untyped-def]
    """Compile a spec and import the generated module in-process (see revdsl.loader)."""
    from revdsl.loader import load as _load

    return _load(spec, **overrides)


__all__ = [
    "CodegenError",
    "NotInvertibleError",
    "RevdslError",
    "ShapeError",
    "SpecNameError",
    "SpecSyntaxError",
    "SpecTypeError",
    "__version__",
    "compile_spec",
    "load",
]
