"""The narrow interface between a training method and the one training loop.

The loop (:func:`otreweight.engine.fit`) owns the model, the optimiser, batching, evaluation and
model selection. A method only turns a batch into a loss:

0. ``prepare_model(model)`` once, before the optimiser is built and before the method knows the
   class counts (e.g. cRT re-initialises the classifier, LDAM swaps in its head);
1. ``bind(info)`` once before training, with the class counts, training labels, device, model
   and optimiser (post-hoc logit adjustment shifts the classifier's bias here, since it needs the
   class prior);
2. ``start_epoch(epoch, meta)`` at the start of every epoch (e.g. to rebuild meta targets; a
   method that needs the features of the whole training set calls ``info.train_features()``);
3. ``loss(batch, meta)`` for every mini-batch, returning a scalar to minimise;
4. ``state_dict()`` / ``load_state_dict()`` for whatever the method learns itself (OT scores).

``meta`` is a :class:`MetaView` when the method sets ``uses_meta = True`` (else ``None``).
Class attributes tell the loop how to feed the method: ``sampling`` is ``"instance"`` (shuffle
every example once per epoch) or ``"class_balanced"`` (draw classes uniformly, then an example of
the class, with replacement); ``trains = False`` marks a method that only transforms the model in
``prepare_model`` / ``bind`` (no epochs are run); ``transductive = True`` marks a method whose
predictions on a split depend on the whole split: the loop passes the logits of every evaluated
split through its ``transform_logits`` before the arg max (e.g. ``ot-posthoc``).

What a comparison protocol needs to know about a method is declared here too (read by
:mod:`otreweight.compare`): ``end_to_end = True`` marks a loss its paper trains from scratch on the
whole network (``compare --mode paper`` runs it so); ``recipe`` is a method's own stage recipe
(epochs, batch size, learning rate, ...) that replaces the config's, e.g. cRT's 10 epochs at lr 0.1.
Adding a method never touches the loop: subclass :class:`Method` and register it in
``otreweight.methods.METHODS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch


@dataclass
class TrainInfo:
    """What a method may know about the training set."""

    num_classes: int
    train_labels: torch.Tensor  # (N,) on the training device, indexed by example id
    train_counts: np.ndarray  # (K,)
    device: torch.device
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    epochs: int = 0
    # Detached backbone features of every training example, row i for example id i, computed in
    # eval mode without augmentation; ``None`` outside the training loop. With a frozen backbone
    # the loop computes them once; otherwise every call is one forward pass over the training set
    # (call it at most once per epoch, e.g. in ``start_epoch``).
    train_features: Callable[[], torch.Tensor] | None = None


@dataclass
class Batch:
    """One mini-batch as the loop hands it to a method.

    ``logits`` carry gradients to the trainable parameters; ``features`` are the backbone's
    features of the same examples, detached; ``x`` is the (augmented) input the logits were
    computed from, or ``None`` when the loop served cached features.
    """

    idx: torch.Tensor
    y: torch.Tensor
    logits: torch.Tensor
    features: torch.Tensor
    x: torch.Tensor | None = None


class MetaView(Protocol):
    """The balanced meta set, as the loop exposes it to a method."""

    y: torch.Tensor

    def features(self) -> torch.Tensor:
        """Detached meta features, computed in eval mode (cached while the backbone is unchanged)."""

    def class_mean_features(self) -> torch.Tensor:
        """Features of the per-class mean meta inputs, ``(K, d)``, detached."""

    def logits(self) -> torch.Tensor:
        """Meta logits with gradients to the trainable parameters."""


class Method:
    """Base class of a training method (a loss over a batch, possibly with its own state)."""

    name: str = "method"
    uses_meta: bool = False
    #: With ``uses_meta``: whether the loop refuses a meta set without an example of every class
    #: (OT does not: it takes such a class's targets from its own training examples).
    meta_every_class: bool = True
    sampling: str = "instance"
    trains: bool = True
    end_to_end: bool = False
    recipe: dict | None = None
    #: Whether the method trains on several processes (torchrun): its loss of a rank's part of the
    #: global batch, gradients averaged over the ranks, gives the one-process run.
    multi_process: bool = True
    transductive: bool = False
    #: Whether the method trains the whole network with gradient accumulation (``accumulate_steps``):
    #: its loss is a function of the batch's logits (and detached features), so the loop can take
    #: its gradient with respect to the logits of the whole effective batch.
    accumulates: bool = True

    def prepare_model(self, model: torch.nn.Module) -> None:
        pass

    def bind(self, info: TrainInfo) -> None:
        self.info = info

    def start_epoch(self, epoch: int, meta: MetaView | None) -> None:
        pass

    def loss(self, batch: Batch, meta: MetaView | None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores of a whole evaluated split from its logits (a transductive method rebalances them)."""
        return logits

    def end_epoch(self) -> dict:
        """Called once after each training epoch: the place to read back what the method counted
        on the device during the epoch (its ``loss`` must not read values back per batch) and to
        raise if something went wrong. The returned numbers go into the epoch's history record."""
        return {}

    def preflight(self, n_train: int, n_meta: int, num_classes: int, batch_size: int) -> None:
        """Raise :class:`~otreweight.OTReweightError` when the method cannot run on a split of these
        sizes (the global ``batch_size``); called for every stage before any stage trains."""

    def summary(self) -> dict:
        """Entries the method adds to its stage's ``final.json`` once the stage has trained."""
        return {}

    def artifacts(self, train_counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """Files the method adds to its stage's folder: ``{file name: arrays}``, each saved with ``np.savez``."""
        return {}

    def epoch_scalars(self) -> dict[str, float]:
        """Scalars a logger (``log: tensorboard``) records after each epoch, by tag."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
