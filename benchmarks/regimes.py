"""Where could per-example weights help? OT re-weighting against the baselines in four regimes (issue 27).

Data (:mod:`_lt_sources`): MNIST-LT (shared IDX files, ``small_cnn`` width 16, ``n_max`` 2,000, 8
stage-1 epochs here) and 20 Newsgroups-LT (shared TSV, ``text_bag``, 60 stage-1 epochs), exponential
profile IF 100. Regimes, each on the same long-tailed split per
seed (drawn from the clean labels, so meta, validation and test are the same clean examples in
every regime):

* ``clean``: as drawn;
* ``noise``: 20 % of the training examples (uniformly over the training set) get a uniformly drawn
  other label;
* ``corrupt``: half of every class's training examples corrupted - images: Gaussian blur (sigma 1)
  then pixel noise (std 64 grey levels), clipped; text: every word dropped with probability 0.6,
  the remaining words shuffled;
* ``prior``: a deployment prior that is not uniform: the test set resampled (without
  replacement) to the training classes' order with imbalance factor 10 (the largest class keeps
  all its test examples); scored by plain accuracy on it (= the prior-weighted accuracy).

Per regime one ``compare --mode decoupled --meta-in-train`` (stage 1 = plain CE on the regime's
training data + the clean meta set; every method re-trains the classifier of that frozen backbone,
``_lt_sources.STAGE2`` recipe; the methods that do not use the meta set train on train + meta, OT
sees it through its meta-CE term and targets): ce, cb,
crt, logit_adjust_posthoc, ot (the authors' update), ot-envelope (the envelope step), ot-cc, ot-cc-cb and
ot-cc-cb with whole meta
targets (``ot-cc-cb-whole``); the ``prior`` regime adds ``ot-posthoc-em`` (test predictions
rebalanced by Sinkhorn to the EM-estimated test prior). Paired differences against ``cb`` over the
seeds. For the OT runs of ``noise`` / ``corrupt``: the mean learned weight (``weights.npz``
scores) of the corrupted or mislabelled training examples against the clean ones, per class
(by training label) then averaged over classes.

Every finished stage is written (``final.json``), so an interrupted run continues where it
stopped when started again with the same arguments; ``regimes.md`` / ``regimes.json`` in ``--out``
summarise what is finished.

    OMP_NUM_THREADS=1 python benchmarks/regimes.py --out benchmarks/results/regimes --threads 1
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import otreweight.run.prepare as experiment  # noqa: E402
from _lt_sources import DATASETS, STAGE2, base_config  # noqa: E402
from otreweight.compare import make_variant, paired_differences, plan_comparison, run_plan  # noqa: E402
from otreweight.config import as_run_config  # noqa: E402
from otreweight.data.longtail import long_tail_counts  # noqa: E402
from otreweight.summary import mean_std  # noqa: E402

REGIMES = ("clean", "noise", "corrupt", "prior")
METHODS = ("ce", "cb", "crt", "logit_adjust_posthoc", "ot", "ot-envelope", "ot-cc", "ot-cc-cb")
OT_ROWS = ("ot", "ot-envelope", "ot-cc", "ot-cc-cb", "ot-cc-cb-whole")
NOISE_RATE, CORRUPT_FRACTION, DROP_P, PRIOR_IF = 0.2, 0.5, 0.6, 10.0


def the_split(cfg, labels, num_classes: int):
    """The long-tailed split the run will draw (experiment.Prepared's call, on the clean labels)."""
    d = cfg.data
    order, n_max = experiment.class_order(d, labels, num_classes)
    return experiment.make_long_tailed(labels, d.imbalance_factor, profile=d.profile,
                                       n_meta_per_class=d.n_meta_per_class, n_val_per_class=d.n_val_per_class,
                                       n_max=n_max, num_classes=num_classes, seed=cfg.seed, class_order=order,
                                       allow_cut=d.allow_cut)


def corrupt_images(x: np.ndarray, rng) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(x.astype(np.float32), sigma=(0, 1.0, 1.0, 0))
    out += rng.normal(0.0, 64.0, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt_text(docs, rng) -> np.ndarray:
    out = []
    for doc in docs:
        words = [w for w in str(doc).split() if rng.random() >= DROP_P] or str(doc).split()[:1]
        rng.shuffle(words)
        out.append(" ".join(words))
    return np.asarray(out, dtype=object)


def regime_data(ds, split, regime: str, seed: int):
    """``(dataset, flags)``: the regime's copy of ``ds`` and a boolean per training example (in
    ``split.train`` order) marking the corrupted / mislabelled ones."""
    rng = np.random.default_rng(10_000 + seed)
    ds = copy.copy(ds)
    train = np.asarray(split.train)
    flags = np.zeros(len(train), dtype=bool)
    k = ds.num_classes
    if regime == "noise":
        y = ds.y_train.copy()
        pick = rng.choice(len(train), int(round(NOISE_RATE * len(train))), replace=False)
        for i in pick:
            old = y[train[i]]
            y[train[i]] = rng.choice([c for c in range(k) if c != old])
        flags[pick] = True
        ds.y_train = y
    elif regime == "corrupt":
        ytr = ds.y_train[train]
        for c in range(k):
            members = np.flatnonzero(ytr == c)
            flags[rng.choice(members, int(len(members) * CORRUPT_FRACTION), replace=False)] = True
        x = ds.x_train.copy()
        rows = train[flags]
        x[rows] = corrupt_images(x[rows], rng) if x.ndim == 4 else corrupt_text(x[rows], rng)
        ds.x_train = x
    elif regime == "prior":
        counts = np.asarray(split.train_counts)
        order = np.argsort(-counts, kind="stable")  # the training order of the classes
        avail = np.bincount(ds.y_test, minlength=k)
        want = long_tail_counts(int(avail.min()), k, PRIOR_IF, "exp")  # fits every class
        keep = []
        for rank, c in enumerate(order):
            members = np.flatnonzero(ds.y_test == c)
            keep.append(rng.choice(members, int(want[rank]), replace=False))
        keep = np.sort(np.concatenate(keep))
        ds.x_test, ds.y_test = ds.x_test[keep], ds.y_test[keep]
    return ds, flags


def weight_gap(sdir: Path, labels: np.ndarray, flags: np.ndarray) -> dict | None:
    """Mean learned weight of flagged vs clean training examples (per class, averaged over classes)."""
    path = sdir / "weights.npz"
    if not path.exists() or not flags.any():
        return None
    with np.load(path) as w:
        s = np.asarray(w["scores"], dtype=np.float64)
    if s.shape[0] != flags.shape[0]:
        return None
    ratios, bad, good = [], [], []
    for c in np.unique(labels):
        m = labels == c
        if (m & flags).any() and (m & ~flags).any():
            b, g = s[m & flags].mean(), s[m & ~flags].mean()
            ratios.append(b / g if g > 0 else np.nan)
            bad.append(b)
            good.append(g)
    if not ratios:
        return None
    return {"ratio": float(np.nanmean(ratios)), "flagged": float(np.mean(bad)), "clean": float(np.mean(good))}


def make_plan(cfg, regime: str) -> list[dict]:
    plan = plan_comparison(cfg, list(METHODS), mode="decoupled", meta_in_train=True, method_sets=STAGE2)
    cc = next(v for v in plan if v["name"] == "ot-cc-cb")
    whole = copy.deepcopy(cc)
    whole.update(name="ot-cc-cb-whole", options={**cc["options"], "targets": "whole"})
    plan.append(whole)
    if regime == "prior":
        plan.append(make_variant("ot-posthoc-em", "ot-posthoc", {"marginal": "estimate"}, recipe={"epochs": 0}))
    return plan


def run_cell(name: str, regime: str, seeds, out: Path, threads: int, log, stage1_epochs=None) -> dict:
    """One data set x regime over the seeds; returns its summary (paired differences, weight gaps)."""
    cdir = out / f"{name}_{regime}"
    base = base_config(name, cdir / "run", threads, stage1_epochs)
    plan = make_plan(base, regime)
    ds0 = DATASETS[name]()
    metric = "accuracy" if regime == "prior" else "balanced_accuracy"
    results, gaps = {}, {r: [] for r in OT_ROWS}
    real = experiment.make_long_tailed
    for seed in seeds:
        cfg = as_run_config({**base.to_dict(), "seed": seed})
        split = the_split(cfg, ds0.y_train, ds0.num_classes)
        ds, flags = regime_data(ds0, split, regime, seed)
        clean = ds0.y_train
        # the run draws its split from the clean labels: the same examples as `split`
        experiment.make_long_tailed = lambda labels, *a, **k: real(clean, *a, **k)
        try:
            t0 = time.perf_counter()
            run_plan(base, plan, [seed], cdir, preset="regimes", mode="decoupled", meta_in_train=True,
                     resume=(cdir / "compare.json").exists(), log=lambda m: None, dataset=ds, reference="cb")
            log(f"{name} {regime} seed {seed}: {time.perf_counter() - t0:.0f} s (finished stages skipped)")
        finally:
            experiment.make_long_tailed = real
        results[seed] = json.loads((cdir / f"seed_{seed}" / "results.json").read_text())
        for r in OT_ROWS:
            g = weight_gap(cdir / f"seed_{seed}" / f"stage2_{r}", ds.y_train[np.asarray(split.train)], flags)
            if g is not None:
                gaps[r].append(g)
    from otreweight.compare import _stage_of

    rows = []
    paired = {p["method"]: p for p in paired_differences(plan, results, "cb", "best", metric)}
    for v in plan:
        st = _stage_of(v)
        vals = [100.0 * r[st]["best"][metric] for r in results.values() if st in r]
        m, s = mean_std(vals)
        g = gaps.get(v["name"]) or []
        rows.append({"method": v["name"], "mean": m, "std": s, **{k: paired[v["name"]][k] for k in
                     ("diff_mean", "diff_std", "ci_low", "ci_high", "verdict", "paired_seeds")},
                     "weight_ratio": float(np.mean([x["ratio"] for x in g])) if g else None,
                     "weight_flagged": float(np.mean([x["flagged"] for x in g])) if g else None,
                     "weight_clean": float(np.mean([x["clean"] for x in g])) if g else None})
    return {"data": name, "regime": regime, "metric": metric, "seeds": sorted(results), "rows": rows,
            "split": {"train": int(sum(split.train_counts)), "test": int(len(ds.y_test))}}


def fmt(x, d=1, sign=False):
    return "-" if x is None else (f"{x:+.{d}f}" if sign else f"{x:.{d}f}")


def markdown(cells: list[dict]) -> str:
    lines = ["# Regimes: OT re-weighting against the baselines (issue 27)", ""]
    for c in cells:
        what = "test accuracy on the resampled test set" if c["metric"] == "accuracy" else "test balanced accuracy"
        lines += [f"## {c['data']} / {c['regime']}", "",
                  f"{what} (%), validation-selected epoch, mean ± std over seeds {c['seeds']}; Δ: paired difference "
                  f"to cb (points), 95 % t interval; train {c['split']['train']} examples, test {c['split']['test']}.",
                  ""]
        weights = any(r["weight_ratio"] is not None for r in c["rows"])
        head = "| method | score | Δ vs cb | 95 % interval | verdict |" + (
            " w(flagged) / w(clean) |" if weights else "")
        lines += [head, "|---" * (6 if weights else 5) + "|"]
        for r in c["rows"]:
            diff = "(reference)" if r["verdict"] == "reference" else (
                fmt(r["diff_mean"], 2, True) + ("" if r["diff_std"] is None else f" ± {r['diff_std']:.2f}"))
            ci = "-" if r["ci_low"] is None or r["verdict"] == "reference" else \
                f"[{fmt(r['ci_low'], 2, True)}, {fmt(r['ci_high'], 2, True)}]"
            cells_ = [r["method"], f"{fmt(r['mean'])} ± {fmt(r['std'])}", diff, ci,
                      "-" if r["verdict"] == "reference" else r["verdict"]]
            if weights:
                cells_.append("-" if r["weight_ratio"] is None else
                              f"{r['weight_ratio']:.3f} ({r['weight_flagged']:.3g} / {r['weight_clean']:.3g})")
            lines.append("| " + " | ".join(cells_) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="mnist,news")
    ap.add_argument("--regimes", default=",".join(REGIMES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="benchmarks/results/regimes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist-epochs", type=int, default=8, help="stage-1 epochs on MNIST-LT (the time budget)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = []
    t0 = time.perf_counter()
    for name in args.data.split(","):
        for regime in args.regimes.split(","):
            if regime not in REGIMES:
                raise SystemExit(f"unknown regime {regime!r}; choose among {', '.join(REGIMES)}")
            cells.append(run_cell(name, regime, seeds, out, args.threads, lambda m: print(m, flush=True),
                                  args.mnist_epochs if name == "mnist" else None))
            (out / "regimes.json").write_text(json.dumps(cells, indent=2))
            (out / "regimes.md").write_text(markdown(cells))
            print(f"-- {name} {regime} done, {time.perf_counter() - t0:.0f} s so far", flush=True)
    print(markdown(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
