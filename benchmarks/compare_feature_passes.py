"""Wall time and number of augmented frozen-feature passes of a small CIFAR-10-LT `compare` of classifier-only methods.

Run with the code to measure first on the path (this checkout, or an older one for the "before" row):

    OTREWEIGHT_CACHE=/tmp/c PYTHONPATH=<checkout> python benchmarks/compare_feature_passes.py \
        --data ../shared/data/cifar10-jpeg.tar.gz --stage1 <best.pt of a CIFAR-10-LT stage 1> \
        --methods cb,balanced_softmax,logit_adjust --epochs 3 --out /tmp/passes

It counts the calls of the loop's augmented pass (``augmented_pass`` now, ``_augmented_features``
before) and prints one JSON line: the code's version, methods, epochs, passes, wall seconds, CPU.
``--stage1`` skips stage 1 (the same frozen backbone for both rows); ``feature_store: off`` keeps
every feature in memory.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import otreweight
import otreweight.train.loop as loop
from otreweight.compare import run_comparison
from otreweight.experiment import load_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--stage1", required=True, help="a stage-1 best.pt of the same config and seed")
    ap.add_argument("--methods", default="cb,balanced_softmax,logit_adjust")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    name = "augmented_pass" if hasattr(loop, "augmented_pass") else "_augmented_features"
    real, calls = getattr(loop, name), []

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    setattr(loop, name, counted)
    cfg = load_config("configs/cifar10_lt_if100.yaml", [
        f"data.source={args.data}", f"stage1.checkpoint={args.stage1}", "feature_store=off", "progress=false",
        f"threads={args.threads}", f"output_dir={args.out}"])
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = run_comparison(cfg, args.methods.split(","), seeds=(0,), mode="decoupled",
                         method_sets=[f"*.epochs={args.epochs}"], output=args.out, log=lambda *a: None)
    wall = time.perf_counter() - t0
    rows = {r["method"]: round(r["balanced_accuracy_mean"], 2) for r in res["rows"]}
    print(json.dumps({"code": name, "version": otreweight.__version__, "methods": args.methods, "epochs": args.epochs,
                      "augmented_passes": len(calls), "wall_s": round(wall, 1), "balanced_accuracy": rows,
                      "torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine()}))


if __name__ == "__main__":
    main()
