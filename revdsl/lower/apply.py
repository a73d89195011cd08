"""Op application: splitting a call into tensor inputs and attributes, checking attributes
(kinds, bounds, domains, defaults), shape rules and layer constructors, and recording layers."""

from __future__ import annotations

import difflib
import math
from typing import Any

import sympy

from revdsl import catalogue, ir
from revdsl.catalogue import REQUIRED, Attr, OpDef, OpShapeError
from revdsl.errors import ShapeError, SpecNameError, SpecTypeError
from revdsl.lower.consteval import _kind, _num_text
from revdsl.lower.values import TVal
from revdsl.shapes import Shape
from revdsl.source import Span


class ApplyMixin:
    """Op application of the elaborator (`self` is the `_Elaborator`)."""

    def apply_op(self, name: str, args: list[Any], kwargs: dict[str, Any], span: Span | None,
                 alias: str | None = None, kw_spans: dict[str, Span | None] | None = None,
                 arg_spans: list[Span | None] | None = None, lenient: bool = False) -> Any:
        opdef = catalogue.get(name)
        assert opdef is not None, name
        self.work(span)
        kw_spans = kw_spans or {}
        arg_spans = arg_spans or [span] * len(args)
        # split positional arguments into tensor inputs and positional attributes
        if opdef.inputs == "*":
            n_in = sum(1 for a in args if isinstance(a, TVal | list))
            flat: list[Any] = []
            for a in args[:n_in]:
                flat.extend(a if isinstance(a, list) else [a])
            tensor_args, rest = flat, args[n_in:]
            if not tensor_args:
                raise SpecTypeError(f"{name}() needs at least one tensor", span)
        else:
            assert isinstance(opdef.inputs, int)
            tensor_args, rest = args[: opdef.inputs], args[opdef.inputs:]
            if len(tensor_args) < opdef.inputs:
                raise SpecTypeError(
                    f"{name}() takes {opdef.inputs} tensor input"
                    f"{'s' if opdef.inputs != 1 else ''}, got {len(tensor_args)}",
                    span,
                )
        if len(rest) > len(opdef.positional):
            raise SpecTypeError(f"{name}() got too many positional arguments", span)
        attrs_in = dict(zip(opdef.positional, rest, strict=False))
        for k, v in kwargs.items():
            if k in attrs_in:
                raise SpecNameError(f"{name}(): '{k}' is given twice", kw_spans.get(k, span))
            attrs_in[k] = v
        inputs: list[ir.Node] = []
        for i, a in enumerate(tensor_args):
            if isinstance(a, TVal):
                inputs.append(a.node)
            elif opdef.kind == "algebra" and isinstance(a, int | float) and not isinstance(a, bool):
                inputs.append(ir.ConstNode(id=self.nid(), shape=(), span=span, value=a))
            elif opdef.kind == "algebra" and isinstance(a, sympy.Expr | ir.RuntimeRef):
                inputs.append(self._runtime_number(name, a, span))
            else:
                where = arg_spans[i] if i < len(arg_spans) else span
                raise SpecTypeError(f"{name}() input {i + 1} must be a tensor, got {_kind(a)}",
                                    where)
        attrs = self._check_attrs(opdef, attrs_in, span, kw_spans)
        shapes = [n.shape for n in inputs]
        problem = None
        try:
            for check in opdef.checks:
                msg = check(shapes, attrs)
                if msg:
                    raise OpShapeError(msg)
            out = opdef.shape(shapes, attrs)
        except OpShapeError as exc:
            if lenient and opdef.elementwise and self.seg is not None:
                out = shapes[0]
                problem = str(exc)
            else:
                raise ShapeError(f"{name}: {exc}", span) from None
        except (ArithmeticError, ValueError, TypeError, IndexError) as exc:
            # a shape rule meeting attribute values it has no message for: still the user's
            # input, so a positioned error rather than a traceback
            raise ShapeError(f"{name}: cannot be applied with these arguments ({exc})",
                             span) from None
        if opdef.has_module:
            self._check_ctor(opdef, shapes, attrs, span)
        n_out = opdef.n_outputs(attrs)
        out_shapes: tuple[Shape, ...]
        if n_out > 1:
            assert isinstance(out, tuple) and out and isinstance(out[0], tuple)
            out_shapes = tuple(out)  # type: ignore[arg-type]
            first: Shape = out_shapes[0]
        else:
            first = out  # type: ignore[assignment]
            out_shapes = (first,)
        if alias is not None:
            if not opdef.has_module:
                raise SpecTypeError(f"'{name}' has no parameters to name with `as`", span)
            self._check_ident(alias, span, "layer")
        attr_items = tuple(sorted(attrs.items()))
        base = self.layer_base(alias or opdef.default_name or name)  # type: ignore[attr-defined]
        if self.calls:  # type: ignore[attr-defined]
            alias = None  # named after the call, numbered if the call repeats in one scope
        node = ir.OpNode(id=self.nid(), shape=first, span=span, op=name, inputs=tuple(inputs),
                         attrs=attr_items, module=alias, n_out=n_out, out_shapes=out_shapes,
                         problem=problem)
        if opdef.has_module:
            self.record_module(node, base, span)
        level = len(self.scopes) - 1
        if n_out > 1:
            return tuple(
                TVal(ir.OutNode(id=self.nid(), shape=s, span=span, source=node, index=i), level)
                for i, s in enumerate(out_shapes)
            )
        return TVal(node, level)

    def _runtime_number(self, name: str, a: Any, span: Span | None) -> ir.ConstNode:
        """A model argument or call-time option (or arithmetic of them) in tensor arithmetic,
        e.g. a gain or a temperature set at run time: a number the generated code reads from
        the model (`self.gain`) or from forward's keywords."""
        if isinstance(a, sympy.Expr) and a.is_number:
            return ir.ConstNode(id=self.nid(), shape=(), span=span, value=float(a))
        if self.seg is not None or self.plain is not None:
            raise SpecTypeError(
                f"{name}: a model argument or call-time option can be used in tensor arithmetic "
                "between segments and in the head, not inside a reversible segment or a stored "
                "block", span,
                ["make it an attribute of a layer, or move the arithmetic out of the segment"])
        runtime = {p.symbol for p in self.params if p.kind == "arg" and p.symbol is not None}
        runtime |= {o.symbol for o in self.options if o.symbol is not None}
        symbol = a.symbol if isinstance(a, ir.RuntimeRef) else a
        free = getattr(symbol, "free_symbols", set())
        if not free <= runtime:
            raise SpecTypeError(f"{name}: {a} depends on a size that is not known when the "
                                "model runs", span)
        return ir.ConstNode(id=self.nid(), shape=(), span=span, value=a)

    def record_module(self, node: ir.OpNode, base: str, span: Span | None) -> None:
        """A layer, in the part that builds it (a block, a stored block, or the model)."""
        record = (node, base, span)
        if self.blk is not None:
            self.blk.modules.append(record)
        elif self.seg is not None and not self.entry_mode:
            blk = self._ensure_block(span)
            blk.modules.append(record)
        elif self.plain is not None:
            self.plain.modules.append(record)
        else:
            self.model_modules.append(record)

    def _check_attrs(self, opdef: OpDef, given: dict[str, Any], span: Span | None,
                     kw_spans: dict[str, Span | None]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in given.items():
            spec = opdef.attr(k)
            where = kw_spans.get(k, span)
            if spec is None:
                known = [a.name for a in opdef.attrs]
                close = difflib.get_close_matches(k, known, n=1)
                note = (f"did you mean '{close[0]}'?" if close else
                        ("it takes: " + ", ".join(known)) if known else "it takes no attributes")
                raise SpecNameError(f"{opdef.name}() has no attribute '{k}'", where, [note])
            out[k] = _check_attr(opdef, spec, v, where)
            self._check_domain(opdef, spec, out[k], where)
        for a in opdef.attrs:
            if a.name not in out:
                if a.default is REQUIRED:
                    raise SpecTypeError(f"{opdef.name}() needs '{a.name}'", span)
                out[a.name] = a.default
        return out

    def _check_ctor(self, opdef: OpDef, shapes: list[Shape], attrs: dict[str, Any],
                    span: Span | None) -> None:
        """A layer is built when the model is: its constructor may depend on model arguments
        but not on a free input size (`linear` over a dimension of size S)."""
        assert opdef.ctor is not None
        args = {p.symbol for p in self.params if p.symbol is not None}
        try:
            entries = opdef.ctor(shapes, attrs)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"{opdef.name}: its layer cannot be built for these input shapes "
                             f"({exc}); a free input size cannot set a layer's size",
                             span) from None
        for entry in entries:
            values = entry[1] if isinstance(entry[1], tuple | list) else (entry[1],)
            for v in values:
                free = (v.free_symbols - args) if isinstance(v, sympy.Basic) else set()
                if free:
                    names = ", ".join(sorted(str(f) for f in free))
                    raise ShapeError(
                        f"{opdef.name}: its '{entry[0]}' would be {v}, which depends on the free "
                        f"input size {names}: a layer's size must be known when the model is "
                        "built", span, ["give the input that size (`input img: [B, 3, 224, 224]`)"
                                        " or apply the layer to a dimension of fixed size"])

    def _check_domain(self, opdef: OpDef, spec: Attr, v: Any, span: Span | None) -> None:
        """Refuse a number outside the attribute's domain (a drop rate of 1.5, an eps of 0).
        A value that depends on model arguments is checked at their default values."""
        if (spec.domain is None and spec.minimum is None) or isinstance(v, bool | str) or (
                v is None):
            return
        if isinstance(v, ir.RuntimeRef):  # a call-time option: every choice must be in the domain
            option = next((o for o in self.options if o.name == v.name), None)
            values: Any = tuple(c for c in option.choices if isinstance(c, int | float)) if (
                option is not None) else ()
        else:
            values = v if isinstance(v, tuple | list) else (v,)
        for x in values:
            shown = x
            if isinstance(x, sympy.Basic):
                x = x.subs({p.symbol: p.default for p in self.params if p.symbol is not None})
                if not x.is_number:
                    continue
                if not x.is_finite:
                    raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {shown} is not a finite "
                                        "number", span)
                x = float(x)
            if isinstance(x, int | float) and not math.isfinite(x):
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {x} is not a finite number",
                                    span)
            why = spec.out_of_domain(x)
            if why is None and spec.kind == "int" and spec.minimum is not None and (
                    x < spec.minimum):
                why = f"must be at least {spec.minimum}"
            if why:
                at = "" if shown is x or not isinstance(shown, sympy.Basic) else (
                    f" ({shown} at the model arguments' defaults)")
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' {why}, got {_num_text(x)}{at}",
                                    span)


