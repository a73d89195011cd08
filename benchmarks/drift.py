"""Reconstruction drift: how far the reversible backward's rebuilt activations and gradients move
from plain autograd's as depth grows and precision drops, and what the guard costs.

    python benchmarks/drift.py            # ~3 minutes on 2 CPU cores

RevViT at RevViT-S width (dim 384, 6 heads), 32 px images with 8 px patches (16 tokens), batch 2,
depths 12, 48 and 96, in float32 and bfloat16 (autocast; float16 needs a GPU: measured when
`--device cuda` is given), with weights at their initial scale (x1) and multiplied by 10 (x10,
larger activations, as trained networks have). For each:

* rebuilt: the reconstruction guard's figure, max |rebuilt - real| / max |real| over the
  segment's inputs at one backward (`model.reconstruction_error()`);
* grads: the parameter gradients of one step, reversible against plain autograd in the same
  precision (relative to the largest gradient, revdsl.testing.grad_floor).

The guard's cost: the median step time with the guard on against off (RevViT-S depth 12,
float32, 5 alternating repeats). Results: benchmarks/results/drift.json, then BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import SPECS, save

CONFIG = dict(dim=384, heads=6, image=32, patch=8)


def build(depth: int, scale: float, device: str) -> torch.nn.Module:
    import revdsl

    mod = revdsl.load(str(SPECS / "rev_vit.rev"), depth=depth, **CONFIG)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=10, drop_path_rate=0.0).to(device)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    model.set_reconstruction_guard(0.0)  # measure only
    return model


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reversible: bool,
         dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    model.reversible = reversible
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.grad is not None}


def grad_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    from revdsl.testing import grad_floor, rel_err

    floor = grad_floor(b)
    return max(rel_err(a[n], b[n], floor) for n in b)


def guard_cost(device: str, repeats: int = 5) -> dict[str, float]:
    model = build(12, 1.0, device)
    x = torch.randn(8, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(2):
        step(model, x, y, True, None)
    for _ in range(repeats):
        for mode in ("off", "on"):
            model.set_reconstruction_guard(0.0 if mode == "on" else None)
            start = time.perf_counter()
            step(model, x, y, True, None)
            times[mode].append(time.perf_counter() - start)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {"off_s": off, "on_s": on, "overhead": on / off - 1}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--depths", type=int, nargs="+", default=[12, 48, 96])
    args = p.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    dtypes: list[tuple[str, torch.dtype | None]] = [("float32", None),
                                                     ("bfloat16", torch.bfloat16)]
    if args.device.startswith("cuda"):
        dtypes.append(("float16", torch.float16))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g).to(args.device)
    y = torch.randint(0, 10, (2,), generator=g).to(args.device)
    rows = []
    for depth in args.depths:
        for scale in (1.0, 10.0):
            model = build(depth, scale, args.device)
            for name, dtype in dtypes:
                rev = step(model, x, y, True, dtype)
                rebuilt = model.reconstruction_error()["body"]
                plain = step(model, x, y, False, dtype)
                finite = all(bool(torch.isfinite(v).all()) for v in plain.values())
                err = grad_err(rev, plain) if finite else float("nan")
                rows.append({"depth": depth, "scale": scale, "dtype": name,
                             "rebuilt": rebuilt, "grads": err, "plain_finite": finite})
                print(f"depth {depth:3d}  weights x{scale:<4g} {name:9s} rebuilt {rebuilt:.2e}"
                      f"  grads rev vs plain {err:.2e}", flush=True)
            del model
    cost = guard_cost(args.device)
    print(f"guard: {cost['off_s']:.3f} s off, {cost['on_s']:.3f} s on "
          f"({100 * cost['overhead']:+.2f}%)")
    suffix = "" if args.device == "cpu" else "_cuda"
    path = save("drift" + suffix, {"command": "python benchmarks/drift.py"
                                   + ("" if args.device == "cpu" else f" --device {args.device}"),
                                   "config": CONFIG, "batch": 2, "rows": rows, "guard": cost})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
