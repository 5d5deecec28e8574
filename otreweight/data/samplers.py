"""Which examples each training step sees: one epoch's mini-batches of example ids.

``sampling="instance"`` shuffles every example once per epoch (``torch.randperm``);
``"class_balanced"`` draws ``N`` ids with replacement, each with probability proportional to
``1 / n_{y_i}`` (a class is drawn uniformly, then an example of it). Both draw from the loop's
seeded CPU generator, so an epoch's order is a function of the seed and the epoch, and a run
resumed from a checkpoint (which stores the generator) draws the same batches. With several
processes every rank draws the same global order and takes the slice ``rank::world_size``
(``DistributedSampler`` semantics: an order whose length is not a multiple of the world size is
padded with its first ids, so every rank takes the same number of steps); with one process that
is the whole order.

Length-bucketed batching (``lengths`` given, e.g. tokens per document): the epoch's order is cut
into windows of ``bucket_window`` batches, each window is sorted by length and cut into batches,
and the batches are shuffled (by the same generator). A batch then holds documents of similar
length, so little of it is padding, while every epoch still visits the examples in a fresh random
order of windows and batches.
"""
from __future__ import annotations

import numpy as np
import torch

from .._errors import check_choice

SAMPLINGS = ("instance", "class_balanced")


class EpochSampler:
    """Mini-batches of example ids for one epoch at a time.

    Parameters
    ----------
    labels : (N,) int tensor or array
        Training labels, indexed by example id.
    num_classes : int
    batch_size : int
    sampling : {"instance", "class_balanced"}
    drop_single : bool
        Drop a last batch of one example (a batch of one breaks batch norm in train mode; that
        example is reshuffled into the next epoch).
    rank, world_size : int
        This process's slice of the global order.
    lengths : (N,) ints, optional
        Lengths to bucket by (see the module docstring); ``None`` keeps the plain order.
    bucket_window : int
        Batches per sorted window.
    """

    def __init__(self, labels, num_classes: int, batch_size: int, sampling: str = "instance",
                 drop_single: bool = False, rank: int = 0, world_size: int = 1, lengths=None,
                 bucket_window: int = 50) -> None:
        self.sampling = check_choice("sampling", sampling, SAMPLINGS)
        y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).long()
        self.n = int(y.shape[0])
        self.batch_size, self.drop_single = int(batch_size), bool(drop_single)
        self.rank, self.world_size = int(rank), int(world_size)
        self.p = None
        self.lengths = None
        if lengths is not None:
            self.lengths = torch.as_tensor(np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths))
            if self.lengths.shape != (self.n,):
                raise ValueError(f"lengths must hold one value per example ({self.n}), got {tuple(self.lengths.shape)}")
        self.bucket_window = max(1, int(bucket_window))
        if self.sampling == "class_balanced":
            counts = np.bincount(y.numpy(), minlength=num_classes)
            self.p = (1.0 / torch.as_tensor(counts, dtype=torch.float64))[y]

    def order(self, gen: torch.Generator) -> torch.Tensor:
        """The epoch's global order of example ids (CPU)."""
        if self.p is None:
            return torch.randperm(self.n, generator=gen)
        return torch.multinomial(self.p, self.n, replacement=True, generator=gen)

    def batches(self, gen: torch.Generator, device="cpu") -> list[torch.Tensor]:
        """This rank's mini-batches of the next epoch, on ``device``."""
        perm = self.order(gen)
        if self.lengths is not None:
            perm = self._bucketed(perm, gen)
        perm = perm.to(device)
        if self.world_size > 1:
            extra = (-int(perm.shape[0])) % self.world_size
            if extra:  # every rank gets as many examples (and steps): the order's first ones are repeated
                perm = torch.cat([perm, perm[:extra]])
            perm = perm[self.rank :: self.world_size]
        n = int(perm.shape[0])
        starts = list(range(0, n, self.batch_size))
        if self.drop_single and len(starts) > 1 and n - starts[-1] < 2:
            starts.pop()
        return [perm[s : s + self.batch_size] for s in starts]

    def _bucketed(self, perm: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``perm`` re-ordered so consecutive batches hold similar lengths (batches shuffled).
        With several ranks a bucketed global batch is ``batch_size * world_size`` long."""
        b = self.batch_size * max(1, self.world_size)
        window = b * self.bucket_window
        pieces = []
        for s in range(0, perm.shape[0], window):
            w = perm[s : s + window]
            w = w[torch.argsort(self.lengths[w], stable=True)]
            pieces.extend(w[i : i + b] for i in range(0, w.shape[0], b))
        if len(pieces) > 1:  # a short last batch keeps its place at the end (drop_single works on it)
            full, last = (pieces[:-1], pieces[-1:]) if pieces[-1].shape[0] < b else (pieces, [])
            order = torch.randperm(len(full), generator=gen).tolist()
            pieces = [full[i] for i in order] + last
        return torch.cat(pieces) if pieces else perm


__all__ = ["SAMPLINGS", "EpochSampler"]
