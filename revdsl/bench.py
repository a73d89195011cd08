"""`revdsl bench`: memory and speed of one spec, side by side, on the same model and batch.

Three modes of the same generated model (same parameters, same math):

* `reversible`: segments rebuild their activations in the backward, stored blocks recompute;
* `baseline`: plain autograd, every activation stored (`reversible=False`);
* `checkpoint`: plain autograd with `torch.utils.checkpoint` around every block.

Figures per mode: training-step time (median after warm-up), bytes saved for the backward
(saved-tensor hooks), peak allocated memory during the step minus parameter gradients (CPU: the
profiler's allocator events; GPU: `torch.cuda.max_memory_allocated`), optionally the peak RSS of a
fresh subprocess, and the largest batch that fits a memory budget.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("reversible", "baseline", "checkpoint")


@dataclass
class Result:
    spec: str
    mode: str
    batch: int
    step_time: float  # seconds, median
    saved: int  # bytes kept for backward (hooks)
    peak: int  # bytes, peak during a step minus parameter grads
    rss: int | None = None  # peak RSS of a fresh process (bytes), when asked
    device: str = "cpu"
    samples: list[float] = field(default_factory=list)  # every timed step (seconds)

    def per_sample(self, field: str) -> float:
        return getattr(self, field) / self.batch


def _progress(total: int, desc: str) -> Any:
    """A progress bar on stderr (tqdm: it handles non-TTY output)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, leave=False,
                disable=not sys.stderr.isatty())


def set_mode(model: Any, mode: str) -> None:
    """reversible, baseline (plain autograd), checkpoint (per block), or chunked<N>: reversible
    with row-wise steps recomputed in N chunks of tokens (model.set_recompute_chunks)."""
    chunked = re.fullmatch(r"chunked(\d+)", mode)
    assert mode in MODES or chunked, mode
    model.reversible = mode == "reversible" or chunked is not None
    model.checkpoint = mode == "checkpoint"
    if hasattr(model, "set_recompute_chunks"):
        model.set_recompute_chunks(int(chunked.group(1)) if chunked else 1)


def load(spec: str, overrides: dict[str, Any]) -> tuple[Any, Any]:
    """(generated module, its IR program)."""
    from revdsl.loader import load_source
    from revdsl.pipeline import compile_text

    text = open(spec, encoding="utf-8").read()
    compiled = compile_text(text, spec, overrides)
    return load_source(compiled.source), compiled.program


def resolved_sizes(program: Any, sizes: dict[str, int] | None) -> dict[str, int]:
    """Values for the inputs' free dimensions: the given ones, else the largest allowed."""
    from revdsl import sizes as sizes_mod

    return sizes_mod.first(sizes_mod.resolve(program, sizes))


def bench_inputs(program: Any, batch: int, device: str, sizes: dict[str, int] | None = None
                 ) -> list[Any]:
    """float32 inputs for a measurement; a free dimension without a value is 224 (an image)."""
    import torch

    from revdsl.testing import random_inputs

    return random_inputs(program, batch, sizes, dtype=torch.float32, device=device, default=224)


def step_times(model: Any, inputs: list[Any], steps: int = 5, warmup: int = 2,
               options: dict[str, Any] | None = None) -> list[float]:
    """The time of each of `steps` training steps after `warmup` untimed ones."""
    import torch

    from revdsl.measure import _loss

    times = []
    for k in range(warmup + steps):
        model.zero_grad(set_to_none=True)
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        _loss(model(*inputs, **(options or {}))).backward()
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
        if k >= warmup:
            times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return times


def step_time(model: Any, inputs: list[Any], steps: int = 5, warmup: int = 2,
              options: dict[str, Any] | None = None) -> float:
    """The median training-step time."""
    return statistics.median(step_times(model, inputs, steps, warmup, options))


_ISOLATED = """
import json, sys
from dataclasses import asdict
from revdsl.bench import run
from revdsl.files import parse_sets
kwargs = json.loads(sys.argv[1])
kwargs["overrides"] = parse_sets(kwargs.pop("sets"))
print(json.dumps([asdict(r) for r in run(**kwargs)]))
"""


