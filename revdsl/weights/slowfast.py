"""SlowFast (facebookresearch/SlowFast) checkpoints of RevViT and reversible MViT.

SlowFast builds both as its `MViT` class with `MVIT.REV.ENABLE`: the blocks, stage transitions
included, are one list `rev_backbone.layers.{i}` in forward order; each holds `F` (norm,
attention) and `G` (norm, mlp), and a transition also `pre_q_fuse.fuse_fn`. Ours name the same
modules by the spec: a reversible block has norm1/attn/norm2/mlp, a stored transition
fuse/attn.norm/attn.attn/norm/mlp. Shapes differ in three places: RevViT's separate q, k, v
projections are one qkv here (stacked rows), MViT's position table is (1, H*W, C) there and
(1, H, W, C) here, and its pooling convolutions are Conv3d with one frame there.
Checkpoints are `.pyth` files holding the weights under `model_state`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from revdsl.weights.base import Layout, Link

LAYER = "rev_backbone.layers.{}."

# per kind of block: our submodule -> SlowFast's, in the order they are tried (longest first)
KINDS: tuple[dict[str, str], ...] = (
    {"norm1": "F.norm", "attn": "F.attn", "norm2": "G.norm", "mlp": "G.mlp"},
    {"fuse": "pre_q_fuse.fuse_fn", "attn.norm": "F.norm", "attn.attn": "F.attn",
     "norm": "G.norm", "mlp": "G.mlp"},
)

# outside the blocks: our name (prefix) -> SlowFast's, and the form
TOP: dict[str, tuple[str, str]] = {
    "patch_embed.proj": ("patch_embed.proj", "same"),
    "pos_embed.weight": ("pos_embed", "flatten"),
    "norm": ("norm", "same"),
    "head": ("head.projection", "same"),
}


def _has(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _kind(block: torch.nn.Module) -> dict[str, str] | None:
    for kind in KINDS:
        if all(_has(block, k) for k in kind):
            return kind
    return None


def blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, dict[str, str]]]:
    """Our blocks in forward order: those of each reversible segment, and stored blocks that
    are transitions, in the order the model registers them (its forward order)."""
    out = []
    for name, child in model.named_children():
        inner = getattr(child, "blocks", None)
        if isinstance(inner, torch.nn.ModuleList):
            for i, block in enumerate(inner):
                kind = _kind(block)
                if kind is not None:
                    out.append((f"{name}.blocks.{i}", block, kind))
        else:
            kind = _kind(child)
            if kind is not None and name not in TOP:
                out.append((name, child, kind))
    return out


def _inside(local: str, kind: dict[str, str]) -> tuple[str, str] | None:
    for ours in sorted(kind, key=len, reverse=True):
        if local == ours or local.startswith(ours + "."):
            return ours, kind[ours] + local[len(ours):]
    return None


def links(model: torch.nn.Module) -> list[Link]:
    out: list[Link] = []
    for i, (prefix, block, kind) in enumerate(blocks(model)):
        for local in block.state_dict():
            hit = _inside(local, kind)
            if hit is None:
                continue
            theirs = LAYER.format(i) + hit[1]
            if re.search(r"\.qkv\.(weight|bias)$", theirs):
                parts = tuple(theirs.replace(".qkv.", f".{p}.") for p in "qkv")
                out.append(Link(f"{prefix}.{local}", parts, "concat"))
            elif re.search(r"\.pool_[qkv]\.weight$", theirs):
                out.append(Link(f"{prefix}.{local}", (theirs,), "conv3d"))
            else:
                out.append(Link(f"{prefix}.{local}", (theirs,)))
    for name in model.state_dict():
        for ours, (theirs, form) in TOP.items():
            if name == ours or name.startswith(ours + "."):
                out.append(Link(name, (theirs + name[len(ours):],), form))
                break
    return out


def layers(state_dict: Mapping[str, Any]) -> int | None:
    found = [int(m.group(1)) for k in state_dict
             if (m := re.match(r"rev_backbone\.layers\.(\d+)\.", k))]
    return max(found) + 1 if found else None


LAYOUT = Layout(
    name="slowfast",
    families=("RevViT", "RevMViT"),
    links=links,
    layers=layers,
    our_layers=lambda model: len(blocks(model)),
)
