"""Stage-1 training throughput of ResNet-32 on the CPU in fp32, bf16 autocast and torch.compile, side by side.

    python benchmarks/precision_cpu.py --threads 2 --steps 30 --repeats 2 [--out benchmarks/results/precision_cpu.md]

One training step = forward + backward + SGD (momentum 0.9, Nesterov, weight decay 5e-4) of the
library's ResNet-32 on a batch of 128 random 32x32 images in channels_last, as stage 1 trains
(`amp: bf16` is ``torch.autocast("cpu", torch.bfloat16)``, `compile: true` is ``torch.compile`` of
the backbone's forward with inductor). The variants run in one process, interleaved over
``--repeats`` rounds, after ``--warmup`` steps each (compilation happens there and is timed
separately). Prints images/s per variant and round, the median, and which bf16 instructions the
CPU reports (``/proc/cpuinfo`` flags).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from otreweight.models import create_model

VARIANTS = ("fp32", "bf16", "compile", "compile+bf16")


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f == "avx512f")
                    return ", ".join(wanted) or "none of avx512f / avx512_bf16 / amx"
    except OSError:
        pass
    return "unknown"


def model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def make_step(variant: str, batch: int):
    torch.manual_seed(0)
    model = create_model("resnet32", num_classes=10).to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    features = torch.compile(model.features) if variant.startswith("compile") else model.features
    bf16 = variant.endswith("bf16")
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model.classifier(features(x)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    steps, warm = {}, {}
    for v in variants:
        steps[v] = make_step(v, args.batch)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            steps[v]()
        warm[v] = time.perf_counter() - t0
    rates = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[v]()
            rates[v].append(args.steps * args.batch / (time.perf_counter() - t0))
    lines = [f"CPU: {model_name()} ({cpu_flags()}); torch {torch.__version__}; {args.threads} threads; "
             f"batch {args.batch}; {args.steps} steps x {args.repeats} rounds", "",
             "| variant | images/s (median) | rounds | warm-up incl. compile (s) | vs fp32 |", "|---|---|---|---|---|"]
    base = statistics.median(rates[variants[0]])
    for v in variants:
        med = statistics.median(rates[v])
        lines.append(f"| {v} | {med:.0f} | {', '.join(f'{r:.0f}' for r in rates[v])} | {warm[v]:.1f} | "
                     f"{med / base:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
