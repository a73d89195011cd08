#!/usr/bin/env bash
# Before/after overhead of the reversible engine (benchmarks/overhead.py), interleaved so that
# both see the same machine noise, written to benchmarks/results/overhead_ab.json (read by
# benchmarks/report.py). Usage:
#     git worktree add /tmp/before <commit>      # the "before" engine
#     bash benchmarks/overhead_ab.sh <commit>    # PYTHON=... to choose the interpreter
# Each engine runs 3 rounds per configuration, alternating; a round is a fresh process of
# benchmarks/overhead.py --rounds 3. Per engine the overhead quoted is the median round's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=${1:?usage: overhead_ab.sh <commit checked out at /tmp/before>}
PY=${PYTHON:-$HERE/.venv/bin/python}
OUT=$(mktemp)
cd "$HERE"
for i in 1 2 3; do
  for who in before after; do
    root=$HERE; [ $who = before ] && root=/tmp/before
    for cfg in "specs/rev_vit.rev --set depth=12 --batch 4" "specs/rev_mvit.rev --batch 2"; do
      # shellcheck disable=SC2086
      r=$(cd $root && PYTHONPATH=$root $PY $HERE/benchmarks/overhead.py --spec $HERE/$cfg \
          --rounds 3 --json | tail -1)
      echo "$who|$cfg|$r" >> "$OUT"
    done
  done
done
$PY - "$OUT" "$BEFORE" <<'PYEOF'
import json, statistics, sys
labels = {"specs/rev_vit.rev --set depth=12 --batch 4": "RevViT-S depth 12, batch 4",
          "specs/rev_mvit.rev --batch 2": "Rev-MViT-B, batch 2"}
runs = {}
for line in open(sys.argv[1]):
    who, cfg, r = line.rstrip("\n").split("|", 2)
    runs.setdefault(cfg, {}).setdefault(who, []).append(json.loads(r))
rows = []
for cfg, label in labels.items():
    row = {"label": label}
    for who in ("before", "after"):
        got = sorted(runs[cfg][who], key=lambda r: r["overhead"])
        mid = got[len(got) // 2]
        row[who] = {k: mid[k] for k in ("reversible", "baseline", "forward", "overhead")}
        row[who]["runs"] = [r["overhead"] for r in runs[cfg][who]]
    rows.append(row)
out = {"command": f"bash benchmarks/overhead_ab.sh {sys.argv[2]} (the 'before' engine from a "
                  f"worktree of commit {sys.argv[2]} at /tmp/before, the 'after' from this "
                  "checkout; 3 interleaved rounds, each benchmarks/overhead.py --rounds 3; "
                  "the median round per engine)",
       "commit_before": sys.argv[2], "rows": rows}
json.dump(out, open("benchmarks/results/overhead_ab.json", "w"), indent=1)
print(json.dumps(out, indent=1))
PYEOF
rm -f "$OUT"
