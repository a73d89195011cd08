"""The benchmark suite: memory and speed of the reversible models against their baselines.

    python benchmarks/run.py                  # everything (about 80 minutes on 2 CPU cores)
    python benchmarks/run.py --only vit_depth families
    python benchmarks/run.py --quick          # tiny configurations: checks the suite runs
    python benchmarks/run.py --report         # only rewrite BENCHMARKS.md and the plots

Every suite measures the same generated model in three modes, side by side, on the same batch
(`revdsl.bench`): `reversible` (the generated reversible backward), `baseline` (plain autograd,
`reversible=False`) and `checkpoint` (plain autograd with torch.utils.checkpoint around every
block). Figures: the median training-step time after warm-up, the bytes saved for the backward
(saved-tensor hooks), the peak allocated memory of a step minus the parameter gradients (CPU: the
profiler's allocator events; GPU: torch.cuda.max_memory_allocated), and, in some suites, a fresh
process's peak RSS as a sanity check. Results go to benchmarks/results/*.json; then
benchmarks/report.py writes BENCHMARKS.md and benchmarks/plots/*.png from them.

Suites: sizes (parameters and MACs against the references), vit_depth (RevViT-S, depth 4 ->
48), vit_width (RevViT-S/B/L), paper_memory (memory per image of RevViT-B/L and Rev-MViT-B at
batch 16), vit_batch (batch 1 -> 32), largest_batch (the largest batch within a memory budget),
mvit_depth, vir_depth, families (every spec at its default size; RevBiFPN S0-S3), backward
(engine optimisations on and off), compile (eager vs torch.compile), stats (revdsl stats'
prediction against the measured bytes), examples (the DDP and digits examples' figures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import SPECS, save

VIT = str(SPECS / "rev_vit.rev")
MVIT = str(SPECS / "rev_mvit.rev")
VIR = str(SPECS / "rev_vir.rev")
SUPERVIT = str(SPECS / "rev_supervit.rev")
SWIN = str(SPECS / "rev_swin.rev")
BIFPN = str(SPECS / "rev_bifpn.rev")

WIDTHS = {  # RevViT sizes (the paper's ViT-S/B/L)
    "S": dict(dim=384, heads=6, depth=12),
    "B": dict(dim=768, heads=12, depth=12),
    "L": dict(dim=1024, heads=16, depth=24),
}
BIFPN_SIZES = {  # the spec's header: width, image, num_ext, stochastic depth
    "S0": dict(),
    "S1": dict(width="4/3", image=256),
    "S2": dict(width=2, image=256),
    "S3": dict(width="8/3", image=288, num_ext=3, stochastic_depth=0.05),
}

HEAD = "reference + 384,768 for the two-stream head, LN(2C) and Linear(2C->1000)"
# label, spec, overrides, options/sizes, reference params, reference GMACs, note; the references
# are ../shared/design/architectures.md's (reference code, official figures, or derived counts)
REFERENCE_SIZES: list[tuple[str, str, dict[str, Any], dict[str, Any], int, float | None,
                            str]] = [
    ("RevViT-S", "rev_vit.rev", {}, {}, 22_430_000, 4.57, ""),
    ("RevViT-B", "rev_vit.rev", dict(dim=768, heads=12), {}, 87_340_000, 17.47, ""),
    ("RevViT-L", "rev_vit.rev", WIDTHS["L"], {}, 305_350_000, 61.2, ""),
    ("Rev-MViT-B", "rev_mvit.rev", {}, {}, 39_700_000, 8.64, ""),
    ("RevViR-S", "rev_vir.rev", {}, {}, 22_060_000, 4.60, HEAD),
    ("RevSuperViT 224 r=1", "rev_supervit.rev", {}, {"S": 224}, 22_170_000, 4.60, HEAD),
    ("RevSuperViT 224 r=0.7", "rev_supervit.rev", {}, {"S": 224, "keep_rate": 0.7},
     22_170_000, 3.01, HEAD),
    ("RevSuperViT 224 r=0.5", "rev_supervit.rev", {}, {"S": 224, "keep_rate": 0.5},
     22_170_000, 2.30, HEAD),
    ("RevNet-38 (CIFAR-10)", "rev_net.rev", {}, {}, 460_000, None,
     "reference: the paper's 0.46M; no reference MACs"),
    ("RevNet-110 (CIFAR-10)", "rev_net.rev", dict(units=[9, 9, 9], widths=[32, 32, 64, 128]),
     {}, 1_730_000, None, "reference: the paper's 1.73M; no reference MACs"),
    ("RevSwin-T", "rev_swin.rev", {}, {}, 30_221_122, 5.02,
     "reference params: minREV's ReversibleSwinTransformer() counted; GMACs: Swin-T's 4.5 "
     "(official) + 0.52 for minREV's lateral-fusion MLPs (derived)"),
    *[(f"RevBiFPN-{name}", "rev_bifpn.rev", kw, {}, ref, gmacs,
       "reference MACs are thop's: convolutions and linears plus BatchNorm and upsampling "
       "elements; ours count convolutions and linears")
      for name, kw, ref, gmacs in (
          ("S0", {}, 3_419_196, 0.308),
          ("S1", dict(width="4/3", image=256), 5_110_000, 0.62),
          ("S2", dict(width=2, image=256), 10_600_000, 1.37),
          ("S3", dict(width="8/3", image=288, num_ext=3), 19_600_000, 3.33),
          ("S4", dict(width=4, image=320, num_ext=4), 48_700_000, 10.6),
          ("S5", dict(width="16/3", image=352, num_ext=4), 82_000_000, 21.8),
          ("S6", dict(width="20/3", image=352, num_ext=5), 142_307_972, 38.08))],
]



class Suite:
    """Options shared by the suites: quick configurations, device, timing repeats."""

    def __init__(self, quick: bool, device: str, steps: int, warmup: int, repeats: int = 1
                 ) -> None:
        self.quick, self.device, self.steps, self.warmup = quick, device, steps, warmup
        self.repeats = repeats

    def vit(self, **kw: Any) -> dict[str, Any]:
        if self.quick:
            kw = {**kw, "dim": min(int(kw.get("dim", 384)), 64), "heads": 2, "image": 32,
                  "patch": 8}
        return kw

    def measure(self, spec: str, overrides: dict[str, Any], batch: int, label: str,
                modes: tuple[str, ...] = ("reversible", "baseline", "checkpoint"),
                rss: bool = False, timing: bool = True, steps: int | None = None,
                options: dict[str, Any] | None = None, sizes: dict[str, int] | None = None
                ) -> list[dict[str, Any]]:
        from revdsl.bench import run_isolated

        # one fresh process per mode: on CPU a step's time depends on the allocator's state
        # (a mode that frees gigabytes makes the next one fault its pages in again), so each
        # mode runs its steps back to back, as in training, in a process of its own
        # With `repeats` > 1 every mode is measured that many times (in alternating order) and
        # the fastest median kept: the machine's noise only ever slows a run down.
        runs: dict[str, list[Any]] = {m: [] for m in modes}
        for rep in range(self.repeats if timing else 1):
            for mode in (modes if rep % 2 == 0 else modes[::-1]):
                runs[mode] += run_isolated(
                    spec, _set_strings(overrides), batch=batch, modes=[mode],
                    steps=steps or self.steps, warmup=self.warmup, device=self.device,
                    rss=rss and not self.quick and rep == 0, timing=timing, options=options,
                    sizes=sizes)
        results = []
        for mode in modes:
            first = runs[mode][0]
            first.step_time = min(r.step_time for r in runs[mode])
            first.all_times = [r.step_time for r in runs[mode]]  # type: ignore[attr-defined]
            results.append(first)
        base = next((r for r in results if r.mode == "baseline"), None)
        rows = []
        for r in results:
            row = {"label": label, "spec": Path(spec).name, "overrides": overrides,
                   "options": options or {}, "mode": r.mode, "batch": r.batch,
                   "step_time": r.step_time, "saved_per_sample": r.saved / r.batch,
                   "peak_per_sample": r.peak / r.batch, "saved": r.saved, "peak": r.peak,
                   "rss": r.rss, "step_times": getattr(r, "all_times", [r.step_time])}
            if base is not None and timing:
                row["time_vs_baseline"] = r.step_time / base.step_time
            if base is not None:
                row["peak_vs_baseline"] = base.peak / r.peak if r.peak else None
                row["saved_vs_baseline"] = base.saved / r.saved if r.saved else None
            rows.append(row)
            print(f"  {label:>22s} {r.mode:10s} batch {r.batch:3d}  step {r.step_time:7.3f} s  "
                  f"saved {r.saved / r.batch / 2**20:8.2f} MiB/sample  peak "
                  f"{r.peak / r.batch / 2**20:8.2f} MiB/sample"
                  + (f"  RSS {r.rss / 2**20:7.0f} MiB" if r.rss else ""), flush=True)
        return rows

    # ---- suites ---------------------------------------------------------------------------

    def vit_depth(self) -> dict[str, Any]:
        depths = [2, 4] if self.quick else [4, 8, 12, 16, 24, 32, 48]
        batch = 2 if self.quick else 8
        rows = []
        for d in depths:
            rows += self.measure(VIT, self.vit(**{**WIDTHS["S"], "depth": d}), batch, f"depth {d}")
        return {"spec": "rev_vit.rev", "width": "S", "batch": batch, "rows": rows}

    def vit_width(self) -> dict[str, Any]:
        batch = 2 if self.quick else 4
        rows = []
        for name, kw in WIDTHS.items():
            if self.quick and name == "L":
                continue
            rows += self.measure(VIT, self.vit(**kw), batch, f"RevViT-{name}", rss=True)
        return {"spec": "rev_vit.rev", "batch": batch, "rows": rows}

    def paper_memory(self) -> dict[str, Any]:
        """Memory per image at a training batch (16), the figure the papers' ratios are quoted
        at: at batch 4 a block's transient weight-gradient buffers (about 50 MB for a ViT-L
        block) are a visible share of the reversible model's per-image peak; they do not grow
        with the batch, the activations do. Memory only (one step per mode, no timing)."""
        batch = 2 if self.quick else 16
        cases = [("B", WIDTHS["B"]), ("L", WIDTHS["L"])]
        rows = []
        for name, kw in cases:
            if self.quick and name == "L":
                continue
            rows += self.measure(VIT, self.vit(**kw), batch, f"RevViT-{name}", timing=False)
        mvit = dict(image=32, dim=8, kv_stride=2, transitions=[1, 3], depth=5) if self.quick \
            else {}
        rows += self.measure(MVIT, mvit, batch, "Rev-MViT-B", timing=False)
        return {"batch": batch, "rows": rows}

    def vit_batch(self) -> dict[str, Any]:
        batches = [1, 2] if self.quick else [1, 2, 4, 8, 16, 32]
        rows = []
        for b in batches:
            rows += self.measure(VIT, self.vit(**WIDTHS["S"]), b, f"batch {b}")
        return {"spec": "rev_vit.rev", "width": "S", "rows": rows}

    def chunked(self) -> dict[str, Any]:
        """Token-chunked recompute (model.set_recompute_chunks): RevViT-B's peak memory per
        image, the slope between two batches (baseline / reversible, the paper's measure), with
        the row-wise steps (the MLP half of every block) recomputed in 2 and 4 chunks; and the
        step time it costs."""
        kw = self.vit(**WIDTHS["B"])
        # the pair (2 -> 6), and larger batches, where weight-sized work no longer
        # decides where the peak is and the slope is the working set per image
        pairs = [(1, 2)] if self.quick else [(2, 6), (6, 16), (16, 32)]
        modes = ("baseline", "reversible", "chunked2", "chunked4")
        rows = []
        for b in sorted({b for pair in pairs for b in pair}):
            rows += self.measure(VIT, kw, b, f"batch {b}", modes=modes, timing=False)
        peak = {(r["batch"], r["mode"]): r["peak"] for r in rows}
        slopes = []
        for lo, hi in pairs:
            per = {m: (peak[(hi, m)] - peak[(lo, m)]) / (hi - lo) for m in modes}
            for m in modes:
                slopes.append({"batches": [lo, hi], "mode": m, "per_image": per[m],
                               "vs_baseline": per["baseline"] / per[m] if per[m] else None})
                print(f"  batches {lo}->{hi} {m:10s} {per[m] / 2**20:7.2f} MiB/image  "
                      f"({per['baseline'] / per[m]:.1f}x less than the baseline)", flush=True)
        batch = 2 if self.quick else 6
        timing = self.measure(VIT, kw, batch, f"time, batch {batch}",
                              modes=("reversible", "chunked2", "chunked4"))
        return {"spec": "rev_vit.rev", "width": "B", "rows": rows, "slopes": slopes,
                "timing": timing}

    def chunk_cost(self) -> dict[str, Any]:
        """The step time token-chunked recompute costs (RevViT-B, batch 6, 2 chunks): the
        reversible step and the chunked one alternating in one process for 5 rounds
        (benchmarks/overhead.py --chunks), so both see the same noise."""
        sets = ["depth=4", "dim=64", "heads=2", "image=32", "patch=8"] if self.quick else \
            ["dim=768", "heads=12"]
        batch, rounds = (2, 2) if self.quick else (6, 5)
        rows = []
        for chunks in (2,):
            r = _overhead_script(VIT, sets, batch, rounds, "--chunks", str(chunks))
            rows.append(r)
            print(f"  {chunks} chunks: {100 * r['chunk_cost']:+.1f}% (rounds "
                  + ", ".join(f"{100 * c:+.1f}%" for c in r["chunk_cost_rounds"]) + ")",
                  flush=True)
        return {"rows": rows, "batch": batch, "rounds": rounds}

    def overhead(self) -> dict[str, Any]:
        """The reversible step's cost beyond its floor (benchmarks/overhead.py): (reversible
        step - baseline step) / forward without grad, RevViT-S at depths 6-24 and Rev-MViT-B,
        each configuration in a fresh process. `REVDSL_ROOT=<checkout>` measures another
        checkout's engine with the same script (the before/after figures)."""
        import os

        root = os.environ.get("REVDSL_ROOT", str(SPECS.parent))
        configs = [("RevViT-S depth 6", VIT, ["depth=6"], 4),
                   ("RevViT-S depth 12", VIT, ["depth=12"], 4),
                   ("RevViT-S depth 24", VIT, ["depth=24"], 4),
                   ("Rev-MViT-B", MVIT, [], 2)]
        if self.quick:
            configs = [("RevViT tiny", VIT, ["depth=4", "dim=64", "heads=2", "image=32",
                                             "patch=8"], 2)]
        rows = []
        for label, spec, sets, batch in configs:
            r = {"label": label,
                 **_overhead_script(spec, sets, batch, max(self.repeats, 2), root=root)}
            rows.append(r)
            print(f"  {label:>20s} reversible {r['reversible']:.3f} s  baseline "
                  f"{r['baseline']:.3f} s  forward {r['forward']:.3f} s  overhead "
                  f"{r['overhead']:.3f}", flush=True)
        return {"rows": rows, "root": root}

    def compile_regional(self) -> dict[str, Any]:
        """Issue 19 part 1, measured: does compiling the layers inside the reversible blocks
        (regional compilation, `child.compile()` on every Attention/Mlp/LayerNorm: one compile
        per layer class and grad mode, shared by the blocks) gain what compiling the baseline
        gains? RevViT-S depth 6, batch 4, in one process, eager and compiled alternating; the
        compiled reversible model is not offered by the generated module (it was slower here)."""
        import statistics

        import torch

        import revdsl
        from revdsl.bench import step_times

        kw = self.vit(**{**WIDTHS["S"], "depth": 6}) if self.quick else {"depth": 6}
        batch = 2 if self.quick else 4
        mod = revdsl.load(VIT, **_sets(kw))
        size = int(kw.get("image", 224))
        x = torch.randn(batch, 3, size, size)

        def build(reversible: bool, regional: bool, whole: bool) -> Any:
            torch.manual_seed(0)
            model = mod.create_model().train()
            model.reversible = reversible
            if regional:
                for block in model.body.blocks:
                    for child in block.children():
                        if any(True for _ in child.parameters()):
                            child.compile()
            return torch.compile(model) if whole else model

        variants = {"reversible eager": (True, False, False),
                    "reversible, layers compiled": (True, True, False),
                    "baseline eager": (False, False, False),
                    "baseline compiled": (False, False, True)}
        models, first = {}, {}
        for name, args in variants.items():
            models[name] = build(*args)
            first[name] = step_times(models[name], [x], steps=1, warmup=0)[0]  # compiles
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(max(self.repeats, 2)):
            for name, model in models.items():
                times[name].append(statistics.median(
                    step_times(model, [x], steps=self.steps, warmup=1)))
        best = {name: min(v) for name, v in times.items()}
        gain_rev = best["reversible eager"] / best["reversible, layers compiled"]
        gain_base = best["baseline eager"] / best["baseline compiled"]
        for name in variants:
            print(f"  {name:>28s} step {best[name]:.3f} s  first step {first[name]:.1f} s",
                  flush=True)
        print(f"  speed-up from compiling: reversible {gain_rev:.3f}x, baseline "
              f"{gain_base:.3f}x, ratio {gain_rev / gain_base:.3f} (target >= 1.0)", flush=True)
        return {"batch": batch, "overrides": kw, "best": best, "first_step": first,
                "gain_reversible": gain_rev, "gain_baseline": gain_base}

    def largest_batch(self) -> dict[str, Any]:
        from revdsl.bench import largest_batch

        budget_mib = 64 if self.quick else 512
        rows = []
        for mode in ("reversible", "checkpoint", "baseline"):
            t = time.perf_counter()
            n = largest_batch(VIT, _sets(self.vit(**WIDTHS["S"])), mode, budget_mib * 2**20,
                              device=self.device, limit=64 if self.quick else 1024)
            rows.append({"mode": mode, "largest_batch": n,
                         "seconds": time.perf_counter() - t})
            print(f"  largest batch within {budget_mib} MiB ({mode}): {n}", flush=True)
        return {"spec": "rev_vit.rev", "width": "S", "budget_mib": budget_mib, "rows": rows}

    def mvit_depth(self) -> dict[str, Any]:
        depths = [5, 6] if self.quick else [10, 16, 24, 32]
        batch = 2 if self.quick else 4
        rows = []
        for d in depths:
            kw: dict[str, Any] = {"depth": d, "transitions": [1, 3, d - 2]}
            if self.quick:
                kw.update(image=32, dim=8, kv_stride=2, transitions=[1, 3])
            rows += self.measure(MVIT, kw, batch, f"depth {d}")
        return {"spec": "rev_mvit.rev", "batch": batch, "rows": rows}

    def vir_depth(self) -> dict[str, Any]:
        depths = [2, 4] if self.quick else [6, 12, 24, 48]
        batch = 2 if self.quick else 8
        rows = []
        for d in depths:
            rows += self.measure(VIR, self.vit(dim=384, heads=6, depth=d), batch, f"depth {d}")
        return {"spec": "rev_vir.rev", "batch": batch, "rows": rows}

    def families(self) -> dict[str, Any]:
        rows = []
        if self.quick:
            rows += self.measure(MVIT, dict(image=32, dim=8, kv_stride=2, transitions=[1, 3],
                                            depth=5), 2, "Rev-MViT (tiny)")
            rows += self.measure(BIFPN, dict(image=64, num_ext=0, reps=1), 2, "RevBiFPN (tiny)")
            return {"rows": rows}
        rows += self.measure(VIT, {}, 8, "RevViT-S")
        rows += self.measure(MVIT, {}, 4, "Rev-MViT-B", rss=True)
        rows += self.measure(VIR, {}, 8, "RevViR-S (parallel)")
        rows += self.measure(VIR, {}, 8, "RevViR-S (chunkwise)", options={"mode": "chunkwise"})
        rows += self.measure(SUPERVIT, {}, 8, "RevSuperViT 224 r=1")
        rows += self.measure(SUPERVIT, {}, 8, "RevSuperViT 224 r=0.7",
                             options={"keep_rate": 0.7})
        rows += self.measure(SUPERVIT, {}, 8, "RevSuperViT 160 r=0.7", sizes={"S": 160},
                             options={"keep_rate": 0.7})
        for name, kw in BIFPN_SIZES.items():
            rows += self.measure(BIFPN, kw, 4, f"RevBiFPN-{name}")
        rows += self.measure(SWIN, {}, 8, "RevSwin-T")
        rows += self.measure(str(SPECS / "rev_net.rev"), {}, 32, "RevNet-38 (32 px)")
        return {"rows": rows}

    def backward(self) -> dict[str, Any]:
        """The engine's additive-coupling shortcut on and off: for x += f(...) the backward
        needs no graph through the update itself (dx = dy), so it skips re-running the update
        under autograd; off, every step takes the generic path (the update re-run under
        autograd to get dx)."""
        import revdsl.runtime.engine  # noqa: F401 (the shortcut lives in the generated copy)

        kw = self.vit(**WIDTHS["S"])
        batch = 2 if self.quick else 8
        rows = []
        for shortcut in (False, True):
            rows += self._with_shortcut(shortcut, kw, batch)
        return {"spec": "rev_vit.rev", "batch": batch, "rows": rows}

    def _with_shortcut(self, shortcut: bool, kw: dict[str, Any], batch: int
                       ) -> list[dict[str, Any]]:
        from revdsl.bench import bench_inputs, load, step_time
        from revdsl.measure import peak_bytes

        module, program = load(VIT, _sets(kw))
        torch.manual_seed(0)
        model = module.create_model().to(self.device)
        model.train()
        if not shortcut:
            for block in model.body.blocks:
                block.STEPS = tuple(s._replace(delta=None) if hasattr(s, "delta") else s
                                    for s in block.STEPS)
        xs = bench_inputs(program, batch, self.device)
        t = step_time(model, xs, self.steps, self.warmup)
        peak, _ = peak_bytes(model, *xs)
        label = "additive shortcut " + ("on" if shortcut else "off")
        print(f"  {label:>22s} reversible batch {batch}  step {t:7.3f} s  peak "
              f"{peak / batch / 2**20:8.2f} MiB/sample", flush=True)
        return [{"label": label, "mode": "reversible", "batch": batch, "step_time": t,
                 "peak_per_sample": peak / batch}]

    def compile(self) -> dict[str, Any]:
        """Eager vs torch.compile (inductor) training-step time. The reversible segments are
        graph breaks (they run eagerly), so the compiled reversible model gains only outside
        them; the baseline is compiled whole (compiling it takes minutes on 2 cores: RevViT
        only)."""
        rows = []
        cases = [(VIT, self.vit(**WIDTHS["S"]), 8, "RevViT-S", ("reversible", "baseline"))]
        if not self.quick:
            cases += [(MVIT, {}, 4, "Rev-MViT-B", ("reversible",)),
                      (VIR, {}, 8, "RevViR-S", ("reversible",)),
                      (SUPERVIT, {}, 8, "RevSuperViT", ("reversible",)),
                      (BIFPN, {}, 4, "RevBiFPN-S0", ("reversible",))]
        for spec, kw, batch, label, modes in cases:
            batch = 2 if self.quick else batch
            for mode in modes:
                rows.append(self._compiled(spec, kw, batch, label, mode))
        return {"rows": rows}

    def _compiled(self, spec: str, kw: dict[str, Any], batch: int, label: str,
                  mode: str) -> dict[str, Any]:
        from revdsl.bench import bench_inputs, load, resolved_sizes, set_mode, step_time

        module, program = load(spec, _sets(kw))
        sizes = resolved_sizes(program, None)
        torch.manual_seed(0)
        model = module.create_model().to(self.device)
        model.train()
        set_mode(model, mode)
        xs = bench_inputs(program, batch, self.device, sizes)
        eager = step_time(model, xs, self.steps, self.warmup)
        torch._dynamo.reset()
        compiled = torch.compile(model)
        t = time.perf_counter()
        step_time(compiled, xs, 1, 0)  # compiles
        compile_s = time.perf_counter() - t
        fast = step_time(compiled, xs, self.steps, self.warmup)
        print(f"  {label:>22s} {mode:10s} batch {batch}  eager {eager:7.3f} s  compiled "
              f"{fast:7.3f} s  (compile {compile_s:5.1f} s)", flush=True)
        return {"label": label, "mode": mode, "batch": batch, "eager": eager,
                "compiled": fast, "compile_seconds": compile_s}

    def planner(self) -> dict[str, Any]:
        """The memory plan on RevViT-S, RevViT-B and Rev-MViT-B (224 px, batch 4, each in one
        process): for budgets from the fully reversible figure to the baseline's, the blocks
        `model.plan` keeps, the bytes kept for the backward (saved-tensor hooks) and the step
        time; next to plain autograd and per-block checkpointing."""
        models = [("RevViT-S", VIT, {}), ("RevViT-B", VIT, dict(WIDTHS["B"])),
                  ("Rev-MViT-B", MVIT, {})]
        if self.quick:
            models = [("RevViT tiny", VIT, self.vit())]
        return {"models": [self._plan_model(*m) for m in models]}

    def _plan_model(self, label: str, spec: str, kw: dict[str, Any]) -> dict[str, Any]:
        import statistics

        import torch

        import revdsl
        from revdsl.bench import step_times
        from revdsl.measure import saved_bytes

        batch = 2 if self.quick else 4
        mod = revdsl.load(spec, **_sets(kw))
        torch.manual_seed(0)
        model = mod.create_model(num_classes=10).train()
        size = int(kw.get("image", 224))
        x = torch.randn(batch, 3, size, size)
        sizes = sorted(b for rows in mod.BLOCK_COSTS.values() for b, _ in rows)
        rows: list[dict[str, Any]] = []
        print(f"  {label}", flush=True)

        def record(name: str, mode: str, kept_blocks: int | None, budget: float | None) -> None:
            model.reversible = mode != "baseline"
            model.checkpoint = mode == "checkpoint"
            saved = saved_bytes(model, x)
            times = step_times(model, [x], steps=self.steps, warmup=self.warmup)
            rows.append({"label": name, "mode": mode, "kept_blocks": kept_blocks,
                         "budget": budget, "saved": saved, "step_time": min(times),
                         "median": statistics.median(times)})
            print(f"  {name:>28s} kept {saved / 2**20:8.1f} MiB  step {min(times):.3f} s",
                  flush=True)

        n = len(sizes)
        ks = sorted({0, n, *range(0, n + 1, 1 if self.quick else max(1, n // 4))})
        configs: list[tuple[str, str, int | None, float | None]] = []
        for k in ks:
            configs.append((f"plan: {k} of {n} kept", "reversible", k,
                            batch * (mod.KEPT_BYTES + sum(sizes[:k])) + 1))
        configs += [("per-block checkpoint", "checkpoint", None, None),
                    ("plain autograd", "baseline", None, None)]
        # with --repeats R, R rounds over all configurations (the machine's noise moves a
        # single figure by several percent); each keeps its fastest step
        for _ in range(max(self.repeats, 1)):
            for name, mode, k, budget in configs:
                model.set_plan(None if k is None else model.plan(batch=batch, budget=budget))
                record(name, mode, k, budget)
        model.set_plan(None)
        best: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["label"] not in best or r["step_time"] < best[r["label"]]["step_time"]:
                best[r["label"]] = r
        rows = [best[name] for name, *_ in configs]
        return {"label": label, "batch": batch, "blocks": n, "rows": rows}

    def sizes(self) -> dict[str, Any]:
        """Parameters and MACs of every family's reference configurations (`revdsl stats`, from
        shapes alone) against the reference figures in the design notes."""
        from revdsl.pipeline import compile_text
        from revdsl.stats import stats

        rows = []
        for label, spec, kw, options, ref_params, ref_gmacs, note in REFERENCE_SIZES:
            compiled = compile_text((SPECS / spec).read_text(), spec, _sets(kw))
            st = stats(compiled.report, options)
            rows.append({"label": label, "spec": spec, "overrides": kw, "options": options,
                         "params": st.params, "macs": st.macs, "ref_params": ref_params,
                         "ref_gmacs": ref_gmacs, "note": note})
            print(f"  {label:>26s} {st.params:>13,d} params  {st.macs / 1e9:7.3f} GMACs  "
                  f"(reference {ref_params:,} / {ref_gmacs})", flush=True)
        return {"rows": rows}

    def examples(self) -> dict[str, Any]:
        """The examples' own checks, recorded: DDP/FSDP2 against one process
        (examples/ddp.py, the configurations tests/test_ecosystem.py runs) and the digits
        training run (examples/train_digits.py, which also draws docs/digits_loss.png)."""
        import json
        import subprocess
        import tempfile

        vit = ["--set", "depth=4", "--set", "dim=32", "--set", "heads=2", "--set", "image=32",
               "--set", "patch=8"]
        mvit = ["--spec", "specs/rev_mvit.rev", "--set", "image=32", "--set", "dim=8", "--set",
                "kv_stride=2", "--set", "transitions=[1, 3]", "--set", "depth=6"]
        runs = [("RevViT", [*vit]), ("RevViT", [*vit, "--baseline"]),
                ("RevViT", [*vit, "--fsdp"]), ("RevViT", [*vit, "--fsdp-per-block"]),
                ("Rev-MViT", mvit), ("Rev-MViT", [*mvit, "--fsdp"]),
                ("Rev-MViT", [*mvit, "--fsdp-per-block"])]
        root = SPECS.parent
        out: dict[str, Any] = {"ddp": []}
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "out.json")
            for label, args in runs:
                subprocess.run([sys.executable, "examples/ddp.py", *args, "--json", path],
                               cwd=root, check=True)
                out["ddp"].append({"label": label, **json.loads(Path(path).read_text())})
            digits = ["--epochs", "4"] if self.quick else []
            subprocess.run([sys.executable, "examples/train_digits.py", *digits, "--json", path,
                            *(["--plot", ""] if self.quick else [])], cwd=root, check=True)
            out["digits"] = json.loads(Path(path).read_text())
        return out

    def stats(self) -> dict[str, Any]:
        """revdsl stats' predicted bytes per sample (from shapes alone) against the bytes the
        generated model saves for the backward (saved-tensor hooks), on small configurations."""
        from revdsl.measure import stats_against_saved
        from tests.test_tools import SMALL, TEST_SPECS

        rows = []
        cases = [(spec, (SPECS / spec).read_text(), kw, None) for spec, kw in sorted(SMALL.items())]
        tests = SPECS.parent / "tests"
        cases += [(str(p.relative_to(tests)), p.read_text(), {},
                   {"H": 16, "W": 16} if p.name == "symbolic_sizes.rev" else None)
                  for p in TEST_SPECS]
        for spec, text, kw, sizes in cases:
            found = stats_against_saved(text, spec, kw, sizes=sizes)
            for mode, (want, got) in found.items():
                ratio = want / got if got else 1.0
                rows.append({"spec": spec, "overrides": kw, "mode": mode,
                             "predicted": want, "measured": got, "ratio": ratio})
                print(f"  {spec:>45s} {mode:10s} predicted {want / 2**10:9.2f} KiB  measured "
                      f"{got / 2**10:9.2f} KiB  ({100 * (ratio - 1):+.1f}%)", flush=True)
        return {"rows": rows}


def _set_strings(kw: dict[str, Any]) -> list[str]:
    return [f"{k}={_text(v)}" for k, v in kw.items()]


def _sets(kw: dict[str, Any]) -> dict[str, Any]:
    """Overrides as `--set` would read them (fractions such as width=4/3 stay exact)."""
    from revdsl.cli import parse_sets

    return parse_sets(_set_strings(kw))


def _text(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


ALL = ("sizes", "planner", "chunked", "chunk_cost", "overhead", "compile_regional", "stats",
       "examples", "vit_depth", "vit_width", "paper_memory", "vit_batch", "largest_batch",
       "mvit_depth",
       "vir_depth", "families", "backward", "compile")


def _overhead_script(spec: str, sets: list[str], batch: int, rounds: int, *extra: str,
                     root: str | None = None) -> dict[str, Any]:
    """One fresh process of benchmarks/overhead.py (its JSON result), with the engine of the
    checkout at `root` (this one by default)."""
    import json
    import os
    import subprocess

    root = root or str(SPECS.parent)
    cmd = [sys.executable, str(SPECS.parent / "benchmarks" / "overhead.py"), "--spec", spec,
           "--batch", str(batch), "--rounds", str(rounds), "--json", *extra,
           *[a for s in sets for a in ("--set", s)]]
    out = subprocess.run(cmd, cwd=root, env={**os.environ, "PYTHONPATH": root}, check=True,
                         capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _commit() -> str | None:
    """The checkout's commit (which engine a suite measured), when run from a git clone."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=SPECS.parent,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=ALL, help="run only these suites")
    p.add_argument("--quick", action="store_true", help="tiny configurations (a smoke run)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--results", help="write results here instead of benchmarks/results")
    p.add_argument("--report", action="store_true",
                   help="skip measuring: rewrite BENCHMARKS.md and the plots from results")
    p.add_argument("--repeats", type=int, default=1,
                   help="measure every mode this many times (fresh processes, alternating "
                   "order) and keep the fastest median step time")
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.results:
        import benchmarks.common as common

        common.RESULTS = Path(args.results)
    names = list(args.only or ALL)
    if not args.report and len(names) > 1:
        # one fresh process per suite (and inside the suites, per configuration)
        import subprocess

        base = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps),
                "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--no-report"]
        base += ["--quick"] if args.quick else []
        base += ["--results", args.results] if args.results else []
        for name in names:
            subprocess.run([*base, "--only", name], check=True)
    elif not args.report:
        suite = Suite(args.quick, args.device, args.steps, args.warmup, args.repeats)
        suffix = "" if args.device == "cpu" else f"_{args.device}"
        suffix += "_quick" if args.quick else ""
        for name in names:
            print(f"== {name}", flush=True)
            t = time.perf_counter()
            data = getattr(suite, name)()
            data["seconds"] = time.perf_counter() - t
            data["commit"] = _commit()
            data["command"] = "python benchmarks/run.py" + (" --quick" if args.quick else "") \
                + (f" --repeats {args.repeats}" if args.repeats > 1 else "") + f" --only {name}"
            print(f"   wrote {save(name + suffix, data)} ({data['seconds']:.0f} s)", flush=True)
    if not args.quick and not args.results and not args.no_report:
        from benchmarks.report import write

        print(f"wrote {write()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
