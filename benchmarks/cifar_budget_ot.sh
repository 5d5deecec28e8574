#!/usr/bin/env bash
# The CIFAR-10-LT CPU-budget table with `ot` (the authors' update) beside `ot-envelope` (the former step):
# three 15-epoch stage-1 ResNet-32 models, then the classifier-only comparison on them (BENCHMARKS.md).
#   bash benchmarks/cifar_budget_ot.sh [OUT] [DATA]   (resumable: finished stage 1s are kept)
set -euo pipefail

PY=${PY:-python}
OUT=${1:-runs/c10budget}
D=${2:-../shared/data/cifar10-jpeg.tar.gz}
mkdir -p $OUT
start=$(date +%s)
for s in 0 1 2; do
  [ -f $OUT/c10_if100_cpu15/seed$s/stage1/final.json ] || $PY -m otreweight train --config cifar10_lt_if100 --no-report \
    --set stage1.epochs=15 --set 'stage2=[]' --set seed=$s --set data.source=$D --set threads=2 --set progress=false \
    --set output_dir=$OUT/c10_if100_cpu15/seed$s > $OUT/stage1_seed$s.log 2>&1
done
s1=$(date +%s)
$PY -m otreweight compare --config cifar10_lt_if100 --methods ce,cb,ot,ot-envelope \
  --mode decoupled --meta-in-train --seeds 0,1,2 --resume \
  --set "stage1.checkpoint=$OUT/c10_if100_cpu15/seed{seed}/stage1/model.json" \
  --set data.source=$D --set data.augment=none --set threads=2 --set progress=false \
  --method-set '*.epochs=10' --method-set '*.batch_size=128' --method-set '*.lr=0.1' \
  --method-set 'ot.batch_size=16' --method-set 'ot.lr=2e-5' \
  --method-set 'ot-envelope.batch_size=16' --method-set 'ot-envelope.lr=2e-5' \
  --reference ot-envelope --output $OUT/compare > $OUT/compare.log 2>&1
end=$(date +%s)
echo "stage 1 (3 seeds, 15 epochs): $((s1-start)) s; compare: $((end-s1)) s" | tee $OUT/wall.txt
