"""The embedded demo: scikit-learn's digits made long-tailed, OT re-weighting beside the baselines.

Data: the 1,797 8x8 digit images (scaled to [0, 1], flattened). A stratified 30% is the test set
(fixed across seeds); from the rest, each seed draws a balanced meta set (10 per class), a balanced
validation split (15 per class) and an exponentially long-tailed train set (n_max ~ 100, IF 20, so
the rarest class keeps 5 examples). Stage 1 trains an MLP with cross-entropy; stage 2 re-trains its
classifier on the frozen backbone with each method. Many / medium / few-shot groups use the
thresholds > 50 / 15-50 / < 15 training examples (the CIFAR thresholds 100 / 20 do not fit data
this small). ``ot-no-meta-ce`` is OT re-weighting without its meta-set cross-entropy term and
``ot-no-step`` the same loss without any OT step, to show where the gain comes from; ``ot-kl`` and
``ot-cc`` use the solved weight objectives (``docs/ot_weights.md``).

Each seed is one run of :func:`otreweight.experiment.run_experiment` (the same orchestrator as
``otreweight train`` and ``compare``) on the digits as an in-memory vector source, written to a
temporary folder (or ``output``); the table is :mod:`otreweight.summary` over the seeds.

Every baseline of :mod:`otreweight.methods` fits the demo's budget as a stage-2 method on the
frozen backbone (:data:`DEMO_METHODS`); the default ``methods`` keep ``otreweight demo`` under about
45 s on one CPU core. ``--methods ce,cb,...,mwnet,l2rw`` runs any of them (all fourteen: ~20 s per seed).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .config import RunConfig, as_run_config
from .data.longtail import make_long_tailed
from ._errors import OTReweightError
from .data.sources import ArrayDataset
from .run import run_experiment
from .methods import create_method
from .methods.ot_reweight import OT_VARIANTS, RETIRED_VARIANTS
from .summary import format_table, summarize


@dataclass
class DemoConfig:
    seeds: tuple = (0, 1, 2)
    imbalance_factor: float = 20.0
    n_meta_per_class: int = 10
    n_val_per_class: int = 15
    methods: tuple = ("ce", "cb", "balanced_softmax", "logit_adjust_posthoc", "cb+meta", "ot", "ot-no-meta-ce")
    stage1_epochs: int = 60
    stage2_epochs: int = 30
    device: str = "auto"
    progress: bool = False
    threads: int = 1
    many_threshold: int = 50
    few_threshold: int = 15
    ot_options: dict = field(default_factory=dict)


DEMO_METHODS = {
    "ce": {"method": "ce"},
    "cb": {"method": "cb", "beta": 0.9999},
    "focal": {"method": "focal", "gamma": 1.0},
    "cb_focal": {"method": "cb_focal", "gamma": 1.0, "beta": 0.9999},
    "cb_resample": {"method": "cb_resample"},
    "ldam_drw": {"method": "ldam_drw", "max_margin": 0.5, "s": 30.0, "drw_fraction": 0.8},
    "balanced_softmax": {"method": "balanced_softmax"},
    "logit_adjust": {"method": "logit_adjust", "tau": 1.0},
    "logit_adjust_posthoc": {"method": "logit_adjust_posthoc", "tau": 1.0},
    "crt": {"method": "crt"},
    "mwnet": {"method": "mwnet", "meta_lr": 1e-5, "meta_batch_size": 100},
    "l2rw": {"method": "l2rw"},
    "ot": {"method": "ot", "init": "class_balanced", "targets": "prototype", "eps": 0.1, "steps": 1,
           "lr": 0.01, "meta_ce": 10.0, "weighting": "raw"},
}
# The same OT re-weighting without the meta-set cross-entropy term: shows how much of the gain
# comes from training on the (balanced) meta examples rather than from the learned weights.
DEMO_METHODS["ot-no-meta-ce"] = {**DEMO_METHODS["ot"], **OT_VARIANTS["ot-no-meta-ce"]}
# Class-balanced re-weighting that also trains on the meta set: the fair partner of ``ot``, which
# sees the meta examples through its meta-set cross-entropy term.
DEMO_METHODS["cb+meta"] = {"method": "cb", "beta": 0.9999, "meta_in_train": True}
# OT's loss with no OT step at all: the class-balanced start and the meta-set term alone.
DEMO_METHODS["ot-no-step"] = {**DEMO_METHODS["ot"], **OT_VARIANTS["ot-no-step"]}
# The solved, well-posed weight objectives (docs/ot_weights.md), with the reference loss: the
# weights of all training examples are solved once per epoch against the meta prototypes.
DEMO_METHODS["ot-kl"] = {**DEMO_METHODS["ot"], **OT_VARIANTS["ot-kl"]}
DEMO_METHODS["ot-cc"] = {**DEMO_METHODS["ot"], **OT_VARIANTS["ot-cc"]}
# The envelope gradient of the converged entropic value, no score decay: ``ot`` before it became the authors' update.
DEMO_METHODS["ot-envelope"] = {**DEMO_METHODS["ot"], **OT_VARIANTS["ot-envelope"]}


STAGE1 = {"epochs": 60, "batch_size": 64, "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
          "trainable": "all", "warmup_epochs": 3, "milestones": [], "lr_factors": []}
STAGE2 = {"epochs": 30, "batch_size": 16, "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
          "trainable": "classifier", "warmup_epochs": 0, "milestones": [], "lr_factors": []}


def digits_dataset() -> ArrayDataset:
    """The digits scaled to [0, 1] and flattened; a stratified 30% test set, the same for every seed."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return ArrayDataset(x_pool, y_pool, x_test, y_test, [str(c) for c in range(10)], "digits")


