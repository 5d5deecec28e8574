"""One OT update at many classes (ImageNet-LT: 1,000, iNaturalist 2018: 8,142), against a ResNet-50 step.

    python benchmarks/ot_many_classes.py --threads 2 [--quick] [--out benchmarks/results/ot_many_classes.md]

Prints markdown tables:

* per-batch OT update (``OTReweighter.step``, the reference objective, batch 256, 2,048-d features as
  ResNet-50's pooled ones, random) against K prototypes (K = 10, 100, 1,000, 8,142) and against
  ``whole`` targets (10 per class) where they fit, in ms (median of ``--repeat``), beside the path
  the library took before (the cost of float64 copies of the batch and of every target,
  normalised per batch: ``cost_matrix`` in float64, then the same solve), and the peak resident
  memory each case adds (its own subprocess);
* the dataset-level solves (``scope="dataset"``, ``refresh``) at ImageNet-LT and iNaturalist sizes:
  ``class_conditional`` (class blocks) with prototypes and whole targets; ``kl_regularized``
  (refused above ``MAX_COST_ENTRIES``: its message);
* a ResNet-50 training step (torchvision ``resnet50(weights=None)``, forward + backward + SGD step,
  224 px) at batch ``--resnet-batch`` (16), scaled linearly to 256, and each update's share of it.

Every case runs in a fresh subprocess (``--case``) so that its peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

D = 2048
BATCH = 256
IMAGENET_LT = (115_846, 1000, 256)  # training examples, classes, largest / smallest class (1,280 / 5)
INATURALIST = (437_513, 8142, 500)  # (1,000 / 2)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the peak resident memory to the current one (Linux: clear_refs 5); the current RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _peak_added(base: float) -> float:
    return _status_mb("VmHWM") - base


def _timed(fn, repeat):
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def _long_tail(n, k, imbalance, gen):
    """About ``n`` labels of ``k`` classes, exponentially long-tailed with the given largest / smallest ratio."""
    import torch

    shape = imbalance ** (-torch.arange(k, dtype=torch.float64) / max(k - 1, 1))
    counts = (shape * n / shape.sum()).round().long().clamp(min=1)
    labels = torch.arange(k).repeat_interleave(counts)
    return labels[torch.randperm(labels.numel(), generator=gen)]


def case_step(k, per_class, repeat, old):
    """One per-batch update against prototypes (per_class = 0) or whole targets."""
    import torch

    from otreweight import OTReweighter, build_targets
    from otreweight.cost import cost_matrix
    from otreweight.transport import entropic_ot

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, k, (max(20 * k, 4 * BATCH),), generator=gen)
    meta_y = torch.arange(k).repeat_interleave(10)
    meta = torch.randn(meta_y.numel(), D, generator=gen).abs_()  # post-ReLU pooled features are >= 0
    targets = build_targets("whole" if per_class else "prototype", meta, meta_y, k)
    del meta
    rw = OTReweighter(labels, k)
    idx = torch.randperm(labels.numel(), generator=gen)[:BATCH]
    f = torch.randn(BATCH, D, generator=gen).abs_()
    base = _reset_peak()
    out = {"ms": _timed(lambda: rw.step(idx, f, labels[idx], targets), repeat), "targets": len(targets)}
    out["peak_mb"] = _peak_added(base)
    if old:  # the former path: float64 copies of batch and targets, normalised per batch, then the same solve
        def before():
            cost = cost_matrix("combined", f.to(torch.float64), labels[idx], targets.features.to(torch.float64),
                               targets.labels, k)
            s = rw.scores[idx].double().requires_grad_(True)
            torch.autograd.grad(entropic_ot(cost, torch.softmax(s, 0), eps=0.1).value, s)
        out["old_ms"] = _timed(before, repeat)
    return out


def case_dataset(n, k, imbalance, kind, objective, repeat):
    import torch

    from otreweight import OTReweighter, build_targets
    from otreweight._errors import OTReweightError

    gen = torch.Generator().manual_seed(0)
    labels = _long_tail(n, k, imbalance, gen)
    try:
        rw = OTReweighter(labels, k, objective=objective, scope="dataset", lam=0.3)
    except OTReweightError as err:
        return {"refused": str(err), "n": labels.numel()}
    feats = torch.randn(labels.numel(), D, generator=gen).abs_()
    meta_y = torch.arange(k).repeat_interleave(10)
    targets = build_targets(kind, torch.randn(meta_y.numel(), D, generator=gen).abs_(), meta_y, k)
    base = _reset_peak()
    ms = _timed(lambda: rw.refresh(feats, targets), repeat)
    return {"ms": ms, "n": labels.numel(), "targets": len(targets), "peak_mb": _peak_added(base)}


def case_blocks(n, k, imbalance, max_entries):
    """The class_conditional dataset solve with whole targets at one MAX_BLOCK_ENTRIES."""
    import torch

    from otreweight import OTReweighter, build_targets
    from otreweight import transport

    transport.MAX_BLOCK_ENTRIES = max_entries
    gen = torch.Generator().manual_seed(0)
    labels = _long_tail(n, k, imbalance, gen)
    feats = torch.randn(labels.numel(), D, generator=gen).abs_()
    meta_y = torch.arange(k).repeat_interleave(10)
    targets = build_targets("whole", torch.randn(meta_y.numel(), D, generator=gen).abs_(), meta_y, k)
    rw = OTReweighter(labels, k, objective="class_conditional", scope="dataset", lam=0.3)
    return {"ms": _timed(lambda: rw.refresh(feats, targets), 1)}


def case_resnet(batch, repeat):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(batch, 3, 224, 224).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {"ms": _timed(step, repeat), "batch": batch}


def _run_case(args, case: dict) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--case", json.dumps(case)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--resnet-batch", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="fewer repeats, no dataset-level iNaturalist rows")
    p.add_argument("--out", help="also write the tables to this file")
    p.add_argument("--block-sweep", action="store_true",
                   help="only: class_conditional whole-target solve at ImageNet-LT size per MAX_BLOCK_ENTRIES")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        c = json.loads(args.case)
        fn = {"step": case_step, "dataset": case_dataset, "resnet": case_resnet, "blocks": case_blocks}[c.pop("kind_")]
        print(json.dumps(fn(**c)))
        return
    rep = 2 if args.quick else args.repeat
    load = os.getloadavg()
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
             f"{args.threads} threads; load average at start {load[0]:.2f} (other processes share these CPUs).", ""]
    if args.block_sweep:
        lines += ["| MAX_BLOCK_ENTRIES | s per solve (ImageNet-LT size, class_conditional, whole) |", "|---:|---:|"]
        for e in (2 ** 12, 2 ** 14, 2 ** 16, 2 ** 18, 2 ** 20, 2 ** 22):
            r = _run_case(args, {"kind_": "blocks", "n": IMAGENET_LT[0], "k": IMAGENET_LT[1],
                                 "imbalance": IMAGENET_LT[2], "max_entries": e})
            lines.append(f"| 2**{int(math.log2(e))} | {r['ms'] / 1e3:.2f} |" if "ms" in r else f"| {e} | {r['error']} |")
            print(lines[-1], flush=True)
        print("\n".join(lines))
        return

    rn = _run_case(args, {"kind_": "resnet", "batch": args.resnet_batch, "repeat": 2 if args.quick else 3})
    step256 = rn["ms"] * BATCH / args.resnet_batch if "ms" in rn else None
    if step256:
        lines += [f"ResNet-50 training step (torchvision resnet50(weights=None), forward + backward + SGD, 224 px, "
                  f"channels_last): {rn['ms'] / 1e3:.2f} s at batch {args.resnet_batch}, scaled linearly to batch "
                  f"{BATCH}: **{step256 / 1e3:.1f} s**.", ""]
    else:
        lines += [f"ResNet-50 step not measured: {rn.get('error')}", ""]

    lines += [f"### One OT update per batch of {BATCH} ({D}-d features, reference objective, default solver)", "",
              "| targets | K | targets (m) | ms per update | before this change (ms) | peak memory added (MB) "
              "| share of a ResNet-50 step at 256 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for per_class, ks in ((0, (10, 100, 1000, 8142)), (10, (100, 1000, 8142))):
        for k in ks:
            r = _run_case(args, {"kind_": "step", "k": k, "per_class": per_class, "repeat": rep, "old": True})
            if "error" in r:
                lines.append(f"| {'whole' if per_class else 'prototype'} | {k:,} | | {r['error']} | | | |")
                continue
            share = f"{100 * r['ms'] / step256:.2f} %" if step256 else "-"
            lines.append(f"| {'whole (10 / class)' if per_class else 'prototype'} | {k:,} | {r['targets']:,} | "
                         f"{r['ms']:.1f} | {r['old_ms']:.1f} | {r['peak_mb']:.0f} | {share} |")
            print(lines[-1], flush=True)
    lines += ["", "### Dataset-level solve (`scope='dataset'`, `refresh`, once per epoch; lam 0.3)", "",
              "| data size | objective | targets | examples | targets (m) | s per solve | peak memory added (MB) |",
              "|---|---|---|---:|---:|---:|---:|"]
    sizes = [("ImageNet-LT", IMAGENET_LT)] + ([] if args.quick else [("iNaturalist 2018", INATURALIST)])
    for name, (n, k, imb) in sizes:
        for objective, kind in (("class_conditional", "prototype"), ("class_conditional", "whole"),
                                ("kl_regularized", "prototype")):
            r = _run_case(args, {"kind_": "dataset", "n": n, "k": k, "imbalance": imb, "kind": kind, "objective": objective,
                                 "repeat": 1})
            if "refused" in r:
                cell = f"refused: _{r['refused'].split(';')[0]}_"
                lines.append(f"| {name} | {objective} | {kind} | {r['n']:,} | | {cell} | |")
            elif "error" in r:
                lines.append(f"| {name} | {objective} | {kind} | {n:,} | | {r['error']} | |")
            else:
                lines.append(f"| {name} | {objective} | {kind} | {r['n']:,} | {r['targets']:,} | {r['ms'] / 1e3:.2f} "
                             f"| {r['peak_mb']:.0f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
