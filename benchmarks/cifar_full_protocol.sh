#!/usr/bin/env bash
# CIFAR-10-LT IF 100 at full length on the CPU: the config's stage 1 (200 epochs, ResNet-32) and every
# stage-2 method at the config's stage-2 length (decoupled: classifier-only methods on the frozen
# stage-1 backbone, one augmented feature pass per epoch shared by them), seed by seed.
# Resumable: run the same command again after an interruption (every stage checkpoints each epoch).
#
#   SEEDS=0 THREADS=2 bash benchmarks/cifar_full_protocol.sh [OUT] [DATA]
#
# OUT defaults to runs/cifar_full (its compare/ folder holds compare.md and the per-seed run folders);
# DATA to ../shared/data/cifar10-jpeg.tar.gz. Add seeds later with SEEDS=0,1,2 (finished seeds are kept).
# About 75 min per stage 1 at two threads on an idle 2-core AMD EPYC, about 2 h at one thread.
set -euo pipefail
PY=${PY:-python}
OUT=${1:-runs/cifar_full}
DATA=${2:-../shared/data/cifar10-jpeg.tar.gz}
mkdir -p "$OUT"
exec $PY -m otreweight compare --config cifar10_lt_if100 \
  --methods ce,cb,crt,balanced_softmax,logit_adjust_posthoc,ot,ot-cc-cb --seeds "${SEEDS:-0}" --mode decoupled \
  --output "$OUT/compare" --resume \
  --set data.source="$DATA" --set threads="${THREADS:-1}" --set progress=false --set watch_test=true