def run_isolated(spec: str, sets: list[str] | None = None, **kwargs: Any) -> list[Result]:
    """`run` in a fresh Python process: no allocator state, caches or threads left over from
    earlier measurements (a long benchmark process grows and slows down the later ones).
    `sets` are `--set` strings (NAME=VALUE)."""
    payload = json.dumps({"spec": spec, "sets": list(sets or []), "progress": False,
                          **kwargs})
    proc = subprocess.run([sys.executable, "-c", _ISOLATED, payload], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{proc.stderr[-4000:]}")
    return [Result(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def run(spec: str, overrides: dict[str, Any] | None = None, batch: int = 8,
        modes: tuple[str, ...] = MODES, steps: int = 5, warmup: int = 2, device: str = "cpu",
        sizes: dict[str, int] | None = None, rss: bool = False, timing: bool = True,
        options: dict[str, Any] | None = None, progress: bool = True,
        threads: int | None = None) -> list[Result]:
    import torch

    from revdsl.measure import peak_bytes, saved_bytes

    if threads:
        torch.set_num_threads(threads)
    overrides = overrides or {}
    module, program = load(spec, overrides)
    sizes = resolved_sizes(program, sizes)
    torch.manual_seed(0)
    model = module.create_model().to(device)
    model.train()
    inputs = bench_inputs(program, batch, device, sizes)
    call = (lambda *xs: model(*xs, **options)) if options else None
    out: list[Result] = []
    bar = _progress(len(modes), program.name) if progress else None
    for mode in modes:
        set_mode(model, mode)
        saved = saved_bytes(model, *inputs, call=call)
        peak, _grads = peak_bytes(model, *inputs, call=call)
        samples = step_times(model, inputs, steps, warmup, options) if timing else []
        t = statistics.median(samples) if samples else float("nan")
        r_rss = rss_of(spec, overrides, mode, batch, sizes) if rss else None
        out.append(Result(spec=spec, mode=mode, batch=batch, step_time=t, saved=saved, peak=peak,
                          rss=r_rss, device=device, samples=samples))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


# VmHWM (the peak RSS of this process image) rather than getrusage's ru_maxrss, which Linux
# carries over from the parent across fork and exec
_RSS_SCRIPT = """
import json, sys, torch
from revdsl.bench import load, bench_inputs, set_mode
from revdsl.measure import _loss
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
spec, overrides, mode, batch, sizes = json.loads(sys.argv[1])
module, program = load(spec, overrides)
torch.manual_seed(0)
model = module.create_model()
model.train()
set_mode(model, mode)
xs = bench_inputs(program, batch, "cpu", sizes)
before = hwm()
_loss(model(*xs)).backward()
after = hwm()
print(json.dumps({"before": before, "after": after}))
"""


def rss_of(spec: str, overrides: dict[str, Any], mode: str, batch: int,
           sizes: dict[str, int] | None = None) -> int:
    """Peak RSS of a fresh process running one training step (a sanity check on the others:
    includes the interpreter, torch and the parameters, so compare differences)."""
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, json.dumps([spec, overrides, mode, batch, sizes])],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(data["after"])


def largest_batch(spec: str, overrides: dict[str, Any], mode: str, budget: int,
                  start: int = 1, limit: int = 4096, device: str = "cpu",
                  sizes: dict[str, int] | None = None, progress: bool = True) -> int:
    """The largest batch whose training step's peak (activations + working memory, parameter
    gradients excluded) fits `budget` bytes: doubling, then bisection, measured each time."""
    import torch

    from revdsl.measure import peak_bytes

    module, program = load(spec, overrides)
    sizes = resolved_sizes(program, sizes)
    torch.manual_seed(0)
    model = module.create_model().to(device)
    model.train()
    set_mode(model, mode)

    bar = _progress(0, f"{program.name} {mode}: largest batch") if progress else None

    def fits(b: int) -> bool:
        if bar is not None:
            bar.set_postfix_str(f"trying {b}")
            bar.update(1)
        peak, _ = peak_bytes(model, *bench_inputs(program, b, device, sizes))
        return peak <= budget

    lo, hi = 0, start
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    if bar is not None:
        bar.close()
    return lo


def format_results(results: list[Result]) -> str:
    """One row per mode: step time min / median / max over every timed step, the ratio of
    medians to the baseline, and the memory per sample."""
    base = {r.mode: r for r in results}
    rows = [("mode", "batch", "step min / median / max (s)", "x baseline", "saved/sample",
             "peak/sample", "RSS")]
    b = base.get("baseline")
    for r in results:
        ratio = f"{r.step_time / b.step_time:.2f}" if b and b.step_time == b.step_time else "-"
        times = (f"{min(r.samples):.3f} / {r.step_time:.3f} / {max(r.samples):.3f}"
                 if r.samples else f"{r.step_time:.3f}")
        rows.append((r.mode, str(r.batch), times, ratio,
                     f"{r.per_sample('saved') / 2**20:.2f} MiB",
                     f"{r.per_sample('peak') / 2**20:.2f} MiB",
                     f"{r.rss / 2**20:.0f} MiB" if r.rss else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def spread_warnings(results: list[Result]) -> list[str]:
    """Why the figures may not be trusted: a spread of step times over 10% in some mode, or a
    machine already busy (load average above half its cores)."""
    out = []
    for r in results:
        if len(r.samples) > 1 and max(r.samples) > 1.10 * min(r.samples):
            spread = 100 * (max(r.samples) / min(r.samples) - 1)
            out.append(f"{r.mode}: step times spread {spread:.0f}% between fastest and slowest "
                       "(over 10%): compare medians with care, or use --repeats / --threads 1 "
                       "on a quiet machine")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        out.append(f"the machine is busy (load average {load:.1f} on {cores} cores): timings "
                   "are not reliable")
    return out


def merge(runs: list[list[Result]]) -> list[Result]:
    """Results of repeated runs merged per mode: every sample kept, the median over all."""
    by_mode: dict[str, Result] = {}
    for results in runs:
        for r in results:
            if r.mode not in by_mode:
                by_mode[r.mode] = Result(**{**asdict(r), "samples": list(r.samples)})
            else:
                by_mode[r.mode].samples.extend(r.samples)
    for r in by_mode.values():
        if r.samples:
            r.step_time = statistics.median(r.samples)
    order = [m for m in MODES if m in by_mode]
    return [by_mode[m] for m in order]


def cmd_bench(args: argparse.Namespace) -> int:
    from revdsl.files import UsageError, parse_sets
    from revdsl.sizes import parse_size_args

    overrides = parse_sets(args.set)
    sizes = parse_size_args(args.size)
    if args.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    kwargs = dict(batch=args.batch, steps=args.steps, warmup=args.warmup, device=args.device,
                  sizes=sizes, rss=args.rss, threads=args.threads)
    runs: list[list[Result]] = []
    modes = list(args.modes)
    bar = _progress(args.repeats * len(modes), "bench")
    for rep in range(args.repeats):
        order = modes if rep % 2 == 0 else modes[::-1]  # alternate: no mode always goes first
        for mode in order:
            if args.in_process:
                runs.append(run(args.spec, overrides, modes=(mode,), progress=False, **kwargs))
            else:  # each mode in a fresh process (as benchmarks/run.py): no leftover state
                runs.append(run_isolated(args.spec, args.set, modes=(mode,), **kwargs))
            bar.update(1)
    bar.close()
    results = merge(runs)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(format_results(results))
        for w in spread_warnings(results):
            print(f"warning: {w}", file=sys.stderr)
    if args.budget:
        budget = int(float(args.budget) * 2**30)
        for mode in args.modes:
            n = largest_batch(args.spec, overrides, mode, budget, device=args.device,
                              sizes=sizes)
            print(f"largest batch within {args.budget} GiB ({mode}): {n}")
    return 0


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("bench", help="measure memory and speed: reversible vs baseline vs "
                       "per-block checkpointing")
    spec_args(p)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rss", action="store_true", help="also the peak RSS of a fresh process")
    p.add_argument("--budget", metavar="GiB", help="find the largest batch within this budget")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every mode this many times (alternating order); all samples kept")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--in-process", action="store_true",
                   help="run the modes in this process (default: each in a fresh process)")
    p.add_argument("--json", action="store_true", help="every figure and raw sample as JSON")
    p.set_defaults(func=cmd_bench)
