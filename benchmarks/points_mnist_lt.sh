#!/usr/bin/env bash
# MNIST point sets, long-tailed at IF 100 (issue 14's benchmark): PointNet stage 1 for seeds 0-2, then
# `compare --mode decoupled` over the same splits. CPU budget: 256 points per digit, n_max 1,200
# (2,976 training clouds at IF 100), 5 stage-1 epochs, 20 stage-2 epochs, one torch thread per run.
# Stage 1 trains with the point_cloud augmentation; stage 2 re-trains classifiers on the frozen,
# un-augmented features (data.augment=none: features computed once per seed).
# Usage: bash benchmarks/points_mnist_lt.sh [OUT] (default benchmarks/results/points_mnist)
set -euo pipefail
PY=${PY:-python}
OUT=${1:-benchmarks/results/points_mnist}
mkdir -p "$OUT"
COMMON=(--config mnist_points_lt_if100 --set data.root=../shared/data/mnist --set data.n_max=1200 --set threads=1
        --set progress=false)
start=$(date +%s)
for s in 0 1 2; do
  /usr/bin/time -v $PY -m otreweight train "${COMMON[@]}" --set stage1.epochs=5 --set 'stage2=[]' --set seed=$s \
      --set output_dir="$OUT/stage1_seed$s" > "$OUT/stage1_seed$s.log" 2>&1
done
s1=$(date +%s)
/usr/bin/time -v $PY -m otreweight compare "${COMMON[@]}" --set data.augment=none \
    --set "stage1.checkpoint=$OUT/stage1_seed{seed}/stage1/model.json" \
    --methods ce,cb,crt,balanced_softmax,logit_adjust_posthoc,ot,ot-cc,ot-no-meta-ce --seeds 0,1,2 --mode decoupled \
    --output "$OUT/compare" > "$OUT/compare.log" 2>&1
end=$(date +%s)
echo "stage 1 (3 seeds): $((s1 - start)) s; compare: $((end - s1)) s; total $((end - start)) s" | tee "$OUT/wall.txt"
