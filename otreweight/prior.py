r"""Deployment priors (label shift): estimate the class prior of unlabelled data, score and predict under it.

Under label shift the class-conditional inputs stay as in training, :math:`p_t(x\mid y) = p_s(x\mid y)`,
and only the class prior changes, :math:`p_s(y) \to q(y)`. Then

* a model whose scores are calibrated posteriors under the source prior :math:`p_s` becomes the
  posterior under :math:`q` by :math:`p_t(y\mid x) \propto p_s(y\mid x)\, q_y / p_{s,y}`, i.e. by
  **logit adjustment** :math:`z_y + \log q_y - \log p_{s,y}` (:func:`adjust_logits`);
* :func:`estimate_prior` estimates :math:`q` from the scores of unlabelled target data:

  - ``method="em"``: the EM of Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a
    classifier to new a priori probabilities". From :math:`q^{(0)} = p_s`, repeat
    :math:`r_{ic} \propto p_s(c\mid x_i)\, q_c / p_{s,c}` (E) and :math:`q_c = \frac1n \sum_i r_{ic}` (M);
  - ``method="bbse"``: black-box shift estimation (Lipton, Wang & Smola, ICML 2018). With the
    joint confusion matrix of hard predictions on labelled validation data,
    :math:`C_{jk} = P_{val}(\hat y = j, y = k)`, and the distribution of hard predictions on the
    target data :math:`\mu_j`, solve :math:`C w = \mu` for the importance weights
    :math:`w_k = q_k / p_{val,k}` (least squares, negative weights clipped to 0) and return
    :math:`q = w \odot p_{val}`, renormalised;

* :func:`prior_accuracy` scores predictions under a target prior: the per-class accuracies
  (recalls) weighted by it, :math:`\sum_c q_c\, \mathrm{recall}_c` - the accuracy expected on a test
  set whose classes follow :math:`q` (uniform :math:`q`: balanced accuracy).

A prior is a length-:math:`K` vector of non-negative numbers summing to 1 (:func:`check_prior`,
:func:`read_prior`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._errors import OTReweightError, check_choice

#: How far from 1 a prior's sum may be (rounding in a file of printed numbers).
SUM_TOL = 1e-3


def check_prior(prior, num_classes: int | None = None, what: str = "prior") -> np.ndarray:
    """``prior`` as a float64 vector, or a one-line error: wrong length, negative or non-finite
    entry, a sum other than 1 (within :data:`SUM_TOL`). Returned renormalised to sum exactly to 1."""
    try:
        p = np.asarray(prior, dtype=np.float64)
    except (TypeError, ValueError):
        raise OTReweightError(f"{what} must be a list of numbers, one per class") from None
    if p.ndim != 1 or p.size == 0:
        raise OTReweightError(f"{what} must be a 1-d list of numbers, one per class, got shape {p.shape}")
    if num_classes is not None and p.size != num_classes:
        raise OTReweightError(f"{what} has {p.size} entries but the model has {num_classes} classes; give one per class")
    if not np.isfinite(p).all():
        raise OTReweightError(f"{what} has a non-finite entry; give numbers >= 0 that sum to 1")
    if (p < 0).any():
        i = int(np.flatnonzero(p < 0)[0])
        raise OTReweightError(f"{what} has a negative entry ({p[i]:g} for class {i}); give numbers >= 0 that sum to 1")
    if abs(p.sum() - 1.0) > SUM_TOL:
        raise OTReweightError(f"{what} sums to {p.sum():.6g}, not 1; give class frequencies that sum to 1")
    return p / p.sum()


def read_prior(path, classes=None) -> np.ndarray:
    """A prior from a file: a YAML / JSON list of numbers (in class order), a mapping of class name
    to number (every class named), or plain numbers separated by spaces, commas or new lines."""
    from .utils import load_yaml

    p = Path(path)
    if not p.is_file():
        raise OTReweightError(f"prior file {path} does not exist; give uniform, train, estimate or a file of numbers")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError):
        raise OTReweightError(f"cannot read prior file {path} as text") from None
    try:
        data = load_yaml(text)
    except Exception:  # noqa: BLE001 - any YAML error: try plain numbers below
        data = None
    if isinstance(data, dict):
        if classes is None:
            raise OTReweightError(f"prior file {path} maps names to numbers; give a list in class order instead")
        names = [str(c) for c in classes]
        keys = {str(k): v for k, v in data.items()}
        missing = [n for n in names if n not in keys]
        extra = sorted(set(keys) - set(names))
        if missing or extra:
            raise OTReweightError(f"prior file {path}: " + (f"no entry for class(es) {', '.join(missing[:5])}" if missing
                                  else f"unknown class(es) {', '.join(extra[:5])}") + f"; the classes are {', '.join(names[:20])}")
        data = [keys[n] for n in names]
    if not isinstance(data, list):
        try:
            data = [float(t) for t in text.replace(",", " ").split()]
        except ValueError:
            raise OTReweightError(f"prior file {path} is not a list of numbers (one per class, in class order)") from None
    return check_prior(data, None if classes is None else len(classes), f"prior from {path}")


def _probs(probs, what: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise OTReweightError(f"{what} must be an (n, K) array of class probabilities with n >= 1, K >= 2; got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise OTReweightError(f"{what} must hold finite probabilities >= 0 (give softmax outputs, not logits)")
    s = p.sum(1, keepdims=True)
    if (np.abs(s - 1.0) > 1e-3).any():
        raise OTReweightError(f"{what}: every row must sum to 1 (give softmax outputs, not logits)")
    return p / s


def estimate_prior(probs, source_prior=None, method: str = "em", val_probs=None, val_labels=None,
                   max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    """The class prior of the unlabelled examples whose predicted probabilities are ``probs``.

    Parameters
    ----------
    probs : (n, K) array
        Softmax outputs of the model on the unlabelled (target) data.
    source_prior : (K,) array, optional
        The prior the scores were trained under (``em``: e.g. the training class frequencies of a
        cross-entropy model); ``None``: uniform (a model trained to be balanced).
    method : ``"em"`` (Saerens et al. 2002) or ``"bbse"`` (Lipton et al. 2018), see the module docstring.
    val_probs, val_labels : (m, K) array and (m,) ints
        ``bbse`` only: the model's probabilities on labelled validation data drawn like the
        training data (their labels give the confusion matrix and :math:`p_{val}`).
    max_iter, tol : EM iterations and the L1 change of the prior at which EM stops.
    """
    check_choice("prior estimation method", method, ("em", "bbse"))
    p = _probs(probs, "probs")
    k = p.shape[1]
    if method == "em":
        ps = np.full(k, 1.0 / k) if source_prior is None else check_prior(source_prior, k, "source_prior")
        if (ps <= 0).any():
            raise OTReweightError("source_prior must be > 0 for every class (EM divides by it)")
        q = ps.copy()
        for _ in range(int(max_iter)):
            r = p * (q / ps)
            r /= np.clip(r.sum(1, keepdims=True), 1e-300, None)
            new = r.mean(0)
            done = np.abs(new - q).sum() < tol
            q = new
            if done:
                break
        return q / q.sum()
    if val_probs is None or val_labels is None:
        raise OTReweightError("method='bbse' needs val_probs and val_labels (labelled validation data)")
    vp = _probs(val_probs, "val_probs")
    y = np.asarray(val_labels).astype(np.int64)
    if vp.shape[1] != k or y.shape != (vp.shape[0],) or y.min() < 0 or y.max() >= k:
        raise OTReweightError(f"val_probs must be (m, {k}) and val_labels m labels in 0..{k - 1}")
    m = len(y)
    conf = np.zeros((k, k))
    np.add.at(conf, (vp.argmax(1), y), 1.0 / m)  # C[j, c] = P(yhat = j, y = c)
    mu = np.bincount(p.argmax(1), minlength=k) / p.shape[0]
    w = np.linalg.lstsq(conf, mu, rcond=None)[0]
    q = np.clip(w, 0.0, None) * np.bincount(y, minlength=k) / m
    if q.sum() <= 0:
        raise OTReweightError("bbse found no positive class weight; the validation confusion matrix is degenerate")
    return q / q.sum()


def adjust_logits(logits, source_prior, target_prior):
    r"""Logit adjustment toward a target prior: :math:`z + \log q - \log p_s` (a class of prior 0 is never
    predicted). Works on NumPy arrays and torch tensors."""
    shift = np.log(np.clip(np.asarray(target_prior, np.float64), 1e-300, None)) - np.log(
        np.clip(np.asarray(source_prior, np.float64), 1e-300, None))
    shift[np.asarray(target_prior) <= 0] = -np.inf
    if hasattr(logits, "new_tensor"):  # torch
        return logits + logits.new_tensor(shift)
    return np.asarray(logits) + shift


def prior_accuracy(y_true, y_pred, prior) -> float:
    r""":math:`\sum_c q_c\,\mathrm{recall}_c` over the classes with a test example, ``prior`` renormalised
    over them (a class absent from the labels cannot be scored)."""
    yt = np.asarray(y_true).astype(np.int64)
    yp = np.asarray(y_pred).astype(np.int64)
    q = np.asarray(prior, dtype=np.float64)
    k = q.size
    support = np.bincount(yt, minlength=k)[:k]
    hits = np.bincount(yt[yt == yp], minlength=k)[:k]
    present = support > 0
    if q[present].sum() <= 0:
        raise OTReweightError("the prior puts no mass on any class of the evaluated labels")
    recall = np.where(present, hits / np.maximum(support, 1), 0.0)
    return float((q[present] * recall[present]).sum() / q[present].sum())


__all__ = ["adjust_logits", "check_prior", "estimate_prior", "prior_accuracy", "read_prior"]
