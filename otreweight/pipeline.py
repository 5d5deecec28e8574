"""Two-stage runs over seeds, and their summary tables.

:func:`run_two_stage` trains stage 1 (plain cross-entropy, whole network) once, then, from the
validation-selected stage-1 model, one stage-2 run per method. Every model is scored on the test
set at its validation-selected epoch (``best``) and at its last epoch (``last``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from .engine import FitConfig, evaluate, fit
from .methods import create_method
from .utils import seed_everything

METRIC_COLUMNS = ("accuracy", "balanced_accuracy", "many", "medium", "few", "gmean")


@dataclass
class SplitArrays:
    """The four sets of one long-tailed experiment, as ``(x, y)`` pairs."""

    train: tuple
    val: tuple
    meta: tuple
    test: tuple

    @property
    def train_counts(self) -> np.ndarray:
        y = np.asarray(self.train[1])
        return np.bincount(y, minlength=int(max(y.max(), np.asarray(self.test[1]).max())) + 1)


def run_two_stage(
    model_fn: Callable[[], torch.nn.Module],
    data: SplitArrays,
    stage1: FitConfig,
    stage2: FitConfig,
    methods: dict[str, dict],
    device: str | torch.device = "auto",
    augment=None,
    stage1_name: str = "stage1-ce",
) -> dict[str, dict]:
    """Stage 1 once, then stage 2 for each ``methods[name] = {"method": <registry name>, **options}``.

    ``"meta_in_train": True`` in a spec adds the meta set to the training data of a method that does
    not use it (so it is not starved of the examples OT re-weighting trains on through its meta loss).

    Returns ``{name: {"best": test metrics, "last": test metrics, "best_epoch": int,
    "seconds": float, "val": validation metrics at best_epoch}}``, with the stage-1 model under
    ``stage1_name``.
    """
    counts = data.train_counts
    thresholds = dict(many_threshold=stage1.many_threshold, few_threshold=stage1.few_threshold)
    seed_everything(stage1.seed)  # the model's initialisation depends on the seed alone
    model = model_fn()
    res1 = fit(model, create_method("ce"), data.train, data.val, data.meta, stage1, device, augment, tag="stage 1")
    out = {stage1_name: _scores(model, res1, data, counts, thresholds)}
    model.load_state_dict(res1.best_state)
    for name, spec in methods.items():
        spec = dict(spec)
        meta_in_train = spec.pop("meta_in_train", False)
        method = create_method(spec.pop("method", name), **spec)
        train = data.train
        if meta_in_train and not method.uses_meta:  # a method that cannot use the meta set trains on it
            train = tuple(np.concatenate([np.asarray(a), np.asarray(b)]) for a, b in zip(data.train, data.meta))
        m2 = copy.deepcopy(model)
        res2 = fit(m2, method, train, data.val, data.meta, stage2, device, augment, tag=f"stage 2 {name}")
        out[name] = _scores(m2, res2, data, counts, thresholds)
        rw = getattr(method, "reweighter", None)
        if rw is not None:
            start = rw.initial_scores().to(rw.scores.device)
            out[name]["score_change"] = float(((rw.scores - start).abs() / start.abs().clamp_min(1e-12)).mean())
        out[name]["method"] = method
    return out


def _scores(model, res, data, counts, thresholds) -> dict:
    last = evaluate(model, *data.test, counts, **thresholds)
    model.load_state_dict(res.best_state)
    best = evaluate(model, *data.test, counts, **thresholds)
    return {
        "best": best,
        "last": last,
        "best_epoch": res.best_epoch,
        "seconds": res.seconds,
        "val": next(r["val"] for r in res.history if r["epoch"] == res.best_epoch),
    }


def summarize(runs: list[dict[str, dict]], which: str = "best") -> list[dict]:
    """Mean and std over seeds: one row per method with ``<metric>_mean`` / ``<metric>_std``
    (metrics in percent) and ``seconds_mean`` / ``seconds_std``."""
    rows = []
    for name in runs[0]:
        row = {"method": name, "seeds": len(runs)}
        for col in METRIC_COLUMNS:
            vals = [r[name][which].get(col) for r in runs]
            vals = [100.0 * v for v in vals if v is not None]
            row[f"{col}_mean"] = float(np.mean(vals)) if vals else None
            row[f"{col}_std"] = float(np.std(vals)) if vals else None
        secs = [r[name]["seconds"] for r in runs]
        row["seconds_mean"], row["seconds_std"] = float(np.mean(secs)), float(np.std(secs))
        rows.append(row)
    return rows


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """Render :func:`summarize` rows as a plain-text (or Markdown) table of ``mean +- std``."""
    header = ["method", "acc", "bal.acc", "many", "medium", "few", "gmean", "seconds"]
    cols = list(METRIC_COLUMNS) + ["seconds"]
    body = []
    for r in rows:
        cells = [r["method"]]
        for c in cols:
            m, s = r[f"{c}_mean"], r[f"{c}_std"]
            cells.append("-" if m is None else f"{m:.1f} ± {s:.1f}")
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def with_seed(config: FitConfig, seed: int) -> FitConfig:
    return replace(config, seed=seed)
