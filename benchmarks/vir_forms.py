"""ViR inference with the three retention forms as the token count grows (196 -> 4096).

Parallel retention materialises an N x N score matrix per head (memory and time grow as N^2);
the recurrent form keeps a d x d state per head and the chunkwise form a state plus one
chunk x chunk block, so their working memory does not grow with N (what grows is only the tokens
themselves, N x C). Measured per image (batch 1, eval, no grad) on ViR-S/16 sizes.
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from benchmarks.common import SPECS, inference_peak, median_time, save

FORMS = ("parallel", "chunkwise", "recurrent")


def run(images: list[int], depth: int, repeat: int) -> dict:
    import revdsl

    rows = []
    for image in images:
        mod = revdsl.load(str(SPECS / "rev_vir.rev"), image=image, depth=depth)
        torch.manual_seed(0)
        model = mod.create_model().eval()
        x = torch.randn(1, 3, image, image)
        tokens = (image // 16) ** 2 + 1
        for form in FORMS:
            with torch.no_grad():
                def step(form: str = form, model: torch.nn.Module = model,
                         x: torch.Tensor = x) -> None:
                    model(x, mode=form)
                peak = inference_peak(step)
                t = median_time(step, repeat=1 if form == "recurrent" and tokens > 1000
                                else repeat, warmup=0 if form == "recurrent" else 1)
            rows.append({"image": image, "tokens": tokens, "form": form, "peak_bytes": peak,
                         "seconds_per_image": t})
            print(f"{image:5d}px {tokens:5d} tokens {form:10s} peak {peak / 2**20:8.1f} MiB "
                  f"time {t:7.3f} s", flush=True)
    return {"spec": "rev_vir.rev", "depth": depth, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, nargs="+", default=[224, 320, 448, 640, 896, 1024])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    data = run(args.images, args.depth, args.repeat)
    print(save("vir_forms", data))


if __name__ == "__main__":
    main()
