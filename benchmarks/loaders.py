"""Stage-1 throughput of the data paths, measured side by side in one run (issue 11's speed bar).

Rows (CIFAR-10-LT IF 100 from the JPEG copy, ResNet-32, batch 128, pad-crop-flip augmentation, one
epoch of ``fit`` each, validation pass included; the rows alternate, ``--repeats`` rounds, the best
round of each row is reported):

* ``before`` - the loop of an earlier checkout (``--before PATH``, e.g. a ``git worktree`` of the
  commit before the data seam), run in a subprocess on the same arrays;
* ``memory`` - today's in-memory path (the split normalised once on the device);
* ``stream`` - today's stream path: the lazy JPEG archive, every image decoded and normalised in
  ``--workers`` DataLoader worker processes (``data.loader: stream``).

    python benchmarks/loaders.py --before /tmp/before --threads 2 --repeats 2 --out results.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from otreweight import FitConfig, create_method, create_model, fit, make_long_tailed
from otreweight.config import DataConfig
from otreweight.data import load_dataset
from otreweight.data.dataset import subset
from otreweight.data.loaders import build_loader
from otreweight.data.modalities import get_modality

BEFORE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from otreweight import FitConfig, create_method, create_model, fit, make_long_tailed
from otreweight.config import DataConfig
from otreweight.data import load_dataset
from otreweight.data.transforms import PadCropFlip, channel_stats, to_tensor_images
ds = load_dataset(sys.argv[2])
s = make_long_tailed(ds.y_train, 100, n_meta_per_class=10, n_val_per_class=20, seed=0)
mean, std = channel_stats(ds.x_train[s.train])
conv = lambda i: (to_tensor_images(ds.x_train[i], mean, std), torch.as_tensor(ds.y_train[i]))
aug = PadCropFlip(4, True, [-m / v for m, v in zip(mean, std)])
torch.manual_seed(0)
m = create_model("resnet32", num_classes=10)
res = fit(m, create_method("ce"), conv(s.train), conv(s.val), None,
          FitConfig(epochs=1, batch_size=128, lr=0.1, progress=False), device="cpu", augment=aug)
print(json.dumps({"n": int(len(s.train)), "seconds": res.history[0]["seconds"], "file": __import__("otreweight").__file__}))
"""


def run_before(path: str, data: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", BEFORE, path, data, str(threads)], capture_output=True, text=True,
                         check=True, cwd=path)
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup(data: str, workers: int):
    ds = load_dataset(data)
    s = make_long_tailed(ds.y_train, 100, n_meta_per_class=10, n_val_per_class=20, seed=0)
    mod = get_modality("image")
    pool = ds.split("train")
    stats = mod.stats(pool.x[s.train])
    aug = mod.augment(DataConfig(augment="pad_crop_flip", pad=4, flip=True), stats)
    mem = build_loader(subset(pool, s.train), mod, stats, "cpu", "memory", name="train")
    val = build_loader(subset(pool, s.val), mod, stats, "cpu", "memory", name="val")
    lazy = load_dataset(data, lazy=True).split("train")
    stream = build_loader(subset(lazy, s.train), mod, stats, "cpu", "stream", num_workers=workers, name="train")
    assert torch.equal(next(stream.chunks(64)), mem.x[:64]), "stream and memory paths disagree"
    return mem, stream, val, aug


def one_epoch(train, val, aug) -> float:
    torch.manual_seed(0)
    m = create_model("resnet32", num_classes=10)
    res = fit(m, create_method("ce"), train, val, None, FitConfig(epochs=1, batch_size=128, lr=0.1, progress=False),
              device="cpu", augment=aug)
    return len(train) / res.history[0]["seconds"]


def measure(data: str, before: str | None, threads: int, workers: int, repeats: int) -> list[str]:
    """The rows, alternating, ``repeats`` rounds; Markdown lines of the table."""
    mem, stream, val, aug = setup(data, workers)
    rows = {"before": [], "memory": [], "stream": []}
    for r in range(repeats):
        if before:
            b = run_before(before, data, threads)
            rows["before"].append(b["n"] / b["seconds"])
        rows["memory"].append(one_epoch(mem, val, aug))
        rows["stream"].append(one_epoch(stream, val, aug))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in rows.items() if v), flush=True)
    stream.close()
    best = {k: max(v) for k, v in rows.items() if v}
    lines = [f"## Data paths: stage-1 throughput (CIFAR-10-LT IF 100, {len(mem)} images, ResNet-32, batch 128, "
             f"augmentation, {threads} torch threads, {workers} workers)\n",
             "| path | images/s (best of rounds) | rounds | vs memory |", "|---|---|---|---|"]
    for k, v in rows.items():
        if v:
            lines.append(f"| {k} | {best[k]:.0f} | {', '.join(f'{x:.0f}' for x in v)} | {best[k] / best['memory']:.2f}x |")
    if "before" in best:
        lines.append(f"\nmemory / before: {best['memory'] / best['before']:.3f}x; stream / memory: "
                     f"{best['stream'] / best['memory']:.3f}x.")
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    ap.add_argument("--before", help="a checkout of the code before the change (row 'before')")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = measure(str(Path(args.data).resolve()), args.before, args.threads, args.workers, args.repeats)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
