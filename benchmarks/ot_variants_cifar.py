"""Ablation of the OT weight objectives on CIFAR-10-LT (issue 7): evidence for BENCHMARKS.md and
docs/ot_weights.md.

Every row re-trains the linear classifier of the same frozen stage-1 ResNet-32 of its seed (a
``stage1/model.json`` per seed, e.g. from ``benchmarks/cifar_lt.py``) on identical splits, with
features computed once per seed without augmentation, and is selected on the validation split.
Rows (``+meta``: the meta set is added to the training data; OT rows see it through their
meta-CE term or not at all):

* baselines: ``ce`` (stage 1 scored as is), ``cb`` / ``cb+meta``, ``crt`` / ``crt+meta``;
* the reference OT method and its ablations, with the config's recipe (batch 16, lr 2e-5,
  summed loss): ``ot`` (class-balanced start, one OT step per batch, meta-CE 10), ``ot_no_step``
  (steps=0: start + meta-CE), ``ot_no_meta_ce``, ``ot_uniform`` (uniform start);
* family ``A`` - the weights alone, with cb's loss and recipe (meta_ce=0, normalized weights,
  batch 128, lr 0.1), solved once per epoch on the whole training set (scope=dataset):
  ``A_kl_cb_<lam>`` (kl_regularized, class-balanced prior; lam=inf reproduces ``cb`` exactly),
  ``A_kl_uni_<lam>`` (kl_regularized, uniform prior, label cost 0/1: balance from OT alone),
  ``A_cc_<lam>`` (class_conditional), ``A_cc_whole_<lam>`` (class_conditional, every meta example
  a target);
* family ``B`` - the reference loss and recipe (meta_ce=10, raw weights, batch 16):
  ``B_kl_cb_<lam>`` (lam=inf reproduces ``ot_no_step``), ``B_cc_<lam>``.

lam is chosen per family on mean validation balanced accuracy (``report``); the test numbers
are at that lam. Per-example weights of every OT row are read from its ``weights.npz``.

Commands (one seed per process; CPU, one thread)::

    python benchmarks/ot_variants_cifar.py run --seeds 0 --stage1 'benchmarks/results/c10_if100_cpu15/seed{seed}/stage1/model.json' \\
        --data ../shared/data/cifar10-jpeg.tar.gz --out benchmarks/results/ot_variants_c10
    python benchmarks/ot_variants_cifar.py report --out benchmarks/results/ot_variants_c10
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from otreweight.compare import CRT_RECIPE, make_variant, ot_reference, run_plan, RECIPE_KEYS
from otreweight.experiment import load_config, resolve_config_path
from otreweight.summary import cell, mean_std

INF = float("inf")


def build_plan(cfg: dict, epochs: int, lams) -> list[dict]:
    ref = ot_reference(cfg)
    ot_opts = dict(ref["options"] or {})
    ot_recipe = {**{k: ref[k] for k in RECIPE_KEYS}, "epochs": epochs}
    cb_recipe = {**ot_recipe, "batch_size": 128, "lr": 0.1, "nesterov": False}
    crt_recipe = {**CRT_RECIPE, "epochs": epochs}
    plan = [make_variant("ce", "ce", {}, recipe={**ot_recipe, "epochs": 0})]
    for meta in (False, True):
        tag = "+meta" if meta else ""
        plan.append(make_variant(f"cb{tag}", "cb", {}, recipe=cb_recipe, meta_in_train=meta))
        plan.append(make_variant(f"crt{tag}", "crt", {}, recipe=crt_recipe, meta_in_train=meta))
    plan.append(make_variant("ot", "ot", ot_opts, recipe=ot_recipe))
    plan.append(make_variant("ot_no_step", "ot", {**ot_opts, "steps": 0}, recipe=ot_recipe))
    plan.append(make_variant("ot_no_meta_ce", "ot", {**ot_opts, "meta_ce": 0.0}, recipe=ot_recipe))
    plan.append(make_variant("ot_uniform", "ot", {**ot_opts, "init": "uniform"}, recipe=ot_recipe))
    a = {**ot_opts, "meta_ce": 0.0, "weighting": "normalized", "scope": "dataset"}
    b = {**ot_opts, "scope": "dataset"}
    for lam in [*lams, INF]:
        plan.append(make_variant(f"A_kl_cb_{lam:g}", "ot", {**a, "objective": "kl_regularized", "lam": lam}, recipe=cb_recipe))
    for lam in lams:
        plan.append(make_variant(f"A_kl_uni_{lam:g}", "ot", {**a, "objective": "kl_regularized", "lam": lam,
                                                              "init": "uniform", "label_scale": "unit"}, recipe=cb_recipe))
    for lam in lams:
        plan.append(make_variant(f"A_cc_{lam:g}", "ot", {**a, "objective": "class_conditional", "lam": lam}, recipe=cb_recipe))
        plan.append(make_variant(f"A_cc_whole_{lam:g}", "ot", {**a, "objective": "class_conditional", "lam": lam,
                                                                "targets": "whole"}, recipe=cb_recipe))
    for lam in [*lams, INF]:
        plan.append(make_variant(f"B_kl_cb_{lam:g}", "ot", {**b, "objective": "kl_regularized", "lam": lam}, recipe=ot_recipe))
    for lam in lams:
        plan.append(make_variant(f"B_cc_{lam:g}", "ot", {**b, "objective": "class_conditional", "lam": lam}, recipe=ot_recipe))
    return plan


def cmd_run(args) -> None:
    sets = [f"stage1.checkpoint={args.stage1}", "data.augment=none", f"threads={args.threads}", "progress=false",
            *args.overrides]
    if args.data:
        sets.append(f"data.source={args.data}")
    cfg = load_config(resolve_config_path(args.config), sets)
    plan = build_plan(cfg, args.epochs, [float(x) for x in args.lams.split(",")])
    for seed in [int(s) for s in args.seeds.split(",")]:
        # one output folder per seed: seeds may run as separate processes at the same time
        run_plan(cfg, plan, [seed], Path(args.out) / f"seed{seed}", preset="ot_variants_cifar", mode="decoupled",
                 resume=args.resume or (Path(args.out) / f"seed{seed}" / "compare.json").exists())


# ----------------------------------------------------------------------------- report
def _weights_stats(npz: Path) -> dict:
    """How far the learned loss weights moved from their start, per example and per class."""
    d = np.load(npz)
    w, w0, y = d["scores"].astype(np.float64), d["initial"].astype(np.float64), d["labels"]
    k = int(y.max()) + 1
    share = np.bincount(y, weights=w, minlength=k) / w.sum()
    share0 = np.bincount(y, weights=w0, minlength=k) / w0.sum()
    r = w / w0
    cv = [r[y == c].std() / r[y == c].mean() for c in range(k) if (y == c).sum() > 1]
    return {"moved": float(np.mean(np.abs(r - 1))), "share": float(np.max(np.abs(share - share0))),
            "cv": float(np.mean(cv)), "ess": float(w.sum() ** 2 / (w ** 2).sum() / len(w)),
            "share_rare": float(share[-1]), "share_rare0": float(share0[-1])}


def collect(out: Path) -> tuple[list[str], dict]:
    """``{row: {seed: {"val":, "test":, "few":, "weights": {...}}}}`` from every seed folder."""
    rows: dict[str, dict] = {}
    order: list[str] = []
    for sdir in sorted(out.glob("seed*/seed_*")):
        seed = int(sdir.name.split("_")[1])
        plan = json.loads((sdir.parent / "compare.json").read_text())["plan"]
        for v in plan:
            final = sdir / f"stage2_{v['name']}" / "final.json"
            if not final.exists():
                continue
            f = json.loads(final.read_text())
            rec = {"val": 100 * f["val_best"]["balanced_accuracy"] if f.get("val_best") else None,
                   "test": 100 * f["best"]["balanced_accuracy"], "medium": f["best"].get("medium")}
            npz = final.parent / "weights.npz"
            if npz.exists():
                rec["weights"] = _weights_stats(npz)
            if v["name"] not in order:
                order.append(v["name"])
            rows.setdefault(v["name"], {})[seed] = rec
    return order, rows


def _ms(vals) -> str:
    m, s = mean_std(vals)
    return cell({"v_mean": m, "v_std": s}, "v")


def cmd_report(args) -> None:
    out = Path(args.out)
    order, rows = collect(out)
    if not rows:
        sys.exit(f"no finished rows under {out}")
    seeds = sorted({s for r in rows.values() for s in r})
    complete = [n for n in order if sorted(rows[n]) == seeds]
    # lam chosen per family on mean validation balanced accuracy (ties to the larger lam)
    chosen = {}
    for fam in sorted({n.rsplit("_", 1)[0] for n in complete if n[:2] in ("A_", "B_")}):
        cands = [n for n in complete if n.rsplit("_", 1)[0] == fam and n.rsplit("_", 1)[1] != "inf"]
        if cands:
            best = max(cands, key=lambda n: (np.mean([rows[n][s]["val"] for s in seeds]), float(n.rsplit("_", 1)[1])))
            chosen[fam] = best
    lines = [f"Seeds: {', '.join(map(str, seeds))}. Test balanced accuracy at the validation-selected epoch, %, "
             "mean ± std over seeds; rows of families A and B marked * are the lam chosen on validation.\n",
             "| row | val bal.acc | test bal.acc | weights moved | largest class-share change | within-class CV | ESS / N |",
             "|---|---|---|---|---|---|---|"]
    for n in complete:
        r = [rows[n][s] for s in seeds]
        mark = " *" if n in chosen.values() else ""
        wst = [x["weights"] for x in r if "weights" in x]
        wcols = (["-"] * 4 if not wst else
                 [f"{100 * np.mean([x['moved'] for x in wst]):.2f}%", f"{100 * np.mean([x['share'] for x in wst]):.2f} pts",
                  f"{np.mean([x['cv'] for x in wst]):.3f}", f"{np.mean([x['ess'] for x in wst]):.3f}"])
        lines.append(f"| {n}{mark} | {_ms([x['val'] for x in r])} | {_ms([x['test'] for x in r])} | " + " | ".join(wcols) + " |")
    # paired differences on the same splits and stage-1 models: chosen variants against the baselines
    pairs = [(chosen.get(f), base) for f in ("A_kl_cb", "A_kl_uni", "A_cc", "A_cc_whole") for base in ("cb", "crt")]
    pairs += [(chosen.get(f), base) for f in ("B_kl_cb", "B_cc") for base in ("ot", "cb+meta")]
    pairs += [("ot", "ot_no_step"), ("ot", "cb+meta"), ("ot", "cb")]
    lines += ["", "Paired differences (same seed, same stage-1 model), mean ± std over seeds:", "",
              "| comparison | val | test |", "|---|---|---|"]
    for left, right in pairs:
        if left in complete and right in complete:
            dv = [rows[left][s]["val"] - rows[right][s]["val"] for s in seeds]
            dt = [rows[left][s]["test"] - rows[right][s]["test"] for s in seeds]
            lines.append(f"| {left} − {right} | {np.mean(dv):+.1f} ± {np.std(dv):.1f} | {np.mean(dt):+.1f} ± {np.std(dt):.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    print(text)
    if args.figures:
        names = [n for n in args.figure_rows.split(",") if n in complete]
        class_share_figure(out, names, Path(args.figures))
        per_example_figure(out, names, Path(args.figures))


def per_example_figure(out: Path, names: list[str], folder: Path, seed: int = 0) -> None:
    """Per class, the spread of the learned weights relative to each example's start, w / w0
    (one seed): box = quartiles, whiskers = 1st / 99th percentile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        npz = next(iter(sorted(out.glob(f"seed*/seed_{seed}/stage2_{name}/weights.npz"))), None)
        if npz is None:
            continue
        d = np.load(npz)
        r, y = d["scores"].astype(np.float64) / d["initial"].astype(np.float64), d["labels"]
        k = int(y.max()) + 1
        ax.boxplot([r[y == c] for c in range(k)], whis=(1, 99), showfliers=False)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("class (0 = most examples)", fontsize=8)
        ax.set_xticks(range(1, k + 1))
        ax.set_xticklabels(range(k), fontsize=7)
    axes[0][0].set_ylabel("learned / starting weight")
    fig.suptitle(f"CIFAR-10-LT IF 100, seed {seed}: per-example weight relative to its start", fontsize=9)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "ot_weights_cifar_per_example.png", dpi=120)
    plt.close(fig)


