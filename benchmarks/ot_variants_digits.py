"""Ablation of the OT weight objectives on the digits demo (issue 7): evidence for docs/ot_weights.md.

Same data, stage 1 and stage 2 as ``otreweight demo`` (digits made long-tailed, IF 20; MLP; the
classifier re-trained on the frozen backbone, batch 16, 30 epochs, selection on the balanced
validation split). Per seed, one stage-1 model, then one stage-2 run per row below:

* baselines: ce, cb, cb+meta (cb also trained on the meta set), crt, the reference OT method
  ``ot`` (class-balanced start, one step of lr 0.01 per batch, meta-CE 10, raw weighting),
  ``ot-no-step`` (the same with 0 OT steps: start + meta-CE only), ``ot-no-meta-ce``,
  ``ot-uniform`` (uniform start);
* family ``A`` - the weights alone (meta_ce=0, weighting="normalized": the loss of ``cb``):
  ``kl-cb`` (kl_regularized, class-balanced prior; lam=inf reproduces cb exactly),
  ``kl-uni`` (kl_regularized, uniform prior, label cost 0/1), ``cc`` (class_conditional,
  prototype targets), ``cc-whole`` (class_conditional, every meta example a target), all with
  scope="dataset", over a grid of lam; and ``kl-cb-batch`` / ``cc-batch`` (scope="batch");
* family ``B`` - the reference loss (meta_ce=10, weighting="raw"): ``kl-cb`` (lam=inf reproduces
  ``ot-no-step`` exactly), ``cc``, ``cc-whole``, scope="dataset".

Commands (each well under 3 minutes on one core; results are one JSON per seed)::

    OMP_NUM_THREADS=1 python benchmarks/ot_variants_digits.py run --seeds 0,1,2,3,4 --out runs/ot_variants
    OMP_NUM_THREADS=1 python benchmarks/ot_variants_digits.py run --seeds 5,6,7,8,9 --out runs/ot_variants
    python benchmarks/ot_variants_digits.py report --out runs/ot_variants --figures docs/figures
"""
from __future__ import annotations

import argparse
import json
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import torch

from otreweight.cost import feature_cost
from otreweight.demo import DEMO_METHODS, DemoConfig, digits_dataset, run_seed as run_demo_seed
from otreweight.data import make_long_tailed
from otreweight.experiment import load_model
from otreweight.summary import cell, mean_std
from otreweight.targets import class_means

LAMS = (0.01, 0.03, 0.1, 0.3, 1.0)
INF = float("inf")
OT = DEMO_METHODS["ot"]


def specs() -> dict[str, dict]:
    rows = {name: dict(DEMO_METHODS[name]) for name in ("ce", "cb", "cb+meta", "crt", "ot", "ot-no-meta-ce")}
    rows["ot-no-step"] = {**OT, "steps": 0}
    rows["ot-no-meta-ce-no-step"] = {**OT, "steps": 0, "meta_ce": 0.0}
    rows["ot-uniform"] = {**OT, "init": "uniform"}
    a = {**OT, "meta_ce": 0.0, "weighting": "normalized", "scope": "dataset"}
    b = {**OT, "scope": "dataset"}
    for lam in LAMS + (INF,):
        rows[f"A:kl-cb:{lam}"] = {**a, "objective": "kl_regularized", "lam": lam}
        rows[f"B:kl-cb:{lam}"] = {**b, "objective": "kl_regularized", "lam": lam}
    for lam in LAMS:
        rows[f"A:kl-uni:{lam}"] = {**a, "objective": "kl_regularized", "lam": lam, "init": "uniform", "label_scale": "unit"}
        for fam, base in (("A", a), ("B", b)):
            rows[f"{fam}:cc:{lam}"] = {**base, "objective": "class_conditional", "lam": lam}
            rows[f"{fam}:cc-whole:{lam}"] = {**base, "objective": "class_conditional", "lam": lam, "targets": "whole"}
    for lam in (0.03, 0.1):
        rows[f"A:kl-cb-batch:{lam}"] = {**a, "objective": "kl_regularized", "lam": lam, "scope": "batch"}
        rows[f"A:cc-batch:{lam}"] = {**a, "objective": "class_conditional", "lam": lam, "scope": "batch"}
    return rows


