"""The data of a run: the source opened, the long-tailed split drawn (or read from a split file),
the modality's statistics and the loaders on the training device (:class:`Prepared`).

Everything here reads the config's ``data`` section, the seed and the model's name; nothing trains.
"""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import torch

from .._errors import OTReweightError
from ..config import DataConfig, RunConfig, as_run_config
from ..data.dataset import example_shape, fingerprint, has_arrays, subset
from ..data.longtail import long_tail_counts, make_long_tailed
from ..data.loaders import build_loader, raw_chunks, stats_sample
from ..data.modalities import MODALITIES, get_modality
from ..data.sources import ArrayDataset, load_dataset
from ..models import MODELS
from ..train.features import probe

def class_order(d, labels, num_classes: int) -> tuple[list | None, int | None]:
    """The profile's class order and ``n_max`` of ``data``: ``class_order: count`` ranks the classes
    by their training-pool size (largest first, ties by label), for naturally imbalanced sources,
    and with ``n_max: null`` takes the largest ``n_max`` every class can supply at that order (the
    profile's counts grow with ``n_max``: a bisection over :func:`long_tail_counts`)."""
    if d.class_order is None or d.profile == "given":
        return (None if d.class_order is None else _order_list(d.class_order, num_classes)), d.n_max
    pools = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes) - d.n_meta_per_class - d.n_val_per_class
    order = _order_list(d.class_order, num_classes, pools)
    if d.n_max is not None or pools.min() < 1:
        return order, d.n_max  # make_long_tailed names a class that is too small

    def fits(n: int) -> bool:
        try:
            counts = long_tail_counts(n, num_classes, d.imbalance_factor, d.profile)
        except OTReweightError:
            return False
        return all(counts[r] <= pools[c] for r, c in enumerate(order))

    lo, hi = 0, int(pools.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return order, (lo or int(pools.min()))


def _order_list(order, num_classes: int, pools=None) -> list:
    if order == "count":
        return [int(c) for c in np.argsort(-np.asarray(pools), kind="stable")]
    return [int(c) for c in order]


class Prepared:
    """The splits of one run as loaders on the training device, and how inputs were normalised.

    The long-tailed split is drawn from the training pool's labels alone; the modality of the
    source computes the normalisation statistics on the long-tailed training split, converts
    inputs and supplies the augmentation; ``data.loader`` chooses in-memory or streamed loaders
    (the meta set, small by construction, is always in memory).
    """

    def __init__(self, d: DataConfig, seed: int, model_name: str, dataset: ArrayDataset, device: torch.device) -> None:
        self.modality_options = modality_options(d, model_name, dataset.modality)  # its one-line errors before any work
        self.classes = list(dataset.classes)
        pool, test = dataset.split("train"), dataset.split("test")
        # a source with its own validation file (image_list's val): validation as given, nothing carved
        self.given_val = dataset.split("val") if getattr(dataset, "has_val", False) else None
        _check_test_classes(pool.labels, test.labels, self.classes)
        #: ``{"path", "sha256"}`` of ``data.split_file`` when the split was read from it, else None
        self.split_file = None
        self.split = draw_split(d, seed, pool, test, self.given_val, self.classes)
        if d.split_file:
            from ..data.splitfile import file_sha256

            self.split_file = {"path": str(Path(d.split_file).expanduser().absolute()),
                               "sha256": file_sha256(Path(d.split_file).expanduser())}
        #: the data's fingerprint (training pool, test split, a given validation split): resume checks it
        self.fingerprint = fingerprint(pool, test, *([self.given_val] if self.given_val is not None else []))
        self.test_counts = np.bincount(dataset.y_test, minlength=dataset.num_classes)
        self.modality = get_modality(dataset.modality, **self.modality_options)
        self.pool, self.device, self.data_cfg = pool, device, d
        #: per-example transforms in the stream workers (large images: resize / crop), or None
        self.transforms = self.modality.worker_transforms(d)
        train = subset(pool, self.split.train)
        if has_arrays(train) and self.transforms is None:
            self.stats = self.modality.stats(train.arrays()[0], d.normalize)
        elif not self.modality.stats_need_data(d.normalize):
            self.stats = self.modality.stats_from_chunks(iter(()), d.normalize)  # fixed: no pass over the data
        else:  # lazy or transformed: one pass over (at most STATS_SAMPLE of) the training images, in the workers
            self.stats = self.modality.stats_from_chunks(
                raw_chunks(stats_sample(train), 512, d.num_workers, self.transforms), d.normalize)
        self.mean, self.std = self.stats.get("mean"), self.stats.get("std")
        self.train = self._loader(train, "train")
        self.val = self._loader(self.given_val if self.given_val is not None else subset(pool, self.split.val), "val")
        self.meta = self._loader(subset(pool, self.split.meta), "meta", mode="memory")
        self.test = self._loader(test, "test")
        self.augment = self.modality.augment(d, self.stats)
        self.example_shape = example_shape(train)
        if d.bucket_by_length:
            self._bucket(self.train, train)

    def _bucket(self, loader, split) -> None:
        """Let the training sampler batch ``loader``'s examples by length (``data.bucket_by_length``)."""
        if loader.lengths is None:
            fn = getattr(self.modality, "lengths", None)
            if fn is None or not has_arrays(split):
                raise OTReweightError(f"data.bucket_by_length needs sequences (the tokens modality); these data are "
                                      f"{self.modality.name} inputs: set it to false")
            loader.lengths = torch.as_tensor(fn(split.arrays()[0], self.stats))
        loader.bucket = True

    def _loader(self, split, name: str, mode: str | None = None):
        if self.transforms is not None and self.transforms.train is not None and name.startswith("train"):
            mode = "stream"  # random-resized crops are drawn per example in the workers
        return build_loader(split, self.modality, self.stats, self.device, mode or self.data_cfg.loader,
                            self.data_cfg.num_workers, name, transforms=self.transforms)

    def train_with_meta(self):
        """The training set with the meta set appended (ids 0..N+M-1; built once, so its features
        can be shared)."""
        if not hasattr(self, "_train_with_meta"):
            idx = np.concatenate([self.split.train, self.split.meta])
            self._train_with_meta = self._loader(subset(self.pool, idx), "train+meta")
            if self.data_cfg.bucket_by_length:
                self._bucket(self._train_with_meta, subset(self.pool, idx))
        return self._train_with_meta

    def model_kwargs(self) -> dict:
        return self.modality.model_kwargs(self.example_shape, self.stats)

    def close(self) -> None:
        """Stop the worker processes of streamed loaders."""
        for loader in (self.train, self.val, self.meta, self.test, getattr(self, "_train_with_meta", None)):
            if loader is not None:
                loader.close()


def draw_split(d: DataConfig, seed: int, pool, test, given_val, classes: list):
    """The :class:`~otreweight.data.longtail.LongTailSplit` of a run: read from ``data.split_file``
    (checked against the data: the first mismatch is one line), else drawn from the training pool's
    labels with the config's profile and seed."""
    k = len(classes)
    if d.split_file:
        from ..data.splitfile import check_against, read_split_file

        table = read_split_file(d.split_file)
        return check_against(table, pool, test, given_val, classes, f"split file {d.split_file}")
    n_val = 0 if given_val is not None else d.n_val_per_class
    order, n_max = class_order(d, pool.labels, k)
    try:
        split = make_long_tailed(
            pool.labels, d.imbalance_factor, profile=d.profile, n_meta_per_class=d.n_meta_per_class,
            n_val_per_class=n_val, n_max=n_max, num_classes=k, seed=seed,
            class_order=order, allow_cut=d.allow_cut,
        )
    except OTReweightError as err:
        raise _with_class_name(err, classes, d.profile) from None
    if given_val is not None:  # split.json reports the given validation file's counts
        split.val_counts = np.bincount(np.asarray(given_val.labels, dtype=np.int64), minlength=k)
    return split


def _check_test_classes(train_labels, test_labels, classes: list) -> None:
    """A test label the training split never holds is the test file's fault, named as such."""
    k = len(classes)
    train = np.bincount(np.asarray(train_labels, dtype=np.int64), minlength=k)
    test = np.bincount(np.asarray(test_labels, dtype=np.int64), minlength=k)
    only = np.flatnonzero((train[:k] == 0) & (test[:k] > 0))
    if only.size:
        c = int(only[0])
        raise OTReweightError(
            f"the test split holds {int(test[only].sum())} example(s) of {only.size} class(es) the training split lacks "
            f"(e.g. label {c} ({classes[c]!r}), {int(test[c])} test example(s)): fix the test labels, or add training "
            "examples of that class")


def _with_class_name(err: OTReweightError, classes: list, profile: str) -> OTReweightError:
    """A split error about ``class <i>`` naming the class, and pointing at the ``given`` profile
    for a class too small for the meta and validation sets."""
    msg = str(err)
    m = re.match(r"class (\d+) ", msg)
    if m and int(m.group(1)) < len(classes):
        msg = msg.replace(f"class {m.group(1)} ", f"class {m.group(1)} ({classes[int(m.group(1))]!r}) ", 1)
        if "too few for" in msg and profile != "given":
            msg += ", or keep the training set as given (data.profile: given), which spares what a small class can"
    return OTReweightError(msg)


def modality_options(d: DataConfig, model_name: str, modality: str) -> dict:
    """``data.modality_options`` with the defaults the model asks of its inputs filled in where
    they are unset or ``auto`` (an ``hf/`` model's own tokenizer)."""
    opts = dict(d.modality_options or {})
    factory = MODELS.get(model_name) if model_name in MODELS else None
    hint = getattr(factory, "modality_defaults", None)
    if hint is not None and modality in MODALITIES:
        accepted = inspect.signature(MODALITIES.get(modality)).parameters
        for key, value in hint(model_name).items():
            if key in accepted and opts.get(key, "auto") == "auto":
                opts[key] = value
    if modality in MODALITIES:  # (an unknown name fails in get_modality, naming the registered ones)
        kind = MODALITIES.get(modality)
        kind.check_data_config(d)
        if kind.takes_crop_size and (d.crop_size is not None or d.augment in kind.crop_augments):
            opts.setdefault("crop_size", d.crop_size)  # the evaluation resize + crop: saved with the modality
            opts.setdefault("resize_size", d.resize_size)
    return opts


def open_source(d: DataConfig, lazy: bool = False):
    """The data source of the ``data`` section ``d`` (``lazy``: file sources listed, not decoded)."""
    extra = {"image_size": tuple(d.image_size)} if d.image_size else {}
    extra.update(d.source_options or {})
    return load_dataset(d.source, root=d.root, download=d.download, cache_dir=d.cache_dir, lazy=lazy, **extra)


def _source_pools(dataset) -> tuple:
    """``(training pool, test split, the source's own validation split or None, classes)``."""
    given_val = dataset.split("val") if getattr(dataset, "has_val", False) else None
    return dataset.split("train"), dataset.split("test"), given_val, list(dataset.classes)


def export_split(cfg: RunConfig | dict, output) -> dict:
    """Write the split a run of ``cfg`` would use (drawn, or ``data.split_file`` checked) to ``output``
    (see :mod:`otreweight.data.splitfile`); returns ``{"path", "sha256", "data_sha256", "split"}``."""
    from ..data.splitfile import build_table, write_split_file

    cfg = as_run_config(cfg)
    out = Path(output).expanduser()
    if out.is_dir():
        raise OTReweightError(f"--output {output} is a folder; give a file name (e.g. split.tsv)")
    if not out.absolute().parent.is_dir():
        raise OTReweightError(f"--output {output}: folder {out.absolute().parent} does not exist; create it first")
    dataset = open_source(cfg.data, lazy=True)  # file sources: the files as stored (paths and bytes); the same order
    pool, test, given_val, classes = _source_pools(dataset)
    split = draw_split(cfg.data, cfg.seed, pool, test, given_val, classes)
    table = build_table(split, pool, test, given_val, classes, cfg.data.to_dict())
    sha = write_split_file(out, table)
    return {"path": out, "sha256": sha, "data_sha256": table.header["data_sha256"], "split": split}


def verify_data(cfg: RunConfig | dict, split_file=None) -> tuple[list[str], str]:
    """``(problems, summary)`` of the data of ``cfg`` against a split file (default ``data.split_file``)."""
    from ..data.splitfile import read_split_file, verify

    cfg = as_run_config(cfg)
    split_file = split_file or cfg.data.split_file
    if not split_file:
        raise OTReweightError("no split file: pass --split-file <file> or set data.split_file in the config")
    table = read_split_file(split_file)
    dataset = open_source(cfg.data, lazy=True)
    pool, test, given_val, classes = _source_pools(dataset)
    problems = verify(table, pool, test, given_val, classes)
    sizes = ", ".join(f"{name} {len(p['label'])}" for name, p in table.pools.items())
    summary = (f"ok: {cfg.data.source} matches {split_file}: {sum(len(p['label']) for p in table.pools.values())} "
               f"examples ({sizes}), {len(classes)} classes, data sha256 {table.header['data_sha256'][:16]}...")
    return problems, summary


def check_fits(model, prep: Prepared, name: str) -> None:
    """One forward pass of two training examples: a model that cannot take the data's inputs, or
    gives the wrong number of classes, is one line before any training."""
    mod = prep.modality
    out = probe(model, next(prep.train.chunks(2)), mod.channels_last, f"the {mod.name} inputs of this data",
                f"model {name!r}", f"choose a model for {mod.name} data, e.g. {mod.default_model}", prep.example_shape)
    if out.dim() != 2 or out.shape[1] != len(prep.classes):
        raise OTReweightError(f"model {name!r} gives {tuple(out.shape[1:])} outputs per example for "
                              f"{len(prep.classes)} classes")


