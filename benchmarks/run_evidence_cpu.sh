#!/usr/bin/env bash
# Measure the CPU evidence table piece by piece: one (row, seed) per command, sequentially, each merged
# into benchmarks/results/evidence-cpu.{md,json}. Pieces already in the table are skipped, so the
# script can be stopped and started again. Run it from a clone that nobody edits meanwhile:
#   nohup benchmarks/run_evidence_cpu.sh > evidence-cpu.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TABLE=benchmarks/results/evidence-cpu.json
done_already() {  # row $1, seed $2 already measured?
  [ -f "$TABLE" ] && "$PY" -c "import json,sys; t=json.load(open('$TABLE'));
sys.exit(0 if any(r['index']==$1 and any(e['seed']==$2 for e in r['seeds']) for r in t['rows']) else 1)"
}
for seed in ${SEEDS:-0 1 2}; do
  for row in ${ROWS:-0 3 4 5 6 7 8 9 10 2 1}; do  # cheap rows first, the 3-4x rows last
    if done_already "$row" "$seed"; then echo "skip row $row seed $seed (in the table)"; continue; fi
    echo "$(date -u +%FT%TZ) start row $row seed $seed"
    "$PY" benchmarks/reproduce.py --protocol cpu --rows "$row" --seeds "$seed" --merge || echo "FAILED row $row seed $seed"
    echo "$(date -u +%FT%TZ) end row $row seed $seed"
  done
done
