"""Train a revdsl-generated reversible model with DistributedDataParallel (or FSDP2), and
check it.

Two processes (gloo backend, CPU) each take half of every batch; DDP averages their gradients.
The result must equal one process training on the whole batch: same gradients, same weights after
every step. Run it as a check (what the test suite does; without --set the default spec is
compiled at this small size):

    python examples/ddp.py
    python examples/ddp.py --fsdp
    python examples/ddp.py --fsdp-per-block
    python examples/ddp.py --fsdp-per-block --spec specs/rev_mvit.rev --set depth=3 \
        --set transitions=[1] --set dim=16 --set heads=1 --set image=32
    python examples/ddp.py --spec specs/rev_mvit.rev --set depth=3 --set transitions=[1] \
        --set dim=16 --set heads=1 --set image=32

The recipe for your own training script is `train_ddp` below: build the model the same way on
every rank, wrap it in DDP, and train as usual; nothing about the reversible backward needs a
special flag (each block's parameter gradients reach DDP's hooks once, as the block's backward
finishes). On GPUs use the nccl backend and one process per device (torchrun).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import revdsl
from revdsl.files import parse_sets
from revdsl.testing import grad_floor, without_randomness

WORLD = 2
# the default configuration: a RevViT small enough to train in seconds on 32-pixel data
SMALL = ("depth=4", "dim=32", "heads=2", "image=32", "patch=8")


def build(spec: str, sets: dict[str, Any], reversible: bool) -> torch.nn.Module:
    module = revdsl.load(spec, **sets)
    torch.manual_seed(0)  # every rank builds the same weights (DDP also broadcasts rank 0's)
    model = module.create_model(num_classes=10).double()
    model.reversible = reversible
    # dropout and drop-path draw their masks per process, so a 2-process run cannot match one
    # process mask for mask: the check turns them off (training with them is fine)
    return without_randomness(model)


def batches(steps: int, batch: int, image: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(batch, 3, image, image, generator=g, dtype=torch.float64),
             torch.randint(0, 10, (batch,), generator=g)) for _ in range(steps)]


def train(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]
          ) -> list[dict[str, torch.Tensor]]:
    """SGD with momentum; returns each step's gradients."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    grads = []
    model.train()
    for x, y in data:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        inner = model.module if isinstance(model, DDP) else model
        grads.append({n: p.grad.detach().clone() for n, p in inner.named_parameters()
                      if p.grad is not None})
        opt.step()
    return grads


def held_bytes(model: torch.nn.Module) -> dict[str, int]:
    """What this rank holds between steps: its parameters and gradients (a sharded one counts
    its local shard only)."""
    def local(t: torch.Tensor | None) -> int:
        if t is None:
            return 0
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    return {"parameters": sum(local(p) for p in model.parameters()),
            "gradients": sum(local(p.grad) for p in model.parameters())}


def shard_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units to shard one by one: every block of every reversible segment and every stored
    block (a stage transition, a neck: their classes say STORED); the root unit holds the rest
    (stem, head)."""
    units = []
    for child in model.children():
        blocks = getattr(child, "blocks", None)
        if isinstance(blocks, torch.nn.ModuleList):
            units.extend(blocks)
        elif getattr(child, "STORED", False):
            units.append(child)
    return units


def train_ddp(rank: int, args: argparse.Namespace, sets: dict[str, Any], out: str) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{out}.rendezvous", rank=rank,
                            world_size=WORLD)
    try:
        model = build(args.spec, sets, args.reversible)
        if args.fsdp_per_block:
            from torch.distributed.fsdp import fully_shard

            for block in shard_units(model):
                fully_shard(block)      # each block: its own all-gather and reduce-scatter
            fully_shard(model)          # the rest (stem, head) and the root
        elif args.fsdp:
            from torch.distributed.fsdp import fully_shard

            fully_shard(model)  # FSDP2, the whole model as one unit (see the README)
        else:
            model = DDP(model)
        half = args.batch // WORLD
        data = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
                for x, y in batches(args.steps, args.batch, args.image)]
        grads = train(model, data)
        inner = model.module if isinstance(model, DDP) else model
        held = held_bytes(inner)
        state = {n: v.full_tensor() if hasattr(v, "full_tensor") else v
                 for n, v in inner.state_dict().items()}
        grads = [{n: g.full_tensor() if hasattr(g, "full_tensor") else g for n, g in gs.items()}
                 for gs in grads]
        if rank == 0:
            torch.save({"state": state, "grads": grads, "held": held}, out)
        dist.barrier()  # neither rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()
    # The work is done and saved. gloo's worker threads can abort the interpreter's own teardown
    # now and then ("terminate called without an active exception", SIGABRT), which would fail a
    # correct run: leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """max |a - b| / max |b|; below `floor` (a gradient that is zero in exact arithmetic, such
    as a key norm's bias that softmax cancels) the error is measured against the floor."""
    return (a - b).abs().max().item() / max(b.abs().max().item(), floor, 1e-300)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default="specs/rev_vit.rev")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="spec parameters (default for the default spec: a small RevViT, "
                   + " ".join(SMALL) + ")")
    p.add_argument("--image", type=int, help="image size of the data (default: the spec's "
                   "`image` parameter as set, else 32)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--baseline", dest="reversible", action="store_false",
                   help="train the baseline (plain autograd) instead")
    p.add_argument("--fsdp", action="store_true",
                   help="shard with FSDP2 (fully_shard on the whole model) instead of DDP")
    p.add_argument("--fsdp-per-block", action="store_true",
                   help="FSDP2 with fully_shard on every reversible and stored block, then the "
                   "model")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.set is None and args.spec == p.get_default("spec"):
        args.set = list(SMALL)
    sets = parse_sets(args.set)
    if args.image is None:
        args.image = int(sets.get("image", 32))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ddp.pt")
        mp.spawn(train_ddp, args=(args, sets, out), nprocs=WORLD, join=True)
        ddp = torch.load(out)
    single = build(args.spec, sets, args.reversible)
    grads = train(single, batches(args.steps, args.batch, args.image))
    g_err = max(rel(ddp["grads"][k][n], g[n], grad_floor(g)) for k, g in enumerate(grads)
                for n in g)
    state = {n: v for n, v in single.state_dict().items() if v.is_floating_point()}
    w_floor = 1e-6 * max(v.abs().max().item() for v in state.values())
    w_err = max(rel(ddp["state"][n], v, w_floor) for n, v in state.items())
    mode = "reversible" if args.reversible else "baseline"
    how = ("FSDP2 per block" if args.fsdp_per_block else "FSDP2" if args.fsdp else "DDP")
    print(f"{how} ({WORLD} processes, gloo) vs one process, {mode}, {args.steps} steps: "
          f"gradients {g_err:.2e}, weights {w_err:.2e} (relative, float64)")
    full = held_bytes(single)
    ratio = sum(ddp["held"].values()) / sum(full.values())
    print(f"held by rank 0 between steps: parameters {ddp['held']['parameters'] / 2**10:.1f} KiB "
          f"+ gradients {ddp['held']['gradients'] / 2**10:.1f} KiB = {ratio:.3f} of one "
          f"process's {sum(full.values()) / 2**10:.1f} KiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"spec": args.spec, "sets": args.set or [], "mode": mode, "how": how,
                       "processes": WORLD, "steps": args.steps, "grad_error": g_err,
                       "weight_error": w_err, "held_rank0": ddp["held"], "held_single": full,
                       "held_ratio": ratio}, f, indent=2)
    return 0 if max(g_err, w_err) < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
