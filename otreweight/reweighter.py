r"""The OT re-weighter: one learnable score per training example, moved by optimal transport.

Every training example :math:`i` owns a score :math:`s_i`, kept for the whole run in a buffer
indexed by example id. For a mini-batch :math:`B` the weights are the softmax over the batch,

.. math::  a = \mathrm{softmax}(s_B), \qquad a \in \Delta^{|B|},

and :math:`k` gradient steps (``steps``, learning rate ``lr``) are taken on the scores to reduce

.. math::  \mathrm{OT}_\varepsilon\Big(\sum_{i\in B} a_i\,\delta_{(f_i, y_i)},\;
            \frac1m\sum_{j=1}^m \delta_{(g_j, y'_j)}\Big)

with the cost of :mod:`otreweight.cost` between the batch's features and labels and the meta
targets (:mod:`otreweight.targets`). The gradient with respect to :math:`a` is the dual potential
(envelope theorem, see :mod:`otreweight.transport`) and is chained through the softmax by
autograd. The updated scores are written back to the buffer.

How the weights enter the classification loss (``weighting``):

* ``"raw"`` (authors' code): :math:`\sum_{i\in B} s_i\,\ell_i`, the stored score itself
  multiplies the per-example cross-entropy, summed over the batch;
* ``"normalized"``: :math:`\frac{1}{|B|}\sum_{i\in B} (|B|\,a_i)\,\ell_i`, the softmax mass times
  the batch size, averaged.

Initialisation (``init``): ``"uniform"`` (every score 1) or ``"class_balanced"`` (each example
starts with its class's effective-number weight, the :math:`K` class weights summing to :math:`K`;
the authors' code).

**Objectives** (``objective``). The default ``"reference"`` is the scheme above: a few small
gradient steps per batch on :math:`\mathrm{OT}_\varepsilon(a, b)`, whose minimiser over
:math:`a` is degenerate (it piles each target's mass on the examples nearest to it), so the
weights are held near their start only by ``steps`` and ``lr``. Two well-posed alternatives are
*solved to convergence* by POT (:func:`~otreweight.transport.semi_relaxed_ot`) instead:

* ``"kl_regularized"``: :math:`a^* = \arg\min_{a} \mathrm{OT}_\varepsilon(a, b)
  + \lambda\,\mathrm{KL}(a\,\|\,p)`, the prior :math:`p` being the normalised starting scores
  (``init``: uniform or class-balanced). Unique minimiser;
  :math:`a^* = p^{\lambda/(\lambda+\varepsilon)} (Kv)^{\varepsilon/(\lambda+\varepsilon)}`
  interpolates between the prior (``lam`` :math:`\to\infty`) and the reference minimiser
  (``lam`` :math:`\to 0`); the label cost moves mass between classes, the feature cost within
  and between them.
* ``"class_conditional"``: exact class balance, OT only *inside* each class. Every class
  present receives the same mass (:math:`1/K` when all are present; it does not follow the
  class's number of meta targets, :func:`~otreweight.transport.class_conditional_ot`), and inside the class the same regularised problem is solved against that
  class's targets only, with a uniform prior over the class's examples:
  :math:`a^*_c = \arg\min \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c\,\|\,u_c)`.
  Examples far from their class's meta examples (outliers, mislabelled examples) lose weight;
  ``lam = inf`` gives exact inverse-frequency class balance.

For both, the loss weight of example :math:`i` is :math:`w_i = a^*_i\,S` with :math:`S` the sum of
the starting scores over the solved examples, so a solve that returns the prior reproduces the
starting scores exactly (``init="class_balanced"``, ``objective="kl_regularized"``, ``lam=inf``
*is* class-balanced re-weighting): any difference is the OT part. ``weighting`` then only picks
the reduction over the batch (``"raw"``: sum, as the authors' code; ``"normalized"``: mean, as
:class:`~otreweight.methods.class_balanced.ClassBalancedCE`).

**Scope** (``scope``). ``"batch"`` solves on each mini-batch (``step``), the batch's examples
against all targets; a batch of 16 rarely holds every class. ``"dataset"`` solves once per
epoch on the whole training set (:meth:`OTReweighter.refresh`, an ``N x m`` problem, with the
features of every training example) and the batches then use those weights; ``step`` only
reads them. ``"dataset"`` needs a solved objective.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._errors import OTReweightError, check_choice, check_finite, check_labels, check_positive
from .class_weights import effective_number_weights
from .cost import COSTS, LABEL_SCALES, label_distance, combined_cost_unit, cost_matrix
from .targets import MetaTargets
from .registry import check_option_types
from .transport import (
    balanced_target_mass,
    check_cost_size,
    class_conditional_blocks,
    entropic_ot,
    authors_sinkhorn,
    entropic_ot_linear_unrolled,
    semi_relaxed_ot,
)

INITS = ("uniform", "class_balanced")
WEIGHTINGS = ("raw", "normalized")
OBJECTIVES = ("reference", "kl_regularized", "class_conditional")
GRADIENTS = ("unrolled", "envelope")
STOPS = ("authors", "tol")
SCOPES = ("batch", "dataset")
SOLVERS = ("auto", "log", "scaling")


class OTReweighter(nn.Module):
    r"""Per-example scores learned by entropic OT against balanced meta targets.

    Parameters
    ----------
    train_labels : array-like of int, shape (N,)
        Labels of the whole training set, indexed by example id ``0..N-1``.
    num_classes : int, optional
        Number of classes ``K``; ``max(train_labels) + 1`` by default.
    init : {"uniform", "class_balanced"}
        Starting scores. ``"class_balanced"`` uses :func:`effective_number_weights` with ``beta``.
    beta : float
        Effective-number parameter for ``init="class_balanced"`` (0.9999).
    eps : float
        Entropic regularisation (0.1).
    cost : {"combined", "feature", "label"}
        Cost between batch and targets; ``alpha`` mixes feature and label costs (0.5) and
        ``label_scale`` is ``"reference"`` (0 / 2/K) or ``"unit"`` (0 / 1).
    steps, lr : int, float
        Gradient steps on the batch's scores per batch and their step size (1 and 0.01);
        ``objective="reference"`` only.
    weighting : {"raw", "normalized"}
        How the weights multiply the per-example loss (see the module docstring).
    tol, max_iter : float, int
        Sinkhorn stopping rule passed to POT (the solved objectives, and the reference step with
        ``stop="tol"``).
    solver : {"auto", "log", "scaling"}
        Sinkhorn form of the reference step (see :func:`~otreweight.transport.entropic_ot`):
        ``"auto"`` (default) uses POT's scaling iterations on the CPU when
        :math:`\max |C|/\varepsilon` allows it (2-5x faster per update there, BENCHMARKS.md) and log-domain ``ot.solve``
        otherwise; the two give the same update to the solver's tolerance.
    objective : {"reference", "kl_regularized", "class_conditional"}
        ``"reference"`` (default): gradient steps on the OT value. The other two solve a
        regularised weight problem to convergence (see the module docstring).
    scope : {"batch", "dataset"}
        Solve per mini-batch (default) or once per epoch on the whole training set
        (:meth:`refresh`; solved objectives only).
    lam : float
        :math:`\lambda`, weight of :math:`\mathrm{KL}(a\,\|\,\text{prior})` in the solved
        objectives (``inf``: the prior itself). Smaller values let OT move the weights further.
    gradient : {"unrolled", "envelope"}
        ``objective="reference"``: the gradient of the step. ``"unrolled"`` (default, the
        authors'): the linear part :math:`\langle\pi(a),C\rangle` of the plan, differentiated
        through the Sinkhorn iterations. ``"envelope"`` (the variant ``ot-envelope``): the
        envelope gradient of the converged entropic value :math:`\langle\pi,C\rangle +
        \varepsilon\sum\pi\log\pi` (the dual potential, POT's ``grad="envelope"``); it needs
        ``stop="tol"``.
    stop : {"authors", "tol"}
        When the reference step's Sinkhorn stops. ``"authors"`` (default): the reference code's
        rule - at the first iteration whose change of the target-side potential,
        :math:`\|g_k - g_{k-1}\|_1`, is below ``stop_threshold`` (:func:`~otreweight.transport.authors_sinkhorn`;
        2-5 iterations at ``eps=0.1`` on the batches measured), decided on the device.
        ``"tol"``: POT's solver run to ``tol`` / ``max_iter``.
    stop_threshold : float
        The authors' threshold (0.1).
    stop_window : int
        Iterations computed per OT step with ``stop="authors"``; the first that meets the rule is
        used. A step in which none does uses iteration ``stop_window`` and is counted in
        :meth:`epoch_stats` (the reference loop would go on, up to 200 iterations).
    score_decay : float
        Weight decay on the scores in the OT step, :math:`s \leftarrow s - \mathrm{lr}\,(g +
        \mathrm{decay}\cdot s)` (5e-4, as the authors' fresh SGD optimiser applies it).

    Attributes
    ----------
    scores : torch.Tensor, shape (N,)
        The learned scores (a buffer: saved in ``state_dict``, moved by ``.to(device)``).
    last_ot_value : torch.Tensor or None
        The OT value of the last batch, before its update (a 0-d tensor: reading it syncs the device).
    """

    def __init__(
        self,
        train_labels,
        num_classes: int | None = None,
        *,
        init: str = "class_balanced",
        beta: float = 0.9999,
        eps: float = 0.1,
        cost: str = "combined",
        alpha: float = 0.5,
        label_scale: str = "reference",
        steps: int = 1,
        lr: float = 0.01,
        weighting: str = "raw",
        tol: float = 1e-6,
        max_iter: int = 1000,
        solver: str = "auto",
        objective: str = "reference",
        scope: str = "batch",
        lam: float = 0.1,
        gradient: str = "unrolled",
        stop: str = "authors",
        stop_threshold: float = 0.1,
        stop_window: int = 16,
        score_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        check_option_types("OTReweighter", OTReweighter.__init__, dict(
            beta=beta, eps=eps, alpha=alpha, steps=steps, lr=lr, tol=tol, max_iter=max_iter, lam=lam,
            score_decay=score_decay, stop_threshold=stop_threshold, stop_window=stop_window))
        self._set_step_rule(gradient, stop, stop_threshold, stop_window, score_decay)
        labels = torch.as_tensor(np.asarray(train_labels)).long()
        if labels.numel() == 0:
            raise OTReweightError("train_labels is empty; the re-weighter needs at least one training example")
        self.num_classes = check_labels("train_labels", labels, num_classes)
        self.init = check_choice("initialisation", init, INITS)
        self.cost = check_choice("cost", cost, COSTS)
        self.label_scale = check_choice("label scale", label_scale, LABEL_SCALES)
        self.weighting = check_choice("weighting", weighting, WEIGHTINGS)
        self.eps = check_positive("eps (entropic regularisation)", eps)
        self.lr = check_positive("lr (OT step size)", lr)
        if int(steps) != steps or steps < 0:
            raise OTReweightError(f"steps (OT gradient steps per batch) must be an integer >= 0, got {steps}")
        self.steps = int(steps)
        if not 0.0 <= alpha <= 1.0:
            raise OTReweightError(f"cost mixing coefficient alpha must lie in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.solver = check_choice("Sinkhorn solver", solver, SOLVERS)
        self._set_objective(objective, scope, lam)
        if self.scope == "dataset":  # at least one target per class: refuse an impossible solve now
            self.check_size(labels.shape[0], self.num_classes)
        self.register_buffer("labels", labels)
        self.register_buffer("scores", self.initial_scores())
        # The starting scores, kept for the solved objectives (their prior and scale); not saved.
        self.register_buffer("start", self.scores.clone(), persistent=False)
        # per-epoch statistics of the steps, kept on the device (read once per epoch: epoch_stats)
        self.register_buffer("_stats", torch.zeros(5, dtype=torch.float64), persistent=False)
        self.last_ot_value: torch.Tensor | None = None

    def _set_step_rule(self, gradient, stop, stop_threshold, stop_window, score_decay) -> None:
        """Check and keep how a reference step is solved and differentiated."""
        self.gradient = check_choice("OT gradient", gradient, GRADIENTS)
        self.stop = check_choice("Sinkhorn stopping rule", stop, STOPS)
        if self.gradient == "envelope" and self.stop == "authors":
            raise OTReweightError("gradient='envelope' is the gradient of the converged entropic value; it needs "
                                  "stop='tol' (the variant ot-envelope sets both)")
        self.stop_threshold = check_positive("stop_threshold (the authors' Sinkhorn threshold)", stop_threshold)
        if int(stop_window) != stop_window or stop_window < 1:
            raise OTReweightError(f"stop_window (Sinkhorn iterations per OT step) must be an integer >= 1, got {stop_window!r}")
        self.stop_window = int(stop_window)
        if not float(score_decay) >= 0:
            raise OTReweightError(f"score_decay (weight decay on the scores) must be >= 0, got {score_decay!r}")
        self.score_decay = float(score_decay)

    def _set_objective(self, objective, scope, lam) -> None:
        """Check and keep the objective, its scope and the KL weight of the solved objectives."""
        self.objective = check_choice("OT objective", objective, OBJECTIVES)
        self.scope = check_choice("OT scope", scope, SCOPES)
        if self.scope == "dataset" and self.objective == "reference":
            raise OTReweightError(
                "scope='dataset' solves the weights once per epoch and needs a solved objective: "
                "objective='kl_regularized' or 'class_conditional'"
            )
        try:
            self.lam = float(lam)
        except (TypeError, ValueError):
            raise OTReweightError(f"lam (weight of the KL term) must be a number > 0 or inf, got {lam!r}") from None
        if not self.lam > 0:
            raise OTReweightError(f"lam (weight of the KL term) must be > 0 or inf, got {lam!r}")

    @property
    def solved(self) -> bool:
        """Whether the weights are solved to convergence (any objective but ``"reference"``)."""
        return self.objective != "reference"

    def initial_scores(self) -> torch.Tensor:
        """The starting scores: ones, or each example's class effective-number weight."""
        if self.init == "uniform":
            return torch.ones(self.labels.shape[0])
        counts = torch.bincount(self.labels.cpu(), minlength=self.num_classes)
        cw = effective_number_weights(counts, self.beta)
        return cw[self.labels.cpu()].clone()

    def step(
        self,
        idx: torch.Tensor,
        features: torch.Tensor,
        labels: torch.Tensor,
        targets: MetaTargets,
        check: bool = True,
    ) -> torch.Tensor:
        """Update the scores of one batch by OT and return the weights for its loss.

        Parameters
        ----------
        idx : torch.Tensor of int, shape (n,)
            Example ids of the batch (rows of :attr:`scores`).
        features : torch.Tensor, shape (n, d)
            The batch's features (used without gradient).
        labels : torch.Tensor, shape (n,)
            The batch's labels.
        targets : MetaTargets
            Meta targets, carrying uniform mass.
        check : bool
            Check the ids, labels and features first (each check reads a value back from the
            device). The training loop passes ``False``: its ids and labels are valid by
            construction, and a non-finite score is counted on the device and reported once per
            epoch (:meth:`epoch_stats`).

        Returns
        -------
        torch.Tensor, shape (n,)
            Detached loss weights: the updated raw scores (``weighting="raw"``) or
            ``n * softmax(scores)`` (``"normalized"``); for the solved objectives the solved
            weights ``a* S`` (re-solved on this batch with ``scope="batch"``; the weights of the
            last :meth:`refresh` with ``scope="dataset"``).
        """
        if idx.numel() == 0:
            raise OTReweightError("empty batch: the OT step needs at least one example")
        if idx.shape[0] != features.shape[0] or idx.shape[0] != labels.shape[0]:
            raise OTReweightError(
                f"batch mismatch: {idx.shape[0]} ids, {features.shape[0]} feature rows, {labels.shape[0]} labels"
            )
        if check:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.scores.shape[0]:
                raise OTReweightError(f"example id {lo if lo < 0 else hi} is outside 0..{self.scores.shape[0] - 1}: ids "
                                      "are the rows of the training set the re-weighter was built on")
            check_finite("batch features", features)
        idx = idx.to(self.scores.device).long()
        if self.solved:
            if self.scope == "batch":
                w, self.last_ot_value = self._solve(features, labels, targets, self.start[idx])
                self.scores[idx] = w.to(self.scores.dtype)
            return self.loss_weights(idx)
        s = self.scores[idx].to(torch.float64)
        if self.steps > 0:
            self.check_size(features.shape[0], len(targets))
            cost = self._cost(features, labels, targets, check=check)
            for k in range(self.steps):
                s = s.detach().requires_grad_(True)
                value = self._reference_value(cost, torch.softmax(s, dim=0))
                (grad,) = torch.autograd.grad(value, s)
                if k == 0:
                    self.last_ot_value = value.detach()
                s = s.detach()
                # SGD on the scores, with weight decay as the authors' fresh optimiser applies it
                s = s - self.lr * (grad + self.score_decay * s) if self.score_decay else s - self.lr * grad
            # counted on the device, reported once per epoch (epoch_stats): no host sync per batch
            s = s.to(self.scores.dtype)
            self._stats[3] += (~torch.isfinite(s)).sum()
            self.scores[idx] = s
        return self.loss_weights(idx)

    def _reference_value(self, cost: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The OT value of the reference step, differentiable in ``a`` (see ``gradient`` and ``stop``)."""
        if self.gradient == "envelope":
            return entropic_ot(cost, a, eps=self.eps, tol=self.tol, max_iter=self.max_iter, method=self.solver).value
        if self.stop == "tol":  # <pi, C> differentiated through POT's Sinkhorn iterations, run to tol
            return entropic_ot_linear_unrolled(cost, a, eps=self.eps, tol=self.tol, max_iter=self.max_iter)
        res = authors_sinkhorn(cost, a, eps=self.eps, threshold=self.stop_threshold, window=self.stop_window)
        self._stats[0] += 1
        self._stats[1] += res.n_iter
        self._stats[2] += res.missed
        self._stats[4] = torch.maximum(self._stats[4], res.n_iter.to(self._stats.dtype))
        return res.value_linear

    def epoch_stats(self, reset: bool = True) -> dict:
        """What the OT steps since the last call counted on the device (one read, one host sync):
        ``steps`` with the authors' rule, their ``mean_iterations`` and ``max_iterations``, and
        ``missed`` (steps whose rule did not stop within ``stop_window``).

        Raises :class:`~otreweight.OTReweightError` when a step produced a non-finite score."""
        steps, iters, missed, nonfinite, most = (float(v) for v in self._stats.tolist())
        if reset:
            self._stats.zero_()
        if nonfinite:
            raise OTReweightError(f"the OT step produced {int(nonfinite)} non-finite score(s) this epoch; lower lr "
                                  "(OT step size) or raise eps, and check the features for extreme values")
        return {"steps": int(steps), "mean_iterations": iters / steps if steps else float("nan"),
                "max_iterations": int(most), "missed": int(missed)}

    def _cost(self, features, labels, targets: MetaTargets, cols: torch.Tensor | None = None,
              check: bool = True) -> torch.Tensor:
        """The ``(n, m)`` cost in float64 (what Sinkhorn runs in). The feature part is one matrix
        product in the features' precision (float32 for float32 / half features, float64 for
        float64 ones) against the targets' unit rows, normalised once per targets object
        (:meth:`MetaTargets.unit_features`): at thousands of targets, casting and normalising every
        target per batch cost more than the product itself."""
        tlabels = targets.labels if cols is None else targets.labels[cols]
        if self.cost == "label":
            return cost_matrix("label", features.detach().to(torch.float64), labels, targets.features,
                               tlabels, self.num_classes, self.alpha, self.label_scale)
        if check:
            check_labels("labels", labels, self.num_classes)
            check_labels("target labels", tlabels, self.num_classes)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        f = F.normalize(features.detach().to(dtype), dim=1, eps=1e-12)
        g = targets.unit_features(dtype)
        alpha = 1.0 if self.cost == "feature" else self.alpha
        return combined_cost_unit(f, labels, g if cols is None else g[cols], tlabels, self.num_classes,
                                  alpha, self.label_scale, out_dtype=torch.float64)

    def _pair_cost(self, features, labels, targets: MetaTargets, rows: torch.Tensor, cols: torch.Tensor,
                   chunk: int = 8192) -> torch.Tensor:
        """``C[rows[k], cols[k]]`` for every ``k`` (float64, on the CPU), in chunks of ``chunk`` rows:
        the cost of each example to one target, without a row of the ``n x m`` matrix."""
        out = torch.empty(rows.shape[0], dtype=torch.float64)
        dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
        g = targets.unit_features(dtype) if self.cost != "label" else None
        feat_w = {"feature": 1.0, "label": 0.0}.get(self.cost, self.alpha)
        d = label_distance(self.num_classes, self.label_scale) * (1.0 - feat_w if self.cost == "combined" else 1.0)
        for i in range(0, rows.shape[0], chunk):
            r, c = rows[i:i + chunk], cols[i:i + chunk]
            diff = (labels[r.to(labels.device)].cpu() != targets.labels[c.to(targets.labels.device)].cpu())
            part = torch.zeros(r.shape[0], dtype=torch.float64)
            if g is not None:  # <f, g> / max(|f|, 1e-12) with g of unit norm: two passes, no (rows, d) temporary
                f = features[r.to(features.device)].detach().to(dtype)
                dot = torch.linalg.vecdot(f, g[c.to(g.device)])
                cos = (dot / torch.linalg.vector_norm(f, dim=1).clamp_min(1e-12)).to(torch.float64).cpu()
                part = feat_w * (1.0 - cos)
            out[i:i + chunk] = part + (d * diff if self.cost != "feature" else 0.0)
        return out

    def _solve(self, features, labels, targets: MetaTargets, start: torch.Tensor):
        """Loss weights ``a* S`` (``S = start.sum()``) of a solved objective, and its value."""
        start = start.to(torch.float64)
        scale = start.sum()
        solve = dict(eps=self.eps, lam=self.lam, tol=self.tol, max_iter=self.max_iter)
        if self.objective == "class_conditional":
            # each class present gets the same mass, whatever its count of examples or of targets,
            # and OT spreads it over the class's examples against that class's targets only: one
            # problem per class, solved class block by class block (never the n x m cost), with
            # the explicit minimiser for one target per class (class_conditional_blocks)
            check_labels("labels", labels, self.num_classes)
            res = class_conditional_blocks(
                lambda r, c: self._cost(features[r.to(features.device)], labels[r.to(labels.device)], targets,
                                        c.to(targets.labels.device)),
                lambda r, c: self._pair_cost(features, labels, targets, r, c),
                labels, targets.labels, self.num_classes, **solve)
            return res.weights.to(device=start.device) * scale, res.value
        self.check_size(features.shape[0], len(targets))
        cost = self._cost(features, labels, targets)
        if self.objective == "kl_regularized":
            # every class's targets carry the same total mass, whatever the meta counts
            b = balanced_target_mass(targets.labels.to(cost.device), self.num_classes)
            res = semi_relaxed_ot(cost, start / scale, b, **solve)
            return res.weights * scale, res.value
        raise OTReweightError(f"unknown objective {self.objective!r}")  # pragma: no cover - checked in __init__

    def check_size(self, n: int, m: int) -> None:
        """One line, before any work, when a dense solve of ``n`` examples against ``m`` targets
        would exceed :data:`~otreweight.transport.MAX_COST_ENTRIES` (the per-batch step, the
        ``kl_regularized`` solve; ``class_conditional`` is solved in class blocks and has no limit)."""
        if self.objective == "class_conditional":
            return
        if self.scope == "dataset":
            check_cost_size(n, m, f"objective='kl_regularized' with scope='dataset' on {n:,} training examples",
                            "use objective='class_conditional' (solved class by class in bounded memory) or "
                            "scope='batch'")
        else:
            check_cost_size(n, m, f"the OT step of a batch of {n:,} against {m:,} meta targets",
                            "use targets='prototype' (one target per class) or a smaller batch")

    def refresh(self, features: torch.Tensor, targets: MetaTargets) -> None:
        """Solve the weights of every training example at once (``scope="dataset"``).

        Parameters
        ----------
        features : torch.Tensor, shape (N, d)
            Features of the whole training set, row ``i`` for example id ``i``.
        targets : MetaTargets
            Meta targets, carrying uniform mass.
        """
        if self.scope != "dataset":
            raise OTReweightError("refresh solves on the whole training set; it needs scope='dataset'")
        if features.shape[0] != self.labels.shape[0]:
            raise OTReweightError(
                f"refresh needs the features of all {self.labels.shape[0]} training examples, got {features.shape[0]} rows"
            )
        self.check_size(features.shape[0], len(targets))
        for i in range(0, features.shape[0], 8192):
            # a sum is non-finite when an entry is (or when it overflows: then the exact check
            # decides): one pass, no (N, d) mask; half features are summed in float32
            part = features[i:i + 8192]
            if not part.is_floating_point():
                continue
            total = part.sum(dtype=torch.float32) if part.element_size() < 4 else part.sum()
            if not bool(torch.isfinite(total)):
                check_finite("training features", part)
        labels = self.labels.to(features.device)
        w, self.last_ot_value = self._solve(features, labels, targets, self.start.to(features.device))
        self.scores.copy_(w.to(self.scores))

    def loss_weights(self, idx: torch.Tensor) -> torch.Tensor:
        """Loss weights of a batch from its current scores (see ``weighting``)."""
        s = self.scores[idx.to(self.scores.device).long()]
        if self.weighting == "raw" or self.solved:
            return s.detach().clone()
        return (torch.softmax(s, dim=0) * s.shape[0]).detach()

    def weights(self, normalize: bool = False) -> torch.Tensor:
        """All learned per-example weights, shape ``(N,)``, on the CPU.

        ``normalize=False`` returns the raw scores (the weights of ``weighting="raw"``; for the
        solved objectives, the loss weights);
        ``normalize=True`` the softmax over the whole training set times ``N`` (mean 1), i.e. the
        relative mass each example would receive in a batch with all others (for the solved
        objectives: the loss weights rescaled to mean 1).
        """
        s = self.scores.detach().cpu()
        if normalize and self.solved:
            return (s.double() / s.double().sum() * s.shape[0]).float()
        if normalize:
            return torch.softmax(s.double(), dim=0).float() * s.shape[0]
        return s.clone()

    def class_summary(self, normalize: bool = False) -> dict[str, np.ndarray]:
        """Per-class ``count``, ``mean``, ``std``, ``min``, ``max`` of :meth:`weights`, and the
        ``start`` (initial) mean score of each class."""
        w = self.weights(normalize).numpy().astype(np.float64)
        start = self.initial_scores().numpy().astype(np.float64)
        y = self.labels.cpu().numpy()
        k = self.num_classes
        out = {name: np.full(k, np.nan) for name in ("mean", "std", "min", "max", "start")}
        count = out["count"] = np.bincount(y, minlength=k)
        has = count > 0
        # one pass over the examples per statistic, no loop over the classes (thousands at iNaturalist)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.bincount(y, w, k) / count
            out["mean"][has] = mean[has]
            out["std"][has] = np.sqrt(np.bincount(y, (w - mean[y]) ** 2, k) / count)[has]
            out["start"][has] = (np.bincount(y, start, k) / count)[has]
        if y.size:
            order = np.argsort(y, kind="stable")
            first = np.concatenate([[0], np.cumsum(count)[:-1]])[has]
            out["min"][has] = np.minimum.reduceat(w[order], first)
            out["max"][has] = np.maximum.reduceat(w[order], first)
        return out

    def extra_repr(self) -> str:
        return (
            f"n={self.scores.shape[0]}, K={self.num_classes}, init={self.init}, cost={self.cost}, "
            f"eps={self.eps}, steps={self.steps}, lr={self.lr}, weighting={self.weighting}"
            + (f", objective={self.objective}, scope={self.scope}, lam={self.lam}" if self.solved else "")
        )
