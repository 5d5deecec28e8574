"""Per-epoch loggers named by the config key ``log`` (``--set log=tensorboard``; a list where more follow).

A logger receives each stage's per-epoch record (the one written to ``metrics.jsonl``) after the
epoch's evaluation, so it adds no work, and no host synchronisation, inside the training steps.
Only rank 0 logs under torchrun (the caller creates loggers on the main process alone).

``tensorboard`` (``pip install 'otreweight[tensorboard]'``) writes one event file per stage under
``<output_dir>/tensorboard/<stage>/`` with, per epoch:

* ``train/loss``, ``train/lr``, ``train/seconds``;
* ``val/<metric>`` for every scalar validation metric (accuracy, balanced accuracy, many / medium /
  few, geometric mean);
* for OT stages, ``weights/class_<k>`` = the mean learned weight of class ``k`` and ``weights/mean`` /
  ``weights/std`` over the training set (from :meth:`~otreweight.reweighter.OTReweighter.class_summary`).

Watch a run while it trains: ``tensorboard --logdir runs/<name>/tensorboard``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


class TensorBoardLogger:
    """Scalars of one stage into ``folder`` (a :class:`torch.utils.tensorboard.SummaryWriter`)."""

    def __init__(self, folder) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder)))

    def log_epoch(self, record: dict, method=None) -> None:
        """Write ``record`` (``epoch``, ``train_loss``, ``lr``, ``seconds``, ``val``) at step ``epoch``."""
        step = int(record["epoch"])
        for key, tag in (("train_loss", "train/loss"), ("lr", "train/lr"), ("seconds", "train/seconds")):
            self._scalar(tag, record.get(key), step)
        for key, value in (record.get("val") or {}).items():
            self._scalar(f"val/{key}", value, step)
        reweighter = getattr(method, "reweighter", None)
        if reweighter is not None:  # an OT stage: the weights as they stand after this epoch
            summary = reweighter.class_summary()
            w = reweighter.weights().numpy()
            self._scalar("weights/mean", float(w.mean()) if w.size else None, step)
            self._scalar("weights/std", float(w.std()) if w.size else None, step)
            for k, mean in enumerate(summary["mean"]):
                self._scalar(f"weights/class_{k}", mean, step)
        self.writer.flush()

    def _scalar(self, tag: str, value, step: int) -> None:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.floating, np.integer)):
            return  # per-class lists, confusion matrices, None: not scalars
        if math.isfinite(float(value)):
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        self.writer.close()


LOGGERS = {"tensorboard": TensorBoardLogger}


def create_loggers(names, out: Path, stage: str) -> list:
    """One logger per name in ``names`` for the stage ``stage`` of the run folder ``out``."""
    return [LOGGERS[name](Path(out) / name / stage) for name in names]


__all__ = ["TensorBoardLogger", "create_loggers"]
