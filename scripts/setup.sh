#!/usr/bin/env bash
# Set up a development environment in .venv: torch (unless one is already there), revdsl and its
# test tools, graphviz's `dot` for `revdsl viz`, and headless Chromium for its browser test.
#
#   TORCH_SPEC   what to install for torch when the venv has none (default: torch==2.13.0, the CPU
#                wheel on this machine). GPU users: create .venv and install your torch build first,
#                or set e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124".
#   PYTHON       the interpreter that creates .venv (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python

# torch first, and only if missing: a plain `torch` requirement would pull the newest build with
# several GB of CUDA packages; `pip install -e .` then keeps the installed torch (>=2.3).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    "$PY" -m pip install --disable-pip-version-check -q $TORCH_SPEC
fi
"$PY" -m pip install --disable-pip-version-check -q -e ".[dev]"

# graphviz's layout program (needed to render SVG/PNG/PDF; .dot output needs nothing).
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) \
            >/dev/null 2>&1 || echo "warning: could not install graphviz; revdsl viz can still write .dot" >&2
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz) \
            >/dev/null 2>&1 || echo "warning: could not install graphviz" >&2
    else
        echo "warning: graphviz's 'dot' is not installed (apt-get install graphviz); revdsl viz can still write .dot" >&2
    fi
fi
# headless Chromium, for the test that opens `revdsl viz`'s SVG in a browser (tests only)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
            || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)) \
            >/dev/null 2>&1 || echo "warning: could not install chromium (the viz browser test needs it)" >&2
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
            >/dev/null 2>&1 || echo "warning: could not install chromium" >&2
    else
        echo "warning: chromium is not installed (apt-get install chromium); the viz browser test needs it" >&2
    fi
fi
echo "revdsl is set up in .venv ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
