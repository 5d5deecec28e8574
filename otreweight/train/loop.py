"""The one training loop, used by both stages and every method.

``fit(model, method, train, val, meta=..., config=...)`` trains ``model`` with the loss of
``method`` (:mod:`otreweight.methods`), evaluates on the validation split after every epoch and
keeps the state with the best validation score (``config.select_metric``, balanced accuracy by
default). The test set never enters it. It is put together from parts of torchvision's reference
size: :func:`setup` (checks, optimiser, scheduler, method binding, frozen features),
:func:`train_one_epoch`, :func:`evaluate_split`, checkpoints (:mod:`.checkpoint`).

``config.trainable`` chooses what is trained:

* ``"all"`` - the whole network (stage 1, or the whole-network stage 2). Batch features for OT
  are the detached features of the training forward pass; the meta features (targets) are
  recomputed in eval mode once per epoch; meta logits are a train-mode forward of the meta set.
* ``"classifier"`` - the backbone is frozen in eval mode and only the linear classifier is
  trained (the authors' stage 2). Features are computed without gradients, in large batches:
  once for the whole run when there is no augmentation (they cannot change), otherwise once per
  epoch from a fresh augmented view of every example, drawn with a seed of (seed, epoch) alone and
  kept in the feature cache, so classifier-only runs sharing a backbone and a cache compute each
  epoch's view once and all train on identical views. Meta features are computed once.

Training and validation data are ``(x, y)`` pairs (arrays or tensors, moved to the device once) or
loaders of :mod:`otreweight.data.loaders` (in memory or streamed through worker processes).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed as dist
from .._errors import OTReweightError, check_finite, check_labels, check_same_length
from ..config import FitConfig
from ..data.loaders import Loader, MemoryLoader
from ..data.modalities import get_modality, infer_modality
from ..data.samplers import EpochSampler
from ..methods.base import Batch, Method, TrainInfo
from ..metrics import classification_metrics
from ..targets import check_meta_classes
from ..utils import pick_device, seed_everything, show_progress
from . import checkpoint as ckpt
from .features import FeatureCache, compute_features, layout, probe
from .meta import MetaSet
from .optim import build_optimizer, build_scheduler


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


def as_tensor(name: str, x, device, dtype=None) -> torch.Tensor:
    """``x`` as a finite tensor on ``device`` (float64 becomes float32)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            hint = ("map your labels to integer class indices 0..K-1 first (e.g. sklearn.preprocessing.LabelEncoder)"
                    if dtype == torch.long else "give numbers")
            raise OTReweightError(f"{name} have dtype {x.dtype}; {hint}")
    t = torch.as_tensor(x)
    if dtype is not None:
        t = t.to(dtype)
    elif t.dtype == torch.float64:
        t = t.float()
    check_finite(name, t)
    return t.to(device)


def as_loader(name: str, data, device, what: str) -> Loader:
    """A :class:`~otreweight.data.loaders.Loader` as given, or a :class:`MemoryLoader` of an
    ``(x, y)`` pair (checked, on ``device``)."""
    if isinstance(data, Loader):
        return data
    x = as_tensor(f"{what} inputs", data[0], device)
    y = as_tensor(f"{what} labels", data[1], device, torch.long)
    check_same_length(**{f"{name}_x": x, f"{name}_y": y})
    return MemoryLoader(x, y, name)


@dataclass
class Run:
    """Everything one :func:`fit` works with (built by :func:`setup`)."""

    model: nn.Module
    method: Method
    config: FitConfig
    device: torch.device
    train: Loader
    val: Loader
    meta: MetaSet | None
    optimizer: torch.optim.Optimizer
    scheduler: object
    gen: torch.Generator
    sampler: EpochSampler
    cache: FeatureCache
    augment: Callable | None
    num_classes: int
    train_counts: np.ndarray
    frozen: bool
    channels_last: bool
    use_amp: bool
    features_fn: Callable
    tag: str = "train"
    ddp: nn.Module | None = None  # the whole network wrapped in DistributedDataParallel (several ranks)
    cached_train: torch.Tensor | None = None
    cached_val: torch.Tensor | None = None
    bn_swaps: list = field(default_factory=list)  # batch-norm layers replaced by SyncBatchNorm (sync_batchnorm)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def frozen_features(self, loader) -> torch.Tensor:
        return self.cache.features(self.model, loader, self.config.eval_batch_size, self.channels_last)


