"""Reading a run directory for the report: its stages, their files, the classes and their groups;
the report's limits and number formats."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._errors import OTReweightError, is_number

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
def _pct(v) -> str:
    """A fraction as a percentage with one decimal; ``-`` for None or non-numbers."""
    return f"{100.0 * float(v):.1f}" if is_number(v) else "-"


def _fmt(v, spec: str = ".3g") -> str:
    return format(float(v), spec) if is_number(v) else "-"


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
            if is_number(v):
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
        if self.train is not None and is_number(self.many) and is_number(self.few):
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


