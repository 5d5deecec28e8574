"""The report's figures (matplotlib ``Figure`` objects on the Agg canvas: the caller's backend is untouched)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._errors import OTReweightError, is_number
from .read import (FIG_DPI, GROUP_COLORS, MAX_ANNOTATED_CELLS, MAX_CLASS_BARS, _Classes, _per_class,
                   _Stage)


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=FIG_DPI, format="png")
    return path


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _figure_per_class(st: _Stage, cls: _Classes, path: Path) -> Path:
    """Training counts per class (log) above test accuracy per class at the best epoch."""
    k = cls.k
    x = np.arange(cls.positions)
    best = st.final.get("best") or {}
    acc = cls.show(_per_class(best, k)) * 100.0
    colors = cls.colors()
    width = 8.0 if cls.named else 11.0
    fig = _new_figure(width, 6.2)
    if cls.train is not None:
        ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[1.0, 1.3])
        ax1.bar(x, cls.show(cls.train), color=colors, width=0.8)
        if cls.binned:  # the bin's smallest and largest class
            ax1.vlines(x, cls.show(cls.train, "min"), cls.show(cls.train, "max"), color="black", lw=0.8)
        ax1.set_yscale("log")
        ax1.set_ylabel("training examples\n(log scale)")
        for thr, style in ((cls.many, "--"), (cls.few, ":")):
            if is_number(thr):
                ax1.axhline(thr, color="black", lw=0.8, ls=style)
        handles = cls.group_handles()
        if handles:
            ax1.legend(handles=handles, fontsize=8, loc="upper right", title="shot group", title_fontsize=8)
        ax1.set_title("Training examples per class", fontsize=10)
        ax1.grid(axis="y", which="major", alpha=0.3)
    else:
        ax2 = fig.subplots(1, 1)
    ax2.bar(x, np.nan_to_num(acc, nan=0.0), color=colors, width=0.8)
    if cls.binned:
        per = _per_class(best, k) * 100.0
        ax2.vlines(x, cls.show(per, "min"), cls.show(per, "max"), color="black", lw=0.8,
                   label="bin: class mean (bar), lowest–highest class (line)")
    missing = np.flatnonzero(np.isnan(acc))
    if missing.size:
        ax2.plot(missing, np.full(missing.size, 3.0), "kx", ms=6, mew=1.5, clip_on=False,
                 label="no value (no test example)")
    bal = best.get("balanced_accuracy")
    if is_number(bal):
        ax2.axhline(100 * bal, color="black", lw=1, ls="--", label=f"balanced accuracy {100 * bal:.1f}%")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8, loc="upper right", framealpha=0.95)
    ax2.set_ylim(0, 118)  # head room above 100% for the legend
    ax2.set_yticks(np.arange(0, 101, 20))
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_xlim(-0.6, cls.positions - 0.4)
    ax2.set_title(f"Test accuracy per class at the validation-selected epoch ({st.final.get('best_epoch', '-')})",
                  fontsize=10)
    ax2.grid(axis="y", alpha=0.3)
    cls.set_ticks(ax2)
    ax2.set_xlabel(cls.axis_label)
    fig.suptitle(f"{st.name}: " + ("class sizes and " if cls.train is not None else "") + "per-class test accuracy",
                 fontsize=12)
    return _save(fig, path)


def _weight_stats(w: dict, k: int) -> dict[str, np.ndarray]:
    """Per-class count, start mean, score mean/std/min/max and mean relative change."""
    labels = w["labels"].astype(np.int64).ravel()
    scores = w["scores"].astype(float).ravel()
    initial = w["initial"].astype(float).ravel()
    if not (labels.size == scores.size == initial.size):
        raise OTReweightError(
            f"weights.npz arrays differ in length (labels {labels.size}, scores {scores.size}, initial {initial.size})"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise OTReweightError(f"weights.npz labels lie outside 0..{k - 1}")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(initial != 0, (scores - initial) / np.abs(initial), np.nan)
    # one pass over the examples per statistic (no loop over the classes: iNaturalist has 8,142)
    count = np.bincount(labels, minlength=k)
    out = {name: np.full(k, np.nan) for name in ("start", "mean", "std", "min", "max", "rel")}
    out["count"] = count
    has = count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        out["start"][has] = (np.bincount(labels, initial, k) / count)[has]
        mean = np.bincount(labels, scores, k) / count
        out["mean"][has] = mean[has]
        out["std"][has] = np.sqrt(np.bincount(labels, (scores - mean[labels]) ** 2, k) / count)[has]
        fin = np.isfinite(rel)
        n_rel = np.bincount(labels[fin], minlength=k)
        out["rel"][n_rel > 0] = (np.bincount(labels[fin], rel[fin], k) / n_rel)[n_rel > 0]
    if labels.size:
        order = np.argsort(labels, kind="stable")
        starts = np.flatnonzero(has)
        first = np.concatenate([[0], np.cumsum(count)[:-1]])[starts]
        out["min"][starts] = np.minimum.reduceat(scores[order], first)
        out["max"][starts] = np.maximum.reduceat(scores[order], first)
    out["rel_examples"] = rel
    out["labels"] = labels
    cb = w.get("class_balanced")
    out["cb"] = np.asarray(cb, dtype=float).ravel() if cb is not None and np.size(cb) == k else None
    return out


def _figure_weights(st: _Stage, cls: _Classes, stats: dict, path: Path) -> Path:
    """Learned scores per class (mean, std, min-max) vs start and class-balanced; relative change."""
    k = cls.k
    x = np.arange(cls.positions)
    fig = _new_figure(13.0 if not cls.named else 11.0, 5.0)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.7, 1.0])

    # binned (many classes): the bin's lowest min, highest max, mean of the class means and stds
    lo, hi = cls.show(stats["min"], "min"), cls.show(stats["max"], "max")
    mean, std = cls.show(stats["mean"]), cls.show(stats["std"])
    start = cls.show(stats["start"])
    cb = cls.show(stats["cb"]) if stats["cb"] is not None else None
    ax1.vlines(x, lo, hi, color="#4C72B0", alpha=0.35, lw=6 if cls.named else 2.5, label="learned: min–max")
    ax1.errorbar(x, mean, yerr=std, fmt="o", color="#4C72B0", ms=5 if cls.named else 3,
                 capsize=3 if cls.named else 0, lw=1.2, label="learned: mean ± std")
    if cls.named:
        # Start and class-balanced values often coincide with each other and with the learned mean:
        # set them beside the learned bar so that none hides another.
        ax1.plot(x - 0.28, start, "s", mfc="none", mec="black", ms=7, label="starting score (mean)")
        if cb is not None:
            ax1.plot(x + 0.28, cb, "D", color="#C44E52", ms=5, label="class-balanced weight")
    else:
        ax1.plot(x, start, "-", color="black", lw=1.0, label="starting score (mean)")
        if cb is not None:
            ax1.plot(x, cb, "--", color="#C44E52", lw=1.2, label="class-balanced weight")
    vals = np.concatenate([v[np.isfinite(v)] for v in (lo, hi, start, cb if cb is not None else np.array([]))])
    if vals.size and vals.min() > 0 and vals.max() / vals.min() > 20:
        ax1.set_yscale("log")
        ax1.set_ylabel("score (log scale)")
    else:
        ax1.set_ylabel("score")
    ax1.set_xlim(-0.6, cls.positions - 0.4)
    cls.set_ticks(ax1)
    ax1.set_xlabel(cls.axis_label)
    ax1.grid(axis="y", alpha=0.3)
    ax1.legend(fontsize=8, loc="best")
    ax1.set_title("Learned example scores per class", fontsize=10)

    rel = stats["rel_examples"]
    labels = stats["labels"]
    finite = np.isfinite(rel)
    groups = [g for g in ("many", "medium", "few") if g in cls.group]
    if finite.any():
        pct = 100 * rel
        bins = np.histogram_bin_edges(pct[finite], bins=40)
        if groups:
            # One outline per shot group, each normalised to its own size, so that the few-shot
            # classes stay visible next to the far larger many-shot groups.
            group_of_example = np.array([cls.group[c] for c in range(k)], dtype=object)[labels]
            for g in groups:
                vals_g = pct[finite & (group_of_example == g)]
                if vals_g.size:
                    ax2.hist(vals_g, bins=bins, weights=np.full(vals_g.size, 100.0 / vals_g.size),
                             histtype="step", lw=1.8, color=GROUP_COLORS[g], label=f"{g} ({vals_g.size} examples)")
            ax2.legend(fontsize=8, title="shot group", title_fontsize=8)
            ax2.set_ylabel("share of the group's examples (%)")
        else:
            ax2.hist(pct[finite], bins=bins, color=GROUP_COLORS[None])
            ax2.set_ylabel("training examples")
        ax2.axvline(0, color="black", lw=0.8, ls="--")
        skipped = int((~finite).sum())
        if skipped:
            ax2.text(0.02, 0.98, f"{skipped} example(s) with start 0 left out", transform=ax2.transAxes,
                     va="top", fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no example with a non-zero start", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("(learned − start) / |start|  (%)")
    ax2.set_title("Per-example change from the starting score", fontsize=10)
    fig.suptitle(f"{st.name}: example weights learned by optimal transport", fontsize=12)
    return _save(fig, path)


def _figure_confusion(st: _Stage, cls: _Classes, path: Path) -> Path:
    """Row-normalised confusion matrix on test at the best epoch, classes in display order."""
    from matplotlib.colors import Normalize, PowerNorm

    k, order = cls.k, cls.order
    yt = st.predictions["y_true"].astype(np.int64).ravel()
    yp = st.predictions["pred_best"].astype(np.int64).ravel()
    if k > MAX_CLASS_BARS:
        return _figure_confusion_groups(st, cls, yt, yp, path)
    cm = np.zeros((k, k))
    np.add.at(cm, (yt, yp), 1.0)
    support = cm.sum(axis=1, keepdims=True)
    cm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)[np.ix_(order, order)]
    size = 7.0 if k <= MAX_ANNOTATED_CELLS else 8.5
    fig = _new_figure(size + 1.0, size)
    ax = fig.subplots(1, 1)
    if k <= MAX_ANNOTATED_CELLS:
        norm, bar_label = Normalize(0, 100), "share of the true class's test examples (%)"
    else:  # no numbers in the cells: a square-root scale keeps small off-diagonal errors visible
        norm, bar_label = PowerNorm(0.5, 0, 100), "share of the true class's test examples (%, square-root scale)"
    im = ax.imshow(cm * 100, cmap="Blues", norm=norm, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=bar_label)
    if k <= MAX_ANNOTATED_CELLS:
        fs = 9 if k <= 12 else 7
        for i in range(k):
            for j in range(k):
                v = 100 * cm[i, j]
                if v >= 0.5 or i == j:
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=fs,
                            color="white" if v > 55 else "black")
    cls.set_ticks(ax, "x")
    cls.set_ticks(ax, "y")
    ax.set_xlabel(f"predicted {cls.axis_label}")
    ax.set_ylabel(f"true {cls.axis_label}")
    ax.set_title(f"{st.name}: test confusion matrix, epoch {st.final.get('best_epoch', '-')} "
                 "(rows normalised)", fontsize=11)
    return _save(fig, path)


def _class_groups(cls: _Classes) -> tuple[list[str], np.ndarray]:
    """Names of the groups of the grouped confusion matrix and each class's group index: the
    many / medium / few shot groups, or (without training counts and thresholds) ten bins of the
    display order."""
    if cls.group[0] is not None:
        names = [g for g in ("many", "medium", "few") if g in cls.group]
        return names, np.array([names.index(g) for g in cls.group])
    size = math.ceil(cls.k / 10)
    of = np.empty(cls.k, dtype=np.int64)
    of[cls.order] = np.arange(cls.k) // size
    n = int(of.max()) + 1
    word = "index" if cls.sorted else "rank"
    return [f"{word} {i * size}–{min(cls.k, (i + 1) * size) - 1}" for i in range(n)], of


def _group_confusion(cls: _Classes, yt: np.ndarray, yp: np.ndarray):
    """Group names, each class's group, the row-normalised group x group matrix (true group ->
    predicted group) and the accuracy per group (mean per-class recall, NaN without test examples)."""
    names, of = _class_groups(cls)
    g = len(names)
    cm = np.zeros((g, g))
    np.add.at(cm, (of[yt], of[yp]), 1.0)
    support = cm.sum(axis=1, keepdims=True)
    cm = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    tested = np.bincount(yt, minlength=cls.k)
    recall = np.divide(np.bincount(yt, weights=(yt == yp).astype(float), minlength=cls.k), tested,
                       out=np.full(cls.k, np.nan), where=tested > 0)
    acc = np.array([np.nanmean(recall[of == i]) if np.isfinite(recall[of == i]).any() else np.nan
                    for i in range(g)])
    return names, of, cm, acc


def _figure_confusion_groups(st: _Stage, cls: _Classes, yt: np.ndarray, yp: np.ndarray, path: Path) -> Path:
    """Many classes: a group x group row-normalised confusion matrix (group of the true class ->
    group of the predicted class) and the per-group accuracy (mean per-class recall), never K x K."""
    from matplotlib.colors import Normalize

    names, of, cm, acc = _group_confusion(cls, yt, yp)
    g = len(names)
    fig = _new_figure(11.0, 5.0)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[1.25, 1.0])
    im = ax1.imshow(cm * 100, cmap="Blues", norm=Normalize(0, 100), interpolation="nearest")
    fig.colorbar(im, ax=ax1, shrink=0.8, label="share of the group's test examples (%)")
    fs = 10 if g <= 3 else 7
    for i in range(g):
        for j in range(g):
            v = 100 * cm[i, j]
            ax1.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=fs, color="white" if v > 55 else "black")
    counts = [int((of == i).sum()) for i in range(g)]
    ticks = [f"{n}\n({c} cl.)" for n, c in zip(names, counts)]
    ax1.set_xticks(np.arange(g), ticks, fontsize=8)
    ax1.set_yticks(np.arange(g), ticks, fontsize=8)
    ax1.set_xlabel("group of the predicted class")
    ax1.set_ylabel("group of the true class")
    ax1.set_title("Test predictions, group to group (rows sum to 100%)", fontsize=10)
    colors = [GROUP_COLORS.get(n, GROUP_COLORS[None]) for n in names]
    ax2.bar(np.arange(g), np.nan_to_num(np.array(acc) * 100, nan=0.0), color=colors, width=0.7)
    for i, v in enumerate(acc):
        ax2.text(i, (0 if np.isnan(v) else 100 * v) + 1.5, "-" if np.isnan(v) else f"{100 * v:.1f}",
                 ha="center", fontsize=9)
    ax2.set_xticks(np.arange(g), names, fontsize=8, rotation=0 if g <= 3 else 45)
    ax2.set_ylim(0, 110)
    ax2.set_ylabel("test accuracy (%, mean over the group's classes)")
    ax2.set_title("Accuracy per group", fontsize=10)
    ax2.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{st.name}: test confusion by class group, epoch {st.final.get('best_epoch', '-')} "
                 f"({cls.k} classes)", fontsize=11)
    return _save(fig, path)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _figure_curves(stages: list[_Stage], path: Path) -> Path:
    """Training loss and validation balanced accuracy per epoch, one line per stage."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    fig = _new_figure(12.0, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    cmap = colormaps["tab10"]
    all_loss = []
    for i, st in enumerate(s for s in stages if s.epochs):
        color = cmap(i % 10)
        ep = np.array([float(r["epoch"]) for r in st.epochs])
        loss = np.array([float(r["train_loss"]) if is_number(r.get("train_loss")) else np.nan for r in st.epochs])
        val = np.array([100 * float((r.get("val") or {}).get("balanced_accuracy"))
                        if is_number((r.get("val") or {}).get("balanced_accuracy")) else np.nan for r in st.epochs])
        marker = "o" if len(ep) <= 30 else None
        ax1.plot(ep, loss, color=color, marker=marker, ms=3, label=st.name)
        ax2.plot(ep, val, color=color, marker=marker, ms=3, label=st.name)
        all_loss.append(loss[np.isfinite(loss)])
        be = st.final.get("best_epoch")
        hit = np.flatnonzero(ep == be) if is_number(be) else np.array([], dtype=int)
        if hit.size and np.isfinite(val[hit[0]]):
            ax2.plot(ep[hit[0]], val[hit[0]], "*", color=color, ms=14, mec="black", mew=0.6,
                     label=f"{st.name}: selected epoch {be}")
    losses = np.concatenate(all_loss) if all_loss else np.array([])
    if losses.size and losses.min() > 0 and losses.max() / losses.min() > 10:
        ax1.set_yscale("log")
        ax1.set_ylabel("training loss (log scale)")
    else:
        ax1.set_ylabel("training loss")
    ax1.set_title("Training loss per epoch", fontsize=10)
    ax2.set_title("Validation balanced accuracy per epoch", fontsize=10)
    ax2.set_ylabel("validation balanced accuracy (%)")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (counted within each stage)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Learning curves", fontsize=12)
    return _save(fig, path)
