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

__version__ = "0.1.0"

__all__ = [
    "CodegenError",
    "NotInvertibleError",
    "RevdslError",
    "ShapeError",
    "SpecNameError",
    "SpecSyntaxError",
    "SpecTypeError",
    "__version__",
]
