r"""OT re-weighting for scikit-learn users: a sample weighter and a meta-estimator.

:class:`OTSampleWeighter` learns one mass :math:`a_i` per training example by optimal transport
between the weighted training set and balanced meta targets. With :math:`z = T(x)` the features
after a transformer :math:`T` (a :class:`~sklearn.preprocessing.StandardScaler` for dense input,
the rows as given for sparse input such as TF-IDF), the cost between an example and a target is
:math:`C_{ij} = \alpha\,(1-\cos(z_i, z'_j)) + (1-\alpha)\,d\,[y_i \ne y'_j]` (see
:mod:`otreweight.cost`) and the targets are the per-class means of the meta features
(``"prototype"``) or every meta example (``"whole"``, see :mod:`otreweight.targets`). Three
objectives (``objective``):

* ``"class_conditional"`` (default): every class receives exactly :math:`1/K` of the mass (balanced
  by construction, whatever the class counts and the meta counts) and inside each class
  :math:`a_c = \arg\min \mathrm{OT}_\varepsilon(a_c, b_c) + \lambda\,\mathrm{KL}(a_c\,\|\,u_c)`
  against that class's targets: the problem ``OTReweighter(objective="class_conditional")`` solves,
  by the same code (:func:`otreweight.transport.class_conditional_blocks`); examples far from their
  class's meta examples lose weight. ``lam = inf`` is exactly ``class_weight="balanced"``.
* ``"kl_regularized"``: :math:`a = \arg\min \mathrm{OT}_\varepsilon(a, b) + \lambda\,\mathrm{KL}(a\,\|\,p)`
  over all examples and targets, :math:`p` the class-balanced prior (``init``); the label cost may
  move mass between classes (:func:`otreweight.transport.semi_relaxed_ot`).
* ``"descent"``: gradient steps on :math:`\min_{a=\mathrm{softmax}(s)} \mathrm{OT}_\varepsilon(a, b)`
  (the objective of the paper), stopped by ``max_iter`` / ``n_iter_no_change``. Its minimiser is
  explicit and degenerate for long tails: a target of a rare class spreads its mass over a head
  class's examples as soon as that class outnumbers the rare one by more than about
  :math:`e^{\Delta C/\varepsilon}`, so run long it drains the rare classes.

The two solved objectives are solved to convergence by POT's unbalanced Sinkhorn (no early stop);
any fit that a stopping rule or ``max_iter`` ends before convergence issues a
:class:`~sklearn.exceptions.ConvergenceWarning`.

:class:`OTReweightedClassifier` fits the weighter, then a clone of any scikit-learn classifier
whose ``fit`` accepts ``sample_weight``, with the learned weights.

Layout: :mod:`~otreweight.sklearn.weighter` (the estimator), :mod:`~otreweight.sklearn.classifier`
(the meta-estimator), :mod:`~otreweight.sklearn.objectives` (features, costs and the three
objectives on numpy / scipy.sparse rows). The imbalance metrics of :mod:`otreweight.metrics` are
re-exported here for scikit-learn users.
"""
from __future__ import annotations

from ..metrics import (
    classification_report_imbalanced,
    geometric_mean_score,
    imbalanced_scores,
    per_class_table,
)
from .classifier import OTReweightedClassifier
from .weighter import SKLEARN_INITS, SKLEARN_OBJECTIVES, SKLEARN_TARGETS, MetaSetWarning, OTSampleWeighter

__all__ = [
    "MetaSetWarning",
    "OTReweightedClassifier",
    "OTSampleWeighter",
    "classification_report_imbalanced",
    "geometric_mean_score",
    "imbalanced_scores",
    "per_class_table",
]