def setup(model: nn.Module, method: Method, train, val, meta, config: FitConfig, *, device="auto", augment=None,
          num_classes: int | None = None, tag: str = "train", feature_cache: FeatureCache | None = None) -> Run:
    """Check the data, seed, freeze or unfreeze, build the optimiser and schedule, bind the method."""
    device = pick_device(device)
    if num_classes is None:
        num_classes = model.classifier.out_features
    train, val = as_loader("train", train, device, "training"), as_loader("val", val, device, "validation")
    _check_setup(method, train, val, meta, config, num_classes)
    y_tr = train.labels
    world = dist.world_size()
    frozen = config.trainable == "classifier"
    sync_bn = config.sync_batchnorm and world > 1 and not frozen
    if sync_bn:
        dist.check_sync_batchnorm(device)
    channels_last = config.channels_last
    if channels_last is None:
        channels_last = get_modality(train.modality or infer_modality(train.x)).channels_last
    gen = seed_everything(config.seed)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_counts = np.bincount(y_tr.cpu().numpy(), minlength=num_classes)
    probe(model, next(train.chunks(2)), channels_last, "the training inputs")
    if not frozen and len(train) == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise OTReweightError("one training example cannot train a model with batch norm (it needs at least two "
                              "per batch); give more examples or train only the classifier (trainable: classifier)")
    cache = FeatureCache(keep_augmented=False) if feature_cache is None else feature_cache
    meta_view = None
    if meta is not None:
        meta_loader = as_loader("meta", meta, device, "meta")
        check_labels("meta labels", meta_loader.labels, num_classes)
        if method.uses_meta and method.meta_every_class:
            check_meta_classes(meta_loader.labels, num_classes)
        if not isinstance(meta_loader, MemoryLoader):
            raise OTReweightError("the meta set must be held in memory ((x, y) arrays or a MemoryLoader)")
        meta_view = MetaSet(model, meta_loader.x, meta_loader.labels, num_classes, frozen, config.eval_batch_size,
                            channels_last, lambda: cache.features(model, meta_loader, config.eval_batch_size,
                                                                  channels_last))
    # one sampler batch is one optimiser step: the effective batch of this process (batch x accumulation)
    sampler = EpochSampler(y_tr, num_classes, config.batch_size * config.accumulate_steps, method.sampling,
                           drop_single=not frozen,
                           rank=dist.rank(), world_size=world,
                           lengths=train.lengths if train.bucket else None)
    method.prepare_model(model)
    # several processes, sync_batchnorm: batch norm over the global batch (undone at the end of fit)
    bn_swaps = dist.convert_sync_batchnorm(model) if sync_bn else []
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
    use_amp = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    run = Run(model=model, method=method, config=config, device=device, train=train, val=val, meta=meta_view,
              optimizer=optimizer, scheduler=build_scheduler(optimizer, config), gen=gen, sampler=sampler, cache=cache,
              augment=augment, num_classes=num_classes, train_counts=train_counts, frozen=frozen,
              channels_last=channels_last, use_amp=use_amp,
              features_fn=torch.compile(model.features) if config.compile else model.features, tag=tag,
              bn_swaps=bn_swaps)

    def train_features() -> torch.Tensor:
        if not frozen:
            return compute_features(model, train, config.eval_batch_size, channels_last, shard=True).float()
        return run.frozen_features(train).float()

    if not frozen and world > 1:  # one module whose forward gives features and logits: DDP averages every gradient
        run.ddp = dist.wrap_ddp(model, device, run.features_fn)
    method.bind(TrainInfo(num_classes, y_tr, train_counts, device, model, optimizer, config.epochs, train_features))
    if frozen:  # features cannot change: the un-augmented ones once per run
        run.cached_val = run.frozen_features(val)
        if augment is None:
            run.cached_train = run.frozen_features(train)
    return run


