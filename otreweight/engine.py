"""The one training loop, used by both stages and every method.

``fit(model, method, train, val, meta=..., config=...)`` trains ``model`` with the loss of
``method`` (:mod:`otreweight.methods`), evaluates on the validation split after every epoch and
keeps the state with the best validation score (``config.select_metric``, balanced accuracy by
default). The test set never enters it.

``config.trainable`` chooses what is trained:

* ``"all"`` - the whole network (stage 1, or the whole-network stage 2). Batch features for OT
  are the detached features of the training forward pass; the meta features (targets) are
  recomputed in eval mode once per epoch; meta logits are a train-mode forward of the meta set.
* ``"classifier"`` - the backbone is frozen in eval mode and only the linear classifier is
  trained (the authors' stage 2). Features are computed without gradients, in large batches:
  once for the whole run when there is no augmentation (they cannot change), otherwise once per
  epoch from a fresh augmented view of every example. Meta features are computed once.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ._errors import OTReweightError, check_choice, check_finite, check_labels, check_same_length
from .config import TRAINABLE, FitConfig, resume_keys  # noqa: F401  (FitConfig is re-exported)
from .optim import build_optimizer, build_scheduler
from .methods.base import Batch, Method, TrainInfo
from .metrics import classification_metrics
from .targets import class_means, check_meta_classes
from .utils import atomic_save, pick_device, rng_state, seed_everything, set_rng_state

SAMPLINGS = ("instance", "class_balanced")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    ``history`` has one dict per epoch (``epoch``, ``lr``, ``train_loss``, ``seconds``, ``val``
    metrics); ``best_state`` is the model state of ``best_epoch`` (selected on validation) and
    ``last_state`` that of the final epoch. The model itself is left in its last state.
    """

    history: list = field(default_factory=list)
    best_epoch: int = -1
    best_score: float = -math.inf
    best_state: dict | None = None
    last_state: dict | None = None
    seconds: float = 0.0