def run_seed(seed: int, out: Path, force: bool = False) -> None:
    """Run every row for one seed; with a JSON already there (and no ``force``), only the rows it
    lacks (stage 1 is deterministic on the CPU, so they share its model)."""
    path = out / f"seed{seed}.json"
    record = None if force or not path.exists() else json.loads(path.read_text())
    todo = {k: v for k, v in specs().items() if record is None or k not in record["rows"]}
    if not todo:
        print(f"seed {seed}: complete in {out}")
        return
    cfg = DemoConfig(seeds=(seed,))
    dataset = digits_dataset()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = run_demo_seed(cfg, seed, todo, tmp, dataset)
        lt = make_long_tailed(dataset.y_train, cfg.imbalance_factor, n_meta_per_class=cfg.n_meta_per_class,
                              n_val_per_class=cfg.n_val_per_class, seed=seed)  # the run's split, drawn again
        split = {"train": lt.train, "meta": lt.meta}
        train_idx = np.asarray(split["train"])
        if record is None:
            record = {"seed": seed, "labels": dataset.y_train[train_idx].tolist(), "rows": {}}
        for name, r in res.items():
            if name == "stage1-ce":
                continue
            record["rows"][name] = {"val": r["val_best"]["balanced_accuracy"], "test": r["best"],
                                    "best_epoch": r["best_epoch"], "seconds": r["seconds"]}
            wfile = Path(tmp) / f"stage2_{name}" / "weights.npz"
            if wfile.exists():
                w = np.load(wfile)
                record["rows"][name]["w"] = np.round(w["scores"].astype(np.float64), 7).tolist()
                record["rows"][name]["w0"] = np.round(w["initial"].astype(np.float64), 7).tolist()
        if "cost_own" not in record:  # the frozen stage-1 backbone: the same features for every row
            model, _ = load_model(Path(tmp) / "stage1" / "model.json", "cpu")
            with torch.no_grad():
                feats = model.features(torch.as_tensor(dataset.x_train[train_idx]))
                meta = np.asarray(split["meta"])
                mf = model.features(torch.as_tensor(dataset.x_train[meta]))
            protos = class_means(mf, torch.as_tensor(dataset.y_train[meta]), 10)
            y = torch.as_tensor(record["labels"])
            record["cost_own"] = np.round(feature_cost(feats, protos)[torch.arange(len(y)), y].numpy(), 6).tolist()
    record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - t0
    path.write_text(json.dumps(record))
    print(f"seed {seed}: {len(res) - 1} stage-2 runs in {time.perf_counter() - t0:.1f} s", flush=True)


# ----------------------------------------------------------------------------------------- report

def movement(w, w0, y) -> dict:
    """How far loss weights moved from their start: per example and per class."""
    w, w0, y = np.asarray(w), np.asarray(w0), np.asarray(y)
    ratio = w / w0
    share, share0 = np.bincount(y, w) / w.sum(), np.bincount(y, w0) / w0.sum()
    spread = [ratio[y == c].std() / ratio[y == c].mean() for c in np.unique(y)]
    return {
        "example_change": float(np.mean(np.abs(ratio - 1))),  # mean |w - w0| / w0
        "class_share_change": float(np.max(np.abs(share - share0))),  # largest change of a class's share
        "within_class_cv": float(np.mean(spread)),  # spread of w / w0 inside a class
        "ess": float(w.sum() ** 2 / (w**2).sum() / w.size),  # effective sample size / N
        "share": share.tolist(),
        "share0": share0.tolist(),
    }


def load(out: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("seed*.json"))]
    if not runs:
        sys.exit(f"no seed*.json under {out}; run the 'run' command first")
    return runs


def summary(runs: list[dict]) -> dict[str, dict]:
    out = {}
    for name in runs[0]["rows"]:
        rows = [r["rows"][name] for r in runs]
        s = {
            "val": [100 * x["val"] for x in rows],
            "test": [100 * x["test"]["balanced_accuracy"] for x in rows],
            "few": [100 * x["test"]["few"] for x in rows],
        }
        if "w" in rows[0]:
            mv = [movement(x["w"], x["w0"], r["labels"]) for x, r in zip(rows, runs)]
            for k in ("example_change", "class_share_change", "within_class_cv", "ess"):
                s[k] = [m[k] for m in mv]
            s["share"] = np.mean([m["share"] for m in mv], 0).tolist()
            s["share0"] = np.mean([m["share0"] for m in mv], 0).tolist()
        out[name] = s
    return out


