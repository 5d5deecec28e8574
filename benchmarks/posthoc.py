"""OT at test time (``ot-posthoc``) against post-hoc logit adjustment, paired over seeds (issue 27).

For each data set of :mod:`_lt_sources` (``--data mnist,news,cifar,digits``) one ``compare`` per data set
into ``--out/<data>``: stage 1 (plain CE) per seed, then, on that model and nothing trained,
``logit_adjust_posthoc`` (the reference of the paired differences), ``ot-posthoc`` (Sinkhorn
rebalancing of the test predictions to the uniform marginal, reg 0.1) and ``ot-posthoc-em`` (to the
marginal estimated by EM, Saerens et al.). Resumable (``--resume`` semantics always on).

    OMP_NUM_THREADS=1 python benchmarks/posthoc.py --data mnist,news,cifar,digits --seeds 0,1,2 \\
        --out benchmarks/results/posthoc
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _lt_sources import DATASETS, base_config  # noqa: E402
from otreweight.compare import make_variant, plan_comparison, run_plan  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist,news,cifar,digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/posthoc")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--stage1-epochs", type=int, default=None, help="default: per data set (_lt_sources)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.data.split(","):
        t0 = time.perf_counter()
        out = Path(args.out) / name
        cfg = base_config(name, out / "run", args.threads, args.stage1_epochs)
        plan = plan_comparison(cfg, ["ce", "logit_adjust_posthoc", "ot-posthoc"])
        plan.append(make_variant("ot-posthoc-em", "ot-posthoc", {"marginal": "estimate"}, recipe={"epochs": 0}))
        ds = DATASETS[name]()
        res = run_plan(cfg, plan, seeds, out, resume=(out / "compare.json").exists(), log=print, dataset=ds,
                       reference="logit_adjust_posthoc")
        print(res["files"]["md"].read_text())
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