def _as_tensor(name: str, x, device, dtype=None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if dtype is not None:
        t = t.to(dtype)
    elif t.dtype == torch.float64:
        t = t.float()
    check_finite(name, t)
    return t.to(device)


@torch.no_grad()
def compute_features(model: nn.Module, x: torch.Tensor, batch_size: int = 256, channels_last: bool = False):
    """Backbone features of ``x`` in eval mode, without gradients (restores the training flag)."""
    was_training = model.training
    model.eval()
    out = [model.features(_layout(x[i : i + batch_size], channels_last)) for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.feature_dim, device=x.device)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256, channels_last: bool = False):
    """Logits of ``x`` in eval mode, without gradients (restores the training flag)."""
    was_training = model.training
    model.eval()
    out = [model(_layout(x[i : i + batch_size], channels_last)) for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(out)


def cached_features(cache: dict, model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                    channels_last: bool = False) -> torch.Tensor:
    """:func:`compute_features` of ``x``, memoised in ``cache`` (for a backbone that does not change)."""
    hit = cache.get(id(x))
    if hit is None or hit[0] is not x:  # the stored input keeps its id from being reused
        hit = cache[id(x)] = (x, compute_features(model, x, batch_size, channels_last).float())
    return hit[1]


def _layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class _Meta:
    """The meta set as methods see it (:class:`otreweight.methods.base.MetaView`)."""

    def __init__(self, model, x, y, num_classes, frozen, batch_size, channels_last, frozen_features=None):
        self.model, self.x, self.y = model, x, y
        self.frozen_features = frozen_features
        self.num_classes, self.frozen = num_classes, frozen
        self.batch_size, self.channels_last = batch_size, channels_last
        self._features = self._mean_features = None

    def invalidate(self) -> None:
        if not self.frozen:
            self._features = self._mean_features = None

    def features(self):
        if self._features is None:
            if self.frozen and self.frozen_features is not None:
                self._features = self.frozen_features(self.x)
            else:
                self._features = compute_features(self.model, self.x, self.batch_size, self.channels_last)
        return self._features

    def class_mean_features(self):
        if self._mean_features is None:
            means = class_means(self.x, self.y, self.num_classes).to(self.x.dtype)
            self._mean_features = compute_features(self.model, means, self.batch_size, self.channels_last)
        return self._mean_features

    def logits(self):
        if self.frozen:
            return self.model.classifier(self.features())
        return self.model(_layout(self.x, self.channels_last))


def fit(
    model: nn.Module,
    method: Method,
    train: tuple,
    val: tuple,
    meta: tuple | None = None,
    config: FitConfig | None = None,
    device: str | torch.device | None = "auto",
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    num_classes: int | None = None,
    tag: str = "train",
    on_epoch_end: Callable[[int, dict], None] | None = None,
    checkpoint=None,
    resume: bool = False,
    feature_cache: dict | None = None,
) -> FitResult:
    """Train ``model`` with ``method`` on ``train = (x, y)``, select on ``val = (x, y)``.

    Parameters
    ----------
    model : FeatureClassifier
        A model with ``features(x)`` and a linear ``classifier`` (:mod:`otreweight.models`).
    method : Method
        The loss (:mod:`otreweight.methods`); one with ``uses_meta`` needs ``meta``.
    train, val, meta : tuple of (x, y)
        Arrays or tensors; every example of ``train`` is addressed by its row index, which is the
        example id the OT re-weighter keys its scores on. They are moved to ``device`` once.
    config : FitConfig
        Epochs, optimiser, schedule, what is trainable, selection metric.
    device : str or torch.device
        ``"auto"`` picks CUDA, then MPS, then CPU.
    augment : callable, optional
        ``augment(x_batch, generator) -> x_batch``, applied to training batches on the device.
    num_classes : int, optional
        ``K``; inferred from the model's classifier by default.
    on_epoch_end : callable, optional
        Called as ``on_epoch_end(epoch, record)`` after each epoch's evaluation.
    checkpoint : path, optional
        Written atomically at the end of every epoch: model, optimiser, scheduler, the method's
        state (OT scores), every RNG state, the history and the best state so far.
    resume : bool
        Continue from ``checkpoint`` if it exists; the run then ends exactly as an uninterrupted one.
    feature_cache : dict, optional
        With ``trainable="classifier"``: frozen-backbone features of the (un-augmented) inputs, shared
        by every run given the same dict. Only share it between runs whose backbones are identical
        (e.g. several stage-2 methods from one stage-1 model); then no features are computed twice.
    """
    config = (config or FitConfig()).validate()
    device = pick_device(device)
    if num_classes is None:
        num_classes = model.classifier.out_features
    x_tr, y_tr = (_as_tensor("training inputs", train[0], device), _as_tensor("training labels", train[1], device, torch.long))
    x_va, y_va = (_as_tensor("validation inputs", val[0], device), _as_tensor("validation labels", val[1], device, torch.long))
    check_same_length(train_x=x_tr, train_y=y_tr)
    check_same_length(val_x=x_va, val_y=y_va)
    if x_tr.shape[0] == 0 or x_va.shape[0] == 0:
        raise OTReweightError("the training set and the validation split must each hold at least one example")
    check_labels("training labels", y_tr, num_classes)
    check_labels("validation labels", y_va, num_classes)
    if method.uses_meta and meta is None:
        raise OTReweightError(f"method {method.name!r} needs a meta set (meta=(x, y)); build one with make_long_tailed")
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = x_tr.dim() == 4
    use_amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731
    frozen = config.trainable == "classifier"

    gen = seed_everything(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_counts = np.bincount(y_tr.cpu().numpy(), minlength=num_classes)
    meta_view = None
    if meta is not None:
        x_me = _as_tensor("meta inputs", meta[0], device)
        y_me = _as_tensor("meta labels", meta[1], device, torch.long)
        check_same_length(meta_x=x_me, meta_y=y_me)
        check_labels("meta labels", y_me, num_classes)
        if method.uses_meta:
            check_meta_classes(y_me, num_classes)
        meta_view = _Meta(model, x_me, y_me, num_classes, frozen, config.eval_batch_size, channels_last,
                          lambda x: frozen_features(x))
    check_choice("sampling", method.sampling, SAMPLINGS)
    method.prepare_model(model)
    if frozen:
        for p in model.backbone_parameters():
            p.requires_grad_(False)
        params = list(model.classifier.parameters())
        model.eval()
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        params = list(model.parameters())
    optimizer = build_optimizer(params, config)
    scheduler = build_scheduler(optimizer, config)
    cache = {} if feature_cache is None else feature_cache

    def frozen_features(x: torch.Tensor) -> torch.Tensor:
        return cached_features(cache, model, x, config.eval_batch_size, channels_last)

    def train_features() -> torch.Tensor:
        if not frozen:
            return compute_features(model, x_tr, config.eval_batch_size, channels_last).float()
        return frozen_features(x_tr)

    method.bind(TrainInfo(num_classes, y_tr, train_counts, device, model, optimizer, config.epochs, train_features))
    sample_p = None
    if method.sampling == "class_balanced":
        sample_p = (1.0 / torch.as_tensor(train_counts, dtype=torch.float64))[y_tr.cpu()]

    # With a frozen backbone and no augmentation, features cannot change: compute them once.
    cached_tr = cached_va = None
    if frozen:
        cached_va = frozen_features(x_va)
        if augment is None:
            cached_tr = frozen_features(x_tr)

    def evaluate_val() -> dict:
        if cached_va is not None:
            with torch.no_grad():
                logits = model.classifier(cached_va)
        else:
            logits = predict_logits(model, x_va, config.eval_batch_size, channels_last)
        pred = logits.argmax(1).cpu().numpy()
        return classification_metrics(
            y_va.cpu().numpy(), pred, train_counts, num_classes, config.many_threshold, config.few_threshold
        )

    result = FitResult()
    first_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        first_epoch = _load_checkpoint(checkpoint, config, model, optimizer, scheduler, method, gen, result)
    n = x_tr.shape[0]
    features_fn = torch.compile(model.features) if config.compile else model.features
    start = time.perf_counter()
    for epoch in range(first_epoch, config.epochs if method.trains else 0):
        t0 = time.perf_counter()
        if not frozen:
            model.train()
        if meta_view is not None:
            meta_view.invalidate()
        method.start_epoch(epoch, meta_view)
        if frozen and augment is not None:
            # The backbone is frozen: one augmented view of every example per epoch, its features
            # computed in large batches without gradients, serves all of this epoch's mini-batches.
            with autocast():
                cached_tr = torch.cat([
                    compute_features(model, augment(x_tr[i : i + config.eval_batch_size], gen),
                                     config.eval_batch_size, channels_last).float()
                    for i in range(0, n, config.eval_batch_size)
                ])
        if sample_p is None:
            perm = torch.randperm(n, generator=gen).to(device)
        else:
            perm = torch.multinomial(sample_p, n, replacement=True, generator=gen).to(device)
        starts = list(range(0, n, config.batch_size))
        if len(starts) > 1 and n - starts[-1] < 2 and not frozen:
            starts.pop()  # a batch of one breaks batch norm in train mode; it is reshuffled next epoch
        total = torch.zeros((), device=device)
        bar = tqdm(starts, desc=f"{tag} {epoch + 1}/{config.epochs}", leave=False, disable=not config.progress)
        for s in bar:
            idx = perm[s : s + config.batch_size]
            y = y_tr[idx]
            xb = None
            with autocast():
                if cached_tr is not None:
                    feats = cached_tr[idx]
                    logits = model.classifier(feats)
                else:
                    xb = x_tr[idx]
                    if augment is not None:
                        xb = augment(xb, gen)
                    xb = _layout(xb, channels_last)
                    f = features_fn(xb)  # whole network trains (a frozen backbone is served from the cache)
                    logits = model.classifier(f)
                    feats = f.detach()
                loss = method.loss(Batch(idx, y, logits.float(), feats.float(), xb), meta_view)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.shape[0]
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_loss = float(total) / n
        if not math.isfinite(train_loss):
            raise OTReweightError(
                f"{tag}: the training loss became {train_loss} at epoch {epoch + 1}; lower the learning rate"
            )
        val_metrics = evaluate_val()
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": train_loss,
            "seconds": time.perf_counter() - t0,
            "val": val_metrics,
        }
        result.history.append(record)
        score = val_metrics[config.select_metric]
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch + 1
            result.best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            atomic_save(
                {
                    "epoch": epoch + 1, "config": config.to_dict(), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "method": method.state_dict(), "rng": rng_state(gen), "history": result.history,
                    "best_epoch": result.best_epoch, "best_score": result.best_score, "best_state": result.best_state,
                },
                checkpoint,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    result.last_state = copy.deepcopy(model.state_dict())
    if result.best_state is None:  # no epoch ran (zero epochs, or a method that does not train)
        val_metrics = evaluate_val()
        result.history.append({"epoch": 0, "lr": 0.0, "train_loss": float("nan"), "seconds": 0.0, "val": val_metrics})
        result.best_epoch, result.best_score = 0, val_metrics[config.select_metric]
        result.best_state = result.last_state
    result.seconds = time.perf_counter() - start
    for p in model.parameters():
        p.requires_grad_(True)
    return result




def _load_checkpoint(path, config, model, optimizer, scheduler, method, gen, result) -> int:
    try:
        ck = torch.load(path, map_location=next(model.parameters()).device, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise OTReweightError(f"cannot read checkpoint {path} ({type(err).__name__}); delete it or start without --resume") from None
    old = ck.get("config", {})
    changed = [k for k in resume_keys() if k in old and old[k] != config.to_dict()[k]]
    if changed:
        raise OTReweightError(
            f"checkpoint {path} was written with different settings ({', '.join(changed)}); "
            "use a new output folder or start without --resume"
        )
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    method.load_state_dict(ck["method"])
    set_rng_state(gen, ck["rng"])
    result.history = list(ck["history"])
    result.best_epoch, result.best_score, result.best_state = ck["best_epoch"], ck["best_score"], ck["best_state"]
    return int(ck["epoch"])


def evaluate(
    model: nn.Module,
    x,
    y,
    train_counts=None,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
    """Metrics of :func:`otreweight.metrics.classification_metrics` for ``model`` on ``(x, y)``."""
    dev = next(model.parameters()).device if device is None else pick_device(device)
    model.to(dev)
    xt = _as_tensor("evaluation inputs", x, dev)
    yt = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y).astype(np.int64)
    check_same_length(x=xt, y=yt)
    channels_last = xt.dim() == 4
    pred = predict_logits(model, xt, batch_size, channels_last).argmax(1).cpu().numpy()
    return classification_metrics(
        yt, pred, train_counts, model.classifier.out_features, many_threshold, few_threshold
    )
