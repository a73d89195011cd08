"""Mixed precision: the reversible backward under torch.autocast.

Under autocast the recompute in the backward runs at the forward's precision (the engine restores
the autocast state it saw), so every rebuilt activation and every gradient should be as close to
plain autograd (under the same autocast) as the low precision allows. Measured on RevViT at depth
12 and 48 (bfloat16 on CPU; float16/bfloat16 on GPU when there is one):

* rebuilt: max over blocks of |rebuilt input - forward input| / max |forward input|;
* grads (rev vs plain): the parameter gradients of one step, reversible against plain autograd,
  both under autocast (relative to the largest gradient, see revdsl.testing.grad_floor);
* grads (plain low vs fp32): plain autograd under autocast against plain float32: the error that
  low precision itself brings, for scale;
* a short training run (AdamW, default init, same seed, same batches, a learnable synthetic
  target): the loss curves of both, to see whether either diverges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import SPECS, save

CONFIG = dict(dim=192, heads=3, image=64, patch=8)


def _model(depth: int, device: str) -> torch.nn.Module:
    import revdsl

    mod = revdsl.load(str(SPECS / "rev_vit.rev"), depth=depth, **CONFIG)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=10, drop_path_rate=0.1).to(device)
    with torch.no_grad():  # a trained network's scale: the default init is near the identity
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(2.0)
    return model


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reversible: bool,
          dtype: torch.dtype | None, trace: list | None = None) -> dict[str, torch.Tensor]:
    model.reversible = reversible
    model.zero_grad(set_to_none=True)
    model.body.trace = trace
    torch.manual_seed(7)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    model.body.trace = None
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()}


def _grad_err(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    from revdsl.testing import grad_floor, rel_err

    floor = grad_floor(b)
    return max(rel_err(a[n], b[n], floor) for n in b)


def measure(depth: int, dtype: torch.dtype, device: str, batch: int, steps: int) -> dict:
    from revdsl.testing import rel_err

    model = _model(depth, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, CONFIG["image"], CONFIG["image"], generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    trace: list = []
    rev = _step(model, x, y, True, dtype, trace)
    plain = _step(model, x, y, False, dtype)
    fp32 = _step(model, x, y, False, None)
    fwd = [s for k, s in trace if k == "forward"]
    bwd = [s for k, s in trace if k == "backward"][::-1]
    rebuilt = max(rel_err(b[k].float(), f[k].float()) for f, b in zip(fwd, bwd) for k in f)
    losses = {}
    for reversible in (True, False):
        import revdsl

        mod = revdsl.load(str(SPECS / "rev_vit.rev"), depth=depth, **CONFIG)
        torch.manual_seed(0)
        m = mod.create_model(num_classes=10, drop_path_rate=0.1).to(device)
        m.reversible = reversible
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(3)
        curve = []
        for _ in range(steps):
            xb = torch.randn(batch, 3, CONFIG["image"], CONFIG["image"], generator=gen)
            yb = (xb.mean(dim=(1, 2, 3)) > 0).long()  # a learnable target
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=dtype):
                loss = F.cross_entropy(m(xb.to(device)), yb.to(device))
            loss.backward()
            opt.step()
            curve.append(loss.item())
        losses["reversible" if reversible else "baseline"] = curve
    row = {"depth": depth, "dtype": str(dtype).replace("torch.", ""), "device": device,
           "rebuilt": rebuilt, "grad_rev_vs_plain": _grad_err(rev, plain),
           "grad_plain_low_vs_fp32": _grad_err(plain, fp32),
           "final_loss": {k: v[-1] for k, v in losses.items()},
           "max_loss_gap": max(abs(a - b) for a, b in zip(losses["reversible"],
                                                           losses["baseline"])),
           "curves": losses}
    print(f"depth {depth:3d} {row['dtype']:9s} rebuilt {rebuilt:.2e}  grads rev vs plain "
          f"{row['grad_rev_vs_plain']:.2e}  plain {row['dtype']} vs fp32 "
          f"{row['grad_plain_low_vs_fp32']:.2e}  final loss rev "
          f"{row['final_loss']['reversible']:.4f} base {row['final_loss']['baseline']:.4f}",
          flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", type=int, nargs="+", default=[12, 48])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    dtypes = [torch.bfloat16] + ([torch.float16] if args.device == "cuda" else [])
    rows = [measure(d, dt, args.device, args.batch, args.steps) for dt in dtypes
            for d in args.depths]
    print(save(f"amp_{args.device}", {"config": CONFIG, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
