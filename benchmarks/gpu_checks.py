"""The GPU checks of benchmarks/gpu.sh (they also run on CPU at tiny sizes: `--quick`).

1. RNG replay on the device: with dropout and drop-path on, the reversible backward's gradients
   equal plain autograd's (same seed), float32.
2. Autocast: float16 and bfloat16 gradients (reversible, under autocast) against float32 plain.
3. Memory: peak allocated memory (`torch.cuda.max_memory_allocated`; on CPU the profiler's
   figure) of one training step, reversible and plain, for RevViT-B/L, Rev-MViT-B and
   RevBiFPN-S3, and the step-time ratio.
4. torch.compile: the compiled training step against eager, reversible and plain.

Writes one JSON file (`--json`); BENCHMARKS.md records it when a device was lent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import revdsl  # noqa: E402
from revdsl.measure import peak_bytes  # noqa: E402
from revdsl.testing import grad_floor, rel_err  # noqa: E402

SPECS = ROOT / "specs"
# label, spec, overrides, image size, batch (full run), batch (quick)
MODELS = [
    ("RevViT-B", "rev_vit.rev", dict(dim=768, heads=12), 224, 64),
    ("RevViT-L", "rev_vit.rev", dict(dim=1024, heads=16, depth=24), 224, 32),
    ("Rev-MViT-B", "rev_mvit.rev", {}, 224, 32),
    ("RevBiFPN-S3", "rev_bifpn.rev", dict(width="8/3", image=288, num_ext=3), 288, 32),
]
QUICK = dict(dim=32, heads=2, depth=2, image=32, patch=8)


def _vit(device: str, quick: bool, **extra: Any) -> torch.nn.Module:
    kw = {**(QUICK if quick else dict(dim=384, heads=6, depth=6)), **extra}
    torch.manual_seed(0)
    return revdsl.load(SPECS / "rev_vit.rev", **kw).create_model(
        num_classes=10, drop_path_rate=0.2).to(device)


def _grads(model: torch.nn.Module, x: torch.Tensor, reversible: bool, seed: int,
           dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    model.reversible = reversible
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = F.cross_entropy(model(x).float(), torch.arange(x.shape[0], device=x.device) % 10)
    loss.backward()
    return [p.grad.detach().float().clone() for p in model.parameters() if p.grad is not None]


def _worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    floor = grad_floor(b)
    return max(rel_err(x, y, floor) for x, y in zip(a, b, strict=True))


def rng_replay(device: str, quick: bool) -> dict[str, Any]:
    model = _vit(device, quick, dropout=0.1).train()
    size = 32 if quick else 224
    x = torch.randn(4, 3, size, size, device=device)
    return {"grad_error_reversible_vs_plain": _worst(_grads(model, x, True, 7),
                                                     _grads(model, x, False, 7))}


def autocast(device: str, quick: bool) -> dict[str, Any]:
    model = _vit(device, quick).train()
    size = 32 if quick else 224
    x = torch.randn(8, 3, size, size, device=device)
    ref = _grads(model, x, False, 3)
    out = {}
    dtypes = [torch.bfloat16] + ([torch.float16] if device == "cuda" else [])
    for dtype in dtypes:
        name = str(dtype).split(".")[-1]
        rev = _grads(model, x, True, 3, dtype)
        plain = _grads(model, x, False, 3, dtype)
        out[name] = {"reversible_vs_plain_same_dtype": _worst(rev, plain),
                     "reversible_vs_float32": _worst(rev, ref),
                     "plain_vs_float32": _worst(plain, ref)}
    return out


def _step(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    times = []
    for k in range(steps + 1):
        model.zero_grad(set_to_none=True)
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(x).float().sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if k:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def memory(device: str, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for label, spec, kw, size, batch in MODELS:
        if quick:
            kw, size, batch = ({**QUICK} if spec == "rev_vit.rev" else
                               dict(image=32, dim=8, transitions=[1], depth=3)
                               if spec == "rev_mvit.rev" else dict(image=64, num_ext=0, reps=1)
                               ), (64 if spec == "rev_bifpn.rev" else 32), 2
        torch.manual_seed(0)
        model = revdsl.load(SPECS / spec, **kw).create_model(num_classes=10).to(device).train()
        x = torch.randn(batch, 3, size, size, device=device)
        row: dict[str, Any] = {"label": label, "batch": batch}
        for mode in ("reversible", "plain"):
            model.reversible = mode == "reversible"
            row[f"peak_{mode}"] = peak_bytes(model, x)[0]
            row[f"step_{mode}"] = _step(model, x, 2 if quick else 5)
        row["peak_ratio"] = row["peak_plain"] / max(row["peak_reversible"], 1)
        row["step_ratio"] = row["step_reversible"] / row["step_plain"]
        rows.append(row)
        print(f"  {label}: peak {row['peak_reversible'] / 2**20:.0f} vs "
              f"{row['peak_plain'] / 2**20:.0f} MiB ({row['peak_ratio']:.1f}x), step "
              f"{row['step_ratio']:.2f}x", flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def compiled(device: str, quick: bool) -> dict[str, Any]:
    out = {}
    size = 32 if quick else 224
    for mode in ("reversible", "plain"):
        model = _vit(device, quick).train()
        model.reversible = mode == "reversible"
        x = torch.randn(8, 3, size, size, device=device)
        eager = _step(model, x, 3)
        torch._dynamo.reset()
        # inductor on the device; a smoke run checks the same tracing without code generation
        # (inductor takes minutes to compile the plain model on 2 CPU cores)
        fast = torch.compile(model, backend="aot_eager" if quick else "inductor")
        t = time.perf_counter()
        fast(x).float().sum().backward()
        compile_s = time.perf_counter() - t
        out[mode] = {"eager": eager, "compiled": _step(fast, x, 3), "compile_seconds": compile_s}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run on CPU)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = p.parse_args(argv)
    t = time.perf_counter()
    res: dict[str, Any] = {"device": args.device, "quick": args.quick,
                           "name": torch.cuda.get_device_name() if args.device == "cuda" else
                           "cpu", "torch": torch.__version__}
    for name, fn in (("rng_replay", rng_replay), ("autocast", autocast), ("memory", memory),
                     ("compiled", compiled)):
        print(f"== {name}", flush=True)
        res[name] = fn(args.device, args.quick)
    res["seconds"] = time.perf_counter() - t
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.json} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
