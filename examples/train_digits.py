"""Train a small reversible ViT (or RevNet) on scikit-learn's handwritten digits (no download),
next to its baseline, and plot both loss curves.

    python examples/train_digits.py                    # ~2 minutes on 2 CPU cores
    python examples/train_digits.py --epochs 2 --plot ""   # a quick run, no plot
    python examples/train_digits.py --model revnet     # RevNet-38 on the digits upsampled to 16x16

The ViT is specs/rev_vit.rev compiled in-process with small sizes (8x8 images, 2x2 patches:
16 tokens); the RevNet is specs/rev_net.rev (RevNet-38, its CIFAR configuration) on the digits
upsampled to 16x16 (nearest), with BatchNorm in every residual function. The reversible model
and the baseline (`reversible=False`: plain autograd) start from the same weights and see the
same batches and the same dropout masks, so their loss curves should lie on top of each other:
the reversible backward computes the same gradients while keeping only the segment's outputs.
Prints the test accuracy of both and the largest gap between the curves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import revdsl  # noqa: E402

SIZES = dict(image=8, patch=2, dim=64, depth=6, heads=4)
MODELS = {  # spec, compile-time sizes, constructor arguments, image size, default epochs, plot
    "vit": ("rev_vit.rev", SIZES, dict(drop_path_rate=0.1), 8, 60, "digits_loss.png"),
    "revnet": ("rev_net.rev", dict(image=16), {}, 16, 15, "digits_revnet_loss.png"),
}


def digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0  # [N, 8, 8] in [0, 1]
    x = ((x - 0.5) / 0.5).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # 3 channels
    y = torch.tensor(data.target)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    return xtr, ytr, xte, yte


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        right = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train()
    return right


def train(reversible: bool, epochs: int, batch: int, seed: int, which: str = "vit") -> dict:
    spec, sizes, kwargs, image, _, _ = MODELS[which]
    xtr, ytr, xte, yte = digits()
    if image != 8:
        xtr, xte = (F.interpolate(x, size=(image, image), mode="nearest") for x in (xtr, xte))
    module = revdsl.load(ROOT / "specs" / spec, **sizes)
    torch.manual_seed(seed)
    model = module.create_model(num_classes=10, **kwargs)
    model.reversible = reversible
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps,
                                                pct_start=0.1)
    order = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=order)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    return {"losses": losses, "test_accuracy": accuracy(model, xte, yte),
            "train_accuracy": accuracy(model, xtr, ytr), "seconds": time.perf_counter() - start,
            "params": sum(p.numel() for p in model.parameters())}


def plot(runs: dict[str, dict], path: Path, title: str = "RevViT") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, style in (("baseline", "-"), ("reversible", "--")):
        r = runs[name]
        ax.plot(r["losses"], style, lw=1.2,
                label=f"{name} (test accuracy {100 * r['test_accuracy']:.1f}%)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross-entropy, label smoothing 0.1)")
    ax.set_title(f"{title} on sklearn digits: reversible backward vs plain autograd")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(MODELS), default="vit")
    p.add_argument("--epochs", type=int, help="default: 60 (vit), 15 (revnet)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="where to save the loss plot ('' for none; default: "
                   "docs/digits_loss.png, docs/digits_revnet_loss.png)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    _, _, _, _, epochs, picture = MODELS[args.model]
    args.epochs = args.epochs or epochs
    args.plot = str(ROOT / "docs" / picture) if args.plot is None else args.plot
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    runs = {}
    for name in ("reversible", "baseline"):
        runs[name] = train(name == "reversible", args.epochs, args.batch, args.seed, args.model)
        r = runs[name]
        print(f"{name:10s}: {r['params']:,} parameters, {args.epochs} epochs in "
              f"{r['seconds']:.0f} s, final loss {r['losses'][-1]:.4f}, "
              f"test accuracy {100 * r['test_accuracy']:.2f}%", flush=True)
    rev, base = runs["reversible"]["losses"], runs["baseline"]["losses"]
    per_epoch = len(rev) // args.epochs
    early = max(abs(a - b) for a, b in zip(rev[:per_epoch], base[:per_epoch], strict=True))
    epoch_gap = max(abs(sum(rev[i:i + per_epoch]) - sum(base[i:i + per_epoch])) / per_epoch
                    for i in range(0, len(rev), per_epoch))
    # the two runs differ only by float32 rounding (the rebuilt activations are exact to ~1e-7);
    # training amplifies such differences over many steps, as it would a change of thread count
    print(f"loss gap: first epoch {early:.1e} (largest per step), whole run {epoch_gap:.1e} "
          "(largest between epoch means)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "epochs": args.epochs, "batch": args.batch, "seed": args.seed,
            "params": runs["reversible"]["params"], "first_epoch_gap": early,
            "epoch_mean_gap": epoch_gap,
            "test_accuracy": {k: r["test_accuracy"] for k, r in runs.items()},
            "seconds": {k: r["seconds"] for k, r in runs.items()}}, indent=2))
    if args.plot:
        plot(runs, Path(args.plot), "RevViT" if args.model == "vit" else "RevNet-38")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
