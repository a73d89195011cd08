"""In-process use: compile a spec and get its source, or the loaded module.

    source = revdsl.compile_spec("specs/rev_vit.rev", depth=4)
    mod = revdsl.load("specs/rev_vit.rev", depth=4)
    model = mod.create_model(num_classes=10)

The module is compiled under a `<revdsl:...>` file name registered with `linecache`, so tracebacks
show the generated lines; its source is kept as `module.__revdsl_source__`.
"""

from __future__ import annotations

import copy
import hashlib
import linecache
import os
import pickle
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any

from revdsl.errors import RevdslWarning


def _spec_text(spec: str | Path) -> tuple[str, str]:
    from revdsl.files import read_spec

    if isinstance(spec, Path) or ("\n" not in str(spec) and str(spec).endswith(".rev")):
        return read_spec(spec), str(spec)
    if "\n" in spec or spec.lstrip().startswith(("model", "#")):
        return spec, "<spec>"
    return read_spec(spec), str(spec)


def compile_spec(spec: str | Path, **overrides: Any) -> str:
    """The generated module's source. `spec` is a path to a .rev file or the spec text itself;
    keyword arguments override spec parameters like `--set`."""
    from revdsl.pipeline import GIVEN_AS_KEYWORD, compile_text

    text, name = _spec_text(spec)
    compiled = compile_text(text, name, overrides, GIVEN_AS_KEYWORD)
    assert compiled.source is not None
    for w in compiled.report.warnings:
        warnings.warn(RevdslWarning(w.render()), stacklevel=3)
    return compiled.source


def load(spec: str | Path, **overrides: Any) -> types.ModuleType:
    """Compile a spec and import the generated module (without writing a file)."""
    source = compile_spec(spec, **overrides)
    return load_source(source)


def load_source(source: str, name: str | None = None) -> types.ModuleType:
    """Import generated source as a module named after its content (stable across calls)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    model = "model"
    for line in source.splitlines()[:3]:
        if "(model " in line:
            model = line.split("(model ", 1)[1].split(")", 1)[0]
    modname = name or f"revdsl_generated_{model}_{digest}"
    filename = f"<revdsl:{model}:{digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(modname)
    module.__file__ = filename
    module.__revdsl_source__ = source  # type: ignore[attr-defined]
    sys.modules[modname] = module
    if "`extern` declarations" in source and "" not in sys.path and os.getcwd() not in sys.path:
        # the user modules it imports are found as `python -m` would: from the current directory
        sys.path.append(os.getcwd())
    exec(compile(source, filename, "exec"), module.__dict__)
    _make_picklable(module, source, modname)
    _add_weight_methods(module)
    return module


def _add_weight_methods(module: types.ModuleType) -> None:
    """A loaded model reads and writes official checkpoints' names (revdsl.weights). A
    compiled file stays standalone (it imports only torch): convert its weights once with
    `revdsl convert` and load them with load_state_dict."""
    cls = getattr(module, str(getattr(module.create_model, "__annotations__", {})
                              .get("return", "")), None)
    if not isinstance(cls, type):
        return

    def load_reference_state_dict(self: Any, state_dict: Any, source: str,
                                  strict: bool = True) -> list[str]:
        """Load an official checkpoint's state dict (source: 'slowfast', 'revbifpn'): names
        and shapes mapped and checked; returns the unused names (strict=False only)."""
        from revdsl.weights import load_reference_state_dict as load_ref
        from revdsl.weights import unwrap

        return load_ref(self, unwrap(state_dict), source, strict=strict)

    def to_reference_state_dict(self: Any, source: str) -> dict[str, Any]:
        """This model's weights under the official code's names and shapes."""
        from revdsl.weights import to_reference

        return to_reference(self, source)

    cls.load_reference_state_dict = load_reference_state_dict
    cls.to_reference_state_dict = to_reference_state_dict


# ---- pickling across processes ----------------------------------------------------------------
#
# A loaded module exists only in the process that compiled it, so a pickled model would refer to
# classes another process cannot import. Every nn.Module class of a loaded module pickles its
# instances as (the module's source, the ordinary pickle of the instance): unpickling registers
# the source as the same module first (revdsl must be importable there), then reads the rest.

_pickling = threading.local()


def _make_picklable(module: types.ModuleType, source: str, modname: str) -> None:
    import torch

    def reduce_ex(self: Any, protocol: int) -> Any:
        if getattr(_pickling, "depth", 0):
            return object.__reduce_ex__(self, protocol)
        _pickling.depth = 1
        try:
            payload = pickle.dumps(self, protocol=max(protocol, 2))
        finally:
            _pickling.depth = 0
        return (_unpickle, (source, modname, payload))

    # copy.copy / copy.deepcopy also go through __reduce_ex__: they keep the ordinary
    # behaviour (in-process, no pickling: hooks and other unpicklable attributes copy as usual)
    def copy_(self: Any) -> Any:
        return copy._reconstruct(self, None, *object.__reduce_ex__(self, 4))  # type: ignore[attr-defined]

    def deepcopy_(self: Any, memo: dict[int, Any]) -> Any:
        return copy._reconstruct(self, memo, *object.__reduce_ex__(self, 4))  # type: ignore[attr-defined]

    for value in list(vars(module).values()):
        if isinstance(value, type) and issubclass(value, torch.nn.Module) and (
                value.__module__ == modname):
            value.__reduce_ex__ = reduce_ex  # type: ignore[method-assign]
            value.__copy__ = copy_  # type: ignore[attr-defined]
            value.__deepcopy__ = deepcopy_  # type: ignore[attr-defined]


def _unpickle(source: str, modname: str, payload: bytes) -> Any:
    if modname not in sys.modules:
        load_source(source, modname)
    return pickle.loads(payload)
