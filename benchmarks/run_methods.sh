#!/usr/bin/env bash
# Measure FGSM-RS against N-FGSM side by side (benchmarks/reproduce.py --table methods): on the CPU protocol
# (cifar:wrn-16-1) at 8/255 and 16/255, and on the Fashion-MNIST protocol at its own eps (0.1), each seed of
# each method one piece, merged into benchmarks/results/methods-PROTOCOL-epsEPS.{md,json}. Pieces already
# in a table are skipped, so the script can be stopped and started again. Run it from a clone nobody edits:
#   nohup benchmarks/run_methods.sh > methods.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
done_already() {  # table $1, row $2, seed $3 already measured?
  [ -f "$1" ] && "$PY" -c "import json,sys; t=json.load(open('$1'));
sys.exit(0 if any(r['index']==$2 and any(e['seed']==$3 for e in r['seeds']) for r in t['rows']) else 1)"
}
# RUNS: protocol:eps pairs, e.g. RUNS="cpu:8/255 fmnist:0.1"; ROWS: which rows (0 FGSM-RS, 1 N-FGSM, 2 PGD-2)
for run in ${RUNS:-cpu:8/255 cpu:16/255 fmnist:0.1}; do
  protocol=${run%%:*} eps=${run#*:}
  table="benchmarks/results/methods-${protocol}-eps${eps//\//-}.json"
  for seed in ${SEEDS:-0 1 2}; do
    for row in ${ROWS:-0 1 2}; do
      if done_already "$table" "$row" "$seed"; then echo "skip $protocol $eps row $row seed $seed"; continue; fi
      echo "$(date -u +%FT%TZ) start $protocol eps $eps row $row seed $seed"
      "$PY" benchmarks/reproduce.py --protocol "$protocol" --table methods --eps "$eps" --rows "$row" \
        --seeds "$seed" --merge || echo "FAILED $protocol eps $eps row $row seed $seed"
    done
  done
done
