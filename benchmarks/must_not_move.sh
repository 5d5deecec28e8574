#!/usr/bin/env bash
# The outputs that a refactoring must not move, computed by the code of a checkout CODE into OUT
# (one torch thread per run). Run it for the code before and after a change, then compare with
# python benchmarks/compare_outputs.py OUT_BEFORE OUT_AFTER.
#   bash benchmarks/must_not_move.sh CODE OUT [DATA_DIR]
set -euo pipefail
CODE=$(realpath "$1"); mkdir -p "$2"; OUT=$(realpath "$2")
export PYTHONPATH=$CODE
PY=${PY:-python}
D=$(realpath "${3:-../shared/data}")
cd "$CODE"
t0=$(date +%s)
$PY -m otreweight demo --threads 1 --json "$OUT/demo.json" > "$OUT/demo.log" 2>&1
t1=$(date +%s)
$PY -m otreweight train --config cifar10_lt_if100 --no-report --set data.source=$D/cifar10-jpeg.tar.gz \
  --set model.name=small_cnn --set model.options.width=8 --set stage1.epochs=2 --set stage1.warmup_epochs=1 \
  --set 'stage2=[{name: ot, method: ot, epochs: 1}, {name: cb, method: cb, epochs: 1}]' \
  --set threads=1 --set progress=false --set output_dir="$OUT/cifar" > "$OUT/cifar.log" 2>&1
t2=$(date +%s)
$PY -m otreweight compare --config 20newsgroups_lt_if100 --set data.source=$D/20newsgroups --methods ce,cb,ot \
  --seeds 0 --mode decoupled --set threads=1 --set progress=false --output "$OUT/text" > "$OUT/text.log" 2>&1
t3=$(date +%s)
$PY -m otreweight compare --config mnist_points_lt_if100 --set data.root=$D/mnist --set data.n_max=1200 \
  --set stage1.epochs=2 --set stage2.*.epochs=5 --set data.augment=none --methods ce,cb,ot --seeds 0 \
  --mode decoupled --set threads=1 --set progress=false --output "$OUT/points" > "$OUT/points.log" 2>&1
t4=$(date +%s)
echo "demo $((t1-t0)) s, cifar $((t2-t1)) s, text $((t3-t2)) s, points $((t4-t3)) s" | tee "$OUT/wall.txt"
