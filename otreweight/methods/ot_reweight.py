r"""OT re-weighting (Guo et al., NeurIPS 2022) as a training method.

Per batch: the batch's scores are moved by :class:`~otreweight.reweighter.OTReweighter` towards
the balanced meta targets, then the loss is

.. math:: \mathcal L = \sum_{i\in B} w_i\,\ell_{CE}(x_i, y_i)
          \;+\; \lambda_{meta}\,\frac{1}{|M|}\sum_{j\in M} \ell_{CE}(x'_j, y'_j)

with :math:`w_i` the raw score (``weighting="raw"``, summed, as the authors' code) or
:math:`|B|\,\mathrm{softmax}(s_B)_i` averaged over the batch (``"normalized"``), and the meta-set
cross-entropy term weighted by ``meta_ce`` (10 in the authors' code; 0 turns it off).
Meta targets are rebuilt at the start of every epoch from the current backbone. A class with no
meta example (a natural long tail, ``profile: given``, gives none to classes of 1-3 examples)
takes its targets from its own training examples: the mean of their features (prototype
targets) or each of them (``"whole"``); the solved objectives still give it the same total mass
as every other class.

With a solved objective (``objective="kl_regularized"`` or ``"class_conditional"``, see
:class:`~otreweight.reweighter.OTReweighter`) :math:`w_i` is the solved weight
:math:`a^*_i S`, summed (``"raw"``) or averaged (``"normalized"``) over the batch; with
``scope="dataset"`` the weights of all training examples are solved at the start of every epoch
from the training features the loop provides (``TrainInfo.train_features``).
"""
from __future__ import annotations

import inspect

import warnings

import torch
import torch.nn.functional as F

from .._errors import OTReweightError, check_choice
from ..registry import check_options
from ..class_weights import effective_number_weights
from ..reweighter import OTReweighter
from ..transport import OTConvergenceWarning
from ..targets import TARGET_KINDS, MetaTargets, build_targets, class_means
from .. import distributed as dist
from . import METHODS
from .base import Method


# Named OT variants: option overrides on top of the reference (the authors') options, usable as
# method names by ``compare`` and the demo. ``ot`` itself is the authors' update (OTReweighter's
# defaults: <pi, C> differentiated through their truncated Sinkhorn, their stopping rule, weight
# decay 5e-4 on the scores).
OT_VARIANTS: dict[str, dict] = {
    "ot-no-meta-ce": {"meta_ce": 0.0},  # without the meta-set cross-entropy term
    "ot-no-step": {"steps": 0},  # the loss alone, no OT step: the class-balanced start and the meta term
    "ot-kl": {"objective": "kl_regularized", "scope": "dataset", "lam": 0.1},  # solved, well-posed (docs/ot_weights.md)
    "ot-cc": {"objective": "class_conditional", "scope": "dataset", "lam": 0.1},
    # the class-conditional weights alone with cb's loss (normalised weights, no meta-set term): run it
    # in cb's recipe (docs/ot_weights.md, family A)
    "ot-cc-cb": {"objective": "class_conditional", "scope": "dataset", "lam": 0.3, "meta_ce": 0.0,
                 "weighting": "normalized"},
    # the envelope gradient of the converged entropic value (POT's grad="envelope"), no score decay:
    # what ``ot`` computed before it became the authors' update
    "ot-envelope": {"gradient": "envelope", "stop": "tol", "score_decay": 0.0},
}
# Names that existed once, with what replaced them (a one-line error instead of "unknown method").
RETIRED_VARIANTS = {"ot-authors-grad": "it is now 'ot' itself (the authors' update is ot's default)"}


