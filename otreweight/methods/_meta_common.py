"""What the two bilevel re-weighters share: meta-batch sampling, the pass counters and the look-ahead meta loss."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .._errors import OTReweightError
from .base import Method


class PassCounter:
    """Forward and backward passes through the trainable model, and the seconds spent in the look-ahead.

    Counts include the loop's own forward of the batch and its backward of the returned loss, so a
    plain cross-entropy step counts 1 forward and 1 backward.
    """

    def __init__(self) -> None:
        self.steps = self.forward = self.backward = 0
        self.seconds = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds += time.perf_counter() - self._t0

    def summary(self) -> dict:
        n = max(self.steps, 1)
        return {
            "steps": self.steps,
            "forward_per_step": self.forward / n,
            "backward_per_step": self.backward / n,
            "lookahead_seconds": self.seconds,
            "lookahead_seconds_per_step": self.seconds / n,
        }


class MetaBatches:
    """Random meta mini-batches, without replacement within a pass over the meta set, from their own generator."""

    def __init__(self, batch_size: int | None) -> None:
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise OTReweightError(f"meta_batch_size must be an integer >= 1 (or null for the whole meta set), got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.gen = torch.Generator()
        self._order: torch.Tensor | None = None
        self._pos = 0

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(int(seed))
        self._order, self._pos = None, 0

    def next(self, m: int, device) -> torch.Tensor | None:
        """Indices of the next meta batch out of ``m`` meta examples (``None``: all of them)."""
        if self.batch_size is None or self.batch_size >= m:
            return None
        if self._order is None or self._order.numel() != m or self._pos + self.batch_size > m:
            self._order, self._pos = torch.randperm(m, generator=self.gen), 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx.to(device)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self._order, "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self._order, self._pos = state["order"], state["pos"]


def lookahead_meta_loss(lookahead, meta_batches: MetaBatches, counter: PassCounter, weighted_loss: torch.Tensor,
                        meta) -> torch.Tensor:
    """The meta-set loss of the model after one virtual SGD step on ``weighted_loss`` (with the
    graph back to whatever ``weighted_loss`` depends on); counts that step's backward and the
    meta forward."""
    virtual = lookahead.step(weighted_loss)
    counter.backward += 1
    index = meta_batches.next(meta.y.shape[0], meta.y.device)
    meta_loss = lookahead.meta_loss(virtual, meta, index)
    counter.forward += 1
    return meta_loss


def normalise(w: torch.Tensor) -> torch.Tensor:
    """``w / w.sum()``, or ``w`` unchanged when its sum is not positive (all weights zero)."""
    total = w.sum()
    return w / torch.where(total > 0, total, torch.ones_like(total))  # decided on the device


class LookAheadReweighter(Method):
    """The loss both bilevel re-weighters share: per-example cross-entropy times the batch weights
    of :meth:`batch_weights` (normalised, detached), summed; counts the loop's own forward and
    backward of the batch beside the look-ahead's passes."""

    uses_meta = True
    multi_process = False  # the look-ahead step is not split over ranks (yet)
    accumulates = False  # the look-ahead step needs the whole batch's graph at once

    def batch_weights(self, losses: torch.Tensor, meta) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, batch, meta):
        losses = F.cross_entropy(batch.logits, batch.y, reduction="none")
        self.counter.steps += 1
        self.counter.forward += 1  # the loop's forward of the batch
        w = self.batch_weights(losses, meta)
        self.counter.backward += 1  # the loop's backward of the returned loss
        self.last_weights = w
        return (w * losses).sum()

    def stats(self) -> dict:
        return self.counter.summary()

    def summary(self) -> dict:
        """The forward and backward passes counted over the stage (``method_stats``)."""
        return {"method_stats": self.stats()}
