"""RevBiFPN (CerebrasResearch/RevBiFPN) release checkpoints, S0 ... S6.

The release is a plain state dict (`torch.load` then `load_state_dict`). Its reversible stack is
`rev_stack.{k}` (k from 1; the stem has no weights) in forward order, like our backbone's
blocks: a make-layer block holds, per scale i, `rev_transform_{i}.f.xform_0_1` and `.g.` (our
block's couplings on that scale's channel halves, in order: b += F(a), a += G(b)); a RevSilo
holds `f.xform_{i}_{j}` for the bottom-up transform from scale i to a coarser scale j, and
`g.xform_{N-1-i}_{N-1-j}.0` for the top-down one from scale i to a finer j (the reference builds
the top-down silo on reversed scale order; N is the number of scales after the silo). Our silo
steps say which scale each transform reads and which it updates, so the mapping follows the
proof's structure, not names. The neck: our per-scale heads are `rev_stack.recomp_op.
recomp_transform_{i}`, the strided fusion chain `head.pyramid_heads.{i}`, then
`head.final_conv` and `head.fc`. MBConv internals are renamed (expand/dw/se.reduce/se.expand/
project -> exp_conv/dw_conv/se.se.1/se.se.3/project_conv); BatchNorm buffers are included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from revdsl.weights.base import ConversionError, Layout, Link

MBCONV = {"expand": "exp_conv", "dw": "dw_conv", "se.reduce": "se.se.1",
          "se.expand": "se.se.3", "project": "project_conv"}
NECK_END = {"conv": "head.final_conv.conv", "bn": "head.final_conv.norm"}


def _mbconv(module: torch.nn.Module, ours: str, theirs: str) -> list[Link]:
    out = []
    for local in module.state_dict():
        for k, v in MBCONV.items():
            if local.startswith(k + "."):
                out.append(Link(f"{ours}.{local}", (f"{theirs}.{v}{local[len(k):]}",)))
                break
        else:
            raise ConversionError(f"{ours}.{local}: not an MBConv tensor the revbifpn "
                                  "layout knows")
    return out


def _scale(stream: str) -> int:
    m = re.fullmatch(r"s(\d+)", stream)
    if m is None:
        raise ConversionError(f"silo stream {stream!r} is not a scale s<i>: the revbifpn "
                              "layout expects the spec's s[0] ... s[n] streams")
    return int(m.group(1))


def _coupled(block: torch.nn.Module) -> list[Any]:
    return [s for s in getattr(block, "STEPS", ()) if getattr(s, "modules", ())]


def _halves_links(prefix: str, k: int, block: torch.nn.Module) -> list[Link]:
    """A make-layer block: per scale, a chunk into halves (first, second) and two couplings.
    The reference's `f` reads the first half and updates the second, `g` the other way; which
    is which follows from the streams, not from the order the spec writes them in."""
    out: list[Link] = []
    halves: tuple[str, ...] = ()
    scale = -1
    for step in block.STEPS:
        outputs = getattr(step, "outputs", ())
        if len(getattr(step, "inputs", ())) == 1 and len(outputs) == 2:  # a chunk: next scale
            halves, scale = tuple(outputs), scale + 1
            continue
        if not getattr(step, "modules", ()):
            continue
        first, second = halves or ("", "")
        if (step.target, tuple(step.reads)) == (second, (first,)):
            which = "f"
        elif (step.target, tuple(step.reads)) == (first, (second,)):
            which = "g"
        else:
            raise ConversionError(f"{prefix}: step '{step.fn}' is not a coupling of one "
                                  "chunk's halves, which the revbifpn layout expects")
        name = f"rev_stack.{k}.rev_transform_{scale}.{which}.xform_0_1"
        out += _mbconv(block.get_submodule(step.modules[0]), f"{prefix}.{step.modules[0]}",
                       name)
    return out


def _block_links(prefix: str, k: int, block: torch.nn.Module) -> list[Link]:
    out: list[Link] = []
    steps = _coupled(block)
    silo = all(re.fullmatch(r"s\d+", s.target) for s in steps)
    if not silo:  # per-scale RevNet couplings on a chunk's halves
        return _halves_links(prefix, k, block)
    scales = len(block.OUTPUTS)
    for step in steps:
        j = _scale(step.target)
        if len(step.reads) != len(step.modules):
            raise ConversionError(f"{prefix}: a silo step whose transforms do not pair with "
                                  "the scales they read")
        for read, module in zip(step.reads, step.modules, strict=True):
            i = _scale(read)
            name = (f"rev_stack.{k}.f.xform_{i}_{j}" if i < j else
                    f"rev_stack.{k}.g.xform_{scales - 1 - i}_{scales - 1 - j}.0")
            out += _mbconv(block.get_submodule(module), f"{prefix}.{module}", name)
    return out


def links(model: torch.nn.Module) -> list[Link]:
    out: list[Link] = []
    for k, block in enumerate(model.backbone.blocks, start=1):
        out += _block_links(f"backbone.blocks.{k - 1}", k, block)
    neck = model.neck
    convs = sorted((int(n[len("mbconv"):]), n) for n, _ in neck.named_children()
                   if re.fullmatch(r"mbconv\d+", n))
    scales = (len(convs) + 1) // 2
    for pos, (_, name) in enumerate(convs):
        theirs = (f"rev_stack.recomp_op.recomp_transform_{pos}" if pos < scales else
                  f"head.pyramid_heads.{pos - scales}")
        out += _mbconv(neck.get_submodule(name), f"neck.{name}", theirs)
    for name in model.state_dict():
        if name.startswith("neck.") and name.split(".")[1] in NECK_END:
            part = name.split(".")[1]
            out.append(Link(name, (NECK_END[part] + name[len("neck." + part):],)))
        elif name.startswith("fc."):
            out.append(Link(name, ("head." + name,)))
    return out


def layers(state_dict: Mapping[str, Any]) -> int | None:
    found = [int(m.group(1)) for k in state_dict if (m := re.match(r"rev_stack\.(\d+)\.", k))]
    return max(found) if found else None


LAYOUT = Layout(
    name="revbifpn",
    families=("RevBiFPN",),
    links=links,
    layers=layers,
    our_layers=lambda model: len(model.backbone.blocks),
)
