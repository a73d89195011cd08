"""The reference meaning of a spec: run it directly on tensors, statement by statement.

The compiler turns a spec into IR, proves it, and generates a module; a bug anywhere on that path
can make a module that runs and computes something else. `Reference` is an independent reading of
the same spec, for differential tests: it shares only the parser and the op catalogue's layers
(runtime classes and their constructor arguments) with the compiler, and nothing of lowering,
the IR, the verifier or code generation. It walks the AST with Python-like semantics:

* compile-time values (numbers, strings, lists) are evaluated as it goes, in one flat environment
  (a name assigned inside a segment, block or loop is seen by everything after it);
* `param` values come from the spec or the overrides, `arg` values from the defaults or `args`,
  `option` values from the call;
* a stream is a variable; `x1 += f(x2)` is `x1 = x1 + f(x2)`; every update in a `phase` reads the
  values the streams had when the phase began; segments, blocks, silos, `repeat` and `head` only
  group statements;
* each op application creates its layer the first time it runs (in application order, from the
  catalogue's constructor rule and runtime class); functional ops are written out here.

`copy_parameters_from(model)` loads a generated model's parameters (and buffers) into the layers,
in order, checking every shape, so both compute with the same weights.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from revdsl import ast, catalogue
from revdsl.catalogue.base import as_tuple
from revdsl.parse import parse


class ReferenceError(Exception):
    """The reference evaluator met something it does not define (a bug in a test's spec)."""


_BUILTINS: dict[str, Callable[..., Any]] = {
    "range": lambda *a: list(range(*a)), "len": len, "min": min, "max": max, "int": int,
    "float": float, "round": round, "abs": abs, "bool": bool, "list": list,
    "floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt, "log2": math.log2,
}

_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
    "//": operator.floordiv, "%": operator.mod, "**": operator.pow,
}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


def _axes(dim: Any) -> Any:
    return tuple(dim) if isinstance(dim, list | tuple) else dim


