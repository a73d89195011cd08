"""Official checkpoints in and out: name and shape mappings between a generated model's
state dict and a reference implementation's.

A *layout* (one per source: `slowfast`, `revbifpn`, in this package's modules) lists, for a
given generated model, which reference tensors make each of its tensors (`Link`). Everything
else is generic and lives here: reading a checkpoint file, unwrapping its state dict, applying
the links in either direction, checking every shape, and reporting missing and unexpected
names, or refusing a checkpoint whose configuration differs from the compiled spec's and
saying which parameter differs.

    to_ours(model, state_dict, source)       -> our state dict (ConversionError if it cannot)
    to_reference(model, state_dict, source)  -> the reference's state dict
    load_reference_state_dict(model, sd, source) -> loads it into the model
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from revdsl.weights import revbifpn, slowfast
from revdsl.weights.base import ConversionError, Layout, Link

__all__ = ["ConversionError", "Layout", "Link", "load_reference_state_dict", "read_checkpoint",
           "to_ours", "to_reference", "unwrap"]


def _same(ts: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
    return ts[0]


def _concat(ts: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
    return torch.cat(ts, 0)


def _reshape(ts: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
    return ts[0].reshape(shape) if ts[0].numel() == shape.numel() else ts[0]


def _squeeze2(ts: list[torch.Tensor], shape: torch.Size) -> torch.Tensor:
    t = ts[0]
    return t.squeeze(2) if t.dim() == 5 and t.shape[2] == 1 else t


# form -> (reference tensors to ours, ours to reference tensors)
FORMS: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., list[torch.Tensor]]]] = {
    "same": (_same, lambda t, n: [t]),
    # q, k and v projections stacked into one qkv projection (rows)
    "concat": (_concat, lambda t, n: list(t.chunk(n, 0))),
    # a position table stored flat (1, H*W, C) against ours (1, H, W, C)
    "flatten": (_reshape, lambda t, n: [t.flatten(1, -2)] if t.dim() > 3 else [t]),
    # a video model's Conv3d weight with one frame (O, I, 1, kh, kw) against our Conv2d's
    "conv3d": (_squeeze2, lambda t, n: [t.unsqueeze(2)]),
}


@dataclass
class Result:
    state_dict: dict[str, torch.Tensor]
    unexpected: list[str] = field(default_factory=list)   # checkpoint names nothing reads


def layouts() -> dict[str, Layout]:
    return {lay.name: lay for lay in (slowfast.LAYOUT, revbifpn.LAYOUT)}


def layout(source: str, model: torch.nn.Module) -> Layout:
    known = layouts()
    if source not in known:
        raise ConversionError(f"unknown checkpoint source {source!r}; known: "
                              + ", ".join(sorted(known)))
    lay = known[source]
    family = type(model).__name__
    if family not in lay.families:
        raise ConversionError(
            f"{source} checkpoints are mapped for the models {', '.join(lay.families)}; "
            f"this model is {family} (write its mapping in revdsl/weights/, one table per "
            "source)")
    return lay


def unwrap(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file's object: SlowFast's `model_state`, or a
    `state_dict` / `model` entry, or the dict itself; a `module.` prefix (DDP) is dropped."""
    obj = checkpoint
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in obj.values()):
        raise ConversionError("the checkpoint holds no state dict (a mapping of names to "
                              "tensors, directly or under 'model_state' / 'state_dict')")
    out = dict(obj)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


def read_checkpoint(path: str, trust: bool = False) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such checkpoint file") from None
    except Exception as exc:  # any unpickling failure: the file is the user's
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if trust else (" (it may hold Python objects besides tensors: pass "
                                 "--trust-checkpoint to unpickle it fully, only if you trust "
                                 "where it came from)")
        raise ConversionError(f"{path}: cannot read the checkpoint: {first}{hint}") from None
    return unwrap(obj)


def _parameters_of(model: torch.nn.Module) -> dict[str, Any]:
    mod = sys.modules.get(type(model).__module__)
    return dict(getattr(mod, "PARAMETERS", {}) or {})


def _which(model: torch.nn.Module, value: int) -> list[str]:
    """The compile-time parameters (and num_classes) whose value is `value`, as `name=value`:
    what a differing size most likely comes from."""
    found = [f"{k}={v}" for k, v in _parameters_of(model).items()
             if isinstance(v, int) and not isinstance(v, bool) and v == value]
    if getattr(model, "num_classes", None) == value:
        found.append(f"num_classes={value}")
    return found