def method_specs(cfg: DemoConfig) -> dict[str, dict]:
    """``{row name: spec}`` of the demo's stage-2 methods, ``--ot`` options applied, checked early."""
    methods = {}
    for name in cfg.methods:
        if name in RETIRED_VARIANTS:
            raise OTReweightError(f"method {name!r} is gone: {RETIRED_VARIANTS[name]}")
        spec = dict(DEMO_METHODS.get(name, {"method": name}))
        if spec["method"] == "ot":
            spec.update({k: v for k, v in cfg.ot_options.items() if not (name == "ot-no-meta-ce" and k == "meta_ce")})
        options = {k: v for k, v in spec.items() if k not in ("method", "meta_in_train")}
        create_method(spec["method"], **options)  # fail on a bad name or option before any training
        methods[name] = spec
    return methods


def demo_run_config(cfg: DemoConfig, seed: int, methods: dict[str, dict], output_dir) -> RunConfig:
    """The run config of one demo seed: digits as vectors (no standardisation, no augmentation),
    the MLP 64-128-64-10, stage 1 = whole MLP with CE, one classifier-only stage-2 variant per method."""
    variants = [{**STAGE2, "epochs": cfg.stage2_epochs, "name": name, "method": spec["method"],
                 "options": {k: v for k, v in spec.items() if k not in ("method", "meta_in_train")},
                 "meta_in_train": bool(spec.get("meta_in_train", False))} for name, spec in methods.items()]
    return as_run_config({
        "name": "demo", "output_dir": str(output_dir), "seed": int(seed), "device": cfg.device,
        "progress": cfg.progress, "checkpoint_every": 0,  # a demo run is not resumed: no checkpoints
        "data": {"source": "digits", "imbalance_factor": cfg.imbalance_factor, "n_meta_per_class": cfg.n_meta_per_class,
                 "n_val_per_class": cfg.n_val_per_class, "normalize": False, "augment": "none",
                 "many_threshold": cfg.many_threshold, "few_threshold": cfg.few_threshold, "loader": "memory"},
        "model": {"name": "mlp", "options": {"hidden": [128, 64]}},
        "stage1": {**STAGE1, "epochs": cfg.stage1_epochs},
        "stage2": variants,
    })


def run_seed(cfg: DemoConfig, seed: int, methods: dict[str, dict], output_dir, dataset=None) -> dict:
    """One seed of the demo into ``output_dir``: ``{row name: stage result}`` (``stage1-ce`` first)."""
    dataset = digits_dataset() if dataset is None else dataset
    res = run_experiment(demo_run_config(cfg, seed, methods, output_dir), log=lambda *a: None, dataset=dataset)
    return {"stage1-ce": res["stage1"], **{name: res[f"stage2_{name}"] for name in methods}}


def run_demo(cfg: DemoConfig, log=print, output=None) -> dict:
    """Run the demo; ``{"rows": summary rows, "runs": per-seed results, "seconds": total}``.
    Run folders go to ``output/seed_<s>`` (default: a temporary folder, removed afterwards)."""
    methods = method_specs(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the MLP is tiny: one thread beats two fighting for a core
    try:
        if output is not None:
            return _run(cfg, methods, log, Path(output))
        with tempfile.TemporaryDirectory(prefix="otreweight-demo-") as tmp:
            return _run(cfg, methods, log, Path(tmp))
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig, methods: dict, log, output: Path) -> dict:
    t0 = time.perf_counter()
    dataset = digits_dataset()
    runs = []
    for seed in cfg.seeds:
        if seed == cfg.seeds[0]:
            split = make_long_tailed(dataset.y_train, cfg.imbalance_factor, n_meta_per_class=cfg.n_meta_per_class,
                                     n_val_per_class=cfg.n_val_per_class, seed=seed)
            log(split.summary(dataset.classes))
            log(f"test: {len(dataset.y_test)} examples (balanced); many/medium/few thresholds: "
                f"> {cfg.many_threshold} / {cfg.few_threshold}-{cfg.many_threshold} / < {cfg.few_threshold} training examples\n")
        runs.append(run_seed(cfg, seed, methods, output / f"seed_{seed}", dataset))
        log(f"seed {seed} done ({time.perf_counter() - t0:.1f} s)")
    return {"rows": summarize(runs), "runs": runs, "seconds": time.perf_counter() - t0}


def results_json(result: dict) -> str:
    """The demo's results as JSON (per-seed test metrics at the validation-selected and last epoch)."""
    return json.dumps({"summary": result["rows"], "runs": result["runs"], "seconds": result["seconds"]}, indent=2)


def print_table(result: dict, log=print) -> None:
    log("Test metrics (%) at the validation-selected epoch, mean ± std over seeds; seconds = training time of that stage")
    log(format_table(result["rows"]))
    for row in result["rows"]:
        moved = [run[row["method"]].get("score_change") for run in result["runs"]]
        if moved[0] is not None:
            log(f"{row['method']}: the OT scores moved {100 * np.mean(moved):.2f}% from their start "
                "(mean |s - s0| / s0 over training examples and seeds)")
    log(f"total {result['seconds']:.1f} s")
