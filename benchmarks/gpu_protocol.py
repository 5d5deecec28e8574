"""The full CIFAR-10-LT IF 100 protocol on one GPU, timed: stage 1 (200 epochs) + stage 2 (90 epochs).

    python benchmarks/gpu_protocol.py --data-root data [--compile] [--out runs/gpu_protocol]

Data live on the GPU, augmentation runs there as batched tensor ops, bf16 autocast and
channels_last are on (FitConfig amp="auto" on CUDA), and the optimiser step has no host sync;
--compile adds torch.compile of the backbone. Prints the wall time of each stage and the total,
the target being <= 5 minutes on one H100 (issue 6). Not yet measured: no GPU was available when
it was written (see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from otreweight.experiment import load_config, resolve_config_path, run_experiment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data", help="folder with cifar-10-python.tar.gz (downloaded if online)")
    ap.add_argument("--source", default="cifar10", help="data source (cifar10, or the JPEG class-folder archive)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--stage2", default="ot_classifier", help="which stage-2 variant of the config to time")
    ap.add_argument("--out", default="runs/gpu_protocol")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_protocol.py: no CUDA device; this benchmark times the GPU path")
    cfg = load_config(resolve_config_path("cifar10_lt_if100"), [
        f"data.source={args.source}", f"data.root={args.data_root}", "device=cuda", "progress=false",
        f"output_dir={args.out}", f"stage1.compile={str(args.compile).lower()}",
    ])
    cfg["stage2"] = [v for v in cfg["stage2"] if v["name"] == args.stage2]
    times = {}
    t0 = time.perf_counter()
    last = [t0]

    def log(msg):
        now = time.perf_counter()
        if ": best epoch" in msg:
            times[msg.split(":")[0]] = now - last[0]
            last[0] = now
        print(f"[{now - t0:7.1f} s] {msg}", flush=True)

    results = run_experiment(cfg, log=log)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    summary = {"device": torch.cuda.get_device_name(0), "stage_seconds": times, "total_seconds": total,
               "test_balanced_accuracy": {k: v["best"]["balanced_accuracy"] for k, v in results.items()}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
