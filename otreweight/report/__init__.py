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
from .figures import _group_confusion, _weight_stats  # noqa: F401  (tests read them)
from .page import write_report
from .read import _Classes  # noqa: F401

__all__ = ["write_report"]
