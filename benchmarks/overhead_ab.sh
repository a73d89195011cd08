#!/usr/bin/env bash
# Before/after overhead of the reversible engine (benchmarks/overhead.py), interleaved so that
# both see the same machine noise. Usage: a checkout of the "before" commit at /tmp/before
# (git worktree add /tmp/before <commit>); results are appended to /tmp/ab.txt.
set -e
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
for i in 1 2 3; do
  for who in before after; do
    root=$HERE; [ $who = before ] && root=/tmp/before
    for cfg in "specs/rev_vit.rev --set depth=12 --batch 4" "specs/rev_mvit.rev --batch 2"; do
      r=$(cd $root && PYTHONPATH=$root ${PYTHON:-python} $HERE/benchmarks/overhead.py --spec $HERE/$cfg --rounds 3 --json | tail -1)
      echo "$who $cfg $r" >> /tmp/ab.txt
    done
  done
done
echo done >> /tmp/ab.txt
