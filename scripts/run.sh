#!/usr/bin/env bash
# Set up (if needed), then verify and compile every spec in specs/ into out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
for spec in specs/*.rev; do
    name=$(basename "$spec" .rev)
    .venv/bin/revdsl check "$spec"
    .venv/bin/revdsl compile "$spec" -o "out/$name.py"
    echo "compiled $spec -> out/$name.py"
done
