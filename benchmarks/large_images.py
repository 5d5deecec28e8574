"""Large-image throughput and memory, the library against bare loops, side by side in one run (issue 12).

Sections (``--only``, comma-separated; every row's command and hardware head the report):

* ``stream`` - CIFAR-10 from the shared JPEG copy written as an ImageNet-LT-style split file
  (``relative/path label`` lines), ``--images`` training images upsampled to 224 px by the worker
  transforms (RandomResizedCrop 224 + flip, ImageNet statistics), a timm ``resnet18`` (random init,
  channels-last) forward + backward + SGD step, batch ``--batch``: the library's training loop
  (``image_list`` source, ``StreamLoader`` with 0, 1 and 2 workers, ``train_one_epoch``) against a
  bare ``torch.utils.data.DataLoader`` (PIL decode + the same torchvision v2 transforms in
  ``__getitem__``, ``default_collate``) + the same model loop over the same batches. Rows alternate;
  ``--repeats`` rounds; the best round of each row is reported. Images/s and library / bare ratios.
* ``rss`` - peak RSS of a fresh process that opens a 10,000- and a 50,000-line split file (lines
  repeating the shared images), builds the streamed training loader and reads two batches.
* ``extract`` - frozen-feature extraction into the feature store's float16 memory maps (a
  classifier-only stage 1 on a random-init timm ``resnet18``, 64 px crops): images/s, the files'
  size on disk, then five classifier-only stage-2 methods from that one extraction (feature passes
  counted: none after the first run).

    python benchmarks/large_images.py --archive ../shared/data/cifar10-jpeg.tar.gz --threads 2 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import run_sections  # noqa: E402


def cifar_tree(args) -> Path:
    """The shared CIFAR-10 JPEG archive extracted once under ``--work`` (its ``cifar10-jpeg`` folder)."""
    root = Path(args.work) / "cifar10-jpeg"
    if not (root / "train").is_dir():
        Path(args.work).mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.archive) as tar:
            tar.extractall(args.work, filter="data")
    return root


def write_list(root: Path, split: str, n: int, name: str, seed: int = 0) -> Path:
    """``n`` lines ``<split>/<class>/<file> <label>`` drawn (with repetition when n exceeds the files) from ``root``."""
    classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
    files = [(f"{split}/{c}/{f.name}", k) for k, c in enumerate(classes) for f in sorted((root / split / c).iterdir())]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=n, replace=n > len(files))
    path = root / name
    path.write_text("".join(f"{files[i][0]} {files[i][1]}\n" for i in pick))
    return path


class BareDataset(torch.utils.data.Dataset):
    """What a user writes by hand: PIL decode, torchvision v2 transforms, a label."""

    def __init__(self, root: Path, lines: list[tuple[str, int]], crop: int = 224) -> None:
        from torchvision.transforms import v2

        self.root, self.lines = root, lines
        self.tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(crop, antialias=True), v2.RandomHorizontalFlip(),
                              v2.ToDtype(torch.float32, scale=True),
                              v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i):
        from PIL import Image

        p, y = self.lines[i]
        with Image.open(self.root / p) as im:
            return self.tf(im.convert("RGB")), y


def _stream_rows(args, out):
    from otreweight import FitConfig, create_method, create_model
    from otreweight.data.loaders import build_loader
    from otreweight.data.modalities import get_modality
    from otreweight.data.sources import load_dataset
    from otreweight.data.transforms import IMAGENET_MEAN, IMAGENET_STD, WorkerTransforms
    from otreweight.train.loop import setup, train_one_epoch

    root = cifar_tree(args)
    write_list(root, "train", args.images, "bench_train.txt")
    write_list(root, "test", 32, "bench_test.txt", seed=1)
    ds = load_dataset("image_list", root=root, train="bench_train.txt", test="bench_test.txt")
    train = ds.split("train")
    mod = get_modality("image", crop_size=224)
    stats = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    tf = WorkerTransforms(224, augment=True)
    val = build_loader(ds.split("test"), mod, stats, "cpu", "memory", 0, "val", transforms=tf)
    lines = [(p.split(":", 1)[1], int(y)) for p, y in zip(train.names, train.labels)]
    torch.manual_seed(0)
    init = create_model("timm/resnet18", num_classes=10).to(memory_format=torch.channels_last).state_dict()
    cfg = FitConfig(epochs=1, batch_size=args.batch, lr=0.01, weight_decay=0.0, progress=False, seed=0,
                    eval_batch_size=64).validate()

    def library(workers: int):
        loader = build_loader(train, mod, stats, "cpu", "stream", workers, "train", transforms=tf)
        model = create_model("timm/resnet18", num_classes=10)
        model.load_state_dict(init)
        run = setup(model, create_method("ce"), loader, val, None, cfg, device="cpu", num_classes=10, tag="bench")
        t0, c0 = time.perf_counter(), time.process_time()
        train_one_epoch(run, 0)
        t, c = time.perf_counter() - t0, time.process_time() - c0
        loader.close()
        return t, c

    def bare(workers: int):
        from otreweight.data.samplers import EpochSampler

        model = create_model("timm/resnet18", num_classes=10).to(memory_format=torch.channels_last)
        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        gen = torch.Generator().manual_seed(0)
        sampler = EpochSampler(torch.as_tensor(train.labels), 10, args.batch, "instance", drop_single=True)
        batches = [b.tolist() for b in sampler.batches(gen, "cpu")]
        dl = torch.utils.data.DataLoader(BareDataset(root, lines), batch_sampler=batches, num_workers=workers,
                                         persistent_workers=workers > 0)
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        for x, y in dl:
            x = x.contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    best: dict = {}
    for r in range(args.repeats):
        for workers in (0, 1, 2):
            for name, fn in (("library", library), ("bare", bare)):
                t, c = fn(workers)
                key = (name, workers)
                best[key] = min(best.get(key, (1e9, 1e9)), (t, c))
                print(f"round {r + 1} {name} workers={workers}: {args.images / t:.1f} images/s", flush=True)
    out.append(f"\n### Streaming throughput: timm resnet18, 224 px, batch {args.batch}, {args.images} images "
               f"(CIFAR-10 JPEGs via an ImageNet-LT-style list), best of {args.repeats}\n")
    out.append("| workers | library images/s | bare images/s | library / bare (wall) | library / bare (CPU time) |")
    out.append("|---|---|---|---|---|")
    for workers in (0, 1, 2):
        (tl, cl), (tb, cb) = best[("library", workers)], best[("bare", workers)]
        out.append(f"| {workers} | {args.images / tl:.1f} | {args.images / tb:.1f} | {tb / tl:.3f} | {cb / cl:.3f} |")


_RSS_CHILD = r"""
import json, sys, torch
from otreweight.data.loaders import build_loader
from otreweight.data.modalities import get_modality
from otreweight.data.sources import load_dataset
from otreweight.data.transforms import IMAGENET_MEAN, IMAGENET_STD, WorkerTransforms
root, name = sys.argv[1], sys.argv[2]
ds = load_dataset("image_list", root=root, train=name, test="bench_test.txt")
tf = WorkerTransforms(224, augment=True)
loader = build_loader(ds.split("train"), get_modality("image", crop_size=224),
                      {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, "cpu", "stream", 2, "train", transforms=tf)
n = 0
for x in loader.batches([torch.arange(i * 64, (i + 1) * 64) for i in range(2)], torch.Generator().manual_seed(0)):
    n += x.shape[0]
loader.close()
# VmHWM: this process's own peak (ru_maxrss would carry over the parent's from before exec)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"rss_mb": hwm, "read": n, "lines": len(ds.split("train"))}))
"""


def _rss_rows(args, out):
    root = cifar_tree(args)
    write_list(root, "test", 32, "bench_test.txt", seed=1)
    rows = []
    for n in (10_000, 50_000):
        name = f"bench_{n}.txt"
        write_list(root, "train", n, name)
        res = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(root), name], capture_output=True, text=True,
                             check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    out.append("\n### Peak RSS (VmHWM) of a training process: import, open a split file, stream two batches of 64 "
               "(2 workers)\n")
    out.append("| split-file lines | peak RSS (MB) |")
    out.append("|---|---|")
    for r in rows:
        out.append(f"| {r['lines']:,} | {r['rss_mb']:.0f} |")
    out.append(f"\nDifference: {rows[1]['rss_mb'] - rows[0]['rss_mb']:.0f} MB (goal: within 200 MB).")


def _extract_rows(args, out):
    from otreweight.experiment import load_config, run_experiment
    from otreweight.train import features

    root = cifar_tree(args)
    write_list(root, "train", args.extract_images, "bench_ext_train.txt")
    write_list(root, "test", args.extract_images // 4, "bench_ext_test.txt", seed=1)
    import shutil

    store = Path(args.work) / "feature_store"
    for old in (store, Path(args.work) / "ext_run1", Path(args.work) / "ext_run2"):
        shutil.rmtree(old, ignore_errors=True)
    methods = ["ce", "cb", "crt", "logit_adjust_posthoc", "ot"]
    stage2 = json.dumps([{"name": m, "method": m, "epochs": 2} for m in methods])
    overrides = [
        "data.source=image_list", f"data.root={root}", "data.source_options.train=bench_ext_train.txt",
        "data.source_options.test=bench_ext_test.txt", "data.profile=given", "data.n_meta_per_class=10",
        "data.n_val_per_class=10", "data.augment=random_resized_crop", "data.crop_size=64", "data.normalize=imagenet",
        "model.name=timm/resnet18", "stage1.trainable=classifier", "stage1.epochs=2", "stage1.batch_size=128",
        f"stage2={stage2}", "stage2.*.batch_size=128", f"feature_store={store}", "feature_dtype=float16",
        "progress=false", f"threads={args.threads}"]
    # the extraction alone: the training list's images through the evaluation crop into a float16 memory map
    from otreweight import create_model
    from otreweight.data.loaders import build_loader
    from otreweight.data.modalities import get_modality
    from otreweight.data.sources import load_dataset
    from otreweight.data.transforms import IMAGENET_MEAN, IMAGENET_STD, WorkerTransforms

    ds = load_dataset("image_list", root=root, train="bench_ext_train.txt", test="bench_ext_test.txt")
    stats = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    model = create_model("timm/resnet18", num_classes=10).to(memory_format=torch.channels_last)
    ext_rows = []
    for workers in (0, 2):
        loader = build_loader(ds.split("train"), get_modality("image", crop_size=64), stats, "cpu", "stream", workers,
                              "train", transforms=WorkerTransforms(64))
        one = features.FeatureStore(Path(args.work) / f"extract_only_{workers}", dtype="float16")
        for f in one.folder.glob("*"):
            f.unlink()
        t0 = time.perf_counter()
        feats = one.features(model, loader, "plain", 256, True)
        ext_rows.append((workers, len(loader) / (time.perf_counter() - t0), tuple(feats.shape),
                         one.path(model, loader).stat().st_size))
        loader.close()
    calls = []
    real = features._feature_chunks

    def counted(m, loader, *a, **k):
        calls.append((loader.name, len(loader)))
        return real(m, loader, *a, **k)

    features._feature_chunks = counted
    t0 = time.perf_counter()
    run_experiment(load_config("configs/cifar10_lt_if100.yaml",
                               [*overrides, f"output_dir={Path(args.work) / 'ext_run1'}"]), log=lambda *a: None)
    first = time.perf_counter() - t0
    passes_first = list(calls)
    calls.clear()
    t0 = time.perf_counter()
    run_experiment(load_config("configs/cifar10_lt_if100.yaml",
                               [*overrides, f"output_dir={Path(args.work) / 'ext_run2'}"]), log=lambda *a: None)
    second = time.perf_counter() - t0
    features._feature_chunks = real
    files = sorted(store.glob("*.npy"))
    size = sum(f.stat().st_size for f in files)
    n_img = sum(n for _, n in passes_first)
    out.append(f"\n### Frozen features to float16 memory maps: timm resnet18 (random init), 64 px, "
               f"{args.extract_images} training images, stage 1 + {len(methods)} classifier-only stage-2 methods "
               f"({', '.join(methods)})\n")
    out.append("| extraction alone: workers | images/s | features | file size |")
    out.append("|---|---|---|---|")
    for workers, ips, shape, size_b in ext_rows:
        out.append(f"| {workers} | {ips:.0f} | {shape[0]} x {shape[1]} float16 | {size_b / 1e6:.2f} MB |")
    out.append("")
    out.append("| run | feature passes (split: images) | wall time (s) |")
    out.append("|---|---|---|")
    out.append(f"| first (extracts) | {', '.join(f'{s}: {n}' for s, n in passes_first)} | {first:.1f} |")
    out.append(f"| second (reads the store) | {len(calls)} | {second:.1f} |")
    out.append(f"\nStored: {len(files)} files, {size / 1e6:.2f} MB on disk for {n_img} images "
               f"({size / max(n_img, 1):.0f} bytes per image: 512 float16 + header).")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", default="../shared/data/cifar10-jpeg.tar.gz")
    p.add_argument("--work", default="/tmp/otreweight_large_images")
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--extract-images", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="stream,rss,extract")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_sections(args, {"stream": _stream_rows, "rss": _rss_rows, "extract": _extract_rows}, tail=6)


if __name__ == "__main__":
    main()
