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

Every baseline of :mod:`otreweight.methods` fits the demo's budget as a stage-2 method on the
frozen backbone (:data:`DEMO_METHODS`); the default ``methods`` keep ``otreweight demo`` under about
45 s on one CPU core. ``--methods ce,cb,...,mwnet,l2rw`` runs any of them (all fourteen: ~20 s per seed).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .data.longtail import make_long_tailed
from .engine import FitConfig
from .methods import create_method
from .models import create_model
from .pipeline import SplitArrays, format_table, run_two_stage, summarize


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
DEMO_METHODS["ot-no-meta-ce"] = {**DEMO_METHODS["ot"], "meta_ce": 0.0}
# Class-balanced re-weighting that also trains on the meta set: the fair partner of ``ot``, which
# sees the meta examples through its meta-set cross-entropy term.
DEMO_METHODS["cb+meta"] = {"method": "cb", "beta": 0.9999, "meta_in_train": True}
# OT's loss with no OT step at all: the class-balanced start and the meta-set term alone.
DEMO_METHODS["ot-no-step"] = {**DEMO_METHODS["ot"], "steps": 0}
# The solved, well-posed weight objectives (docs/ot_weights.md), with the reference loss: the
# weights of all training examples are solved once per epoch against the meta prototypes.
DEMO_METHODS["ot-kl"] = {**DEMO_METHODS["ot"], "objective": "kl_regularized", "scope": "dataset", "lam": 0.1}
DEMO_METHODS["ot-cc"] = {**DEMO_METHODS["ot"], "objective": "class_conditional", "scope": "dataset", "lam": 0.1}


def digits_split(seed: int, cfg: DemoConfig) -> tuple[SplitArrays, object]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    split = make_long_tailed(
        y_pool, cfg.imbalance_factor, n_meta_per_class=cfg.n_meta_per_class,
        n_val_per_class=cfg.n_val_per_class, seed=seed,
    )
    data = SplitArrays(
        train=(x_pool[split.train], y_pool[split.train]),
        val=(x_pool[split.val], y_pool[split.val]),
        meta=(x_pool[split.meta], y_pool[split.meta]),
        test=(x_test, y_test),
    )
    return data, split


def demo_stages(cfg: DemoConfig, seed: int) -> tuple[FitConfig, FitConfig]:
    """The demo's stage-1 (whole MLP, plain CE) and stage-2 (classifier only) settings for one seed."""
    common = dict(seed=seed, progress=cfg.progress, many_threshold=cfg.many_threshold,
                  few_threshold=cfg.few_threshold)
    stage1 = FitConfig(epochs=cfg.stage1_epochs, batch_size=64, lr=0.1, momentum=0.9,
                       weight_decay=5e-4, trainable="all", warmup_epochs=3, **common)
    stage2 = FitConfig(epochs=cfg.stage2_epochs, batch_size=16, lr=0.01, momentum=0.9, nesterov=True,
                       weight_decay=5e-4, trainable="classifier", **common)
    return stage1, stage2


def demo_model():
    """The demo's MLP, 64-128-64-10."""
    return create_model("mlp", in_features=64, num_classes=10, hidden=(128, 64))


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Run the demo and return ``{"rows": summary rows, "runs": per-seed results, "seconds": total}``."""
    methods = {}
    for name in cfg.methods:
        spec = dict(DEMO_METHODS.get(name, {"method": name}))
        if spec["method"] == "ot":
            spec.update({k: v for k, v in cfg.ot_options.items() if not (name == "ot-no-meta-ce" and k == "meta_ce")})
        options = {k: v for k, v in spec.items() if k not in ("method", "meta_in_train")}
        create_method(spec["method"], **options)  # fail on a bad name or option before any training
        methods[name] = spec
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # the MLP is tiny: one thread beats two fighting for a core
    try:
        return _run(cfg, methods, log)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DemoConfig, methods: dict, log) -> dict:
    t0 = time.perf_counter()
    runs = []
    for seed in cfg.seeds:
        data, split = digits_split(seed, cfg)
        if seed == cfg.seeds[0]:
            log(split.summary([str(c) for c in range(10)]))
            log(f"test: {len(data.test[1])} examples (balanced); many/medium/few thresholds: "
                f"> {cfg.many_threshold} / {cfg.few_threshold}-{cfg.many_threshold} / < {cfg.few_threshold} training examples\n")
        stage1, stage2 = demo_stages(cfg, seed)
        runs.append(run_two_stage(demo_model, data, stage1, stage2, methods, cfg.device))
        log(f"seed {seed} done ({time.perf_counter() - t0:.1f} s)")
    rows = summarize(runs)
    return {"rows": rows, "runs": runs, "seconds": time.perf_counter() - t0}


def results_json(result: dict) -> str:
    """The demo's results as JSON (per-seed test metrics at the validation-selected and last epoch)."""
    runs = [{name: {k: v for k, v in r.items() if k != "method"} for name, r in run.items()} for run in result["runs"]]
    return json.dumps({"summary": result["rows"], "runs": runs, "seconds": result["seconds"]}, indent=2)


def print_table(result: dict, log=print) -> None:
    log("Test metrics (%) at the validation-selected epoch, mean ± std over seeds; seconds = training time of that stage")
    log(format_table(result["rows"]))
    for name in result["rows"]:
        moved = [run[name["method"]].get("score_change") for run in result["runs"]]
        if moved[0] is not None:
            log(f"{name['method']}: the OT scores moved {100 * np.mean(moved):.2f}% from their start "
                "(mean |s - s0| / s0 over training examples and seeds)")
    log(f"total {result['seconds']:.1f} s")
