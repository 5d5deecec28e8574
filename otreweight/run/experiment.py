"""A whole run: checks, the output folder, the data prepared once, stage 1, then every stage-2 variant."""
from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import torch
import yaml

from .. import distributed as dist
from .._errors import OTReweightError
from ..config import RunConfig, as_run_config, dump_config
from ..data.sources import ArrayDataset
from ..methods import create_method
from ..model_file import read_model
from ..outputs import OutputLock, check_output_dir, has_progress
from ..train import FeatureCache
from ..utils import atomic_save, load_yaml, seed_everything
from .bundle import build_model, model_card
from .prepare import Prepared, check_fits, open_source
from .stage import StageContext, StageResult, run_stage, write_json


def run_experiment(cfg: RunConfig | dict, resume: bool = False, log=print, dataset: ArrayDataset | None = None) -> dict:
    """Run stage 1 and every stage-2 variant of ``cfg``; return ``{stage: final.json}``.

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
        raise OTReweightError(f"{out} already holds a run; pass --resume to continue it, or choose another output_dir")
    if cfg_path.exists() and resume:
        _check_resumable(cfg, _read_saved(cfg_path, "the saved config"), out)
    if main:
        check_output_dir(out)
    dist.barrier()  # every rank has read the folder before rank 0 writes in it
    with OutputLock(out) if main else contextlib.nullcontext():
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        if dataset is None:
            dataset = open_source(cfg.data, lazy=cfg.data.loader == "stream")
        prep = Prepared(cfg.data, cfg.seed, cfg.model.name, dataset, device)
        try:
            if resume:
                _check_same_split(out / "split.json", prep, cfg.data.source, out)
            log(prep.split.summary(prep.classes))
            _preflight(cfg, prep)
            if dist.world_size() > 1:
                log(f"{dist.world_size()} processes ({dist.backend()}): each stage's global batch is its batch_size "
                    f"per process x {dist.world_size()} x its accumulate_steps (the effective batch)")
            log(given.stage1.batch_line("stage 1", dist.world_size()) if given.stage1.lr_scaling == "none"
                else cfg.stage1.batch_line("stage 1", dist.world_size(), given.stage1))

            def started() -> None:  # the model takes the data: the run is under way
                if main:
                    _write_run_files(out, cfg, given, prep)
                log(f"test: {int(prep.test_counts.sum())} examples; device {device}")

            ctx = StageContext(out=out, device=device, resume=resume, log=log, card=model_card(cfg, prep),
                               loggers=cfg.log, checkpoint_every=cfg.checkpoint_every, augment=cfg.data.augment,
                               thresholds=dict(many_threshold=cfg.data.many_threshold,
                                               few_threshold=cfg.data.few_threshold), watch_test=cfg.watch_test)
            results = {name: r.to_dict() for name, r in run_stages(cfg, prep, ctx, started).items()}
        finally:
            prep.close()
        if main:
            write_json(out / "results.json", results)
    dist.barrier()
    return results


def run_stages(cfg: RunConfig, prep: Prepared, ctx: StageContext, started=None) -> dict[str, StageResult]:
    """Stage 1 (trained or loaded) and every stage-2 variant on prepared data; ``{stage: result}``.
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
        _load_stage1(model, cfg.stage1.checkpoint, cfg.model.name, len(prep.classes))
        ctx.log(f"stage 1: loaded {cfg.stage1.checkpoint}")
    else:
        # a classifier-only stage 1 (a frozen pretrained encoder) leaves the backbone as it is: its
        # features serve every classifier-only variant of stage 2 as well
        results["stage1"] = run_stage("stage1", model, create_method("ce"), cfg.stage_fit(cfg.stage1), prep, ctx,
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
        results[f"stage2_{v.name}"] = run_stage(f"stage2_{v.name}", m2, method, cfg.stage_fit(v), prep, ctx,
                                                v.meta_in_train, shared if v.start == "stage1" else None)
    if shared.augmented_passes:
        ctx.log(f"augmented frozen-feature passes: {shared.augmented_passes} (each epoch's view once, shared by the "
                "classifier-only stages)")
    return results


def _load_stage1(model, path, model_name: str, num_classes: int) -> None:
    bundle = read_model(path)
    try:
        model.load_state_dict(bundle["state_dict"])
    except RuntimeError:
        raise OTReweightError(f"stage-1 checkpoint {path} does not fit model {model_name!r} with {num_classes} "
                              "classes") from None


def feature_store(cfg: RunConfig):
    """The :class:`~otreweight.train.features.FeatureStore` of ``cfg.feature_store`` (``None``: in memory only)."""
    from ..data.sources import default_cache_dir
    from ..train.features import FeatureStore

    where = cfg.feature_store  # several processes: every rank reads the store, rank 0 alone writes it
    if where == "off" or (where == "auto" and cfg.stage1.trainable != "classifier" and not cfg.stage1.checkpoint):
        return None  # a backbone trained in this run: no other run has the same one
    return FeatureStore(default_cache_dir() / "features" if where == "auto" else where, cfg.feature_dtype)


def _write_run_files(out: Path, cfg: RunConfig, given: RunConfig, prep: Prepared) -> None:
    """``config.yaml`` (the resolved config, headed by the effective batch) and ``split.json``."""
    d = cfg.data
    note = (f"# split read from {prep.split_file['path']} (sha256 {prep.split_file['sha256']})\n"
            if prep.split_file else "")
    atomic_save(note + _distributed_note(cfg, given) + dump_config(cfg), out / "config.yaml")
    write_json(out / "split.json", {
        "classes": prep.classes, **prep.split.to_dict(), "test_counts": prep.test_counts.tolist(),
        "many_threshold": d.many_threshold, "few_threshold": d.few_threshold, "source": d.source,
        "validation": "given" if prep.given_val is not None else "drawn from the training pool",
        "data_fingerprint": prep.fingerprint, "split_file": prep.split_file,
    })


def _check_same_split(split_path: Path, prep: Prepared, source, out: Path) -> None:
    """On resume: the data and the split file are those the run was started with."""
    if not split_path.exists():
        return
    saved = _read_saved(split_path, "the saved split")
    old = saved.get("data_fingerprint")
    if old is not None and old != prep.fingerprint:
        raise OTReweightError(f"the data of {source} changed since {out} was started; resume with the "
                              "same data, or start a new run in another output_dir")
    old_file = saved.get("split_file")
    if (old_file or {}).get("sha256") != (prep.split_file or {}).get("sha256"):
        raise OTReweightError(f"{out} was started with another split (split file {old_file and old_file['path']}); "
                              "resume with the same data.split_file, or use another output_dir")


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


def _preflight(cfg: RunConfig, prep: Prepared) -> None:
    """Each stage's method checks what it can from the split's sizes (e.g. OT's dense-solve limit),
    so a stage-2 variant that cannot run stops the run before stage 1 trains."""
    n_train, n_meta = len(prep.split.train), len(prep.split.meta)
    for st in cfg.stage2:  # stage 1 is plain cross-entropy
        extra = n_meta if st.meta_in_train else 0
        create_method(st.method, **(st.options or {})).preflight(n_train + extra, n_meta, len(prep.classes),
                                                                 st.batch_size * dist.world_size())


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
