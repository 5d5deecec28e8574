"""A per-run report: one Markdown page with PNG figures, read from a training run directory.

The training command writes a run directory; :func:`write_report` only reads it::

    run_dir/
      config.yaml          resolved configuration (any YAML mapping)
      split.json           class names and per-class train/meta/val/test counts, shot thresholds
      <stage>/             one folder per stage that ran (any subfolder holding final.json)
        metrics.jsonl      one JSON object per epoch (train loss, learning rate, validation metrics)
        final.json         test metrics at the validation-selected epoch ("best") and the last one
        predictions.npz    y_true, pred_best, pred_last on the test split (optional)
        weights.npz        OT stages only: labels, scores, initial, class_balanced (optional)

and writes ``run_dir/report.md`` with its figures in ``run_dir/figures/``:

* per stage, training examples per class (log scale) above the test accuracy per class at the
  validation-selected epoch;
* per OT stage, the learned example scores summarised per class against their starting values
  and the class-balanced weights, and the per-example relative change of the scores;
* per stage, the row-normalised test confusion matrix at the validation-selected epoch;
* the learning curves (training loss, validation balanced accuracy) of every stage.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, so writing a
report never changes the matplotlib backend of the calling program. Optional files that are
missing or unreadable skip their figure, and the report says so in its notes.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ._errors import OTReweightError
from .summary import METRICS

__all__ = ["write_report"]

FIG_DPI = 120
MAX_NAMED_CLASSES = 20  # above this, axes show class ranks instead of class names
MAX_ANNOTATED_CELLS = 20  # above this many classes, confusion matrices carry no numbers
MAX_SPLIT_ROWS = 20  # above this many classes, the split table is summarised
# Above this many classes (ImageNet-LT, iNaturalist): per-class figures show bins of classes in
# display order, the confusion matrix is one of shot groups, and per-class tables go to CSV files.
MAX_CLASS_BARS = 200
N_CLASS_BINS = 100  # bins of the per-class figures above MAX_CLASS_BARS
N_EXTREME_ROWS = 5  # per end, the classes a many-class report lists in the markdown
GROUP_COLORS = {"many": "#4C72B0", "medium": "#DD8452", "few": "#C44E52", None: "#8C8C8C"}


# --------------------------------------------------------------------------------------------
# reading the run directory
# --------------------------------------------------------------------------------------------
@dataclass
class _Stage:
    """Everything read from one stage folder."""

    name: str
    path: Path
    final: dict
    epochs: list = field(default_factory=list)
    predictions: dict | None = None
    weights: dict | None = None


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise OTReweightError(
            f"{path} is not valid JSON ({err.msg}, line {err.lineno}); rerun the stage or restore the file"
        ) from None
    if not isinstance(data, dict):
        raise OTReweightError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _read_jsonl(path: Path, notes: list[str]) -> list[dict]:
    """Epoch records in epoch order; unreadable lines (e.g. a truncated last line) are skipped."""
    rows, bad = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict) and "epoch" in row:
                rows.append(row)
            else:
                bad += 1
    if bad:
        notes.append(f"`{path.parent.name}/{path.name}`: {bad} unreadable line(s) skipped.")
    rows.sort(key=lambda r: r["epoch"])
    return rows


def _read_npz(path: Path, keys: tuple[str, ...], notes: list[str]) -> dict | None:
    """The arrays ``keys`` of an ``.npz`` file, or None (with a note) if it is absent or incomplete."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                notes.append(f"`{path.parent.name}/{path.name}` lacks {', '.join(missing)}; its figure is skipped.")
                return None
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, ValueError) as err:
        notes.append(f"`{path.parent.name}/{path.name}` could not be read ({err}); its figure is skipped.")
        return None


def _stage_order(name: str) -> tuple:
    return (name != "stage1", name)


def _find_stages(run_dir: Path, notes: list[str]) -> list[_Stage]:
    dirs = sorted(
        (p for p in run_dir.iterdir() if p.is_dir() and (p / "final.json").is_file()),
        key=lambda p: _stage_order(p.name),
    )
    stages = []
    for d in dirs:
        st = _Stage(name=d.name, path=d, final=_read_json(d / "final.json"))
        if (d / "metrics.jsonl").is_file():
            st.epochs = _read_jsonl(d / "metrics.jsonl", notes)
        st.predictions = _read_npz(d / "predictions.npz", ("y_true", "pred_best"), notes)
        st.weights = _read_npz(d / "weights.npz", ("labels", "scores", "initial"), notes)
        if st.weights is not None:
            cb = _read_npz(d / "weights.npz", ("class_balanced",), [])
            st.weights["class_balanced"] = None if cb is None else cb["class_balanced"]
        stages.append(st)
    return stages


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _pct(v) -> str:
    """A fraction as a percentage with one decimal; ``-`` for None or non-numbers."""
    return f"{100.0 * float(v):.1f}" if _is_num(v) else "-"


