"""Run the long-tailed CIFAR protocol at a chosen epoch budget over several seeds; write a results table.

Example (the BENCHMARKS.md run, CIFAR-10 JPEG class folders, 2 CPU cores):

    python benchmarks/cifar_lt.py --config cifar10_lt_if100 --seeds 0,1,2 \
        --data ../shared/data/cifar10-jpeg.tar.gz --stage1-epochs 15 --stage2-epochs 5 \
        --out benchmarks/results/cifar10_lt_if100_cpu

Each seed is one `otreweight train` run (its own folder, resumable with --resume); the table gives,
per stage, test accuracy / balanced accuracy / many / medium / few / gmean at the epoch selected on
the validation split (and at the last epoch), mean ± std over seeds, and seconds per epoch.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import torch

from otreweight.experiment import load_config, resolve_config_path, run_experiment
from otreweight.summary import mean_std

COLS = ("accuracy", "balanced_accuracy", "many", "medium", "few", "gmean")


def summarize(per_seed: list[dict], which: str) -> list[dict]:
    rows = []
    for stage in per_seed[0]:
        row = {"stage": stage, "which": which, "seeds": len(per_seed)}
        for c in COLS:
            m, sd = mean_std([100 * r[stage][which][c] for r in per_seed if r[stage][which].get(c) is not None])
            row[c] = None if m is None else (m, sd)
        row["sec_per_epoch"] = mean_std([r[stage]["seconds_per_epoch"] for r in per_seed])
        row["best_epoch"] = [r[stage]["best_epoch"] for r in per_seed]
        rows.append(row)
    return rows


def fmt(v):
    return "-" if v is None else f"{v[0]:.1f} ± {v[1]:.1f}"


def markdown(rows) -> str:
    head = "| stage | epoch | acc | bal.acc | many | medium | few | gmean | s/epoch | best epochs |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {'val-selected' if r['which'] == 'best' else 'last'} | "
            + " | ".join(fmt(r[c]) for c in COLS)
            + f" | {r['sec_per_epoch'][0]:.1f} | {','.join(map(str, r['best_epoch']))} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="cifar10_lt_if100")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", help="data source (overrides the config's data.source)")
    ap.add_argument("--stage1-epochs", type=int)
    ap.add_argument("--stage2-epochs", type=int)
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="extra config overrides")
    ap.add_argument("--out", required=True, help="folder for the per-seed runs and the tables")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--summarize-only", action="store_true",
                    help="only build the tables from the seeds' finished runs (<out>/seed<N>/results.json)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    per_seed = []
    t0 = time.time()
    for seed in [int(s) for s in args.seeds.split(",")]:
        sets = [f"seed={seed}", f"output_dir={out / f'seed{seed}'}", "progress=false"] + args.overrides
        if args.data:
            sets.append(f"data.source={args.data}")
        if args.stage1_epochs:
            sets.append(f"stage1.epochs={args.stage1_epochs}")
        if args.stage2_epochs:
            sets.append(f"stage2.*.epochs={args.stage2_epochs}")
        if args.summarize_only:
            per_seed.append(json.loads((out / f"seed{seed}" / "results.json").read_text()))
            continue
        cfg = load_config(resolve_config_path(args.config), sets)
        resume = args.resume and (out / f"seed{seed}" / "config.yaml").exists()
        per_seed.append(run_experiment(cfg, resume=resume, log=lambda m: print(m, flush=True)))
    rows = summarize(per_seed, "best") + summarize(per_seed, "last")
    rows.sort(key=lambda r: (r["stage"] != "stage1", r["stage"], r["which"] != "best"))
    env = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
           f"torch {torch.__version__}, python {platform.python_version()}")
    if args.summarize_only:  # the runs' threads and times are theirs, not this process's
        env = (f"{platform.processor() or platform.machine()}, torch {torch.__version__}, python "
               f"{platform.python_version()}; tables rebuilt from the per-seed results (threads as set in each run's config)")
    md = (f"Command: `python {' '.join(sys.argv)}`\n\nHardware: {env}; wall time {time.time() - t0:.0f} s\n\n"
          + markdown(rows) + "\n")
    (out / "results.md").write_text(md)
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["stage", "epoch", *[f"{c}_{s}" for c in COLS for s in ("mean", "std")], "sec_per_epoch", "best_epochs"])
        for r in rows:
            w.writerow([r["stage"], r["which"], *[("" if r[c] is None else f"{r[c][i]:.2f}") for c in COLS for i in (0, 1)],
                        f"{r['sec_per_epoch'][0]:.2f}", " ".join(map(str, r["best_epoch"]))])
    (out / "per_seed.json").write_text(json.dumps(per_seed, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