def _named(names: list[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


def _check_config(model: torch.nn.Module, lay: Layout, sd: Mapping[str, Any]) -> None:
    theirs, ours = lay.layers(sd), lay.our_layers(model)
    if theirs is not None and theirs != ours:
        raise ConversionError(
            f"the checkpoint has {theirs} blocks and this model {ours}"
            f"{_named(_which(model, ours))}: "
            f"compile the spec with the checkpoint's configuration")


def _shape_error(link: Link, got: tuple[int, ...], want: tuple[int, ...],
                 model: torch.nn.Module) -> tuple[str, str | None]:
    """One line for the mismatch, and the compile-time parameter or argument it points to."""
    diff = [(g, w) for g, w in zip(got, want, strict=False) if g != w]
    what, culprit = "", None
    if len(got) == len(want) and diff:
        g, w = diff[0]
        which = _which(model, w)
        what = f": {g} in the checkpoint vs {w} here{_named(which)}"
        if which:
            culprit = f"{', '.join(which)} here, {g} in the checkpoint"
    theirs = link.theirs[0] + (f" (+{len(link.theirs) - 1} stacked)" if len(link.theirs) > 1
                               else "")
    return f"{theirs} {list(got)} does not fit {link.ours} {list(want)}{what}", culprit


def to_ours(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
            strict: bool = True) -> Result:
    """Map a reference state dict onto the model's names and shapes. Every one of our tensors
    must be found (missing names are an error); with `strict`, so must every checkpoint
    tensor be used (unexpected names are an error); shapes must match exactly."""
    lay = layout(source, model)
    _check_config(model, lay, state_dict)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    wrong: list[tuple[str, str | None]] = []
    used: set[str] = set()
    for link in lay.links(model):
        if any(t not in state_dict for t in link.theirs):
            missing.extend(t for t in link.theirs if t not in state_dict)
            continue
        used.update(link.theirs)
        target = ours[link.ours]
        value = FORMS[link.form][0]([state_dict[t] for t in link.theirs], target.shape)
        if tuple(value.shape) != tuple(target.shape):
            wrong.append(_shape_error(link, tuple(value.shape), tuple(target.shape), model))
            continue
        out[link.ours] = value.detach().to(dtype=target.dtype).clone()
    unmapped = sorted(set(ours) - {link.ours for link in lay.links(model)})
    unexpected = sorted(set(state_dict) - used)
    problems = []
    culprits = sorted({c for _, c in wrong if c is not None})
    if culprits:
        problems.append("the configuration differs: " + "; ".join(culprits))
    if wrong:
        lines = [w for w, _ in wrong]
        problems.append(f"shapes differ ({len(lines)}):\n  " + "\n  ".join(lines[:8])
                        + ("\n  ..." if len(lines) > 8 else ""))
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)}):\n  "
                        + "\n  ".join(missing[:20]) + ("\n  ..." if len(missing) > 20 else ""))
    if unmapped:
        problems.append(f"no {source} counterpart for ({len(unmapped)}):\n  "
                        + "\n  ".join(unmapped[:20]))
    if unexpected and strict:
        problems.append(f"unexpected in the checkpoint ({len(unexpected)}):\n  "
                        + "\n  ".join(unexpected[:20])
                        + ("\n  ..." if len(unexpected) > 20 else ""))
    if problems:
        raise ConversionError(f"the {source} checkpoint does not fit {type(model).__name__}: "
                              + "\n".join(problems))
    return Result(out, unexpected)


def to_reference(model: torch.nn.Module, source: str,
                 state_dict: Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
    """The model's weights (or `state_dict`, in our names) under the reference's names and
    shapes, ready for the official code's `load_state_dict`."""
    lay = layout(source, model)
    ours = model.state_dict() if state_dict is None else state_dict
    out: dict[str, torch.Tensor] = {}
    for link in lay.links(model):
        parts = FORMS[link.form][1](ours[link.ours].detach(), len(link.theirs))
        for name, t in zip(link.theirs, parts, strict=True):
            out[name] = t.clone()
    return out


def load_reference_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
                              source: str, strict: bool = True) -> list[str]:
    """Load an official checkpoint's state dict into `model`; returns the unexpected names
    (non-empty only with strict=False)."""
    result = to_ours(model, state_dict, source, strict=strict)
    model.load_state_dict(result.state_dict, strict=True)
    return result.unexpected
