"""The report's Markdown page: its sections and :func:`write_report`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .._errors import OTReweightError, is_number
from ..summary import METRICS
from .figures import (_figure_confusion, _figure_curves, _figure_per_class, _figure_weights, _weight_stats,
                      _write_csv)
from .read import (MAX_ANNOTATED_CELLS, MAX_CLASS_BARS, MAX_NAMED_CLASSES, MAX_SPLIT_ROWS, N_EXTREME_ROWS, _Classes,
                   _find_stages, _flatten, _fmt, _md_cell, _pct, _per_class, _read_json, _safe_name, _Stage)

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
    if is_number(split.get("imbalance_factor")):
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
                f"{100 * rel:+.1f}" if is_number(rel) else "-"]

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
def _stage_figures(st: _Stage, cls: _Classes, k: int, fig_dir: Path, order_note: str, notes: list[str]) -> list[str]:
    """The Markdown of one stage's figures (per class, OT weights, confusion), written into ``fig_dir``."""
    safe = _safe_name(st.name)
    md = [f"### Stage `{st.name}`", ""]
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
    return md


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
        md += _stage_figures(st, cls, k, fig_dir, order_note, notes)

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
