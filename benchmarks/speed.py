"""Speed benchmarks: stage 2 ours vs the reference-style step, OT overhead, stage-1 throughput, scaling.

    python benchmarks/speed.py --data ../shared/data/cifar10-jpeg.tar.gz --threads 1 \
        [--stage1 runs/.../stage1/model.json] --out benchmarks/results/speed.md

Sections (each can be chosen with --only):
  stage2   one stage-2 epoch (classifier only, batch 16, CIFAR-10-LT IF 100) of ours, with augmentation
           (features of one augmented view recomputed per epoch) and with cached features, against the reference-style step
           of benchmarks/reference_stage2.py (timed on --ref-batches batches and scaled to an epoch),
           with a 100-image and a 1,000-image meta set; plus a check that both take the same OT step.
  overhead one OT weight update for batch 128 against 10 / 100 prototypes and 1,000 meta examples,
           against one ResNet-32 training step on the same batch; the default Sinkhorn form (POT's
           scaling iterations on the CPU) beside log-domain ``ot.solve`` only (``solver="log"``).
  stage1   stage-1 images per second of the library's loop (augmentation included) vs a bare
           channels_last PyTorch loop on the same batches; peak resident memory of the process.
  scale    OT step time and cost-matrix memory vs batch size, number of targets, number of classes
           (default solver and log-domain only).
  loaders  stage-1 images per second of the code before the data seam (--before, a checkout),
           today's in-memory path and today's stream path (JPEG decoded in --workers DataLoader
           workers), alternating, --repeats rounds (benchmarks/loaders.py; not in the default list).
"""
from __future__ import annotations

import argparse
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from reference_stage2 import ReferenceStyleStage2, unrolled_sinkhorn_linear_cost  # noqa: E402

from otreweight import FitConfig, OTReweighter, build_targets, create_method, create_model, fit  # noqa: E402
from otreweight.data import load_dataset, make_long_tailed  # noqa: E402
from otreweight.data.transforms import PadCropFlip, channel_stats, to_tensor_images  # noqa: E402
from otreweight.engine import compute_features  # noqa: E402
from otreweight.experiment import load_model  # noqa: E402