def _check_setup(method: Method, train: Loader, val: Loader, meta, config: FitConfig, num_classes: int) -> None:
    """One line for data, a method or settings that cannot train together, before anything is built."""
    if len(train) == 0 or len(val) == 0:
        raise OTReweightError("the training set and the validation split must each hold at least one example")
    check_labels("training labels", train.labels, num_classes)
    check_labels("validation labels", val.labels, num_classes)
    if config.accumulate_steps > 1 and not method.accumulates and config.trainable != "classifier":
        raise OTReweightError(f"method {method.name!r} cannot accumulate gradients over micro-batches (its look-ahead "
                              f"step needs the whole batch at once); use accumulate_steps: 1 with it")
    if dist.world_size() > 1 and not method.multi_process:
        raise OTReweightError(f"method {method.name!r} does not run on several processes yet (its look-ahead step is "
                              f"per process); run it in one process, without torchrun")
    if method.uses_meta and meta is None:
        raise OTReweightError(f"method {method.name!r} needs a meta set (meta=(x, y)); build one with make_long_tailed")


def augmentation_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s augmented view of the training set (a frozen backbone): a
    function of the run's seed and the epoch alone, the same for every method."""
    return int(np.random.SeedSequence([int(seed), int(epoch), 0xA0]).generate_state(1)[0])


def augmented_pass(run: Run, seed: int) -> torch.Tensor:
    """One augmented view of every training example (drawn from a generator seeded with ``seed``),
    its frozen features in large batches."""
    bs, gen = run.config.eval_batch_size, torch.Generator().manual_seed(seed)
    with run.autocast():
        return torch.cat([compute_features(run.model, run.augment(xb, gen), bs, run.channels_last).float()
                          for xb in run.train.chunks(bs)])


def _augmented_features(run: Run, epoch: int) -> torch.Tensor:
    """Epoch ``epoch``'s augmented frozen features, from the feature cache: classifier-only runs that
    share a cache and a backbone (the stage-2 methods of a seed) compute each epoch's view once."""
    seed = augmentation_seed(run.config.seed, epoch)
    return run.cache.augmented(run.model, run.train, epoch, seed, repr(run.augment),
                               lambda: augmented_pass(run, seed))


def train_one_epoch(run: Run, epoch: int) -> float:
    """One pass over the sampler's batches; returns the mean training loss (read once, at the end)."""
    model, method, config = run.model, run.method, run.config
    if not run.frozen:
        model.train()
    if run.meta is not None:
        run.meta.invalidate()
    method.start_epoch(epoch, run.meta)
    batches = run.sampler.batches(run.gen, run.device)
    feed = _frozen_feed(run, epoch) if run.frozen else _input_feed(run, epoch, batches)
    total = torch.zeros((), device=run.device)
    bar = tqdm(batches, desc=f"{run.tag} {epoch + 1}/{config.epochs}", leave=False,
               disable=not show_progress(config.progress) or not dist.is_main())
    for idx in bar:
        y = run.train.labels[idx]
        if config.accumulate_steps > 1 and not run.frozen:  # one effective batch in accumulate_steps micro-batches
            loss = _accumulated_step(run, idx, y, layout(feed(idx, False), run.channels_last))
            total += loss.detach() * idx.shape[0]
            continue
        with run.autocast():
            x = feed(idx, True)
            logits, feats = _forward(run, x)
            loss = method.loss(Batch(idx, y, logits.float(), feats.float(), None if run.frozen else x), run.meta)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if run.frozen:  # the classifier alone: its gradients averaged over the ranks (nothing with one)
            dist.average_gradients([p for g in run.optimizer.param_groups for p in g["params"]])
        run.optimizer.step()
        total += loss.detach() * idx.shape[0]
    if run.ddp is not None:  # DDP sends rank 0's buffers at each forward; after the last step, once more
        dist.broadcast_buffers(model)
    return float(dist.all_reduce_sum(total)) / len(run.train)


