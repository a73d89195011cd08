#!/usr/bin/env bash
# The GPU checks, one command (about 5-8 minutes on one H100/H200): CUDA RNG replay, float16 and
# bfloat16 autocast gradients, peak memory and step-time ratios for RevViT-B/L, Rev-MViT-B and
# RevBiFPN-S3, and torch.compile. Writes benchmarks/results/gpu.json.
#     bash benchmarks/gpu.sh            # on a machine with a CUDA device
#     bash benchmarks/gpu.sh --quick    # tiny sizes: a smoke run (also on CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" benchmarks/gpu_checks.py "$@"
