"""Point-cloud speed benchmarks (issue 14): throughput of PointNet / DGCNN, the library's loop vs a bare
PyTorch loop, and mesh surface sampling.

    python benchmarks/points.py --mnist ../shared/data/mnist --threads 1 --out benchmarks/results/points_speed.md

Sections (``--only``, comma-separated):
  models   training and evaluation clouds/s of PointNet and DGCNN (k = 20) on MNIST point sets
           (256 points, 2-D), batch 32 for training, 256 for evaluation; peak resident memory.
  loop     the library's stage-1 loop (``fit``: the point_cloud augmentation on the device, the
           validation pass and bookkeeping included) against a bare PyTorch loop (no augmentation,
           no validation) over the same PointNet, the same training clouds and batch size,
           alternating, ``--repeats`` rounds, in this one process: clouds/s and their ratio.
  mesh     meshes/s of the ModelNet source (OFF parsing + trimesh area-weighted sampling of 1,024
           points) on ``--meshes`` generated meshes written as .off (trimesh primitives of
           1,280-2,048 faces; no ModelNet copy here), in this process and in ``--workers`` worker
           processes, then the same load again from the cache.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's otreweight, not an installed one
from otreweight import FitConfig, create_method, create_model, fit  # noqa: E402
from otreweight.config import DataConfig  # noqa: E402
from otreweight.data import load_dataset, make_long_tailed  # noqa: E402
from otreweight.data.modalities import get_modality  # noqa: E402
from otreweight.engine import compute_features  # noqa: E402


def mnist_lt(args):
    ds = load_dataset("mnist_points", root=args.mnist, n_points=256)
    split = make_long_tailed(ds.y_train, 100, n_meta_per_class=10, n_val_per_class=20, n_max=args.n_max, seed=0)
    mod = get_modality("points")
    stats = mod.stats(ds.x_train[split.train])
    conv = lambda x, y: (mod.to_tensor(x, stats), torch.as_tensor(y))  # noqa: E731
    aug = mod.augment(DataConfig(augment="point_cloud"), stats)
    return (conv(ds.x_train[split.train], ds.y_train[split.train]), conv(ds.x_train[split.val], ds.y_train[split.val]),
            conv(ds.x_test[: args.n_eval], ds.y_test[: args.n_eval]), aug)


def bare_epoch(model, x, y, batch, gen):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    perm = torch.randperm(len(y), generator=gen)
    t = time.perf_counter()
    for i in range(0, len(y) - 1, batch):
        idx = perm[i:i + batch]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(y) / (time.perf_counter() - t)


def ours_epoch(model, train, val, aug, batch):
    cfg = FitConfig(epochs=1, batch_size=batch, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine",
                    progress=False)
    res = fit(model, create_method("ce"), train, val, None, cfg, device="cpu", augment=aug)
    return len(train[1]) / res.history[0]["seconds"]


def section_models(args, out):
    train, val, test, aug = mnist_lt(args)
    out.append("## PointNet and DGCNN throughput (MNIST point sets, 256 points, 2-D)\n")
    out.append("| model | train clouds/s (batch 32, augmentation, validation pass) | eval clouds/s | peak memory (MiB) |")
    out.append("|---|---|---|---|")
    for name, n_train, n_eval, bs in (("pointnet", len(train[1]), len(test[1]), 256),
                                      ("dgcnn", args.dgcnn_train, args.dgcnn_eval, 32)):
        torch.manual_seed(0)
        m = create_model(name, num_classes=10, in_dims=2)
        sub = (train[0][:n_train], train[1][:n_train])
        tr = ours_epoch(m, sub, (val[0][:64], val[1][:64]), aug, 32)
        m.eval()
        xe = test[0][:n_eval]
        compute_features(m, xe[:8], 8, False)  # warm-up
        t = time.perf_counter()
        compute_features(m, xe, bs, False)
        ev = n_eval / (time.perf_counter() - t)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.append(f"| {name} | {tr:.1f} ({n_train} clouds) | {ev:.1f} ({n_eval} clouds, batch {bs}) | {rss:.0f} |")
    out.append("\nPeak memory: the peak resident memory of this process after that model's runs (MNIST point sets "
               "loaded from the cache; monotonic, so DGCNN's row includes PointNet's).\n")


def section_loop(args, out):
    train, val, _, aug = mnist_lt(args)
    n = len(train[1])
    out.append(f"## The library's loop vs a bare PyTorch loop (PointNet, {n} MNIST-LT clouds, batch 32)\n")
    ours, bare = [], []
    warm = (train[0][:64], train[1][:64])
    ours_epoch(create_model("pointnet", num_classes=10, in_dims=2), warm, (val[0][:32], val[1][:32]), aug, 32)
    bare_epoch(create_model("pointnet", num_classes=10, in_dims=2), *warm, 32, torch.Generator().manual_seed(0))
    for r in range(args.repeats):
        torch.manual_seed(r)
        ours.append(ours_epoch(create_model("pointnet", num_classes=10, in_dims=2), train, val, aug, 32))
        torch.manual_seed(r)
        bare.append(bare_epoch(create_model("pointnet", num_classes=10, in_dims=2), *train, 32,
                               torch.Generator().manual_seed(r)))
    o, b = statistics.median(ours), statistics.median(bare)
    out.append("| loop | clouds/s (median of rounds) | rounds |")
    out.append("|---|---|---|")
    out.append(f"| otreweight `fit` (point_cloud augmentation, validation pass included) | {o:.1f} | "
               f"{', '.join(f'{v:.1f}' for v in ours)} |")
    out.append(f"| bare PyTorch loop (no augmentation, no validation) | {b:.1f} | {', '.join(f'{v:.1f}' for v in bare)} |")
    out.append(f"\nRatio ours / bare: {o / b:.3f} (target >= 0.9).\n")


def section_mesh(args, out):
    import trimesh

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from test_points import write_off

    tmp = Path(tempfile.mkdtemp(prefix="otr-mesh-"))
    try:
        makers = {
            "sphere": lambda: trimesh.creation.icosphere(subdivisions=3),
            "torus": lambda: trimesh.creation.torus(1.0, 0.3, major_sections=40, minor_sections=25),
            "cylinder": lambda: trimesh.creation.cylinder(0.4, 2.0, sections=500),
            "capsule": lambda: trimesh.creation.capsule(1.0, 0.4, count=(32, 32)),
        }
        faces = {}
        for k, (name, make) in enumerate(makers.items()):
            for split, count in (("train", args.meshes // len(makers)), ("test", 2)):
                d = tmp / "mn" / name / split
                d.mkdir(parents=True)
                for i in range(count):
                    mesh = make()
                    faces[name] = len(mesh.faces)
                    write_off(d / f"{i}.off", mesh, run_on=i % 2 == 1)
        n = sum(1 for _ in (tmp / "mn").rglob("*.off"))
        rows = []
        for label, workers, cache in (("first, in this process (parse + sample, then cache)", 0, "c0"),
                                      (f"first, {args.workers} worker processes", args.workers, "c1"),
                                      ("again (from the cache)", 0, "c0")):
            t = time.perf_counter()
            load_dataset("modelnet", root=tmp / "mn", cache_dir=tmp / cache, n_points=1024, workers=workers)
            rows.append((label, time.perf_counter() - t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out.append(f"## Mesh surface sampling ({n} generated .off meshes, 1,024 points each)\n")
    out.append(f"Faces per mesh: {', '.join(f'{k} {v}' for k, v in faces.items())}.\n")
    out.append("| load | seconds | meshes/s |")
    out.append("|---|---|---|")
    for label, sec in rows:
        out.append(f"| {label} | {sec:.3f} | {n / sec:.0f} |")
    out.append("")


SECTIONS = {"models": section_models, "loop": section_loop, "mesh": section_mesh}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="../shared/data/mnist")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-max", type=int, default=600, help="largest class of the MNIST-LT training set")
    ap.add_argument("--n-eval", type=int, default=2000, help="test clouds for PointNet's evaluation speed")
    ap.add_argument("--dgcnn-train", type=int, default=96)
    ap.add_argument("--dgcnn-eval", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--meshes", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="mesh: worker processes of the parallel load")
    ap.add_argument("--only", default="models,loop,mesh")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from speed import run_sections  # benchmarks/speed.py: the same section runner

    run_sections(args, SECTIONS, tail=12)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
