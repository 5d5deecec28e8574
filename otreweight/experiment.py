"""Config-driven runs: data source -> long-tailed split -> stage 1 -> stage-2 variants -> outputs.

A run is described by one YAML file (see ``configs/``) whose values can be overridden from the
command line (``--set stage1.epochs=15``, ``--set stage2.*.epochs=5``). The resolved config is saved
beside the run. Output folder layout::

    <output_dir>/
      config.yaml            resolved config
      split.json             per-class train / meta / val / test counts, thresholds
      stage1/                one folder per stage (stage1, stage2_<name>)
        metrics.jsonl        one line per epoch (train loss, lr, validation metrics, seconds)
        checkpoint.pt        written atomically every epoch: everything needed to resume
        model.safetensors    the validation-selected model's weights (safetensors: loading runs no code)
        model.json           its card: what rebuilds and scores it, the config, data fingerprint, metrics
        final.json           test metrics at the validation-selected and the last epoch
        predictions.npz      test labels and predictions (best and last)
        weights.npz          OT stages: learned and initial per-example scores, class-balanced weights
      results.json           every stage's final.json
      report.md, figures/    the report (``otreweight report``)

``--resume`` continues every unfinished stage from its checkpoint and skips finished ones; a
stage-1 checkpoint (``stage1.checkpoint``) can seed any number of stage-2 runs.

Per stage, ``meta_in_train: true`` adds the meta set to the training data of a method that does not
use it (``uses_meta = False``), so no method is starved of the labelled examples the meta-learners
see; ids stay ``0..N+M-1`` and the many/medium/few groups keep the long-tailed split's counts. A
stage-2 variant with ``start: scratch`` trains a freshly initialised model (the same
initialisation as stage 1) instead of starting from the stage-1 model: the end-to-end baselines.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from . import distributed as dist
from ._errors import OTReweightError, check_choice
from .class_weights import effective_number_weights
from .data.longtail import long_tail_counts, make_long_tailed
from .data.dataset import example_shape, has_arrays, subset
from .data.loaders import build_loader, raw_chunks, stats_sample
from .data.modality import MODALITIES, get_modality
from .data.sources import ArrayDataset, load_dataset
from .config import (FitConfig, RunConfig, as_run_config, config_dir, dump_config, load_config,  # noqa: F401
                     resolve_config_path)
from .data.dataset import fingerprint as data_fingerprint
from .loggers import create_loggers
from .outputs import OutputLock, check_output_dir, has_progress
from .train import FeatureCache, fit, predict_logits
from .train.checkpoint import read_checkpoint
from .train.features import probe
from .metrics import classification_metrics
from .model_file import CARD, read_model, save_model
from .methods import create_method
from .models import MODELS, create_model
from .registry import check_options
from .utils import atomic_save, load_yaml, pick_device, seed_everything

# ----------------------------------------------------------------------------- data
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

    def __init__(self, cfg: RunConfig, dataset: ArrayDataset, device: torch.device) -> None:
        d = cfg.data
        self.modality_options = modality_options(cfg, dataset.modality)  # its one-line errors before any work
        self.classes = list(dataset.classes)
        pool, test = dataset.split("train"), dataset.split("test")
        # a source with its own validation file (image_list's val): validation as given, nothing carved
        self.given_val = dataset.split("val") if getattr(dataset, "has_val", False) else None
        _check_test_classes(pool.labels, test.labels, self.classes)
        #: ``{"path", "sha256"}`` of ``data.split_file`` when the split was read from it, else None
        self.split_file = None
        self.split = draw_split(cfg, pool, test, self.given_val, self.classes)
        if d.split_file:
            from .data.splitfile import file_sha256

            self.split_file = {"path": str(Path(d.split_file).expanduser().absolute()),
                               "sha256": file_sha256(Path(d.split_file).expanduser())}
        self.modality = get_modality(dataset.modality, **self.modality_options)
        self.pool, self.device, self.data_cfg = pool, device, d
        #: per-example transforms in the stream workers (large images: resize / crop), or None
        self.transforms = self.modality.worker_transforms(d)
        train = subset(pool, self.split.train)
        if has_arrays(train) and self.transforms is None:
            self.stats = self.modality.stats(train.arrays()[0], d.normalize)
        elif self.modality.name == "image" and (d.normalize == "imagenet" or not d.normalize):
            self.stats = self.modality.stats_from_chunks(iter(()), d.normalize)  # fixed: no pass over the images
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


def draw_split(cfg: RunConfig, pool, test, given_val, classes: list):
    """The :class:`~otreweight.data.longtail.LongTailSplit` of a run: read from ``data.split_file``
    (checked against the data: the first mismatch is one line), else drawn from the training pool's
    labels with the config's profile and seed."""
    d, k = cfg.data, len(classes)
    if d.split_file:
        from .data.splitfile import check_against, read_split_file

        table = read_split_file(d.split_file)
        return check_against(table, pool, test, given_val, classes, f"split file {d.split_file}")
    n_val = 0 if given_val is not None else d.n_val_per_class
    order, n_max = class_order(d, pool.labels, k)
    try:
        split = make_long_tailed(
            pool.labels, d.imbalance_factor, profile=d.profile, n_meta_per_class=d.n_meta_per_class,
            n_val_per_class=n_val, n_max=n_max, num_classes=k, seed=cfg.seed,
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
    import re

    msg = str(err)
    m = re.match(r"class (\d+) ", msg)
    if m and int(m.group(1)) < len(classes):
        msg = msg.replace(f"class {m.group(1)} ", f"class {m.group(1)} ({classes[int(m.group(1))]!r}) ", 1)
        if "too few for" in msg and profile != "given":
            msg += ", or keep the training set as given (data.profile: given), which spares what a small class can"
    return OTReweightError(msg)


def feature_store(cfg: RunConfig):
    """The :class:`~otreweight.train.features.FeatureStore` of ``cfg.feature_store`` (``None``: in memory only)."""
    from .data.sources import default_cache_dir
    from .train.features import FeatureStore

    where = cfg.feature_store  # several processes: every rank reads the store, rank 0 alone writes it
    if where == "off" or (where == "auto" and cfg.stage1.trainable != "classifier" and not cfg.stage1.checkpoint):
        return None  # a backbone trained in this run: no other run has the same one
    return FeatureStore(default_cache_dir() / "features" if where == "auto" else where, cfg.feature_dtype)


def modality_options(cfg: RunConfig, modality: str) -> dict:
    """``data.modality_options`` with the defaults the model asks of its inputs filled in where
    they are unset or ``auto`` (an ``hf/`` model's own tokenizer)."""
    opts = dict(cfg.data.modality_options or {})
    factory = MODELS.get(cfg.model.name) if cfg.model.name in MODELS else None
    hint = getattr(factory, "modality_defaults", None)
    if hint is not None and modality in MODALITIES:
        accepted = inspect.signature(MODALITIES.get(modality)).parameters
        for key, value in hint(cfg.model.name).items():
            if key in accepted and opts.get(key, "auto") == "auto":
                opts[key] = value
    d = cfg.data
    if d.normalize == "imagenet" and modality != "image":
        raise OTReweightError(f"data.normalize: imagenet is for images; these data are {modality} inputs: use true "
                              "or false")
    if d.crop_size is not None or d.augment == "random_resized_crop":
        if modality != "image":
            raise OTReweightError(f"data.crop_size / augment: random_resized_crop are for images; these data are "
                                  f"{modality} inputs: remove them")
        opts.setdefault("crop_size", d.crop_size)  # the evaluation resize + crop: saved with the modality
        opts.setdefault("resize_size", d.resize_size)
    return opts


# What a model factory is told about its inputs, and the modality each argument belongs to.
INPUT_KINDS = {"in_features": "vector", "in_channels": "image", "vocab_size": "tokens", "in_dims": "points"}


def build_model(name: str, options: dict, num_classes: int, input_kwargs: dict):
    """Create a registered model, passing ``in_channels`` / ``in_features`` where its factory takes them."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    kw = {k: v for k, v in input_kwargs.items() if k in params}
    kinds = INPUT_KINDS
    needed = [k for k in kinds if k in params and params[k].default is inspect.Parameter.empty
              and k not in kw and k not in (options or {})]
    if needed and input_kwargs:
        given = next((kinds[k] for k in input_kwargs if k in kinds), "these")
        raise OTReweightError(f"model {name!r} takes {kinds[needed[0]]} inputs ({needed[0]}) but the data are "
                              f"{given} inputs; choose a model for {given} data")
    kw.update(options or {})
    check_options(f"model {name!r}", factory, {"num_classes": num_classes, **kw})
    return create_model(name, num_classes=num_classes, **kw)


# ----------------------------------------------------------------------------- run
def _write_json(path: Path, obj) -> None:
    atomic_save(json.dumps(obj, indent=2, default=_json_default), path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def model_bundle(cfg, prep: Prepared, state: dict) -> dict:
    """What ``otreweight evaluate`` needs to rebuild and score a model on new data."""
    return {
        "model": {"name": cfg.model.name, "options": cfg.model.options or {}},
        "num_classes": len(prep.classes),
        "classes": prep.classes,
        "input": {"modality": prep.modality.name, "modality_options": dict(prep.modality_options),
                  "stats": prep.stats, "mean": prep.mean, "std": prep.std,
                  "is_image": prep.modality.name == "image", **prep.model_kwargs(),
                  "model_kwargs": prep.model_kwargs(),
                  "source": str(cfg.data.source), "source_options": dict(cfg.data.source_options or {})},
        "train_counts": prep.split.train_counts.tolist(),
        "thresholds": {"many": cfg.data.many_threshold, "few": cfg.data.few_threshold},
        "config": cfg.to_dict(),
        "data_fingerprint": getattr(prep, "fingerprint", None),
        "state_dict": {k: v.detach().cpu() for k, v in state.items()},
    }


def run_stage(name, model, method, fit_cfg, prep: Prepared, cfg, out: Path, device, resume: bool, log,
              meta_in_train: bool = False, feature_cache: FeatureCache | None = None) -> dict:
    """Train one stage into ``out/name``; skip it if it already finished and ``resume`` is set.

    ``meta_in_train`` appends the meta set to the training data when ``method`` does not use it.
    ``feature_cache`` shares frozen-backbone features between classifier-only stages that start
    from the same model (see :func:`otreweight.engine.fit`).
    """
    sdir = out / name
    final_path = sdir / "final.json"
    main = dist.is_main()  # only rank 0 writes files; every rank trains and evaluates
    if resume and final_path.exists() and any((sdir / f).exists() for f in (CARD, "best.pt")):
        try:
            final = json.loads(final_path.read_text())
            bundle = _load_bundle(sdir)
        except (OSError, ValueError, OTReweightError):
            log(f"{name}: its final.json or model is damaged; finishing the stage again from its checkpoint")
        else:
            log(f"{name}: finished earlier, skipped (--resume)")
            model.load_state_dict(bundle["state_dict"])
            return final
    if main:
        sdir.mkdir(parents=True, exist_ok=True)

    loggers = create_loggers(cfg.log, out, name) if main else []  # log: tensorboard (rank 0 only)

    def on_epoch_end(epoch, record):
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in result_history(record))
        if main:
            atomic_save(lines, sdir / "metrics.jsonl")
        for logger in loggers:
            logger.log_epoch(record, method)
        v = record["val"]
        log(f"{name} epoch {record['epoch']}/{fit_cfg.epochs}: loss {record['train_loss']:.4f}  "
            f"val acc {100 * v['accuracy']:.2f}  bal.acc {100 * v['balanced_accuracy']:.2f}  ({record['seconds']:.1f} s)")

    history: list = []

    def result_history(record):
        history.append(record)
        return history

    ckpt = sdir / "checkpoint.pt"
    if resume and ckpt.exists():
        history.extend(read_checkpoint(ckpt)["history"])
        log(f"{name}: resuming from epoch {len(history)}")
    train = prep.train_with_meta() if meta_in_train and not method.uses_meta else prep.train
    if fit_cfg.trainable == "classifier" and prep.transforms is not None and prep.transforms.train is not None:
        log(f"{name}: the backbone is frozen, so its features are computed once from the evaluation crop; "
            f"data.augment: {cfg.data.augment} applies to whole-network stages")
    if name != "stage1" and (fit_cfg.accumulate_steps > 1 or dist.world_size() > 1):
        log(fit_cfg.batch_line(name, dist.world_size()))
    res = fit(
        model, method, train, prep.val, prep.meta, fit_cfg, device, prep.augment,
        num_classes=len(prep.classes), tag=name, on_epoch_end=on_epoch_end,
        checkpoint=ckpt if cfg.checkpoint_every else None, checkpoint_every=cfg.checkpoint_every, resume=resume,
        feature_cache=feature_cache if fit_cfg.trainable == "classifier" else None,
    )
    for logger in loggers:  # each epoch's scalars were flushed as they came
        logger.close()
    if main and (not res.history or res.history[-1]["epoch"] == 0):
        atomic_save("".join(json.dumps(r, default=_json_default) + "\n" for r in res.history), sdir / "metrics.jsonl")
    counts = prep.split.train_counts
    th = dict(many_threshold=cfg.data.many_threshold, few_threshold=cfg.data.few_threshold)
    eval_bs = fit_cfg.eval_batch_size
    cl = prep.modality.channels_last if fit_cfg.channels_last is None else fit_cfg.channels_last
    if fit_cfg.trainable == "classifier":
        # The backbone did not change: one feature pass over the test set serves both heads (also for
        # a post-hoc method, whose adjusted head is its state).
        feats = (FeatureCache() if feature_cache is None else feature_cache).features(model, prep.test, eval_bs, cl).float()
        with torch.no_grad():
            pred_last = method.transform_logits(model.classifier(feats)).argmax(1).cpu().numpy()
            model.load_state_dict(res.best_state)
            pred_best = method.transform_logits(model.classifier(feats)).argmax(1).cpu().numpy()
    else:
        # several processes: each rank predicts its share of the test set, every rank receives all logits
        pred_last = method.transform_logits(predict_logits(model, prep.test, eval_bs, cl, shard=True)).argmax(1).cpu().numpy()
        model.load_state_dict(res.best_state)
        pred_best = method.transform_logits(predict_logits(model, prep.test, eval_bs, cl, shard=True)).argmax(1).cpu().numpy()
    y_test = prep.test.labels.cpu().numpy()
    k = len(prep.classes)
    final = {
        "stage": name,
        "method": repr(method),
        "best_epoch": res.best_epoch,
        "best": classification_metrics(y_test, pred_best, counts, k, **th),
        "last": classification_metrics(y_test, pred_last, counts, k, **th),
        "val_best": next(r["val"] for r in res.history if r["epoch"] == res.best_epoch),
        "seconds": float(sum(r["seconds"] for r in res.history)),
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in res.history])) if res.history else 0.0,
        "meta_in_train": bool(meta_in_train and not method.uses_meta),
        "processes": dist.world_size(),
        "batch_size_per_process": fit_cfg.batch_size,
        "global_batch_size": fit_cfg.batch_size * dist.world_size(),
        "split_file": prep.split_file,  # {"path", "sha256"} of data.split_file, or None: drawn with the seed
    }
    if callable(getattr(method, "stats", None)):  # e.g. forward/backward passes of the bilevel methods
        final["method_stats"] = method.stats()
    rw = getattr(method, "reweighter", None)
    if rw is not None:
        start = rw.initial_scores().to(rw.scores.device)
        final["score_change"] = float(((rw.scores - start).abs() / start.abs().clamp_min(1e-12)).mean())
    if main:
        bundle = model_bundle(cfg, prep, res.best_state)
        bundle["metrics"] = {"stage": name, "best_epoch": res.best_epoch, "test": final["best"], "val": final["val_best"]}
        _write_stage_files(sdir, final, y_test, pred_best, pred_last, rw, counts, bundle)
    dist.barrier()  # the stage's files exist before any rank moves on
    b = final["best"]
    log(f"{name}: best epoch {res.best_epoch} (validation) -> test acc {100 * b['accuracy']:.2f}  "
        f"bal.acc {100 * b['balanced_accuracy']:.2f}")
    return final


def _write_stage_files(sdir: Path, final: dict, y_test, pred_best, pred_last, rw, counts, bundle: dict) -> None:
    """A finished stage's predictions, OT weights, model bundle and ``final.json`` (written last:
    its presence marks the stage as finished)."""
    np.savez(sdir / "predictions.npz", y_true=y_test, pred_best=pred_best, pred_last=pred_last)
    if rw is not None:
        np.savez(
            sdir / "weights.npz", labels=rw.labels.cpu().numpy(), scores=rw.weights().numpy(),
            initial=rw.initial_scores().numpy(),
            class_balanced=effective_number_weights(counts, getattr(rw, "beta", 0.9999)).numpy(),
        )
    save_model(bundle, sdir)
    _write_json(sdir / "final.json", final)


def _check_resumable(cfg: RunConfig, old: dict, out: Path) -> None:
    """Refuse to resume a run folder whose saved config differs in data, model, seed or a stage."""
    new = cfg.to_dict()
    how = ("loader", "num_workers")  # how the data reach the device: the same batches either way
    old_data = {k: v for k, v in (old.get("data") or {}).items() if k not in how}
    new_data = {k: v for k, v in new["data"].items() if k not in how}
    if new_data.get("split_file") is None and "split_file" not in old_data:  # a run saved before data.split_file
        new_data.pop("split_file", None)
    if old_data != new_data or old.get("model") != new["model"] or old.get("seed") != new["seed"]:
        raise OTReweightError(f"{out} holds a run with other data, model or seed settings; use another output_dir")
    old_stage2 = {v.get("name"): v for v in old.get("stage2", []) if isinstance(v, dict)}
    changed = (["stage1"] if old.get("stage1") != new["stage1"] else []) + [
        v["name"] for v in new["stage2"] if v["name"] in old_stage2 and old_stage2[v["name"]] != v
    ]
    if changed:
        raise OTReweightError(
            f"{out} holds a run whose settings for {', '.join(changed)} differ from this config; "
            "resume with the same settings (new stage-2 variants may be added) or use another output_dir"
        )


def _read_saved(path: Path, what: str) -> dict:
    try:
        data = load_yaml(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())
    except (OSError, ValueError, yaml.YAMLError, UnicodeDecodeError):
        raise OTReweightError(f"{path} is damaged ({what}); delete the output folder or choose another output_dir") from None
    return data if isinstance(data, dict) else {}


def open_source(cfg: RunConfig, lazy: bool = False):
    """The data source of ``cfg.data`` (``lazy``: file sources listed, not decoded)."""
    d = cfg.data
    extra = {"image_size": tuple(d.image_size)} if d.image_size else {}
    extra.update(d.source_options or {})
    return load_dataset(d.source, root=d.root, download=d.download, cache_dir=d.cache_dir, lazy=lazy, **extra)


def _source_pools(cfg: RunConfig, dataset) -> tuple:
    """``(training pool, test split, the source's own validation split or None, classes)``."""
    given_val = dataset.split("val") if getattr(dataset, "has_val", False) else None
    return dataset.split("train"), dataset.split("test"), given_val, list(dataset.classes)


def export_split(cfg: RunConfig | dict, output) -> dict:
    """Write the split a run of ``cfg`` would use (drawn, or ``data.split_file`` checked) to ``output``
    (see :mod:`otreweight.data.splitfile`); returns ``{"path", "sha256", "data_sha256", "split"}``."""
    from .data.splitfile import build_table, write_split_file

    cfg = as_run_config(cfg)
    out = Path(output).expanduser()
    if out.is_dir():
        raise OTReweightError(f"--output {output} is a folder; give a file name (e.g. split.tsv)")
    if not out.absolute().parent.is_dir():
        raise OTReweightError(f"--output {output}: folder {out.absolute().parent} does not exist; create it first")
    dataset = open_source(cfg, lazy=True)  # file sources: the files as stored (paths and bytes); the same order
    pool, test, given_val, classes = _source_pools(cfg, dataset)
    split = draw_split(cfg, pool, test, given_val, classes)
    table = build_table(split, pool, test, given_val, classes, cfg.data.to_dict())
    sha = write_split_file(out, table)
    return {"path": out, "sha256": sha, "data_sha256": table.header["data_sha256"], "split": split}


def verify_data(cfg: RunConfig | dict, split_file=None) -> tuple[list[str], str]:
    """``(problems, summary)`` of the data of ``cfg`` against a split file (default ``data.split_file``)."""
    from .data.splitfile import read_split_file, verify

    cfg = as_run_config(cfg)
    split_file = split_file or cfg.data.split_file
    if not split_file:
        raise OTReweightError("no split file: pass --split-file <file> or set data.split_file in the config")
    table = read_split_file(split_file)
    dataset = open_source(cfg, lazy=True)
    pool, test, given_val, classes = _source_pools(cfg, dataset)
    problems = verify(table, pool, test, given_val, classes)
    sizes = ", ".join(f"{name} {len(p['label'])}" for name, p in table.pools.items())
    summary = (f"ok: {cfg.data.source} matches {split_file}: {sum(len(p['label']) for p in table.pools.values())} "
               f"examples ({sizes}), {len(classes)} classes, data sha256 {table.header['data_sha256'][:16]}...")
    return problems, summary


def run_experiment(cfg: RunConfig | dict, resume: bool = False, log=print, dataset: ArrayDataset | None = None) -> dict:
    """Run stage 1 and every stage-2 variant of ``cfg``; return ``{stage: final metrics}``.

    Everything that can be checked is checked before training: the config, the output folder
    (writable, not locked by another process), the data, that the model takes the data's inputs
    and, with ``resume``, that settings and data are those of the interrupted run. ``config.yaml``
    is written only once the run has started, so a failed start leaves the folder reusable.
    """
    cfg = as_run_config(cfg)
    out = Path(cfg.output_dir)
    dist.init(cfg.device)  # under torchrun: join the process group (nothing for one process)
    # lr_scaling resolved for this number of processes: the saved config holds the rates used
    given, cfg = cfg, cfg.batch_scaled(dist.world_size())
    device = dist.local_device(cfg.device)
    if cfg.sync_batchnorm and (cfg.stage1.trainable == "all" or any(v.trainable == "all" for v in cfg.stage2)):
        dist.check_sync_batchnorm(device)  # before any data is loaded (one process: no effect)
    main = dist.is_main()
    if not main:
        log = _quiet  # noqa: F811 - rank 0 alone prints progress
    cfg_path = out / "config.yaml"
    if cfg_path.exists() and has_progress(out) and not resume:
        raise OTReweightError(
            f"{out} already holds a run; pass --resume to continue it, or choose another output_dir"
        )
    if cfg_path.exists() and resume:
        _check_resumable(cfg, _read_saved(cfg_path, "the saved config"), out)
    if main:
        check_output_dir(out)
    dist.barrier()  # every rank has read the folder before rank 0 writes in it
    with OutputLock(out) if main else contextlib.nullcontext():
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        d = cfg.data
        if dataset is None:
            dataset = open_source(cfg, lazy=d.loader == "stream")
        prep = Prepared(cfg, dataset, device)
        try:
            fingerprint = data_fingerprint(prep.pool, dataset.split("test"),
                                           *([prep.given_val] if prep.given_val is not None else []))
            prep.fingerprint = fingerprint  # written into each stage's model card
            split_path = out / "split.json"
            if resume and split_path.exists():
                old = _read_saved(split_path, "the saved split").get("data_fingerprint")
                if old is not None and old != fingerprint:
                    raise OTReweightError(f"the data of {d.source} changed since {out} was started; resume with the "
                                          "same data, or start a new run in another output_dir")
                old_file = _read_saved(split_path, "the saved split").get("split_file")
                if (old_file or {}).get("sha256") != (prep.split_file or {}).get("sha256"):
                    raise OTReweightError(f"{out} was started with another split (split file {old_file and old_file['path']}); "
                                          "resume with the same data.split_file, or use another output_dir")
            log(prep.split.summary(prep.classes))
            _preflight(cfg, prep)
            if dist.world_size() > 1:
                log(f"{dist.world_size()} processes ({dist.backend()}): each stage's global batch is its batch_size "
                    f"per process x {dist.world_size()} x its accumulate_steps (the effective batch)")
            log(given.stage1.batch_line("stage 1", dist.world_size()) if given.stage1.lr_scaling == "none"
                else cfg.stage1.batch_line("stage 1", dist.world_size(), given.stage1))
            test_counts = np.bincount(dataset.y_test, minlength=dataset.num_classes)

            def started() -> None:  # the model takes the data: the run is under way
                if not main:
                    return
                note = (f"# split read from {prep.split_file['path']} (sha256 {prep.split_file['sha256']})\n"
                        if prep.split_file else "")
                atomic_save(note + _distributed_note(cfg, given) + dump_config(cfg), cfg_path)
                _write_json(split_path, {
                    "classes": prep.classes, **prep.split.to_dict(), "test_counts": test_counts.tolist(),
                    "many_threshold": d.many_threshold, "few_threshold": d.few_threshold, "source": d.source,
                    "validation": "given" if prep.given_val is not None else "drawn from the training pool",
                    "data_fingerprint": fingerprint, "split_file": prep.split_file,
                })
                log(f"test: {int(test_counts.sum())} examples; device {device}")

            results = run_stages(cfg, prep, out, device, resume, log, started)
        finally:
            prep.close()
        if main:
            _write_json(out / "results.json", results)
    dist.barrier()
    return results


def _preflight(cfg: RunConfig, prep: Prepared) -> None:
    """Each stage's method checks what it can from the split's sizes (e.g. OT's dense-solve limit),
    so a stage-2 variant that cannot run stops the run before stage 1 trains."""
    n_train, n_meta = len(prep.split.train), len(prep.split.meta)
    for st in cfg.stage2:  # stage 1 is plain cross-entropy
        check = getattr(create_method(st.method, **(st.options or {})), "preflight", None)
        if check is not None:
            extra = n_meta if st.meta_in_train else 0
            check(n_train + extra, n_meta, len(prep.classes), st.batch_size * dist.world_size())


def _quiet(*args, **kwargs) -> None:
    pass


def _distributed_note(cfg: RunConfig, given: RunConfig | None = None) -> str:
    """YAML comments heading ``config.yaml``: each stage's effective batch (processes x batch_size x
    accumulate_steps) and the learning rate it trains with (``lr_scaling`` resolved from ``given``)."""
    n = dist.world_size()
    given = given or cfg
    stages = [("stage1", cfg.stage1, given.stage1)] + [(f"stage2 {v.name}", v, g) for v, g in zip(cfg.stage2, given.stage2)]
    if n == 1 and all(st.accumulate_steps == 1 and g.lr_scaling == "none" for _, st, g in stages):
        return ""
    lines = [f"# run on {n} process(es) ({dist.backend() if n > 1 else 'one process'}); batch_size is per process:"]
    lines += [f"#   {st.batch_line(name, n, g)}" for name, st, g in stages]
    return "\n".join(lines) + "\n"


def check_fits(model, prep: Prepared, name: str) -> None:
    """One forward pass of two training examples: a model that cannot take the data's inputs, or
    gives the wrong number of classes, is one line before any training."""
    mod = prep.modality
    out = probe(model, next(prep.train.chunks(2)), mod.channels_last, f"the {mod.name} inputs of this data",
                f"model {name!r}", f"choose a model for {mod.name} data, e.g. {mod.default_model}", prep.example_shape)
    if out.dim() != 2 or out.shape[1] != len(prep.classes):
        raise OTReweightError(f"model {name!r} gives {tuple(out.shape[1:])} outputs per example for "
                              f"{len(prep.classes)} classes")


def run_stages(cfg: RunConfig, prep: Prepared, out: Path, device, resume: bool, log, started=None) -> dict:
    """Stage 1 (trained or loaded) and every stage-2 variant on prepared data; ``{stage: final}``.
    ``started()`` is called once the model is built and takes the data, before any training."""
    results = {}
    seed_everything(cfg.seed)
    model = build_model(cfg.model.name, cfg.model.options, len(prep.classes), prep.model_kwargs())
    check_fits(model, prep, cfg.model.name)
    if started is not None:
        started()
    # frozen stage-1 features, shared by every classifier-only variant that starts from stage 1 (and
    # kept on disk for other runs when the backbone is a frozen pretrained one)
    shared = FeatureCache(feature_store(cfg))
    if cfg.stage1.checkpoint:
        bundle = _load_bundle(cfg.stage1.checkpoint)
        try:
            model.load_state_dict(bundle["state_dict"])
        except RuntimeError:
            raise OTReweightError(
                f"stage-1 checkpoint {cfg['stage1']['checkpoint']} does not fit model {cfg['model']['name']!r} "
                f"with {len(prep.classes)} classes"
            ) from None
        log(f"stage 1: loaded {cfg['stage1']['checkpoint']}")
    else:
        fit1 = cfg.stage_fit(cfg.stage1)
        # a classifier-only stage 1 (a frozen pretrained encoder) leaves the backbone as it is: its
        # features serve every classifier-only variant of stage 2 as well
        results["stage1"] = run_stage("stage1", model, create_method("ce"), fit1, prep, cfg, out, device, resume, log,
                                      cfg.stage1.meta_in_train, feature_cache=shared)
    stage1_state = copy.deepcopy(model.state_dict())
    for v in cfg.stage2:
        if v.start == "scratch":
            seed_everything(cfg.seed)  # the same initialisation as stage 1
            m2 = build_model(cfg.model.name, cfg.model.options, len(prep.classes), prep.model_kwargs())
        else:
            m2 = copy.deepcopy(model)
            m2.load_state_dict(stage1_state)
        method = create_method(v.method, **(v.options or {}))
        fit2 = cfg.stage_fit(v)
        results[f"stage2_{v['name']}"] = run_stage(
            f"stage2_{v['name']}", m2, method, fit2, prep, cfg, out, device, resume, log, v.meta_in_train,
            shared if v.start == "stage1" else None,
        )
    if shared.augmented_passes:
        log(f"augmented frozen-feature passes: {shared.augmented_passes} (each epoch's view once, shared by the "
            "classifier-only stages)")
    return results


def _load_bundle(path) -> dict:
    """A stage's saved model (see :mod:`otreweight.model_file`): read without running any code."""
    return read_model(path)


def _input_kwargs(inp: dict) -> dict:
    """The model factory's input arguments saved in a bundle's ``input``."""
    if "model_kwargs" in inp:
        return dict(inp["model_kwargs"])
    return {k: inp[k] for k in INPUT_KINDS if k in inp}  # checkpoints written before model_kwargs was saved


def load_model(path, device="cpu"):
    """The model saved by a stage (its ``model.json``, ``model.safetensors``, folder, or an old ``best.pt``) on ``device``, in eval mode, and the checkpoint's bundle
    (``classes``, ``input`` modality and statistics, ``train_counts``, thresholds)."""
    bundle = _load_bundle(path)
    inp = bundle["input"]
    options = dict(bundle["model"]["options"] or {})
    if "pretrained" in options:  # the state dict holds every weight: no download, no weights file needed
        options["pretrained"] = False
    options.pop("checkpoint", None)
    model = build_model(bundle["model"]["name"], options, bundle["num_classes"], _input_kwargs(inp))
    model.load_state_dict(bundle["state_dict"])
    return model.to(pick_device(device)).eval(), bundle


def evaluate_checkpoint(path, source: str, root=None, split: str = "test", device="auto", download=True,
                        cache_dir=None, prior=None, adjust: bool = False, model_prior: str = "train") -> dict:
    """Score a stage's saved model (see :func:`load_model`) on a data source's ``test`` (or ``train``) split; returns the metrics.

    ``prior`` (a deployment prior, :mod:`otreweight.prior`): ``"uniform"``, ``"train"`` (the
    model's training class frequencies), ``"estimate"`` (EM of Saerens et al. on the scored
    split's probabilities, ``model_prior`` as the source prior), a file of K numbers, or a vector.
    Adds ``prior_accuracy`` (per-class accuracies weighted by the prior) and ``prior``; with
    ``adjust`` the predictions are first logit-adjusted from ``model_prior`` (``"train"``: a
    cross-entropy model; ``"uniform"``: a model trained to be balanced) toward the prior.
    """
    from . import prior as priors

    check_choice("split", split, ("test", "train"))
    check_choice("model prior", model_prior, ("train", "uniform"))
    if adjust and prior is None:
        raise OTReweightError("--adjust-to-prior needs a target prior (--prior uniform|train|estimate|FILE)")
    dev = pick_device(device)
    model, bundle = load_model(path, dev)
    k_model = bundle["num_classes"]
    counts = np.maximum(np.asarray(bundle["train_counts"], dtype=np.float64), 1.0)
    source_prior = counts / counts.sum() if model_prior == "train" else np.full(k_model, 1.0 / k_model)
    target = None
    if isinstance(prior, str) and prior in ("uniform", "train"):
        target = np.full(k_model, 1.0 / k_model) if prior == "uniform" else counts / counts.sum()
    elif isinstance(prior, (str, Path)) and prior != "estimate":
        target = priors.read_prior(prior, bundle.get("classes"))
    elif prior is not None and prior != "estimate":
        target = priors.check_prior(prior, k_model)
    inp = bundle["input"]
    kwargs = _input_kwargs(inp)
    # the source's options of the training run (e.g. n_points) when scoring on a source of the same name
    same = str(source).lower() == str(inp.get("source", "")).lower()
    opts = (inp.get("source_options") or {}) if same else {}
    ds = load_dataset(source, root=root, download=download, cache_dir=cache_dir, **opts)
    if ds.num_classes != bundle["num_classes"]:
        raise OTReweightError(
            f"{source} has {ds.num_classes} classes but the checkpoint was trained on {bundle['num_classes']}"
        )
    data = ds.split(split)
    modality = get_modality(inp.get("modality") or ("image" if inp.get("is_image") else "vector"),
                            **inp.get("modality_options", {}))
    stats = inp.get("stats") or {"mean": inp["mean"], "std": inp["std"]}
    if ds.modality != modality.name:
        raise OTReweightError(f"the checkpoint was trained on {modality.name} inputs but {source} holds "
                              f"{ds.modality} inputs; evaluate it on data of the kind it was trained on")
    wanted = modality.model_kwargs(example_shape(data), stats)
    if any(kwargs.get(k) != v for k, v in wanted.items()):
        have = ", ".join(f"{k}={v}" for k, v in wanted.items())
        was = ", ".join(f"{k}={kwargs.get(k)}" for k in wanted)
        raise OTReweightError(f"{source} has {have} but the checkpoint's model was built for {was}")
    loader = build_loader(data, modality, stats, dev, "auto", None, f"{split} of {source}",
                          transforms=modality.worker_transforms())  # the training run's resize + centre crop
    y = data.labels
    cl = modality.channels_last
    if cl:
        model.to(memory_format=torch.channels_last)
    try:
        logits = predict_logits(model, loader, 256, cl).double().cpu()
    finally:
        loader.close()
    if prior == "estimate":
        target = priors.estimate_prior(torch.softmax(logits, 1).numpy(), source_prior, "em")
    if adjust:
        logits = priors.adjust_logits(logits, source_prior, target)
    pred = logits.argmax(1).numpy()
    th = bundle["thresholds"]
    out = classification_metrics(y, pred, bundle["train_counts"], bundle["num_classes"], th["many"], th["few"])
    if target is not None:
        out.update(prior_accuracy=priors.prior_accuracy(y, pred, target), prior=[float(v) for v in target],
                   prior_source=str(prior) if isinstance(prior, (str, Path)) else "given", adjusted=bool(adjust),
                   model_prior=model_prior)
    return out


__all__ = ["RunConfig", "evaluate_checkpoint", "load_model", "load_config", "run_experiment", "resolve_config_path"]