def _check_attr(opdef: OpDef, spec: Attr, v: Any, span: Span | None) -> Any:
    if isinstance(v, ir.RuntimeRef):
        if not spec.runtime:
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' is fixed when the model is built; it cannot be "
                f"the call-time option '{v.name}'",
                span,
            )
        return v
    if isinstance(v, TVal):
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a {spec.kind}, not a tensor",
                            span)
    if v is None:
        if spec.default is None:
            return None
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' cannot be empty", span)
    if isinstance(v, sympy.Expr) and not v.is_number:
        if not spec.symbolic or spec.kind not in ("int", "float", "number"):
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' must be known at compile time; {v} depends on a "
                "model argument",
                span,
            )
        return v
    if isinstance(v, sympy.Expr):
        v = int(v) if v.is_Integer else float(v)
    k = spec.kind
    if k == "int":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be an integer, got "
                                f"{_kind(v)}", span)
        if spec.minimum is not None and v < spec.minimum:
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be at least {spec.minimum}, "
                                f"got {v}", span)
        if abs(v) > spec.maximum:
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' = {v} is too large (at most "
                                f"{spec.maximum})", span)
        return v
    if k in ("float", "number"):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a number, got "
                                f"{_kind(v)}", span)
        return float(v) if k == "float" else v
    if k == "bool":
        if not isinstance(v, bool):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be true or false", span)
        return v
    if k == "str":
        if not isinstance(v, str):
            raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a string", span)
        if spec.choices is not None and v not in spec.choices:
            raise SpecTypeError(
                f"{opdef.name}(): '{spec.name}' must be one of "
                + ", ".join(repr(c) for c in spec.choices) + f", got {v!r}",
                span,
            )
        return v
    if k in ("ints", "floats"):
        elem = int if k == "ints" else (int, float)
        if isinstance(v, int | float) and not isinstance(v, bool):
            if k == "ints" and not isinstance(v, int):
                raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be integers", span)
            return v
        if isinstance(v, list | tuple) and all(
            isinstance(x, elem) and not isinstance(x, bool) for x in v
        ):
            return tuple(v)
        raise SpecTypeError(f"{opdef.name}(): '{spec.name}' must be a list of "
                            f"{'integers' if k == 'ints' else 'numbers'}", span)
    raise AssertionError(k)