def timed(fn, repeat=5, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def load_lt(source, meta_per_class, seed=0):
    ds = load_dataset(source)
    split = make_long_tailed(ds.y_train, 100, n_meta_per_class=meta_per_class, n_val_per_class=20, seed=seed,
                             n_max=4880)  # the same train counts for both meta sizes
    mean, std = channel_stats(ds.x_train[split.train])
    conv = lambda i: (to_tensor_images(ds.x_train[i], mean, std), torch.as_tensor(ds.y_train[i]))  # noqa: E731
    fill = [-m / s for m, s in zip(mean, std)]
    return conv(split.train), conv(split.val), conv(split.meta), PadCropFlip(4, True, fill), ds.num_classes


def resnet(stage1, k):
    torch.manual_seed(0)
    m = load_model(stage1)[0].train() if stage1 else create_model("resnet32", num_classes=k)
    return m.to(memory_format=torch.channels_last)


def section_stage2(args, out):
    out.append("## Stage 2: ours vs the reference-style step (CIFAR-10-LT IF 100, classifier only, batch 16)\n")
    out.append("| meta images | ours, augmentation (s/epoch) | ours, cached features (s/epoch) | reference-style (s/epoch, from %d batches) | speed-up (aug.) | speed-up (cached) |" % args.ref_batches)
    out.append("|---|---|---|---|---|---|")
    for meta_pc in (10, 100):
        train, val, meta, aug, k = load_lt(args.data, meta_pc)
        n = train[0].shape[0]
        nb = math.ceil(n / 16)
        cfg = FitConfig(epochs=1, batch_size=16, lr=2e-5, nesterov=True, weight_decay=5e-4,
                        trainable="classifier", progress=False)
        times = {}
        for name, augment in (("aug", aug), ("cached", None)):
            m = resnet(args.stage1, k)
            method = create_method("ot")
            res = fit(m, method, train, val, meta, cfg, device="cpu", augment=augment)
            times[name] = res.history[0]["seconds"]
        m = resnet(args.stage1, k)
        scores = OTReweighter(train[1].numpy()).scores.clone()
        ref = ReferenceStyleStage2(m, scores, meta[0], meta[1], k)
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(n, generator=g)
        idxs = [perm[i * 16:(i + 1) * 16] for i in range(args.ref_batches + 1)]
        ref.step(idxs[0], aug(train[0][idxs[0]], g), train[1][idxs[0]])  # warm-up
        t = time.perf_counter()
        for idx in idxs[1:]:
            ref.step(idx, aug(train[0][idx], g), train[1][idx])
        per_batch = (time.perf_counter() - t) / args.ref_batches
        ref_epoch = per_batch * nb
        out.append(f"| {meta[0].shape[0]} | {times['aug']:.1f} | {times['cached']:.1f} | {ref_epoch:.0f} "
                   f"({per_batch:.3f} s/batch x {nb}) | {ref_epoch / times['aug']:.0f}x | {ref_epoch / times['cached']:.0f}x |")
        if meta_pc == 10:
            out_check = step_agreement(args, train, meta, k)
    out.append("")
    out.extend(out_check)


def step_agreement(args, train, meta, k):
    """Same batches, same start: the score update of ours (envelope gradient of the entropic value,
    POT) vs the reference's (autograd through 200 unrolled Sinkhorn iterations of <pi, C>)."""
    m = resnet(args.stage1, k)
    feats = compute_features(m, train[0][:2048], 512, True)
    labels = train[1][:2048]
    mf = compute_features(m, meta[0], 512, True)
    tg = build_targets("prototype", mf, meta[1], k)
    rw = OTReweighter(train[1].numpy())
    g = torch.Generator().manual_seed(1)
    cos, ratio = [], []
    for _ in range(50):
        idx = torch.randperm(2048, generator=g)[:16]
        s0 = rw.scores[idx].clone()
        ours = rw.step(idx, feats[idx], labels[idx], tg) - s0
        rw.scores[idx] = s0
        s = s0.double().clone().requires_grad_(True)
        fc = 1 - F.normalize(feats[idx].double(), dim=1) @ F.normalize(tg.features.double(), dim=1).T
        lc = (labels[idx][:, None] != tg.labels[None]).double() * (2.0 / k)
        val = unrolled_sinkhorn_linear_cost(0.5 * fc + 0.5 * lc, torch.softmax(s, 0), torch.full((k,), 1.0 / k, dtype=torch.float64))
        (grad,) = torch.autograd.grad(val, s)
        refd = (-0.01 * grad).float()
        cos.append(float(F.cosine_similarity(ours[None], refd[None])))
        ratio.append(float(ours.norm() / refd.norm().clamp_min(1e-20)))
    return [
        "Same OT step? On 50 batches of 16 from the same scores and features, the score update of ours "
        "(POT, envelope gradient of the entropic OT value) vs the reference's (autograd through the unrolled "
        f"Sinkhorn of <pi, C>): cosine similarity median {statistics.median(cos):.3f} (min {min(cos):.3f}), "
        f"norm ratio ours/reference median {statistics.median(ratio):.2f}.\n"
    ]


def section_overhead(args, out):
    out.append("## OT overhead: one weight update (batch 128) vs one ResNet-32 training step\n")
    k = 10
    m = create_model("resnet32", num_classes=k).to(memory_format=torch.channels_last)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.arange(128) % k
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_step = timed(train_step, repeat=5)
    feats = compute_features(m, x, 128, True)
    out.append(f"ResNet-32 training step, batch 128: {1000 * t_step:.0f} ms\n")
    out.append("| targets | OT update (ms) | share of the training step | log-domain `ot.solve` only (ms) | share |")
    out.append("|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for label, kk, per in (("10 prototypes", 10, 10), ("100 prototypes", 100, 10), ("1,000 meta examples (whole)", 10, 100)):
        yy = torch.arange(128) % kk
        mf = torch.randn(kk * per, feats.shape[1], generator=g).abs()
        my = torch.arange(kk).repeat_interleave(per)
        tg = build_targets("whole" if "whole" in label else "prototype", mf, my, kk)
        rw = OTReweighter(yy.numpy(), num_classes=kk)
        t = timed(lambda: rw.step(torch.arange(128), feats, yy, tg), repeat=21, warmup=3)
        rw_log = OTReweighter(yy.numpy(), num_classes=kk, solver="log")
        t_log = timed(lambda: rw_log.step(torch.arange(128), feats, yy, tg), repeat=21, warmup=3)
        out.append(f"| {label} | {1000 * t:.2f} | {100 * t / t_step:.2f}% | {1000 * t_log:.2f} | {100 * t_log / t_step:.2f}% |")
    if args.stage1:
        # the same on real data: trained stage-1 features of a CIFAR-10-LT batch and of a
        # 1,000-image meta set (100 per class)
        train, _, meta, _, k = load_lt(args.data, 100)
        m1 = resnet(args.stage1, k)
        idx = torch.randperm(train[0].shape[0], generator=torch.Generator().manual_seed(0))[:128]
        fb, yb = compute_features(m1, train[0][idx], 128, True), train[1][idx]
        mf = compute_features(m1, meta[0], 256, True)
        for label, kind in (("10 prototypes, trained features", "prototype"), ("1,000 meta examples (whole), trained features", "whole")):
            tg = build_targets(kind, mf, meta[1], k)
            rw = OTReweighter(train[1].numpy(), num_classes=k)
            t = timed(lambda: rw.step(idx, fb, yb, tg), repeat=21, warmup=3)
            rw_log = OTReweighter(train[1].numpy(), num_classes=k, solver="log")
            t_log = timed(lambda: rw_log.step(idx, fb, yb, tg), repeat=21, warmup=3)
            out.append(f"| {label} | {1000 * t:.2f} | {100 * t / t_step:.2f}% | {1000 * t_log:.2f} | {100 * t_log / t_step:.2f}% |")
    out.append("")


def section_stage1(args, out):
    out.append("## Stage 1 throughput (CIFAR-10-LT IF 100, ResNet-32, batch 128, one epoch)\n")
    train, val, meta, aug, k = load_lt(args.data, 10)
    n = train[0].shape[0]
    m = resnet(None, k)
    cfg = FitConfig(epochs=1, batch_size=128, lr=0.1, progress=False)
    res = fit(m, create_method("ce"), train, val, None, cfg, device="cpu", augment=aug)
    ours = n / res.history[0]["seconds"]
    m = resnet(None, k)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    perm = torch.randperm(n)
    m.train()
    t = time.perf_counter()
    for i in range(0, n, 128):
        idx = perm[i:i + 128]
        xb = train[0][idx].contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(m(xb), train[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    bare = n / (time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.append("| loop | images/s |")
    out.append("|---|---|")
    out.append(f"| otreweight `fit` (augmentation, validation pass included) | {ours:.0f} |")
    out.append(f"| bare PyTorch channels_last loop (no augmentation) | {bare:.0f} |")
    out.append(f"\nOverhead of the library's loop: {100 * (bare / ours - 1):.1f}%. Peak resident memory of this "
               f"process (CIFAR-10 decoded from cache, long-tailed split, both loops): {rss:.0f} MiB.\n")


def section_scale(args, out):
    out.append("## Scaling of one OT weight update (random 64-d features)\n")
    out.append("| batch | classes | meta / class | targets | cost matrix (KiB, float64) | OT update (ms) | log-domain only (ms) |")
    out.append("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    cases = [(16, 10, 10, "prototype"), (128, 10, 10, "prototype"), (512, 10, 10, "prototype"), (1024, 10, 10, "prototype"),
             (128, 100, 10, "prototype"), (128, 1000, 10, "prototype"), (128, 10, 10, "whole"), (128, 100, 10, "whole"),
             (128, 1000, 10, "whole"), (1024, 1000, 10, "whole")]
    for bs, kk, per, kind in cases:
        f = torch.randn(bs, 64, generator=g).abs()
        yy = torch.arange(bs) % kk
        tg = build_targets(kind, torch.randn(kk * per, 64, generator=g).abs(), torch.arange(kk).repeat_interleave(per), kk)
        rw = OTReweighter(yy.numpy(), num_classes=kk)
        t = timed(lambda: rw.step(torch.arange(bs), f, yy, tg), repeat=7, warmup=2)
        rw_log = OTReweighter(yy.numpy(), num_classes=kk, solver="log")
        t_log = timed(lambda: rw_log.step(torch.arange(bs), f, yy, tg), repeat=3 if bs * len(tg) > 10**6 else 7, warmup=1)
        out.append(f"| {bs} | {kk} | {per} | {len(tg)} ({kind}) | {bs * len(tg) * 8 / 1024:.0f} | {1000 * t:.1f} | {1000 * t_log:.1f} |")
    out.append("")


def section_loaders(args, out):
    sys.path.insert(0, str(Path(__file__).parent))
    import loaders

    lines = loaders.measure(str(Path(args.data).resolve()), args.before, args.threads, args.workers, args.repeats)
    out.extend(lines)


SECTIONS = {"loaders": section_loaders, "overhead": section_overhead, "scale": section_scale, "stage2": section_stage2, "stage1": section_stage1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    ap.add_argument("--stage1", help="a stage-1 model.json to start stage 2 from (default: random ResNet-32)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ref-batches", type=int, default=20)
    ap.add_argument("--only", default="overhead,scale,stage2,stage1")
    ap.add_argument("--before", help="loaders: a checkout of the code before the data seam")
    ap.add_argument("--workers", type=int, default=2, help="loaders: DataLoader workers of the stream path")
    ap.add_argument("--repeats", type=int, default=2, help="loaders: rounds")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    run_sections(args, SECTIONS, tail=40)


def run_sections(args, sections: dict, tail: int) -> None:
    """Run the ``args.only`` sections (each ``fn(args, out)`` appending Markdown lines to ``out``) with
    ``args.threads`` torch threads, printing the last ``tail`` lines and the time after each; the
    whole report, headed by the command and the hardware, goes to stdout and to ``args.out``."""
    torch.set_num_threads(args.threads)
    out = [f"Command: `python {' '.join(sys.argv)}`\n",
           f"Hardware: {platform.machine()} CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}\n"]
    for name in args.only.split(","):
        t = time.perf_counter()
        sections[name](args, out)
        print("\n".join(out[-tail:]), flush=True)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", flush=True)
    text = "\n".join(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
