r"""Long-tailed splits from any labelled arrays.

Per class :math:`c` (in label order, or a given order), the examples are shuffled with a seeded
RNG; the first ``n_meta`` become the balanced **meta** set, the next ``n_val`` the balanced
**validation** split, and the long-tailed **train** set keeps the first :math:`n_c` of the rest, with

* ``profile="exp"``: :math:`n_c = \lfloor n_{max}\, \mathrm{IF}^{-c/(K-1)} \rfloor`;
* ``profile="step"``: :math:`n_c = n_{max}` for the first :math:`\lfloor K/2 \rfloor` classes and
  :math:`\lfloor n_{max} / \mathrm{IF} \rfloor` for the rest,

where :math:`\mathrm{IF} = n_{max}/n_{min} \ge 1` is the imbalance factor (the LDAM-DRW generator).
:math:`n_{max}` defaults to the smallest per-class pool left after meta and validation, so every
class can supply its count. The meta set is taken *before* long-tailing (the standard protocol) and
the three sets are disjoint. The test set is never touched.

``profile="given"`` keeps a naturally long-tailed training pool as it is (no example is dropped;
``imbalance_factor`` and ``n_max`` are ignored). A class of :math:`n` examples gives

.. math:: m_c = \min(n_{meta}, \lfloor (n - 1) / 3 \rfloor), \qquad
          v_c = \min(n_{val}, \lfloor (n - 1 - m_c) / 2 \rfloor)

meta and validation examples, so every class keeps at least one training example, and at least as
many as it gives to validation: classes of 1, 2 or 3 examples give (meta, val, train) = (0, 0, 1),
(0, 0, 2) and (0, 1, 2); a class of 4 gives (1, 1, 2). The per-class counts are in ``split.json``.
OT takes the targets of such a class from its own training examples (see :mod:`otreweight.methods.ot_reweight`);
the other meta-learners (MW-Net, L2RW) need a meta example of every class and refuse such classes with one line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._errors import OTReweightError, check_choice, check_labels

PROFILES = ("exp", "step", "given")


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float, profile: str = "exp") -> list[int]:
    """Per-class counts of a long-tailed profile (see the module docstring)."""
    check_choice("imbalance profile", profile, PROFILES)
    try:
        imf = float(imbalance_factor)
    except (TypeError, ValueError):
        raise OTReweightError(f"imbalance factor must be a number >= 1, got {imbalance_factor!r}") from None
    if not np.isfinite(imf) or imf < 1:
        raise OTReweightError(f"imbalance factor IF = n_max / n_min must be >= 1, got {imbalance_factor}")
    if num_classes < 2:
        raise OTReweightError(f"a long-tailed split needs at least 2 classes, got {num_classes}")
    if n_max < 1:
        raise OTReweightError(f"n_max must be >= 1, got {n_max}")
    if profile == "exp":
        counts = [int(n_max * (1.0 / imf) ** (c / (num_classes - 1.0))) for c in range(num_classes)]
    else:
        half = num_classes // 2
        counts = [int(n_max)] * half + [int(n_max / imf)] * (num_classes - half)
    if min(counts) < 1:
        raise OTReweightError(
            f"IF {imf:g} with n_max {n_max} leaves a class with no training example; lower IF or raise n_max"
        )
    return counts


@dataclass
class LongTailSplit:
    """Indices into the original arrays for the long-tailed train set, meta set and validation split.

    Attributes
    ----------
    train, meta, val : np.ndarray of int64
        Disjoint index arrays.
    train_counts, meta_counts, val_counts : np.ndarray of int64, shape (K,)
        Examples per class in each set.
    imbalance_factor, profile, n_max, seed
        The settings that produced the split.
    """

    train: np.ndarray
    meta: np.ndarray
    val: np.ndarray
    train_counts: np.ndarray
    meta_counts: np.ndarray
    val_counts: np.ndarray
    imbalance_factor: float
    profile: str
    n_max: int
    seed: int
    class_order: list[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return int(self.train_counts.shape[0])

    def summary(self, class_names: list[str] | None = None) -> str:
        """A table of per-class counts, one line per class."""
        names = class_names or [str(c) for c in range(self.num_classes)]
        width = max(5, max(len(n) for n in names))
        lines = [
            f"long-tailed split: profile={self.profile} IF={self.imbalance_factor:g} n_max={self.n_max} seed={self.seed}",
            f"{'class':<{width}}  {'train':>7}  {'meta':>5}  {'val':>5}",
        ]
        for c in range(self.num_classes):
            lines.append(
                f"{names[c]:<{width}}  {self.train_counts[c]:>7d}  {self.meta_counts[c]:>5d}  {self.val_counts[c]:>5d}"
            )
        lines.append(
            f"{'total':<{width}}  {self.train_counts.sum():>7d}  {self.meta_counts.sum():>5d}  {self.val_counts.sum():>5d}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "imbalance_factor": self.imbalance_factor,
            "profile": self.profile,
            "n_max": self.n_max,
            "seed": self.seed,
            "train_counts": self.train_counts.tolist(),
            "meta_counts": self.meta_counts.tolist(),
            "val_counts": self.val_counts.tolist(),
        }


def _check_sizes(**sizes) -> None:
    """One line for a per-class size that is not an integer >= 0."""
    for name, v in sizes.items():
        try:
            ok = not isinstance(v, (bool, str)) and int(v) == v and v >= 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise OTReweightError(f"{name} must be an integer >= 0, got {v!r}")


def _check_pools(available: np.ndarray, n_meta: int, n_val: int) -> None:
    """One line for the first class without an example left for training after meta and validation."""
    short = [c for c in range(len(available)) if available[c] <= n_meta + n_val]
    if not short:
        return
    c = short[0]
    if available[c] == 0:
        raise OTReweightError(
            f"class {c} has no examples in the training pool: if the labels skip values, map them to 0..K-1 "
            "without gaps (e.g. sklearn.preprocessing.LabelEncoder); otherwise add examples of that class"
        )
    raise OTReweightError(
        f"class {c} has {available[c]} examples, too few for {n_meta} meta + "
        f"{n_val} validation examples and at least one training example; "
        "lower n_meta_per_class / n_val_per_class"
    )


def _refuse_a_cut(available: np.ndarray, pools: np.ndarray, n_max: int, imbalance_factor, profile: str,
                  order: list) -> None:
    """One line when the pool is more imbalanced than ``imbalance_factor`` (the profile would cut it)."""
    ratio = available.max() / available.min()
    try:
        imf = float(imbalance_factor)
    except (TypeError, ValueError):
        return  # long_tail_counts names the bad value
    if not (imf >= 1 and ratio > imf):
        return
    try:
        counts = long_tail_counts(n_max, len(available), imbalance_factor, profile)
        kept = f"keep {sum(min(int(counts[r]), int(pools[c])) for r, c in enumerate(order))} of"
    except OTReweightError:
        kept = "leave a class without training examples, out of"
    raise OTReweightError(
        f"the training pool is more imbalanced than the profile asked for (classes of {available.min()} to "
        f"{available.max()} examples, {ratio:.3g}x apart, IF={imf:g}): profile={profile!r} "
        f"would cut its head classes and {kept} its {int(pools.sum())} training examples; keep it as it is with "
        "profile='given' (data.profile=given), or cut it on purpose with allow_cut=True (data.allow_cut=true)"
    )


def make_long_tailed(
    labels,
    imbalance_factor: float,
    *,
    profile: str = "exp",
    n_meta_per_class: int = 10,
    n_val_per_class: int = 20,
    n_max: int | None = None,
    num_classes: int | None = None,
    class_order=None,
    seed: int = 0,
    allow_cut: bool = False,
) -> LongTailSplit:
    """Split labelled examples into a long-tailed train set and balanced meta and validation sets.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Labels in ``0..K-1`` of the (usually balanced) training pool.
    imbalance_factor : float
        ``IF = n_max / n_min >= 1``.
    profile : {"exp", "step"}
        Shape of the class-count profile.
    n_meta_per_class, n_val_per_class : int
        Sizes of the balanced meta set and validation split, per class (``>= 0``).
    n_max : int, optional
        Count of the most frequent class; default the smallest per-class pool left after meta and
        validation.
    class_order : sequence of int, optional
        Which class gets rank ``r`` in the profile; default label order (class 0 the most frequent).
    seed : int
        Seeds the per-class shuffles.
    allow_cut : bool
        ``"exp"`` / ``"step"`` cut the head classes of a training pool that is *more* imbalanced
        than the profile asks for - its largest class over its smallest exceeds
        ``imbalance_factor`` (with ``imbalance_factor=1``: any unequal pool, every class cut to
        the smallest) - only when this is True; otherwise such a split is refused with a one-line
        error that suggests ``profile="given"``. A balanced pool (the standard protocol), or one
        less imbalanced than the requested factor, is long-tailed without it.

    Returns
    -------
    LongTailSplit
    """
    y = np.asarray(labels)
    if y.size == 0:
        raise OTReweightError("labels is empty; a long-tailed split needs labelled examples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise OTReweightError(f"seed must be an integer, got {seed!r}")
    k = check_labels("labels", y, num_classes)
    y = y.astype(np.int64)
    _check_sizes(n_meta_per_class=n_meta_per_class, n_val_per_class=n_val_per_class)
    order = list(range(k)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(k)):
        raise OTReweightError(f"class_order must be a permutation of 0..{k - 1}")
    available = np.bincount(y, minlength=k)
    if profile == "given":
        return _given_split(y, k, available, order, n_meta_per_class, n_val_per_class, seed)
    reserved = n_meta_per_class + n_val_per_class
    _check_pools(available, n_meta_per_class, n_val_per_class)
    pools = available - reserved
    if n_max is None:
        n_max = int(pools.min())
    if not allow_cut:
        _refuse_a_cut(available, pools, int(n_max), imbalance_factor, profile, order)
    counts_by_rank = long_tail_counts(int(n_max), k, imbalance_factor, profile)
    rng = np.random.default_rng(seed)
    train, meta, val = [], [], []
    train_counts = np.zeros(k, dtype=np.int64)
    for rank, c in enumerate(order):
        need = counts_by_rank[rank]
        if need > pools[c]:
            raise OTReweightError(
                f"class {c} needs {need} training examples at n_max={n_max} but only {pools[c]} are left "
                f"after meta and validation; lower n_max"
            )
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        meta.append(idx[:n_meta_per_class])
        val.append(idx[n_meta_per_class:reserved])
        train.append(idx[reserved : reserved + need])
        train_counts[c] = need
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64)  # noqa: E731
    return LongTailSplit(
        train=cat(train),
        meta=cat(meta),
        val=cat(val),
        train_counts=train_counts,
        meta_counts=np.full(k, n_meta_per_class, dtype=np.int64),
        val_counts=np.full(k, n_val_per_class, dtype=np.int64),
        imbalance_factor=float(imbalance_factor),
        profile=profile,
        n_max=int(n_max),
        seed=int(seed),
        class_order=order,
    )


def _given_split(y, k, available, order, n_meta, n_val, seed) -> "LongTailSplit":
    """``profile="given"``: meta and validation per class by the module docstring's rule, the rest trains."""
    empty = [c for c in range(k) if available[c] == 0]
    if empty:
        raise OTReweightError(
            f"class {empty[0]} has no examples in the training pool: if the labels skip values, map them to 0..K-1 "
            "without gaps (e.g. sklearn.preprocessing.LabelEncoder); otherwise add examples of that class"
        )
    rng = np.random.default_rng(seed)
    train, meta, val = [], [], []
    counts = {"train": np.zeros(k, np.int64), "meta": np.zeros(k, np.int64), "val": np.zeros(k, np.int64)}
    for c in order:
        n = int(available[c])
        m = min(int(n_meta), (n - 1) // 3)
        v = min(int(n_val), (n - 1 - m) // 2)
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        meta.append(idx[:m]), val.append(idx[m : m + v]), train.append(idx[m + v :])
        counts["meta"][c], counts["val"][c], counts["train"][c] = m, v, n - m - v
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64)  # noqa: E731
    tc = counts["train"]
    return LongTailSplit(
        train=cat(train), meta=cat(meta), val=cat(val), train_counts=tc, meta_counts=counts["meta"],
        val_counts=counts["val"], imbalance_factor=float(tc.max() / max(tc.min(), 1)), profile="given",
        n_max=int(tc.max()), seed=int(seed), class_order=order,
    )