# functional ops: inputs (tensors), attributes -> result; written independently of the templates
_FUNCTIONS: dict[str, Callable[[list[Any], dict[str, Any]], Any]] = {
    "add": lambda x, a: x[0] + x[1],
    "sub": lambda x, a: x[0] - x[1],
    "mul": lambda x, a: x[0] * x[1],
    "div": lambda x, a: x[0] / x[1],
    "neg": lambda x, a: -x[0],
    "pow": lambda x, a: x[0] ** a["exponent"],
    "abs": lambda x, a: x[0].abs(),
    "exp": lambda x, a: x[0].exp(),
    "log": lambda x, a: x[0].log(),
    "sqrt": lambda x, a: x[0].sqrt(),
    "square": lambda x, a: x[0] * x[0],
    "sigmoid": lambda x, a: 1 / (1 + torch.exp(-x[0])),
    "tanh": lambda x, a: torch.tanh(x[0]),
    "relu": lambda x, a: x[0].clamp(min=0),
    "relu6": lambda x, a: x[0].clamp(min=0, max=6),
    "gelu": lambda x, a: F.gelu(x[0]),
    "softplus": lambda x, a: torch.log1p(torch.exp(x[0])),
    "leaky_relu": lambda x, a: torch.where(x[0] >= 0, x[0], x[0] * a.get("slope", 0.01)),
    "softmax": lambda x, a: torch.exp(x[0] - x[0].amax(dim=a["dim"], keepdim=True)) / torch.exp(
        x[0] - x[0].amax(dim=a["dim"], keepdim=True)).sum(dim=a["dim"], keepdim=True),
    "reshape": lambda x, a: x[0].reshape(x[0].shape[0], *[int(d) for d in as_tuple(a["shape"])]),
    "permute": lambda x, a: x[0].permute(*[int(d) for d in as_tuple(a["dims"])]),
    "flip": lambda x, a: torch.flip(x[0], dims=[int(d) for d in as_tuple(a["dims"])]),
    "roll": lambda x, a: torch.roll(x[0], shifts=[int(d) for d in as_tuple(a["shifts"])],
                                    dims=[int(d) for d in as_tuple(a["dims"])]),
    "window_partition": lambda x, a: _windows(x[0], int(a["window"])),
    "pad": lambda x, a: _zero_pad(x[0], [int(d) for d in as_tuple(a["widths"])]),
    "window_reverse": lambda x, a: _unwindow(x[0], int(a["window"]), int(a["height"]),
                                             int(a["width"])),
    "softsign": lambda x, a: x[0] / (1 + x[0].abs()),
    "hardsigmoid": lambda x, a: (x[0] + 3).clamp(min=0, max=6) / 6,
    "hardswish": lambda x, a: x[0] * (x[0] + 3).clamp(min=0, max=6) / 6,
    "clamp": lambda x, a: x[0].clamp(min=a["min"], max=a["max"]),
    "mean": lambda x, a: x[0].mean(dim=_axes(a["dim"]), keepdim=bool(a["keepdim"])),
    "global_avg_pool": lambda x, a: x[0].mean(dim=(-2, -1)),
    "token": lambda x, a: x[0][:, a["index"]],
    "concat": lambda x, a: torch.cat(list(x), dim=a["dim"]),
    "cat": lambda x, a: torch.cat(list(x), dim=a["dim"]),
    "chunk": lambda x, a: tuple(torch.chunk(x[0], a["chunks"], dim=a["dim"])),
    "dup": lambda x, a: tuple(x[0] for _ in range(a["n"])),
    "space_to_depth": lambda x, a: _space_to_depth(x[0], a["factor"], a["order"]),
    "depth_to_space": lambda x, a: _depth_to_space(x[0], a["factor"], a["order"]),
    "avg_pool": lambda x, a: F.avg_pool2d(x[0], a["kernel"], a["stride"] or a["kernel"],
                                          a["padding"]),
    "max_pool": lambda x, a: F.max_pool2d(x[0], a["kernel"], a["stride"] or a["kernel"],
                                          a["padding"]),
    "upsample": lambda x, a: F.interpolate(
        x[0], scale_factor=a["factor"], mode=a["mode"],
        **({} if a["mode"] == "nearest" else {"align_corners": False})),
    "replicate_channels": lambda x, a: torch.cat(
        [x[0]] * -(-a["channels"] // x[0].shape[1]), dim=1)[:, : a["channels"]],
}


def _space_to_depth(x: torch.Tensor, r: int, order: str) -> torch.Tensor:
    """Each r x r patch into channels, by index arithmetic: channel c*r*r + dy*r + dx
    (channel_major) or (dy*r + dx)*C + c (pixel_major)."""
    b, c, h, w = x.shape
    t = x.reshape(b, c, h // r, r, w // r, r)  # b, c, y, dy, x, dx
    perm = (0, 1, 3, 5, 2, 4) if order == "channel_major" else (0, 3, 5, 1, 2, 4)
    return t.permute(*perm).reshape(b, c * r * r, h // r, w // r)


def _depth_to_space(x: torch.Tensor, r: int, order: str) -> torch.Tensor:
    b, crr, h, w = x.shape
    c = crr // (r * r)
    if order == "channel_major":
        t = x.reshape(b, c, r, r, h, w).permute(0, 1, 4, 2, 5, 3)  # b, c, y, dy, x, dx
    else:
        t = x.reshape(b, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return t.reshape(b, c, h * r, w * r)


def _zero_pad(x: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """x placed inside a zero tensor grown by (before, after) per dim, last dim first."""
    shape = list(x.shape)
    where = [slice(None)] * x.dim()
    for k in range(len(widths) // 2):
        d = x.dim() - 1 - k
        shape[d] += widths[2 * k] + widths[2 * k + 1]
        where[d] = slice(widths[2 * k], widths[2 * k] + x.shape[d])
    out = x.new_zeros(shape)
    out[tuple(where)] = x
    return out


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    """Each w x w window of a [B, H, W, C] map as a row of w*w tokens, windows in row order."""
    b, h, wd, c = x.shape
    rows = [x[:, i:i + w, j:j + w, :].reshape(b, w * w, c)
            for i in range(0, h, w) for j in range(0, wd, w)]
    return torch.stack(rows, dim=1)


def _unwindow(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    out = x.new_zeros(x.shape[0], h, wd, x.shape[-1])
    k = 0
    for i in range(0, h, w):
        for j in range(0, wd, w):
            out[:, i:i + w, j:j + w, :] = x[:, k].reshape(x.shape[0], w, w, -1)
            k += 1
    return out


def _runtime_class(name: str) -> type[nn.Module]:
    if name.startswith("nn."):
        return getattr(nn, name[3:])  # type: ignore[no-any-return]
    import importlib

    if "." in name:  # an extern: a user's module, by import path
        module, _, cls = name.rpartition(".")
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]

    from revdsl.runtime_src import RUNTIME_FILES

    for fname in RUNTIME_FILES:  # every runtime file, as code generation knows them
        mod = importlib.import_module(f"revdsl.runtime.{fname.removesuffix('.py')}")
        if hasattr(mod, name):
            return getattr(mod, name)  # type: ignore[no-any-return]
    raise ReferenceError(f"no runtime class {name}")


def _number(v: Any) -> Any:
    if isinstance(v, sympy.Basic):
        return int(v) if v.is_Integer else float(v)
    if isinstance(v, list | tuple):
        return type(v)(_number(x) for x in v)
    return v


class Reference(nn.Module):
    """Run a spec directly (see the module docstring). Call it like the generated model:
    `ref(*inputs, **options)`; `ref.layers` are its layers in application order."""

    def __init__(self, text: str, name: str = "<spec>", overrides: dict[str, Any] | None = None,
                 args: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.spec = parse(text, name)
        self.overrides = dict(overrides or {})
        self.args = dict(args or {})
        self.layers = nn.ModuleList()
        self._next = 0

    # ---- parameters ---------------------------------------------------------------------------

    def copy_parameters_from(self, model: nn.Module) -> None:
        """Load `model`'s parameters and buffers into the layers, in order (shapes checked).
        Run the reference once first, so that its layers exist."""
        mine = list(self.layers.parameters())
        theirs = list(model.parameters())
        if len(mine) != len(theirs):
            raise ReferenceError(f"{len(mine)} parameters here, {len(theirs)} in the model")
        with torch.no_grad():
            for k, (a, b) in enumerate(zip(mine, theirs, strict=True)):
                if a.shape != b.shape:
                    raise ReferenceError(f"parameter {k}: shape {tuple(a.shape)} here, "
                                         f"{tuple(b.shape)} in the model")
                a.copy_(b)
            bufs_a = [b for b in self.layers.buffers() if b.is_floating_point()]
            bufs_b = [b for b in model.buffers() if b.is_floating_point()]
            if len(bufs_a) == len(bufs_b):
                for a, b in zip(bufs_a, bufs_b, strict=True):
                    if a.shape == b.shape:
                        a.copy_(b)

    # ---- running ------------------------------------------------------------------------------

    def forward(self, *inputs: torch.Tensor, **options: Any) -> Any:
        self._next = 0
        self.env: dict[str, Any] = {}
        self.streams: set[str] = set()
        self.phase: dict[str, Any] | None = None
        self.inputs = list(inputs)
        self._like = inputs[0] if inputs else None  # a layer without inputs takes its dtype
        self.options = options
        self.output: Any = None
        # where a layer named with `as` is looked up (one name in one part is one layer: tied
        # weights): the model, a stored block, or a reversible block
        self._named: dict[tuple[Any, str], nn.Module] = {}
        self._scope: Any = "model"
        self._scopes = 0
        self._in_segment = False
        self._fn_depth = 0
        self._body(self.spec.stmts)
        return self.output

    def _body(self, stmts: Any) -> None:
        for s in stmts:
            getattr(self, "s_" + type(s).__name__)(s)

    def s_ModelDecl(self, s: ast.ModelDecl) -> None:
        pass

    def s_ParamDecl(self, s: ast.ParamDecl) -> None:
        value = self.ev(s.value)
        if s.kind == "param" and s.name in self.overrides:
            value = self.overrides[s.name]
        if s.kind == "arg" and s.name in self.args:
            value = self.args[s.name]
        self.env[s.name] = value

    def s_OptionDecl(self, s: ast.OptionDecl) -> None:
        self.env[s.name] = self.options.get(s.name, self.ev(s.default))

    def s_InputDecl(self, s: ast.InputDecl) -> None:
        if not self.inputs:
            raise ReferenceError(f"no tensor given for input {s.name}")
        self.env[s.name] = self.inputs.pop(0)

    def s_OutputDecl(self, s: ast.OutputDecl) -> None:
        self.output = self.env[s.name] if not s.more else tuple(
            self.env[n] for n in (s.name, *s.more))

    def s_Head(self, s: ast.Head) -> None:
        self._body(s.body.stmts)

    def s_FuncDef(self, s: ast.FuncDef) -> None:
        self.env[s.name] = s

    def s_ExternDecl(self, s: ast.ExternDecl) -> None:
        self.env[s.name] = s

    def _call_extern(self, d: ast.ExternDecl, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """A user's module, built from the call's keyword arguments, applied to its tensors."""
        attrs = {"path": d.path, "kwargs": tuple(sorted(kwargs.items())), "out": ()}
        opdef = catalogue.get("extern")
        assert opdef is not None
        layer = self._layer(opdef, list(args), attrs)
        return layer(*args)

    def _call_user(self, d: ast.FuncDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """A user function: its body run in a fresh copy of the names, its parameters bound
        (positionally, by keyword, else their defaults), the caller's names restored after."""
        saved, phase = self.env, self.phase
        local = dict(saved)
        for i, p in enumerate(d.params):
            if i < len(args):
                local[p.name] = args[i]
            elif p.name in kwargs:
                local[p.name] = kwargs[p.name]
            else:
                assert p.default is not None, f"{d.name}: no value for {p.name}"
                local[p.name] = self.ev(p.default)
        self.env, self.phase = local, None  # (its names are its own, not a phase's streams)
        self._fn_depth += 1  # (`as` inside a function names a call's layer: never tied)
        try:
            self._body(d.body)
            results = [self.ev(r) for r in d.returns]
        finally:
            self.env, self.phase = saved, phase
            self._fn_depth -= 1
        return results[0] if len(results) == 1 else tuple(results)

    def s_For(self, s: ast.For) -> None:
        for v in self.ev(s.iter):
            self.env[s.var] = v
            self._body(s.body.stmts)

    def s_If(self, s: ast.If) -> None:
        for cond, body in s.branches:
            if self.ev(cond):
                self._body(body.stmts)
                return
        if s.other is not None:
            self._body(s.other.stmts)

    def _new_scope(self) -> int:
        self._scopes += 1
        return self._scopes

    def s_Segment(self, s: ast.Segment) -> None:
        saved = self._scope
        self._scope, self._in_segment = self._new_scope(), True
        try:
            self._body(s.body.stmts)
        finally:
            self._scope, self._in_segment = saved, False
        # after the segment, indexed streams s[0], s[1], ... are the list s
        arrays: dict[str, dict[int, Any]] = {}
        for key in self.streams:
            if key.endswith("]") and "[" in key:
                base, idx = key[:-1].split("[", 1)
                arrays.setdefault(base, {})[int(idx)] = self.env[key]
        for base, items in arrays.items():
            self.env[base] = [items[i] for i in sorted(items)]
        self.streams = set()

    def s_BlockStmt(self, s: ast.BlockStmt) -> None:
        saved = self._scope
        self._scope = self._new_scope()
        self._body(s.body.stmts)
        # after a block, a segment's next steps open a new one; outside, back to where it was
        self._scope = self._new_scope() if self._in_segment else saved

    def s_Repeat(self, s: ast.Repeat) -> None:
        count = self.ev(s.count)
        for v in (range(count) if isinstance(count, int) else count):
            if s.var is not None:
                self.env[s.var] = v
            self._scope = self._new_scope()  # one block per iteration
            self._body(s.body.stmts)
        self._scope = self._new_scope()

    def s_Phase(self, s: ast.Phase) -> None:
        # every update in a phase reads the streams' values at the phase's start
        self.phase = {n: self.env[n] for n in self.streams if n in self.env}
        try:
            self._body(s.body.stmts)
        finally:
            self.phase = None

    def _read(self, key: str) -> Any:
        if self.phase is not None and key in self.phase:
            return self.phase[key]
        return self.env[key]

    def s_StreamsDecl(self, s: ast.StreamsDecl) -> None:
        self._assign(s.targets, self.ev(s.value))
        self.streams.update(self._target_name(t) for t in s.targets)

    def s_StreamDecl(self, s: ast.StreamDecl) -> None:
        self._assign((s.target,), self.ev(s.value))
        self.streams.add(self._target_name(s.target))

    def s_Assign(self, s: ast.Assign) -> None:
        self._assign(s.targets, self.ev(s.value))

    def s_AugAssign(self, s: ast.AugAssign) -> None:
        name = self._target_name(s.target)
        self.env[name] = self._binop(s.op, self._read(name), self.ev(s.value))

    def _target_name(self, t: ast.Target) -> str:
        return t.name if t.index is None else f"{t.name}[{self.ev(t.index)}]"

    def _assign(self, targets: tuple[ast.Target, ...], value: Any) -> None:
        if len(targets) == 1:
            self.env[self._target_name(targets[0])] = value
            return
        values = list(value)
        if len(values) != len(targets):
            raise ReferenceError(f"{len(targets)} names, {len(values)} values")
        for t, v in zip(targets, values, strict=True):
            self.env[self._target_name(t)] = v

    # ---- expressions --------------------------------------------------------------------------

    def ev(self, e: ast.Expr) -> Any:
        return getattr(self, "e_" + type(e).__name__)(e)

    def e_Number(self, e: ast.Number) -> Any:
        return e.value

    def e_String(self, e: ast.String) -> Any:
        return e.value

    def e_Bool(self, e: ast.Bool) -> Any:
        return e.value

    def e_Name(self, e: ast.Name) -> Any:
        if e.id not in self.env:
            raise ReferenceError(f"unknown name {e.id}")
        return self._read(e.id)

    def e_ListExpr(self, e: ast.ListExpr) -> Any:
        return [self.ev(i) for i in e.items]

    def e_ListComp(self, e: ast.ListComp) -> Any:
        out = []
        for v in self.ev(e.iter):
            self.env[e.var] = v
            out.append(self.ev(e.elt))
        return out

    def e_GenCall(self, e: ast.GenCall) -> Any:
        items = self.e_ListComp(ast.ListComp(elt=e.elt, var=e.var, iter=e.iter, span=e.span))
        return self._call_builtin(e.func, [items], {})

    def e_Index(self, e: ast.Index) -> Any:
        if isinstance(e.base, ast.Name) and e.base.id not in self.env:
            key = f"{e.base.id}[{self.ev(e.index)}]"
            if key in self.env:
                return self._read(key)
        return self.ev(e.base)[self.ev(e.index)]

    def e_Slice(self, e: ast.Slice) -> Any:
        lo = None if e.lower is None else self.ev(e.lower)
        hi = None if e.upper is None else self.ev(e.upper)
        return list(self.ev(e.base)[lo:hi])

    def e_UnaryOp(self, e: ast.UnaryOp) -> Any:
        v = self.ev(e.operand)
        if e.op == "not":
            return not v
        return -v if e.op == "-" else v

    def e_BinOp(self, e: ast.BinOp) -> Any:
        return self._binop(e.op, self.ev(e.left), self.ev(e.right))

    def _binop(self, op: str, a: Any, b: Any) -> Any:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            if op == "**":
                return a**b
            if op not in ("+", "-", "*", "/"):
                raise ReferenceError(f"{op} on tensors")
        return _BINOPS[op](a, b)

    def e_Compare(self, e: ast.Compare) -> Any:
        return _COMPARE[e.op](self.ev(e.left), self.ev(e.right))

    def e_BoolOp(self, e: ast.BoolOp) -> Any:
        if e.op == "and":
            return bool(self.ev(e.left)) and bool(self.ev(e.right))
        return bool(self.ev(e.left)) or bool(self.ev(e.right))

    def e_IfExp(self, e: ast.IfExp) -> Any:
        return self.ev(e.then) if self.ev(e.cond) else self.ev(e.other)

    def e_Call(self, e: ast.Call) -> Any:
        args = [self.ev(a) for a in e.args]
        kwargs = {k.name: self.ev(k.value) for k in e.kwargs}
        if isinstance(self.env.get(e.func), ast.FuncDef):
            return self._call_user(self.env[e.func], args, kwargs)
        if isinstance(self.env.get(e.func), ast.ExternDecl):
            return self._call_extern(self.env[e.func], args, kwargs)
        has_tensor = any(isinstance(a, torch.Tensor) for a in args) or any(
            isinstance(a, list) and any(isinstance(x, torch.Tensor) for x in a) for a in args)
        if e.func in _BUILTINS and not (catalogue.get(e.func) and has_tensor):
            return self._call_builtin(e.func, args, kwargs)
        if e.func == "sum":
            return self._call_builtin("sum", args, kwargs)
        return self._apply_op(e.func, args, kwargs, e.alias)

    def _call_builtin(self, func: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if func == "sum":
            items = list(args[0])
            total = items[0] if items else 0
            for v in items[1:]:
                total = total + v
            return total
        return _BUILTINS[func](*args, **kwargs)

    def _apply_op(self, name: str, args: list[Any], kwargs: dict[str, Any],
                  alias: str | None = None) -> Any:
        opdef = catalogue.get(name)
        if opdef is None:
            raise ReferenceError(f"unknown op {name}")
        if opdef.inputs == "*":
            tensors: list[Any] = []
            rest: list[Any] = []
            for a in args:
                if isinstance(a, torch.Tensor):
                    tensors.append(a)
                elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
                    tensors.extend(a)
                else:
                    rest.append(a)
        else:
            n = int(opdef.inputs)
            tensors, rest = list(args[:n]), list(args[n:])
        attrs = dict(zip(opdef.positional, rest, strict=False))
        attrs.update(kwargs)
        for a in opdef.attrs:
            attrs.setdefault(a.name, a.default)
        if name in ("add", "sub", "mul", "div"):
            return self._binop({"add": "+", "sub": "-", "mul": "*", "div": "/"}[name],
                               tensors[0], tensors[1])
        if opdef.has_module:
            key = (self._scope, alias)
            if self._fn_depth:
                alias = None
            if alias is not None and key in self._named:
                layer = self._named[key]  # the same name again: the same layer (tied)
            else:
                layer = self._layer(opdef, tensors, attrs)
                if alias is not None:
                    self._named[key] = layer
            call = {k: attrs[k] for k in opdef.call_kwargs}
            return layer(*tensors, **call)
        fn = _FUNCTIONS.get(name)
        if fn is None:
            raise ReferenceError(f"the reference has no meaning for op {name}")
        return fn(tensors, attrs)

    def _layer(self, opdef: catalogue.OpDef, tensors: list[Any], attrs: dict[str, Any]
               ) -> nn.Module:
        if self._next < len(self.layers):
            layer = self.layers[self._next]
        else:
            assert opdef.ctor is not None
            shapes = [tuple(t.shape) for t in tensors]
            entries = opdef.ctor(shapes, attrs)
            positional = [_number(e[1]) for e in entries[: opdef.ctor_positional]]
            # an optional entry (name, value, default) is passed only when it differs from its
            # default (the catalogue's constructor convention)
            named = {e[0]: _number(e[1]) for e in entries[opdef.ctor_positional:]
                     if len(e) < 3 or _number(e[1]) != _number(e[2])}
            cls = _runtime_class(opdef.module_class(attrs))
            layer = cls(*positional, **named)
            like = tensors[0] if tensors else self._like
            if like is not None and like.is_floating_point():
                layer = layer.to(dtype=like.dtype, device=like.device)
            self.layers.append(layer)
        self._next += 1
        layer.train(self.training)
        return layer  # type: ignore[no-any-return]


def reference_for(text: str, name: str = "<spec>", overrides: dict[str, Any] | None = None,
                  args: dict[str, Any] | None = None) -> Reference:
    return Reference(text, name, overrides, args)
