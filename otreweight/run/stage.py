"""One stage of a run: train (or skip a finished one on resume), score the test set at the
validation-selected and the last epoch, and write the stage's folder.

A stage knows nothing of a particular method: what a method adds to the outputs comes from its
declared hooks (:meth:`~otreweight.methods.base.Method.summary` into ``final.json``,
:meth:`~otreweight.methods.base.Method.artifacts` as ``.npz`` files).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .. import distributed as dist
from .._errors import OTReweightError
from ..config import FitConfig
from ..loggers import create_loggers
from ..metrics import classification_metrics
from ..model_file import CARD, read_model, save_model
from ..train import FeatureCache, fit, predict_logits
from ..train.checkpoint import read_checkpoint
from ..utils import atomic_save


@dataclass
class StageContext:
    """What every stage of one run shares: where it writes, how it logs, the model card."""

    out: Path
    device: torch.device
    resume: bool
    log: Callable[[str], None]
    card: dict  # the run's model card without weights and metrics (see bundle.model_card)
    loggers: tuple = ()  # config key ``log``
    checkpoint_every: int = 1
    augment: str = "none"  # data.augment, named when a frozen backbone cannot use it
    thresholds: dict = field(default_factory=dict)  # many_threshold, few_threshold
    watch_test: bool = False  # score the test split after every epoch (reported only, see StageResult.test_selected)


@dataclass
class StageResult:
    """A finished stage; :meth:`to_dict` is its ``final.json``."""

    stage: str
    method: str
    best_epoch: int
    best: dict  # test metrics at the validation-selected epoch
    last: dict  # test metrics at the last epoch
    val_best: dict  # validation metrics at the selected epoch
    seconds: float
    seconds_per_epoch: float
    meta_in_train: bool
    processes: int
    batch_size_per_process: int
    global_batch_size: int
    split_file: dict | None  # {"path", "sha256"} of data.split_file, or None: drawn with the seed
    extra: dict = field(default_factory=dict)  # the method's summary (e.g. score_change, method_stats)
    # with watch_test: the epoch with the best test score and its test metrics - what papers that
    # select on the test set report; never used for any selection here (absent otherwise)
    test_selected: dict | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        if d["test_selected"] is None:
            del d["test_selected"]
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StageResult":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return cls(**{k: d.get(k) for k in names}, extra={k: v for k, v in d.items() if k not in names})


def run_stage(name: str, model, method, fit_cfg: FitConfig, prep, ctx: StageContext, meta_in_train: bool = False,
              feature_cache: FeatureCache | None = None) -> StageResult:
    """Train one stage into ``ctx.out / name``; with ``ctx.resume``, a finished stage is read back instead.

    ``meta_in_train`` appends the meta set to the training data when ``method`` does not use it.
    ``feature_cache`` shares frozen-backbone features between classifier-only stages that start
    from the same model (see :func:`otreweight.engine.fit`).
    """
    sdir = ctx.out / name
    done = _finished(sdir, name, model, ctx) if ctx.resume else None
    if done is not None:
        return done
    main = dist.is_main()  # only rank 0 writes files; every rank trains and evaluates
    if main:
        sdir.mkdir(parents=True, exist_ok=True)
    ckpt = sdir / "checkpoint.pt"
    history: list = []
    if ctx.resume and ckpt.exists():
        history.extend(read_checkpoint(ckpt)["history"])
        ctx.log(f"{name}: resuming from epoch {len(history)}")
    loggers = create_loggers(ctx.loggers, ctx.out, name) if main else []  # log: tensorboard (rank 0 only)
    on_epoch_end = _epoch_writer(name, sdir, fit_cfg.epochs, history, loggers, method, ctx.log, main)
    train = prep.train_with_meta() if meta_in_train and not method.uses_meta else prep.train
    if fit_cfg.trainable == "classifier" and prep.transforms is not None and prep.transforms.train is not None:
        ctx.log(f"{name}: the backbone is frozen, so its features are computed once from the evaluation crop; "
                f"data.augment: {ctx.augment} applies to whole-network stages")
    if name != "stage1" and (fit_cfg.accumulate_steps > 1 or dist.world_size() > 1):
        ctx.log(fit_cfg.batch_line(name, dist.world_size()))
    res = fit(
        model, method, train, prep.val, prep.meta, fit_cfg, ctx.device, prep.augment,
        num_classes=len(prep.classes), tag=name, on_epoch_end=on_epoch_end,
        checkpoint=ckpt if ctx.checkpoint_every else None, checkpoint_every=ctx.checkpoint_every, resume=ctx.resume,
        feature_cache=feature_cache if fit_cfg.trainable == "classifier" else None,
        watch={"test": prep.test} if ctx.watch_test else None,
    )
    for logger in loggers:  # each epoch's scalars were flushed as they came
        logger.close()
    if main and (not res.history or res.history[-1]["epoch"] == 0):
        atomic_save(_jsonl(res.history), sdir / "metrics.jsonl")
    pred_best, pred_last = _test_predictions(model, method, res.best_state, prep, fit_cfg, feature_cache)
    y_test = prep.test.labels.cpu().numpy()
    counts, k = prep.split.train_counts, len(prep.classes)
    result = StageResult(
        stage=name, method=repr(method), best_epoch=res.best_epoch,
        best=classification_metrics(y_test, pred_best, counts, k, **ctx.thresholds),
        last=classification_metrics(y_test, pred_last, counts, k, **ctx.thresholds),
        val_best=next(r["val"] for r in res.history if r["epoch"] == res.best_epoch),
        seconds=float(sum(r["seconds"] for r in res.history)),
        seconds_per_epoch=float(np.mean([r["seconds"] for r in res.history])) if res.history else 0.0,
        meta_in_train=bool(meta_in_train and not method.uses_meta), processes=dist.world_size(),
        batch_size_per_process=fit_cfg.batch_size, global_batch_size=fit_cfg.batch_size * dist.world_size(),
        split_file=prep.split_file, extra=method.summary(), test_selected=_test_selected(res.history, fit_cfg),
    )
    if main:
        card = {**ctx.card, "state_dict": res.best_state,
                "metrics": {"stage": name, "best_epoch": res.best_epoch, "test": result.best, "val": result.val_best}}
        _write_stage_files(sdir, result, y_test, pred_best, pred_last, method.artifacts(counts), card)
    dist.barrier()  # the stage's files exist before any rank moves on
    ctx.log(f"{name}: best epoch {res.best_epoch} (validation) -> test acc {100 * result.best['accuracy']:.2f}  "
            f"bal.acc {100 * result.best['balanced_accuracy']:.2f}")
    return result


def _test_selected(history: list, fit_cfg: FitConfig) -> dict | None:
    """``{"epoch", **test metrics}`` of the first epoch with the best test ``select_metric``, or None
    when the test split was not scored after every epoch (e.g. watch_test switched on or off on resume)."""
    if not history or any("test" not in r for r in history):
        return None
    top = max(history, key=lambda r: r["test"][fit_cfg.select_metric])
    return {"epoch": top["epoch"], **top["test"]}


def _finished(sdir: Path, name: str, model, ctx: StageContext) -> StageResult | None:
    """The result of a stage that finished earlier (its model loaded into ``model``), or None."""
    final_path = sdir / "final.json"
    if not (final_path.exists() and any((sdir / f).exists() for f in (CARD, "best.pt"))):
        return None
    try:
        final = json.loads(final_path.read_text())
        bundle = read_model(sdir)
    except (OSError, ValueError, OTReweightError):
        ctx.log(f"{name}: its final.json or model is damaged; finishing the stage again from its checkpoint")
        return None
    ctx.log(f"{name}: finished earlier, skipped (--resume)")
    model.load_state_dict(bundle["state_dict"])
    return StageResult.from_dict(final)


def _epoch_writer(name, sdir: Path, epochs: int, history: list, loggers, method, log, main: bool):
    """The ``on_epoch_end`` of :func:`~otreweight.engine.fit`: ``metrics.jsonl`` rewritten whole
    (after ``history``, the epochs of an interrupted run), the loggers and one log line."""

    def on_epoch_end(epoch, record):
        history.append(record)
        if main:
            atomic_save(_jsonl(history), sdir / "metrics.jsonl")
        for logger in loggers:
            logger.log_epoch(record, method)
        v = record["val"]
        t = f"  test bal.acc {100 * record['test']['balanced_accuracy']:.2f}" if "test" in record else ""
        log(f"{name} epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}  "
            f"val acc {100 * v['accuracy']:.2f}  bal.acc {100 * v['balanced_accuracy']:.2f}{t}  ({record['seconds']:.1f} s)")

    return on_epoch_end


def _test_predictions(model, method, best_state: dict, prep, fit_cfg: FitConfig, feature_cache) -> tuple:
    """Test predictions ``(best, last)``: the model as trained, then with ``best_state`` loaded (left so)."""
    eval_bs = fit_cfg.eval_batch_size
    cl = prep.modality.channels_last if fit_cfg.channels_last is None else fit_cfg.channels_last
    if fit_cfg.trainable == "classifier":
        # The backbone did not change: one feature pass over the test set serves both heads (also for
        # a post-hoc method, whose adjusted head is its state).
        feats = (FeatureCache() if feature_cache is None else feature_cache).features(model, prep.test, eval_bs, cl).float()
        with torch.no_grad():
            pred_last = method.transform_logits(model.classifier(feats)).argmax(1).cpu().numpy()
            model.load_state_dict(best_state)
            pred_best = method.transform_logits(model.classifier(feats)).argmax(1).cpu().numpy()
        return pred_best, pred_last
    # several processes: each rank predicts its share of the test set, every rank receives all logits
    pred_last = method.transform_logits(predict_logits(model, prep.test, eval_bs, cl, shard=True)).argmax(1).cpu().numpy()
    model.load_state_dict(best_state)
    pred_best = method.transform_logits(predict_logits(model, prep.test, eval_bs, cl, shard=True)).argmax(1).cpu().numpy()
    return pred_best, pred_last


def _write_stage_files(sdir: Path, result: StageResult, y_test, pred_best, pred_last, artifacts: dict,
                       card: dict) -> None:
    """A finished stage's predictions, the method's artifacts, the model and ``final.json`` (written
    last: its presence marks the stage as finished)."""
    np.savez(sdir / "predictions.npz", y_true=y_test, pred_best=pred_best, pred_last=pred_last)
    for fname, arrays in artifacts.items():
        np.savez(sdir / fname, **arrays)
    save_model(card, sdir)
    write_json(sdir / "final.json", result.to_dict())


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _jsonl(records) -> str:
    return "".join(json.dumps(r, default=_json_default) + "\n" for r in records)


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON at ``path``, atomically (numpy scalars and arrays as numbers and lists)."""
    atomic_save(json.dumps(obj, indent=2, default=_json_default), path)