def _frozen_feed(run: Run, epoch: int) -> Callable:
    """A frozen backbone: ``feed(idx, _)`` is the batch's cached features (each epoch's augmented
    view of every example when there is augmentation, else the run's one un-augmented pass)."""
    if run.augment is not None:
        run.cached_train = _augmented_features(run, epoch)
    return lambda idx, _: run.cached_train[idx].float()  # a float16 store: only the batch in float32


def _input_feed(run: Run, epoch: int, batches: list) -> Callable:
    """The whole network: ``feed(idx, laid_out)`` is the next batch's inputs, augmented (on the device,
    or drawn per example in the loader workers), laid out for the model when ``laid_out``."""
    gen = run.gen
    augments = run.augment is not None or run.train.worker_augment
    if augments and dist.world_size() > 1:
        # several ranks: each augments its own examples with its own draws (not rank 0's draws at the
        # same batch position), seeded by (seed, epoch, rank), so a resumed run draws them again
        gen = torch.Generator().manual_seed((run.config.seed * 100_003 + epoch) * 1_009 + dist.rank())
    inputs = run.train.batches(batches, gen if run.train.worker_augment else None)

    def feed(idx, laid_out: bool) -> torch.Tensor:
        xb = next(inputs)
        if run.augment is not None:
            xb = run.augment(xb, gen)
        return layout(xb, run.channels_last) if laid_out else xb

    return feed