def pm(v, scale=1.0, digits=1) -> str:
    m, s = mean_std([x * scale for x in v])
    return cell({"v_mean": m, "v_std": s}, "v", digits)


def chosen(summ: dict, family: str) -> str:
    """The finite lam of a variant family with the best mean validation balanced accuracy; a tie
    goes to the larger lam (the weights nearer the prior). lam=inf is the control, not a candidate."""
    names = [n for n in summ if n.rsplit(":", 1)[0] == family and not n.endswith(":inf")]
    return max(names, key=lambda n: (round(float(np.mean(summ[n]["val"])), 6), float(n.rsplit(":", 1)[1])))


def table(summ: dict, names: list[str]) -> str:
    lines = ["| row | val bal.acc | test bal.acc | test few | weights moved (per example) | largest class-share change | within-class CV | ESS / N |",
             "|---|---|---|---|---|---|---|---|"]
    for n in names:
        s = summ[n]
        mv = ["-"] * 4
        if "example_change" in s:
            mv = [pm(s["example_change"], 100) + " %", pm(s["class_share_change"], 100, 2) + " pts",
                  pm(s["within_class_cv"], 1, 3), pm(s["ess"], 1, 2)]
        lines.append(f"| {n} | {pm(s['val'])} | {pm(s['test'])} | {pm(s['few'])} | " + " | ".join(mv) + " |")
    return "\n".join(lines)


def sweep_table(summ: dict) -> str:
    fams = sorted({n.rsplit(":", 1)[0] for n in summ if n.count(":") == 2})
    lines = ["| family | " + " | ".join(f"lam={lam:g}" for lam in LAMS + (INF,)) + " |", "|---|" + "---|" * (len(LAMS) + 1)]
    for f in fams:
        cells = []
        for lam in LAMS + (INF,):
            n = f"{f}:{lam}"
            cells.append(f"{np.mean(summ[n]['val']):.1f} / {np.mean(summ[n]['test']):.1f}" if n in summ else "")
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(runs: list[dict], summ: dict, where: Path, picks: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where.mkdir(parents=True, exist_ok=True)
    counts = np.bincount(runs[0]["labels"])
    order = np.argsort(-counts)
    # 1. class shares of the loss weight (mean over seeds)
    shown = [("start (class-balanced)", summ["ot"]["share0"]), ("ot (reference)", summ["ot"]["share"]),
             ("ot-uniform (reference, uniform start)", summ["ot-uniform"]["share"])]
    shown += [(n, summ[n]["share"]) for n in ("A:kl-uni:0.1", "A:kl-cb:0.01", "A:kl-cb:0.1", "A:cc:0.1")]
    fig, ax = plt.subplots(figsize=(8, 3.3), dpi=90)
    width = 0.8 / len(shown)
    for k, (label, share) in enumerate(shown):
        ax.bar(np.arange(10) + (k - len(shown) / 2 + 0.5) * width, np.asarray(share)[order], width, label=label)
    ax.axhline(0.1, color="k", lw=0.8, ls=":")
    ax.set_xticks(np.arange(10), [f"{c}\n(n={counts[c]})" for c in order], fontsize=7)
    ax.set_ylabel("share of the total loss weight")
    ax.set_title("Per class: where the weight mass goes (digits, IF 20, mean over seeds)", fontsize=9)
    ax.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    fig.savefig(where / "ot_weights_per_class.png")
    plt.close(fig)
    # 2. per example: w / w0 against the example's cosine cost to its own class prototype (seed 0)
    r0 = runs[0]
    y, cost = np.asarray(r0["labels"]), np.asarray(r0["cost_own"])
    names = ["ot", "A:kl-uni:0.1", "A:kl-cb:0.1", "A:cc:0.1"]
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.9), dpi=90)
    for ax, n in zip(axes, names):
        w, w0 = np.asarray(r0["rows"][n]["w"]), np.asarray(r0["rows"][n]["w0"])
        ax.scatter(cost, w / w0, c=y, cmap="tab10", s=6, vmin=0, vmax=9)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set_title(n, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("1 - cos(feature, own class prototype)", fontsize=7)
    axes[0].set_ylabel("learned weight / starting weight")
    fig.suptitle("Per example: learned / starting loss weight (seed 0, colour = class 0..9, lam = 0.1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(where / "ot_weights_per_example.png")
    plt.close(fig)
    # 3. the lam sweep: validation and test balanced accuracy per family, against cb and cb+meta
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), dpi=90, sharey=True)
    for ax, fam, refs in ((axes[0], "A", ("cb", "crt")), (axes[1], "B", ("cb+meta", "ot", "ot-no-step"))):
        for f in ("kl-cb", "kl-uni", "cc", "cc-whole"):
            names = [f"{fam}:{f}:{lam}" for lam in LAMS if f"{fam}:{f}:{lam}" in summ]
            if names:
                ax.errorbar(LAMS[: len(names)], [np.mean(summ[n]["test"]) for n in names],
                            [np.std(summ[n]["test"]) for n in names], label=f, capsize=2, marker="o", ms=3)
        for k, ref in enumerate(refs):
            m = np.mean(summ[ref]["test"])
            ax.axhline(m, color=f"C{k + 5}", ls="--", lw=1, label=f"{ref} ({m:.1f})")
        ax.set_xscale("log")
        ax.set_xlabel("lam")
        ax.set_title("weights alone (meta_ce=0)" if fam == "A" else "with the meta-set CE (meta_ce=10)", fontsize=8)
        ax.legend(fontsize=6.5)
    axes[0].set_ylabel("test balanced accuracy (%)")
    fig.tight_layout()
    fig.savefig(where / "ot_weights_lambda.png")
    plt.close(fig)


