"""Shared helpers for the benchmark suites: machine description, result files, timing."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PLOTS = HERE / "plots"
SPECS = ROOT / "specs"


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    try:
        model = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo"],
                               capture_output=True, text=True).stdout.split(":", 1)[-1].strip()
        if model:
            info["cpu"] = model
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
        info["memory_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def median_time(fn: Any, repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def inference_peak(fn: Any) -> int:
    """Peak bytes allocated while `fn` runs (CPU profiler allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    raw = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    cur = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in raw if e.name() == "[memory]"):
        cur += nbytes
        peak = max(peak, cur)
    return peak
