#!/usr/bin/env bash
# 15-epoch CIFAR-10-LT IF 100 stage 1 (ResNet-32) in fp32, `amp: bf16` and `compile: true`, same seed and
# data, one after another on one machine: test balanced accuracy and wall time per variant (BENCHMARKS.md,
# "bf16 autocast and torch.compile on the CPU"). Throughput side by side: benchmarks/precision_cpu.py.
#   SEED=0 THREADS=2 [VARIANTS="fp32 bf16"] bash benchmarks/precision_cifar.sh [OUT] [DATA]   (finished variants are kept)
set -euo pipefail
PY=${PY:-python}
OUT=${1:-runs/precision}
D=${2:-../shared/data/cifar10-jpeg.tar.gz}
SEED=${SEED:-0}
mkdir -p "$OUT"
for v in ${VARIANTS:-fp32 bf16 compile}; do
  case $v in
    fp32) extra=(--set stage1.amp=none) ;;
    bf16) extra=(--set stage1.amp=bf16) ;;
    compile) extra=(--set stage1.amp=none --set stage1.compile=true) ;;
  esac
  dir=$OUT/$v/seed$SEED
  if [ ! -f "$dir/stage1/final.json" ]; then
    start=$(date +%s)
    $PY -m otreweight train --config cifar10_lt_if100 --no-report \
      --set stage1.epochs=15 --set 'stage2=[]' --set seed=$SEED --set data.source="$D" \
      --set threads="${THREADS:-2}" --set progress=false --set output_dir="$dir" "${extra[@]}" \
      > "$OUT/$v.seed$SEED.log" 2>&1
    echo "$v seed $SEED: $(( $(date +%s) - start )) s" >> "$OUT/wall.txt"
  fi
done
$PY - "$OUT" "$SEED" <<'PY'
import json, sys, pathlib
out, seed = pathlib.Path(sys.argv[1]), sys.argv[2]
walls = dict(l.split(": ") for l in (out / "wall.txt").read_text().splitlines() if f"seed {seed}" in l)
print("| variant | test bal. acc, val-selected epoch | selected epoch | test bal. acc, last epoch | s/epoch | wall |")
print("|---|---|---|---|---|---|")
for v in ("fp32", "bf16", "compile"):
    if not (out / v / f"seed{seed}" / "stage1" / "final.json").exists():
        continue
    f = json.loads((out / v / f"seed{seed}" / "stage1" / "final.json").read_text())
    print(f"| {v} | {100 * f['best']['balanced_accuracy']:.2f} | {f['best_epoch']} | "
          f"{100 * f['last']['balanced_accuracy']:.2f} | {f['seconds_per_epoch']:.1f} | {walls.get(f'{v} seed {seed}', '?')} |")
PY