def class_share_figure(out: Path, names: list[str], folder: Path) -> None:
    """Bar chart: each class's share of the total loss weight, at the start (class-balanced) and
    after training for the given rows, mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def shares(name, key):
        vals = []
        for npz in sorted(out.glob(f"seed*/seed_*/stage2_{name}/weights.npz")):
            d = np.load(npz)
            w, y = d[key].astype(np.float64), d["labels"]
            vals.append(np.bincount(y, weights=w, minlength=int(y.max()) + 1) / w.sum())
        return np.mean(vals, axis=0)

    counts = None
    for npz in sorted(out.glob(f"seed*/seed_*/stage2_{names[0]}/weights.npz"))[:1]:
        counts = np.bincount(np.load(npz)["labels"])
    series = [("class-balanced start", shares(names[0], "initial"))] + [(n, shares(n, "scores")) for n in names]
    k = len(series[0][1])
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / len(series)
    for i, (label, sh) in enumerate(series):
        ax.bar(np.arange(k) + (i - (len(series) - 1) / 2) * width, 100 * sh, width, label=label)
    ax.axhline(100 / k, color="grey", lw=0.8, ls="--", label="1/K")
    ax.set_xticks(np.arange(k))
    ax.set_xticklabels([f"{c}\n(n={n})" for c, n in enumerate(counts)] if counts is not None else range(k), fontsize=7)
    ax.set_ylabel("share of the loss weight (%)")
    ax.set_xlabel("class (training examples)")
    ax.set_title("CIFAR-10-LT IF 100: class shares of the learned loss weights (mean over seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "ot_weights_cifar_per_class.png", dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--config", default="cifar10_lt_if100")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--stage1", required=True, help="stage-1 model.json per seed, with {seed}")
    r.add_argument("--data")
    r.add_argument("--epochs", type=int, default=10)
    r.add_argument("--lams", default="0.03,0.1,0.3")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--set", action="append", default=[], dest="overrides")
    r.add_argument("--resume", action="store_true")
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--figures", help="folder for the per-class figure (e.g. docs/figures)")
    p.add_argument("--figure-rows", default="ot,A_kl_cb_0.3,A_kl_uni_0.03,A_cc_0.1")
    args = ap.parse_args(argv)
    {"run": cmd_run, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