class OTReweight(Method):
    """OT re-weighting. Keyword options are those of :class:`OTReweighter` plus ``targets`` and ``meta_ce``.

    Parameters
    ----------
    targets : {"prototype", "prototype_image", "whole"}
        Meta targets: the mean meta feature of each class, the feature of each class's mean meta image, or every meta example.
    meta_ce : float
        Coefficient of the meta-set cross-entropy term added to the loss (10 in the authors' code; 0: none).
    **reweighter_kwargs
        Options of :class:`~otreweight.reweighter.OTReweighter` (``eps``, ``steps``, ``objective``, ...).
    """

    name = "ot"
    uses_meta = True
    meta_every_class = False  # a class without meta example takes its targets from its training examples

    @classmethod
    def option_defaults(cls) -> dict:
        """``{option: default}`` for every option of the method: its own and :class:`OTReweighter`'s."""
        out = {}
        for fn in (OTReweighter.__init__, cls.__init__):
            for n, p in inspect.signature(fn).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    out[n] = p.default
        return out

    def __init__(self, targets: str = "prototype", meta_ce: float = 10.0, **reweighter_kwargs) -> None:
        self.targets_kind = check_choice("meta target kind", targets, TARGET_KINDS)
        if meta_ce < 0:
            raise OTReweightError(f"meta_ce (coefficient of the meta-set loss) must be >= 0, got {meta_ce}")
        self.meta_ce = float(meta_ce)
        self.reweighter_kwargs = reweighter_kwargs
        # Check the options and build once on dummy labels, so bad options fail now, not after stage 1.
        check_options("method 'ot'", OTReweighter.__init__, reweighter_kwargs, exclude=("self", "train_labels", "num_classes"))
        OTReweighter([0, 1], **reweighter_kwargs)
        self.reweighter: OTReweighter | None = None
        self.targets: MetaTargets | None = None

    def preflight(self, n_train: int, n_meta: int, num_classes: int, batch_size: int) -> None:
        """The size checks of :meth:`OTReweighter.check_size` from the split's counts alone, so a run
        refuses a too large dense solve before stage 1 rather than when this stage starts."""
        m = n_meta if self.targets_kind == "whole" else num_classes
        probe = OTReweighter([0, 1], **self.reweighter_kwargs)
        probe.check_size(n_train if probe.scope == "dataset" else batch_size, m)

    def bind(self, info):
        super().bind(info)
        self.reweighter = OTReweighter(
            info.train_labels.cpu(), info.num_classes, **self.reweighter_kwargs
        ).to(info.device)

    def start_epoch(self, epoch, meta):
        k = self.info.num_classes
        missing = torch.nonzero(torch.bincount(meta.y.cpu(), minlength=k) == 0).flatten()
        if missing.numel() == 0:
            feats = meta.class_mean_features() if self.targets_kind == "prototype_image" else meta.features()
            self.targets = build_targets(self.targets_kind, feats, meta.y, k)
        else:
            self.targets = self._targets_with_own(meta, missing)
        if self.reweighter.scope == "dataset":
            self.reweighter.check_size(self.info.train_labels.shape[0], len(self.targets))
            if self.info.train_features is None:
                raise OTReweightError(
                    "scope='dataset' needs the features of the whole training set; train with "
                    "otreweight.engine.fit, or call reweighter.refresh(features, targets) yourself"
                )
            self.reweighter.refresh(self.info.train_features(), self.targets)

    def _targets_with_own(self, meta, missing: torch.Tensor) -> MetaTargets:
        """Targets when classes ``missing`` have no meta example: theirs come from their own
        training examples (the mean of their features for the prototype kinds, every one of
        them for ``"whole"``), computed with the current backbone (one feature pass over the
        training set per epoch, cached when the backbone is frozen)."""
        if self.info.train_features is None:
            raise OTReweightError(
                f"class(es) {missing[:10].tolist()} have no meta example and their targets come from their training "
                "examples, whose features this loop does not provide; train with otreweight.engine.fit"
            )
        train_f = self.info.train_features()
        y_tr = self.info.train_labels.to(train_f.device)
        rows = torch.isin(y_tr, missing.to(y_tr.device))
        own_f, own_y = train_f[rows], y_tr[rows]
        if self.targets_kind == "whole":
            feats, labels = meta.features(), meta.y
        elif self.targets_kind == "prototype_image":
            feats, labels = meta.class_mean_features(), torch.unique(meta.y)
        else:
            feats, labels = meta.features(), meta.y
            present = torch.unique(labels)
            feats = class_means(feats, torch.searchsorted(present, labels), present.numel())
            labels = present
        if self.targets_kind != "whole":
            present = torch.unique(own_y)
            own_f = class_means(own_f, torch.searchsorted(present, own_y), present.numel())
            own_y = present
        feats = torch.cat([feats.to(own_f.device, own_f.dtype), own_f])
        labels = torch.cat([labels.to(own_y.device), own_y]).long()
        return MetaTargets(feats, labels, self.info.num_classes)

    def loss(self, batch, meta):
        # Several processes: every rank solves the OT problem of the whole global batch (ids, features
        # and labels gathered in the global batch's order) and applies the same score update, so the
        # score buffers stay identical; each takes the weights of its own examples. The ranks' gradients
        # are averaged, so a summed loss is scaled by the number of ranks to give the global sum's gradient.
        (idx, feats, y), local = dist.gather_batch(batch.idx, batch.features, batch.y)
        # the loop's ids and labels are valid by construction; non-finite scores are counted on the
        # device and reported by end_epoch, so the step reads nothing back from the device
        w = self.reweighter.step(idx, feats, y, self.targets, check=False)
        if local is not None:
            w = w[local.to(w.device)]
        ce = F.cross_entropy(batch.logits, batch.y, reduction="none")
        loss = (w * ce).sum() * dist.world_size() if self.reweighter.weighting == "raw" else (w * ce).mean()
        if self.meta_ce > 0:
            loss = loss + self.meta_ce * F.cross_entropy(meta.logits(), meta.y)
        return loss

    def end_epoch(self) -> dict:
        """The OT steps' statistics of the epoch (:meth:`OTReweighter.epoch_stats`), read once."""
        if self.reweighter is None or self.reweighter.solved or self.reweighter.steps == 0:
            return {}
        stats = self.reweighter.epoch_stats()
        if stats["missed"]:
            warnings.warn(OTConvergenceWarning(
                f"the authors' Sinkhorn rule did not stop within stop_window={self.reweighter.stop_window} iterations "
                f"on {stats['missed']} of {stats['steps']} OT steps this epoch; those used iteration "
                f"{self.reweighter.stop_window} (the reference loop allows 200): raise stop_window"), stacklevel=2)
        return {"ot_" + k: v for k, v in stats.items()} if stats["steps"] else {}

    def summary(self) -> dict:
        """``score_change``: the mean relative change of the learned scores from their start."""
        rw = self.reweighter
        if rw is None:
            return {}
        start = rw.initial_scores().to(rw.scores.device)
        return {"score_change": float(((rw.scores - start).abs() / start.abs().clamp_min(1e-12)).mean())}

    def artifacts(self, train_counts) -> dict:
        """``weights.npz``: labels, learned and initial scores, and the class-balanced weights of ``train_counts``."""
        rw = self.reweighter
        if rw is None:
            return {}
        return {"weights.npz": dict(
            labels=rw.labels.cpu().numpy(), scores=rw.weights().numpy(), initial=rw.initial_scores().numpy(),
            class_balanced=effective_number_weights(train_counts, getattr(rw, "beta", 0.9999)).numpy())}

    def epoch_scalars(self) -> dict:
        """``weights/mean``, ``weights/std`` over the training set and ``weights/class_<k>`` (class means)."""
        rw = self.reweighter
        if rw is None:
            return {}
        w = rw.weights().numpy()
        out = {"weights/mean": float(w.mean()) if w.size else None, "weights/std": float(w.std()) if w.size else None}
        out.update({f"weights/class_{k}": mean for k, mean in enumerate(rw.class_summary()["mean"])})
        return out

    def state_dict(self):
        return {"reweighter": self.reweighter.state_dict()} if self.reweighter is not None else {}

    def load_state_dict(self, state):
        if state and self.reweighter is not None:
            self.reweighter.load_state_dict(state["reweighter"])

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.reweighter_kwargs.items())
        return f"OTReweight(targets={self.targets_kind!r}, meta_ce={self.meta_ce}{', ' + opts if opts else ''})"


METHODS.register("ot")(OTReweight)
