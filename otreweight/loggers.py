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
  ``weights/std`` over the training set (the method's
  :meth:`~otreweight.methods.base.Method.epoch_scalars`).

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
        for tag, value in (method.epoch_scalars() if method is not None else {}).items():
            self._scalar(tag, value, step)  # e.g. an OT stage's weights as they stand after this epoch
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
