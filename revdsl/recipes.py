"""Training recipes for generated models (import torch; not on the compile path).

`supervit_step` is SuperViT's (Lin et al. 2022) training step: on one batch, four sub-networks
of the same model run one after the other and their gradients accumulate before a single
optimizer step:

1. full size, keep rate 1: cross-entropy with the targets;
2. full size, a random keep rate < 1: KL divergence to the (detached) output of 1;
3. a random smaller size, keep rate 1: cross-entropy;
4. the same smaller size, a random keep rate < 1: KL divergence to the (detached) output of 3.

Images are resized with bilinear interpolation (align_corners=True), as in the reference.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.is_floating_point():  # soft targets (mixup / label smoothing)
        return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, targets)


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, dim=-1), F.softmax(teacher.detach(), dim=-1),
                    reduction="batchmean")


def supervit_step(model: Any, images: torch.Tensor, targets: torch.Tensor,
                  sizes: Sequence[int], rates: Sequence[float] = (0.5, 0.7),
                  rng: random.Random | None = None, scaler: Any = None,
                  autocast: Any = None) -> dict[str, float]:
    """Run the four sub-networks on one batch and accumulate their gradients into `.grad`.

    `sizes`: the input sizes the model supports, largest last (the full one); `rates`: keep
    rates below 1 to sample from. Call `optimizer.step()` (and `zero_grad`) yourself. With a
    `torch.amp.GradScaler` pass it as `scaler`; `autocast` is a context-manager factory, e.g.
    `lambda: torch.autocast("cuda", torch.bfloat16)`. Returns the four losses."""
    rng = rng or random.Random()
    full = max(sizes)
    small = [s for s in sizes if s != full]

    def resize(s: int) -> torch.Tensor:
        if images.shape[-1] == s and images.shape[-2] == s:
            return images
        return F.interpolate(images, size=(s, s), mode="bilinear", align_corners=True)

    def run(x: torch.Tensor, rate: float) -> torch.Tensor:
        if autocast is None:
            return model(x, keep_rate=rate)
        with autocast():
            return model(x, keep_rate=rate)

    def backward(loss: torch.Tensor) -> float:
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss.item()

    losses: dict[str, float] = {}
    # full size first, then (if the model has one) a random smaller size; the size is drawn
    # only after the full size's pruned rate, so a seeded rng gives the same draws as always
    for name, pick in (("full", lambda: full), ("small", lambda: rng.choice(small))):
        if name == "small" and not small:
            break
        x = resize(pick())
        whole = run(x, 1.0)
        losses[name] = backward(_ce(whole.float(), targets))
        pruned = run(x, rng.choice(list(rates)))
        losses[name + "_pruned"] = backward(_kl(pruned.float(), whole.float()))
    return losses