def _fmt(v, spec: str = ".3g") -> str:
    return format(float(v), spec) if _is_num(v) else "-"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "stage"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _per_class(metrics: dict | None, k: int) -> np.ndarray:
    """Per-class recall as a float array of length ``k`` (NaN where missing)."""
    out = np.full(k, np.nan)
    vals = (metrics or {}).get("per_class")
    if isinstance(vals, list):
        for i, v in enumerate(vals[:k]):
            if _is_num(v):
                out[i] = float(v)
    return out


def _flatten(cfg, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys and scalar leaves of a nested mapping."""
    items = []
    if isinstance(cfg, dict):
        for key, val in cfg.items():
            items.extend(_flatten(val, f"{prefix}{key}."))
    elif isinstance(cfg, list) and len(cfg) > 8:
        items.append((prefix[:-1], f"[{len(cfg)} values]"))
    else:
        items.append((prefix[:-1], cfg))
    return items


class _Classes:
    """Class names, counts, shot groups and the display order shared by the per-class figures."""

    def __init__(self, split: dict | None, k: int):
        split = split or {}
        names = split.get("classes")
        self.k = k
        self.names = [str(n) for n in names] if isinstance(names, list) and len(names) == k else [str(i) for i in range(k)]
        counts = split.get("train_counts")
        self.train = np.asarray(counts, dtype=float) if isinstance(counts, list) and len(counts) == k else None
        self.many = split.get("many_threshold")
        self.few = split.get("few_threshold")
        self.group = [None] * k
        if self.train is not None and _is_num(self.many) and _is_num(self.few):
            for i, n in enumerate(self.train):
                self.group[i] = "many" if n > self.many else ("few" if n < self.few else "medium")
        # Largest training class first; identity when the classes already come sorted.
        self.order = np.argsort(-self.train, kind="stable") if self.train is not None else np.arange(k)
        self.sorted = bool(np.all(self.order == np.arange(k)))
        self.named = k <= MAX_NAMED_CLASSES
        # many classes: consecutive classes of the display order in N_CLASS_BINS bins
        self.bin_size = math.ceil(k / N_CLASS_BINS) if k > MAX_CLASS_BARS else 1
        self.bins = [self.order[i:i + self.bin_size] for i in range(0, k, self.bin_size)] if self.binned else None

    @property
    def binned(self) -> bool:
        return self.bin_size > 1

    @property
    def positions(self) -> int:
        """Number of x positions of a per-class figure: classes, or bins of classes."""
        return len(self.bins) if self.binned else self.k

    def show(self, values: np.ndarray, how: str = "mean") -> np.ndarray:
        """Per-class ``values`` at the figure's positions: in display order, or reduced per bin
        (``how``: ``"mean"``, ``"min"``, ``"max"``, NaN-aware; an all-NaN bin stays NaN)."""
        values = np.asarray(values, dtype=float)
        if not self.binned:
            return values[self.order]
        out = np.full(len(self.bins), np.nan)
        for i, b in enumerate(self.bins):
            v = values[b]
            v = v[np.isfinite(v)]
            if v.size:
                out[i] = {"mean": np.mean, "min": np.min, "max": np.max}[how](v)
        return out

    @property
    def axis_label(self) -> str:
        if self.binned:
            return (f"class rank by training count (0 = largest), bins of {self.bin_size} classes" if not self.sorted
                    else f"class index, bins of {self.bin_size} classes")
        if self.named:
            return "class" if self.sorted else "class (largest training class first)"
        return "class index" if self.sorted else "class rank by training count (0 = largest)"

    def colors(self) -> list[str]:
        if self.binned:  # the bin's most common shot group
            return [GROUP_COLORS[max(set(g := [self.group[i] for i in b]), key=g.count)] for b in self.bins]
        return [GROUP_COLORS[self.group[i]] for i in self.order]

    def set_ticks(self, ax, axis: str = "x") -> None:
        set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
        if self.binned:  # a tick every 10 bins, labelled with the first class rank of the bin
            at = np.arange(0, len(self.bins), 10)
            set_ticks(at, [str(i * self.bin_size) for i in at])
        elif self.named:
            labels = [self.names[i] if len(self.names[i]) <= 14 else self.names[i][:13] + "…" for i in self.order]
            style = {"rotation": 45, "ha": "right"} if axis == "x" else {}
            set_ticks(np.arange(self.k), labels, fontsize=9, **style)
        else:
            step = 10 if self.k <= 200 else int(math.ceil(self.k / 20 / 10) * 10)
            set_ticks(np.arange(0, self.k, step))

    def group_handles(self):
        from matplotlib.patches import Patch

        labels = {"many": f"many (> {self.many})", "medium": f"medium ({self.few}–{self.many})",
                  "few": f"few (< {self.few})"}
        present = [g for g in ("many", "medium", "few") if g in self.group]
        return [Patch(color=GROUP_COLORS[g], label=labels[g]) for g in present]


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
            if _is_num(thr):
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
    if _is_num(bal):
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
        loss = np.array([float(r["train_loss"]) if _is_num(r.get("train_loss")) else np.nan for r in st.epochs])
        val = np.array([100 * float((r.get("val") or {}).get("balanced_accuracy"))
                        if _is_num((r.get("val") or {}).get("balanced_accuracy")) else np.nan for r in st.epochs])
        marker = "o" if len(ep) <= 30 else None
        ax1.plot(ep, loss, color=color, marker=marker, ms=3, label=st.name)
        ax2.plot(ep, val, color=color, marker=marker, ms=3, label=st.name)
        all_loss.append(loss[np.isfinite(loss)])
        be = st.final.get("best_epoch")
        hit = np.flatnonzero(ep == be) if _is_num(be) else np.array([], dtype=int)
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


# --------------------------------------------------------------------------------------------
# Markdown sections
# --------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _config_section(run_dir: Path, notes: list[str]) -> tuple[list[str], dict]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        notes.append("`config.yaml` is missing; no configuration is shown.")
        return ["## Configuration", "", "_No `config.yaml` in the run directory._", ""], {}
    text = path.read_text(encoding="utf-8")
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as err:
        notes.append(f"`config.yaml` is not valid YAML ({str(err).splitlines()[0]}); shown verbatim.")
        cfg = None
    lines = ["## Configuration", ""]
    if isinstance(cfg, dict):
        scalars = [(k, v) for k, v in _flatten(cfg) if not isinstance(v, (dict, list))]
        if scalars:
            shown = scalars[:30]
            lines += _table(["key", "value"], [[f"`{k}`", v] for k, v in shown], ["---", "---"])
            if len(scalars) > len(shown):
                lines += ["", f"_{len(scalars) - len(shown)} more values in the full configuration below._"]
            lines.append("")
    lines += ["<details><summary>Full resolved configuration (<code>config.yaml</code>)</summary>", "",
              "```yaml", text.rstrip("\n"), "```", "", "</details>", ""]
    return lines, cfg if isinstance(cfg, dict) else {}


def _split_section(split: dict | None, cls: _Classes) -> list[str]:
    lines = ["## Data split", ""]
    if not split:
        return lines + ["_No `split.json` in the run directory._", ""]
    facts = []
    if _is_num(split.get("imbalance_factor")):
        facts.append(f"imbalance factor {split['imbalance_factor']:g}")
    if split.get("profile"):
        facts.append(f"{split['profile']} profile")
    if cls.group[0] is not None:
        facts.append(f"shot groups: many > {cls.many}, medium {cls.few}–{cls.many}, few < {cls.few} "
                     "training examples")
    if facts:
        lines += [f"{cls.k} classes; " + "; ".join(facts) + ".", ""]
    cols = [(s, split.get(f"{s}_counts")) for s in ("train", "meta", "val", "test")]
    cols = [(s, np.asarray(v)) for s, v in cols if isinstance(v, list) and len(v) == cls.k]
    if not cols:
        return lines
    if cls.k <= MAX_SPLIT_ROWS:
        header = ["class", "name"] + [s for s, _ in cols] + (["shot group"] if cls.group[0] else [])
        rows = [[i, cls.names[i]] + [int(v[i]) for _, v in cols] + ([cls.group[i]] if cls.group[0] else [])
                for i in range(cls.k)]
        rows.append(["**total**", ""] + [f"**{int(v.sum())}**" for _, v in cols] + ([""] if cls.group[0] else []))
        lines += _table(header, rows, ["---:", "---"] + ["---:"] * len(cols) + (["---"] if cls.group[0] else []))
    else:
        header = ["split", "total", "min / class", "median / class", "max / class"]
        rows = [[s, int(v.sum()), int(v.min()), f"{np.median(v):g}", int(v.max())] for s, v in cols]
        lines += _table(header, rows)
        if cls.group[0] is not None:
            n = {g: sum(1 for x in cls.group if x == g) for g in ("many", "medium", "few")}
            lines += ["", f"Classes per shot group: many {n['many']}, medium {n['medium']}, few {n['few']}."]
        if cls.train is not None:
            big = ", ".join(f"{cls.names[i]} ({int(cls.train[i])})" for i in cls.order[:3])
            small = ", ".join(f"{cls.names[i]} ({int(cls.train[i])})" for i in cls.order[-3:])
            lines += ["", f"Largest training classes: {big}; smallest: {small}."]
    return lines + [""]


def _results_section(stages: list[_Stage], select: str) -> list[str]:
    header = ["stage", "checkpoint", "epoch", "accuracy", "balanced acc.", "many", "medium", "few", "G-mean",
              "val. balanced acc.", "seconds"]
    rows = []
    for st in stages:
        f = st.final
        best, last = f.get("best") or {}, f.get("last") or {}
        val_best = f.get("val_best") or {}
        last_epoch = st.epochs[-1]["epoch"] if st.epochs else "-"
        val_last = (st.epochs[-1].get("val") or {}) if st.epochs else {}
        secs = f.get("seconds")
        rows.append([st.name, "best (validation)", f.get("best_epoch", "-")] + [_pct(best.get(m)) for m in METRICS]
                    + [_pct(val_best.get("balanced_accuracy")), _fmt(secs, ".1f")])
        rows.append([st.name, "last", last_epoch] + [_pct(last.get(m)) for m in METRICS]
                    + [_pct(val_last.get("balanced_accuracy")), ""])
    return [
        "## Results", "",
        "Test-split metrics in percent. *best*: the epoch selected on the validation split (highest "
        f"validation {select}, `best_epoch`); *last*: the final epoch. The test split never takes part in "
        "the selection. The validation balanced accuracy of each row's epoch is shown for reference; "
        "*seconds* is the stage's total wall time; `-` marks a value that is not available (e.g. an empty "
        "shot group).", "",
        *_table(header, rows, ["---", "---", "---:"] + ["---:"] * 8), "",
    ]


def _weights_table(stats: dict, cls: _Classes, csv_path: Path | None = None) -> list[str]:
    header = ["class", "name", "examples", "start", "class-balanced", "mean", "std", "mean rel. change (%)"]

    def row(c):
        cb = stats["cb"][c] if stats["cb"] is not None else None
        rel = stats["rel"][c]
        return [c, cls.names[c], int(stats["count"][c]), _fmt(stats["start"][c], ".4g"), _fmt(cb, ".4g"),
                _fmt(stats["mean"][c], ".4g"), _fmt(stats["std"][c], ".3g"),
                f"{100 * rel:+.1f}" if _is_num(rel) else "-"]

    intro = ("Per class: training examples, mean starting score, class-balanced (effective-number) weight, "
             "mean and standard deviation of the learned scores, and the mean per-example relative change "
             "(learned − start) / |start|.")
    if cls.k > MAX_CLASS_BARS and csv_path is not None:  # thousands of rows: a CSV, the extremes here
        _write_csv(csv_path, ["class", "name", "examples", "start", "class_balanced", "mean", "std", "min", "max",
                              "mean_rel_change"],
                   [[c, cls.names[c], int(stats["count"][c])]
                    + [float(stats[n][c]) if stats[n] is not None else "" for n in ("start", "cb")]
                    + [float(stats[n][c]) for n in ("mean", "std", "min", "max", "rel")] for c in range(cls.k)])
        rel = stats["rel"]
        ranked = [c for c in np.argsort(-np.nan_to_num(rel, nan=-np.inf), kind="stable") if np.isfinite(rel[c])]
        n = N_EXTREME_ROWS
        shown = ranked[:n] + [c for c in ranked[-n:] if c not in ranked[:n]]
        return [intro + f" All {cls.k} classes are in [`figures/{csv_path.name}`](figures/{csv_path.name}); "
                f"below, the {n} classes whose scores rose most and the {n} whose scores fell most.", "",
                *_table(header, [row(c) for c in shown], ["---:", "---"] + ["---:"] * 6), ""]
    table = _table(header, [row(c) for c in cls.order], ["---:", "---"] + ["---:"] * 6)
    if cls.k > MAX_NAMED_CLASSES:
        return [intro, "", "<details><summary>Per-class weight table "
                f"({cls.k} classes)</summary>", "", *table, "", "</details>", ""]
    return [intro, "", *table, ""]


def _figure_md(rel_path: str, alt: str, caption: str) -> list[str]:
    return [f"![{alt}]({rel_path})", "", f"*{caption}*", ""]


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def write_report(run_dir, title: str | None = None) -> Path:
    """Write ``report.md`` and its PNG figures for a training run directory.

    Parameters
    ----------
    run_dir : str or path-like
        A run directory written by the training command: ``config.yaml``, ``split.json`` and one
        subfolder per stage holding ``final.json`` (and optionally ``metrics.jsonl``,
        ``predictions.npz``, ``weights.npz``). Stages are ordered ``stage1`` first, then
        alphabetically.
    title : str, optional
        Title of the report; ``"Run report: <folder name>"`` by default.

    Returns
    -------
    pathlib.Path
        The path of the written ``run_dir/report.md``. Figures go to ``run_dir/figures/``.

    Raises
    ------
    OTReweightError
        If ``run_dir`` is not a directory, holds no stage (no subfolder with ``final.json``), or a
        required JSON file is unreadable.

    Notes
    -----
    Missing optional files skip their figure: no ``predictions.npz`` means no confusion matrix, no
    ``weights.npz`` no weight figure, no ``metrics.jsonl`` no learning curve for that stage. The
    report lists what was skipped. Per-class axes order the classes by training count (largest
    first); above 20 classes they show class indices instead of names and the confusion matrices
    carry no numbers.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OTReweightError(f"run directory {run_dir} does not exist or is not a directory")
    notes: list[str] = []
    stages = _find_stages(run_dir, notes)
    if not stages:
        raise OTReweightError(
            f"no stage found in {run_dir}: no subfolder holds a final.json; "
            "pass the directory a training run wrote (and check that its first stage finished)"
        )
    split = _read_json(run_dir / "split.json") if (run_dir / "split.json").is_file() else None
    if split is None:
        notes.append("`split.json` is missing; class names, counts and shot groups are not shown.")

    k = len(split["classes"]) if split and isinstance(split.get("classes"), list) else 0
    if not k:
        k = max((len((s.final.get("best") or {}).get("per_class") or []) for s in stages), default=0)
    if not k:
        raise OTReweightError(
            f"cannot tell the number of classes of {run_dir}: split.json has no 'classes' and final.json no 'per_class'"
        )
    cls = _Classes(split, k)

    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for old in (*fig_dir.glob("*.png"), *fig_dir.glob("*.csv")):  # files of an earlier report that may no longer apply
        if old.name == "learning_curves.png" or old.stem.endswith(("_per_class", "_weights", "_confusion")):
            old.unlink()

    config_lines, cfg = _config_section(run_dir, notes)
    select = next((str(v) for key, v in _flatten(cfg) if key.split(".")[-1] == "select_metric"), None)
    select = (select or "balanced_accuracy").replace("_", " ")

    title = title or f"Run report: {run_dir.resolve().name}"
    md = [f"# {title}", "",
          f"Run directory: `{run_dir}`. Stages: {', '.join(f'`{s.name}`' for s in stages)}.", "",
          f"Model selection is on the validation split: each stage keeps the epoch with the highest "
          f"validation {select}; test metrics are reported at that epoch and at the last epoch.", ""]
    md += _results_section(stages, select)
    md += config_lines
    md += _split_section(split, cls)

    order_note = ("classes ordered by training count, largest first" if not cls.sorted
                  else "classes in index order")
    md += ["## Figures", ""]
    for st in stages:
        safe = _safe_name(st.name)
        md += [f"### Stage `{st.name}`", ""]
        p = _figure_per_class(st, cls, fig_dir / f"{safe}_per_class.png")
        md += _figure_md(
            f"figures/{p.name}", f"{st.name} per-class counts and accuracy",
            ("Top: training examples per class (log scale; dashed/dotted lines at the many/few thresholds). "
             if cls.train is not None else "")
            + ("Bottom: t" if cls.train is not None else "T")
            + f"est accuracy per class at the validation-selected epoch {st.final.get('best_epoch', '-')}, "
            "with the balanced accuracy as a dashed line"
            + ("; colours mark shot groups" if cls.group[0] is not None else "") + f"; {order_note}"
            + (f"; {k} classes in bins of {cls.bin_size} (bar: the bin's mean, line: its lowest to highest class; "
               f"colour: its most common shot group)" if cls.binned else "") + ".")
        if cls.binned:
            best = st.final.get("best") or {}
            acc = _per_class(best, k)
            c = _write_csv(fig_dir / f"{safe}_per_class.csv", ["class", "name", "train", "shot_group", "test_accuracy"],
                           [[i, cls.names[i], "" if cls.train is None else int(cls.train[i]), cls.group[i] or "",
                             "" if np.isnan(acc[i]) else float(acc[i])] for i in range(k)])
            md += [f"Per-class test accuracy of all {k} classes: [`figures/{c.name}`](figures/{c.name}).", ""]
        if st.weights is not None:
            try:
                stats = _weight_stats(st.weights, k)
            except OTReweightError as err:
                notes.append(f"`{st.name}/weights.npz`: {err}; its figure is skipped.")
            else:
                p = _figure_weights(st, cls, stats, fig_dir / f"{safe}_weights.png")
                md += _figure_md(
                    f"figures/{p.name}", f"{st.name} learned weights",
                    "Left: learned OT scores of each class's training examples (dot and bar: mean ± std; "
                    "shaded bar: min–max) against the class's mean starting score and its class-balanced "
                    "(effective-number) weight"
                    + (" (open square left of the bar, red diamond right of it)" if cls.named
                       else " (black line, red dashed line)")
                    + ". Right: distribution of the per-example relative change (learned − start) / |start|, "
                    f"one outline per shot group normalised to that group's size; {order_note}.")
                md += _weights_table(stats, cls, fig_dir / f"{safe}_weights.csv")
        if st.predictions is not None:
            yt, yp = st.predictions["y_true"], st.predictions["pred_best"]
            if yt.shape != yp.shape or (yt.size and (min(yt.min(), yp.min()) < 0 or max(yt.max(), yp.max()) >= k)):
                notes.append(f"`{st.name}/predictions.npz` does not match the {k} classes; confusion matrix skipped.")
            else:
                p = _figure_confusion(st, cls, fig_dir / f"{safe}_confusion.png")
                if k > MAX_CLASS_BARS:
                    caption = (f"Test predictions at the validation-selected epoch {st.final.get('best_epoch', '-')} "
                               f"by class group ({k} classes: no {k} x {k} picture). Left: the share of each group's "
                               "test examples predicted as a class of each group (rows sum to 100%; the diagonal "
                               "includes wrong classes of the same group). Right: accuracy per group, the mean "
                               "per-class recall over its classes"
                               + (" (many / medium / few shot groups)." if cls.group[0] is not None
                                  else f" (ten bins of {order_note})."))
                else:
                    caption = (f"Test confusion matrix at the validation-selected epoch {st.final.get('best_epoch', '-')}, "
                               "each row divided by the number of test examples of its true class (rows sum to 100%)"
                               + ("; numbers are percentages" if k <= MAX_ANNOTATED_CELLS else "") + f"; {order_note}.")
                md += _figure_md(f"figures/{p.name}", f"{st.name} confusion matrix", caption)
        else:
            notes.append(f"`{st.name}` has no `predictions.npz`; its confusion matrix is skipped.")

    if any(s.epochs for s in stages):
        _figure_curves(stages, fig_dir / "learning_curves.png")
        md += ["### Learning curves", ""]
        md += _figure_md(
            "figures/learning_curves.png", "learning curves",
            "Training loss (left) and validation balanced accuracy (right) per epoch for every stage; "
            "stars mark the validation-selected epoch. Losses of different stages may be on different "
            "scales (e.g. example-weighted losses).")
    else:
        notes.append("No stage has a `metrics.jsonl`; the learning curves are skipped.")

    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out = run_dir / "report.md"
    out.write_text("\n".join(md).rstrip("\n") + "\n", encoding="utf-8")
    return out