def _forward(run: Run, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, detached features)`` of a batch: the classifier over frozen features, or the whole network."""
    if run.frozen:
        return run.model.classifier(x), x
    if run.ddp is not None:  # several ranks: DDP averages the gradients in backward
        f, logits = run.ddp(x)
    else:
        f = run.features_fn(x)
        logits = run.model.classifier(f)
    return logits, f.detach()


def _accumulated_step(run: Run, idx: torch.Tensor, y: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """One optimiser step of the whole network on an effective batch split in ``accumulate_steps``
    micro-batches, with the gradient of the method's loss of the *whole* batch (so a batch-level
    method such as OT, whose weights couple the batch's examples, sees all of it):

    1. every micro-batch's logits and features without a graph (train mode; batch-norm running
       statistics and the random state restored afterwards, so step 3 repeats this forward);
    2. the method's loss on the concatenated logits (a leaf), backward: its gradient with respect
       to every logit (and the gradient of any term of its own, such as OT's meta-set loss);
    3. each micro-batch forward again with a graph, backward of its logits with their gradient
       from step 2; several processes synchronise the gradients once, on the last micro-batch.

    Without batch norm this is the step of one batch of the whole size (to float rounding), at the
    memory of one micro-batch and the cost of one extra forward pass without a graph."""
    model, k = run.model, run.config.accumulate_steps
    parts, xs = idx.tensor_split(k), xb.tensor_split(k)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    states = []
    logits, feats = [], []
    with torch.no_grad(), run.autocast():
        for x in xs:
            states.append(_rng_state(run.device))
            f = run.features_fn(x)
            logits.append(model.classifier(f).float())
            feats.append(f.float())
    for b, saved in buffers:
        b.copy_(saved)
    whole = torch.cat(logits).requires_grad_(True)
    with run.autocast():
        loss = run.method.loss(Batch(idx, y, whole, torch.cat(feats), xb), run.meta)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = whole.grad.split([p.shape[0] for p in parts])
    for i, (x, g) in enumerate(zip(xs, grads)):
        _set_rng_state(run.device, states[i])
        sync = run.ddp is None or i == k - 1
        with (contextlib.nullcontext() if sync else run.ddp.no_sync()), run.autocast():
            out = run.ddp(x)[1] if run.ddp is not None else model.classifier(run.features_fn(x))
        out.float().backward(g)
    run.optimizer.step()
    return loss


def _rng_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@torch.no_grad()
def evaluate_split(run: Run, split: Loader | None = None) -> dict:
    """Metrics of the model in its current state on the validation split (or on ``split``)."""
    loader = run.val if split is None else split
    if run.frozen:  # the backbone does not change: its features of a split are computed once
        feats = run.cached_val if split is None else run.frozen_features(split)
        logits = run.model.classifier(feats.float())
    else:
        from .features import predict_logits

        # several processes: each rank predicts its share of the split, every rank receives all logits
        logits = predict_logits(run.model, loader, run.config.eval_batch_size, run.channels_last, shard=True)
    pred = run.method.transform_logits(logits).argmax(1).cpu().numpy()
    return classification_metrics(loader.labels.cpu().numpy(), pred, run.train_counts, run.num_classes,
                                  run.config.many_threshold, run.config.few_threshold)


def fit(model: nn.Module, method: Method, train, val, meta=None, config: FitConfig | None = None,
        device="auto", augment=None, num_classes: int | None = None, tag: str = "train",
        on_epoch_end: Callable[[int, dict], None] | None = None, checkpoint=None, resume: bool = False,
        feature_cache: FeatureCache | None = None, checkpoint_every: int = 1, watch: dict | None = None) -> FitResult:
    """Train ``model`` with ``method`` on ``train``, select on ``val`` (see the module docstring).

    ``train`` / ``val`` / ``meta``: ``(x, y)`` pairs or loaders; a training example's id is its row
    (the OT scores are keyed on it). ``augment(x_batch, generator)`` runs on device batches.
    ``checkpoint``: written atomically after every ``checkpoint_every`` epochs and the last one;
    ``resume=True`` continues from it and ends exactly as an uninterrupted run. ``feature_cache``: frozen features shared by runs
    with an identical backbone. ``on_epoch_end(epoch, record)`` is called after each evaluation.
    ``watch``: ``{name: split}`` scored after every epoch into ``record[name]`` (reported only,
    never used for selection; e.g. the test split for the best-over-epochs figure papers report).
    """
    config = (config or FitConfig()).validate()
    run = setup(model, method, train, val, meta, config, device=device, augment=augment, num_classes=num_classes,
                tag=tag, feature_cache=feature_cache)
    watched = {name: as_loader(name, split, run.device, name) for name, split in (watch or {}).items()}
    result, first_epoch = FitResult(), 0
    if resume and ckpt.exists(checkpoint):
        first_epoch = ckpt.load_checkpoint(checkpoint, config, model, run.optimizer, run.scheduler, method,
                                           run.gen, result)
    start = time.perf_counter()
    for epoch in range(first_epoch, config.epochs if method.trains else 0):
        t0 = time.perf_counter()
        train_loss = train_one_epoch(run, epoch)
        method_stats = method.end_epoch()
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        if not math.isfinite(train_loss):
            raise OTReweightError(f"{tag}: the training loss became {train_loss} at epoch {epoch + 1}; "
                                  "lower the learning rate")
        val_metrics = evaluate_split(run)
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "seconds": time.perf_counter() - t0,
                  "val": val_metrics}
        if method_stats:
            record["method"] = method_stats
        record.update({name: evaluate_split(run, split) for name, split in watched.items()})
        result.history.append(record)
        if val_metrics[config.select_metric] > result.best_score:
            result.best_score, result.best_epoch = val_metrics[config.select_metric], epoch + 1
            result.best_state = copy.deepcopy(model.state_dict())
        if (checkpoint is not None and dist.is_main()
                and ((epoch + 1) % max(1, checkpoint_every) == 0 or epoch + 1 == config.epochs)):
            ckpt.save_checkpoint(checkpoint, epoch + 1, config, model, run.optimizer, run.scheduler, method,
                                 run.gen, result)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    dist.restore_batchnorm(run.bn_swaps)  # the model's own batch-norm layers again, trained
    result.last_state = copy.deepcopy(model.state_dict())
    if result.best_state is None:  # no epoch ran (zero epochs, or a method that does not train)
        val_metrics = evaluate_split(run)
        result.history.append({"epoch": 0, "lr": 0.0, "train_loss": float("nan"), "seconds": 0.0, "val": val_metrics,
                               **{name: evaluate_split(run, split) for name, split in watched.items()}})
        result.best_epoch, result.best_score = 0, val_metrics[config.select_metric]
        result.best_state = result.last_state
    result.seconds = time.perf_counter() - start
    for p in model.parameters():
        p.requires_grad_(True)
    return result


__all__ = ["FitResult", "Run", "as_loader", "as_tensor", "evaluate_split", "fit", "setup", "train_one_epoch"]