def report(out: Path, fig_dir: Path | None) -> None:
    runs = load(out)
    summ = summary(runs)
    print(f"{len(runs)} seeds: {[r['seed'] for r in runs]}\n")
    picks = {f: chosen(summ, f) for f in ("A:kl-cb", "A:kl-uni", "A:cc", "A:cc-whole", "B:kl-cb", "B:cc", "B:cc-whole")}
    main = ["ce", "cb", "crt", "A:kl-cb:inf", picks["A:kl-cb"], picks["A:kl-uni"], picks["A:cc"], picks["A:cc-whole"],
            "A:kl-cb-batch:0.1", "A:cc-batch:0.1",
            "cb+meta", "ot", "ot-no-step", "ot-no-meta-ce", "ot-no-meta-ce-no-step", "ot-uniform", "B:kl-cb:inf", picks["B:kl-cb"],
            picks["B:cc"], picks["B:cc-whole"]]
    print("Rows with lam chosen on mean validation balanced accuracy (mean ± std over seeds):\n")
    print(table(summ, main))
    print("\nSweep: mean val / mean test balanced accuracy per lam\n")
    print(sweep_table(summ))
    # paired differences on the same splits
    print("\nPaired differences (test, then val), mean ± std over seeds:")
    for a, b in ((picks["A:kl-cb"], "cb"), (picks["A:kl-uni"], "cb"), (picks["A:cc"], "cb"), (picks["A:cc"], "crt"), (picks["B:kl-cb"], "cb+meta"),
                 (picks["B:cc"], "cb+meta"), (picks["B:cc"], "ot"), ("ot", "ot-no-step"), ("ot", "cb+meta")):
        dt = np.subtract(summ[a]["test"], summ[b]["test"])
        dv = np.subtract(summ[a]["val"], summ[b]["val"])
        print(f"  {a} - {b}: test {pm(dt)}   val {pm(dv)}")
    if fig_dir is not None:
        figures(runs, summ, fig_dir, picks)
        print(f"\nfigures in {fig_dir}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", default="0,1,2")
    r.add_argument("--out", default="runs/ot_variants")
    r.add_argument("--force", action="store_true", help="recompute every row of seeds that already have a JSON")
    p = sub.add_parser("report")
    p.add_argument("--out", default="runs/ot_variants")
    p.add_argument("--figures", default=None, help="folder for the PNG figures")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    if args.cmd == "run":
        out.mkdir(parents=True, exist_ok=True)
        for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
            run_seed(seed, out, args.force)
    else:
        report(out, Path(args.figures) if args.figures else None)


if __name__ == "__main__":
    main()
