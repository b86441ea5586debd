#!/usr/bin/env bash
# Measure the Fashion-MNIST evidence table piece by piece: one (row, seed) per command, sequentially, each
# merged into benchmarks/results/evidence-fmnist.{md,json}. Pieces already in the table are skipped, so the
# script can be stopped and started again. Run it from a clone that nobody edits meanwhile:
#   nohup benchmarks/run_evidence_fmnist.sh > evidence-fmnist.log 2>&1 &
# Several clones (or machines) can share the work with ROWS/SEEDS (COSTLY_ROWS="" skips the costly rows); join
# their tables with --join.
# Checkpoints of runs that were under way when a machine was given back are kept in benchmarks/unfinished/
# (see its README); they are copied into the work folder first, so those runs resume where they stopped.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TABLE=${TABLE:-benchmarks/results/evidence-fmnist.json}
WORK=${WORK:-runs/reproduce}
UNFINISHED=${UNFINISHED:-benchmarks/unfinished}
mkdir -p "$WORK/fmnist"
for ckpt in "$UNFINISHED"/*.ckpt.pt; do  # never over a checkpoint that is further along
  [ -f "$ckpt" ] && [ ! -e "$WORK/fmnist/$(basename "$ckpt")" ] && cp "$ckpt" "$WORK/fmnist/" \
    && echo "resuming from $ckpt"
done
done_already() {  # row $1, seed $2 already measured?
  [ -f "$TABLE" ] && "$PY" -c "import json,sys; t=json.load(open('$TABLE'));
sys.exit(0 if any(r['index']==$1 and any(e['seed']==$2 for e in r['seeds']) for r in t['rows']) else 1)"
}
# Every seed of the rows at the baseline's cost first (the baseline and the pitch leading), then the rows
# that cost more (upsample x2: 4x the baseline's MACs; stride-mod: 2.8x), so that an interrupted run leaves whole rows behind.
for rows in "${ROWS-0 5 8 3 4 6 9 7 10}" "${COSTLY_ROWS-2 1}"; do
  for seed in ${SEEDS:-0 1 2}; do
    for row in $rows; do
      if done_already "$row" "$seed"; then echo "skip row $row seed $seed (in the table)"; continue; fi
      echo "$(date -u +%FT%TZ) start row $row seed $seed"
      "$PY" benchmarks/reproduce.py --protocol fmnist --rows "$row" --seeds "$seed" --merge --out "${TABLE%.json}.md" --work "$WORK" \
        || echo "FAILED row $row seed $seed"
      echo "$(date -u +%FT%TZ) end row $row seed $seed"
    done
  done
done
