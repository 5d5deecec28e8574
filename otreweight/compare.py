"""``otreweight compare``: OT re-weighting and the baselines on identical splits, over seeds.

For every seed, one run folder (:func:`otreweight.experiment.run_experiment`) holds the
long-tailed split of that seed, stage 1 (plain cross-entropy, trained once) and one stage-2
variant per method, so every method of a seed sees the same train / meta / validation / test
examples. Every model is selected on the validation split; the tables report test metrics at the
selected epoch (``which="best"``) or the last one, as mean +- std over seeds.

How each method is run (``preset="baselines"``, ``mode="paper"``): the way its paper trains it,
within the config's budget. "stage-1 recipe" is the config's ``stage1`` optimisation (epochs, batch,
lr, warm-up, decay); "OT recipe" that of the config's classifier-only OT variant.

====================  ==========  ===============  ===============  ==========================================
method                starts from trains           recipe           why
====================  ==========  ===============  ===============  ==========================================
ce                    scratch     whole network    stage-1 recipe   the stage-1 model itself (no extra run)
focal                 scratch     whole network    stage-1 recipe   an end-to-end loss (Lin et al.)
cb, cb_focal          scratch     whole network    stage-1 recipe   end-to-end re-weighting (Cui et al.)
cb_resample           scratch     whole network    stage-1 recipe   end-to-end re-sampling
ldam_drw              scratch     whole network    stage-1 recipe   DRW is deferred within one run (Cao et al.);
                                                                    it switches at 80% of the epochs, with the
                                                                    recipe's first lr decay
balanced_softmax,     scratch     whole network    stage-1 recipe   end-to-end losses (Ren et al. 2020,
logit_adjust                                                        Menon et al.)
logit_adjust_posthoc  stage 1     nothing          -                post-hoc on the CE model (Menon et al.)
crt                   stage 1     classifier       10 epochs,       decoupled (Kang et al.): re-initialised
                                                   batch 128, lr    classifier, class-balanced sampling
                                                   0.1 (x0.1 at 60%)
mwnet, l2rw           scratch     whole network    stage-1 recipe   end-to-end bilevel re-weighting, as their
                                                                    papers (about 3x the passes per step)
ot                    stage 1     classifier       OT recipe        the authors' stage 2 (config's variant)
====================  ==========  ===============  ===============  ==========================================

``mode="decoupled"`` instead re-trains the classifier of the frozen stage-1 backbone for every
trainable loss (focal ... l2rw) with the OT recipe: the same budget as OT's stage 2, so it compares
the re-weighting schemes alone, cheaply. Any other registered method runs like ``ot``. Per-method
settings can be overridden (``method_sets=["ldam_drw.epochs=100", "*.batch_size=64",
"mwnet.options.meta_lr=1e-4"]``).

``preset="ablation"`` runs the OT method's ablations from its reference options (the config's
classifier-only OT variant): cost (feature / label / combined), meta targets (prototype / whole),
initialisation (uniform / class-balanced), with and without the meta-CE term, and 0 / 1 / 5 OT
steps per batch, each changing one option, beside CE.

``meta_in_train=True`` adds the meta set to the training data of every method that does not use it
(stage 1 included), so no method is starved of the examples the meta-learners see.

Output folder::

    <output>/compare.json         the plan (settings of every method) and arguments
    <output>/seed_<s>/            a run folder per seed (config.yaml, split.json, stage1/, stage2_<m>/)
    <output>/compare.md, .csv     the table: mean +- std over seeds, and the paired differences
    <output>/compare_results.json the same rows and paired differences, per seed too
    <output>/compare.png          balanced accuracy per method, mean +- std; paired differences

**Paired differences** (``reference``, ``--reference``; default ``cb`` when it is compared, else
the first method): the methods of one seed share its split and its stage-1 model, so the
question "is method A better than the reference?" is answered by the per-seed differences
d_s = bal.acc_s(A) - bal.acc_s(reference) (test balanced accuracy, points), not by comparing two
mean +- std cells whose spreads share the seed-to-seed variation. For each method: the mean of d
over the n seeds both ran, its sample standard deviation s (ddof 1) and the 95 % t interval
mean +- t(0.975, n-1) * s / sqrt(n). **Reading rule**: *better* when the whole interval is above 0,
*worse* when it is below 0, *within noise* when it contains 0 (the seeds do not show a difference:
there may be a small one, more seeds narrow the interval); with one seed there is no interval
(*one seed*). With 3 seeds t(0.975, 2) = 4.30, so a difference counts only when it is about 2.5
times its own seed-to-seed std. The interval speaks for this data set and budget (split and
stage 1 drawn by the seed), not for other data sets. A method marked *transductive*
(``ot-posthoc``) predicts from the whole test split at once.

An interrupted comparison resumes with ``resume=True`` (``--resume``): finished stages are
skipped, unfinished ones continue from their checkpoints. Seeds (or methods) added to a finished
comparison with ``resume=True`` join its tables beside the ones already there.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from . import distributed as dist
from ._errors import OTReweightError, check_choice
from .config import DataConfig, RunConfig, Stage2Config, as_run_config, recipe_keys, set_dotted
from .config.fields import Section, build
from .methods import METHODS
from .methods.ot_reweight import OT_VARIANTS, RETIRED_VARIANTS
from .outputs import check_output_dir, has_progress
from .summary import METRICS, cell, mean_std, to_csv
from .utils import atomic_save, parse_assignment

PRESETS = ("baselines", "ablation")
MODES = ("paper", "decoupled")
RECIPE_KEYS = recipe_keys()  # the stage fields marked as a recipe in otreweight.config.FitConfig
DEFAULT_METHODS = ("ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust_posthoc", "crt", "mwnet", "l2rw",
                   "ot")
CRT_RECIPE = dict(METHODS.get("crt").recipe)  # declared on the method class (Method.recipe)
# The OT ablation axes: option -> values tried (each variant changes one option of the reference).
ABLATION_AXES = {"cost": ("feature", "label", "combined"), "targets": ("prototype", "whole"),
                 "init": ("uniform", "class_balanced"), "meta_ce": (0.0, 10.0), "steps": (0, 1, 5)}


# ----------------------------------------------------------------------------- plan
@dataclass(eq=False)
class Stage1Entry(Section):
    """The plan entry of the stage-1 model itself (the ``ce`` row of a comparison): its settings are
    the config's ``stage1``."""

    name: str = "ce"
    stage: str = "stage1"
    meta_in_train: bool = False


#: One entry of a comparison plan: a stage-2 variant, or the stage-1 model itself.
PlanEntry = Union[Stage2Config, Stage1Entry]


def as_plan_entry(v) -> PlanEntry:
    """A plan entry as given, or built (every value type-checked) from its mapping (``compare.json``)."""
    if isinstance(v, (Stage2Config, Stage1Entry)):
        return v
    if isinstance(v, dict) and v.get("stage") == "stage1":
        return build(Stage1Entry, v, "plan entry")
    return build(Stage2Config, v, f"plan entry {v.get('name', '?')}" if isinstance(v, dict) else "plan entry")


def _is_variant(v: PlanEntry) -> bool:
    return isinstance(v, Stage2Config)


def make_variant(name: str, method: str, options: dict, start: str = "stage1", trainable: str = "classifier",
                 recipe: dict | None = None, meta_in_train: bool = False) -> Stage2Config:
    """One stage-2 variant of a comparison plan: ``method`` with ``options``, the recipe keys
    (epochs, batch_size, lr, ...) taken from ``recipe`` (default: the stage-2 defaults)."""
    v = _variant(name, method, options, start, trainable, {**_stage2_defaults(), **(recipe or {})})
    v.meta_in_train = bool(meta_in_train)
    return v


def _stage2_defaults() -> dict:
    return Stage2Config().to_dict()


def end_to_end_methods() -> tuple[str, ...]:
    """The registered methods whose papers train them from scratch (``Method.end_to_end``)."""
    return tuple(n for n in METHODS.names() if getattr(METHODS.get(n), "end_to_end", False))


def _variant(name: str, method: str, options: dict, start: str, trainable: str, recipe: dict) -> Stage2Config:
    v = _stage2_defaults()
    v.update(copy.deepcopy({k: recipe[k] for k in RECIPE_KEYS if k in recipe}))
    v.update(name=name, method=method, options=copy.deepcopy(options), start=start, trainable=trainable)
    return build(Stage2Config, v, name)


def ot_reference(cfg: dict) -> dict:
    """The config's classifier-only OT variant (else its first OT variant, else the stage-2 defaults)."""
    ots = [v.to_dict() for v in as_run_config(cfg).stage2 if v.method == "ot"]
    return next((v for v in ots if v["trainable"] == "classifier"), ots[0] if ots else _stage2_defaults())


def plan_comparison(cfg: dict, methods=None, preset: str = "baselines", mode: str = "paper",
                    meta_in_train: bool = False, method_sets=()) -> list[PlanEntry]:
    """The stage-2 variants of a comparison, one per method, in table order.

    Each entry is a :class:`~otreweight.config.Stage2Config`, except the ``ce`` entry: a
    :class:`Stage1Entry` (the stage-1 model itself) unless the config loads stage 1 from a
    checkpoint; then it is a zero-epoch variant that only scores it.
    """
    check_choice("compare preset", preset, PRESETS)
    check_choice("compare mode", mode, MODES)
    cfg = as_run_config(cfg)
    ref = ot_reference(cfg)
    ot_recipe = {k: ref[k] for k in RECIPE_KEYS}
    s1_recipe = {k: v for k, v in cfg.stage1.to_dict().items() if k in RECIPE_KEYS}
    if preset == "ablation":
        known = ablation_variants(cfg)
        methods = list(methods or ["ce", *known])
    else:
        known = {}
        methods = list(methods or DEFAULT_METHODS)
    if not methods:
        raise OTReweightError("no method to compare; give --methods")
    if len(set(methods)) != len(methods):
        raise OTReweightError(f"--methods lists a method twice: {','.join(methods)}")
    plan = []
    for name in methods:
        if name == "ce":
            if cfg.stage1.checkpoint:
                plan.append(_variant("ce", "ce", {}, "stage1", "classifier", {**ot_recipe, "epochs": 0}))
            else:
                plan.append(Stage1Entry())
        elif name in known:
            plan.append(known[name])
        elif name == "ot":
            plan.append(_variant("ot", "ot", ref["options"] or {}, "stage1", "classifier", ot_recipe))
        elif name in OT_VARIANTS:  # a named OT variant: the reference options with its overrides
            plan.append(_variant(name, "ot", {**(ref["options"] or {}), **OT_VARIANTS[name]}, "stage1", "classifier",
                                 ot_recipe))
        elif name in RETIRED_VARIANTS:
            raise OTReweightError(f"method {name!r} is gone: {RETIRED_VARIANTS[name]}")
        elif preset == "ablation":
            raise OTReweightError(f"unknown ablation {name!r}; choose among: ce, {', '.join(known)}")
        elif name not in METHODS:
            raise OTReweightError(f"unknown method {name!r}; choose among: {', '.join(METHODS.names())}, "
                                  f"{', '.join(OT_VARIANTS)}")
        elif not METHODS.get(name).trains:  # post-hoc: scores the stage-1 model, trains nothing
            plan.append(_variant(name, name, {}, "stage1", "classifier", {**ot_recipe, "epochs": 0}))
        elif METHODS.get(name).recipe:  # a recipe of its own (cRT)
            plan.append(_variant(name, name, {}, "stage1", "classifier", METHODS.get(name).recipe))
        elif METHODS.get(name).end_to_end and mode == "paper":
            plan.append(_variant(name, name, {}, "scratch", "all", s1_recipe))
        else:  # decoupled losses, and any other registered method: like OT's stage 2
            plan.append(_variant(name, name, {}, "stage1", "classifier", ot_recipe))
    for v in plan:
        v.meta_in_train = bool(meta_in_train)
    return _apply_method_sets(plan, method_sets)


def ablation_variants(cfg: dict) -> dict:
    """``{name: variant}``: the reference OT variant ``ot`` and one variant per changed option."""
    ref = ot_reference(cfg)
    recipe = {k: ref[k] for k in RECIPE_KEYS}
    opts = {**METHODS.get("ot").option_defaults(), **(ref["options"] or {})}
    out = {"ot": _variant("ot", "ot", ref["options"] or {}, "stage1", "classifier", recipe)}
    for key, values in ABLATION_AXES.items():
        current = opts.get(key)
        if key == "meta_ce":
            alt = [0.0] if float(current) > 0 else [10.0]
            names = ["ot_no_meta_ce"] if float(current) > 0 else ["ot_meta_ce_10"]
        else:
            alt = [v for v in values if v != current]
            names = [f"ot_{key}_{v}" for v in alt]
        for name, value in zip(names, alt):
            out[name] = _variant(name, "ot", {**(ref["options"] or {}), key: value}, "stage1", "classifier",
                                 recipe)
    return out


def _apply_method_sets(plan: list[PlanEntry], method_sets) -> list[PlanEntry]:
    """``plan`` with each ``METHOD.KEY=VALUE`` (``*``: every variant) applied, values type-checked."""
    plan = [as_plan_entry(v) for v in plan]
    index = {v.name: i for i, v in enumerate(plan)}
    keys = [k for k in _stage2_defaults() if k not in ("name", "method")]
    for item in method_sets or []:
        key, value = parse_assignment(item, "--method-set", "METHOD.KEY=VALUE (e.g. ldam_drw.epochs=100)", dotted=True)
        name, _, rest = key.partition(".")
        if name != "*" and name not in index:
            raise OTReweightError(f"--method-set {item}: {name!r} is not among the compared methods ({', '.join(index)})")
        targets = [i for i, v in enumerate(plan) if _is_variant(v)] if name == "*" else [index[name]]
        if not targets or not _is_variant(plan[targets[0]]):
            raise OTReweightError(f"--method-set {item}: the ce row is stage 1 itself; change it with --set stage1.{rest}")
        if rest.split(".")[0] not in keys:
            raise OTReweightError(f"--method-set {item}: unknown key {rest!r}; keys: {', '.join(keys)}, options.<option>")
        for i in targets:
            d = plan[i].to_dict()
            set_dotted(d, rest, value)
            plan[i] = build(Stage2Config, d, f"--method-set {plan[i].name}")
    return plan


def seed_config(cfg: dict, plan: list[PlanEntry], seed: int, output: Path, meta_in_train: bool) -> dict:
    """The run config of one seed: the comparison's stage-2 variants, its own output folder."""
    c = as_run_config(cfg).to_dict()
    c["seed"] = int(seed)
    c["output_dir"] = str(output / f"seed_{seed}")
    c["stage1"]["meta_in_train"] = bool(meta_in_train)
    ckpt = c["stage1"]["checkpoint"]
    if ckpt:
        c["stage1"]["checkpoint"] = str(ckpt).format(seed=seed)
    c["stage2"] = [v.to_dict() for v in plan if _is_variant(v)]
    return as_run_config(c)


# ----------------------------------------------------------------------------- run
def run_comparison(cfg: dict, methods=None, seeds=(0, 1, 2), preset: str = "baselines", mode: str = "paper",
                   meta_in_train: bool = False, method_sets=(), output=None, resume: bool = False,
                   which: str = "best", log=print, dataset=None, reference: str | None = None) -> dict:
    """Run every method over every seed (see the module docstring); write and return the tables.

    Returns ``{"rows": [...], "plan": [...], "output": Path, "files": {...}}``; each row has
    ``method``, ``seeds`` and ``<metric>_mean`` / ``<metric>_std`` (metrics in percent,
    ``seconds_per_epoch``, ``total_seconds``).
    """
    plan = plan_comparison(cfg, methods, preset, mode, meta_in_train, method_sets)
    suffix = "_ablation" if preset == "ablation" else "_compare"
    out = Path(output) if output else Path(str(as_run_config(cfg).output_dir).rstrip("/") + suffix)
    return run_plan(cfg, plan, seeds, out, preset=preset, mode=mode, meta_in_train=meta_in_train, resume=resume,
                    which=which, log=log, dataset=dataset, reference=reference)


def run_plan(cfg: dict, plan: list, seeds, output, preset: str = "custom", mode: str = "custom",
             meta_in_train: bool = False, resume: bool = False, which: str = "best", log=print, dataset=None,
             reference: str | None = None) -> dict:
    """Run a comparison plan (a list of stage-2 variants, e.g. from :func:`plan_comparison` and
    :func:`make_variant`, or their mappings) over seeds into ``output``; the tables as :func:`run_comparison`.

    ``meta_in_train`` sets stage 1's flag; each variant carries its own ``meta_in_train``.
    """
    from .run import run_experiment

    check_choice("selection", which, ("best", "last"))
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise OTReweightError(f"--seeds needs one or more distinct seeds, got {seeds}")
    ckpt = as_run_config(cfg).stage1.checkpoint
    if ckpt and len(seeds) > 1 and "{seed}" not in str(ckpt):
        raise OTReweightError(
            "one stage-1 checkpoint cannot serve several seeds (each seed draws its own split); "
            "put {seed} in stage1.checkpoint, e.g. runs/c10_seed{seed}/stage1/model.json"
        )
    plan = [as_plan_entry(v) for v in plan]
    names = [v.name for v in plan]
    if len(set(names)) != len(names):
        raise OTReweightError(f"the plan names a method twice: {','.join(names)}")
    reference = reference_method(plan, reference)
    out = Path(output)
    seed_cfgs = {s: seed_config(cfg, plan, s, out, meta_in_train) for s in seeds}  # validate all before running
    # under torchrun every rank runs every method in turn (each stage on all ranks); rank 0 alone
    # writes the plan, the run folders and the tables, and prints
    dist.init(seed_cfgs[seeds[0]].device)
    if dist.world_size() > 1:
        single = [v.name for v in plan if _is_variant(v)
                  and not getattr(METHODS.get(v.method), "multi_process", True)]
        if single:
            raise OTReweightError(f"method(s) {', '.join(single)} cannot run on several processes yet (a look-ahead "
                                  "step per process); compare them in one process, without torchrun, or leave them "
                                  "out (--methods)")
    main = dist.is_main()
    if not main:
        log = _quiet  # noqa: F811
    _check_or_write_plan(out, plan, cfg, seeds, preset, mode, meta_in_train, resume)

    # Seeds finished by an earlier run of this comparison (e.g. adding a seed with --resume) stay
    # in the tables.
    results: dict[int, dict] = {}
    for s in json.loads((out / "compare.json").read_text()).get("seeds", []):
        done = out / f"seed_{s}" / "results.json"
        if s not in seeds and done.exists():
            results[int(s)] = json.loads(done.read_text())
    for i, s in enumerate(seeds):
        log(f"== seed {s} ({i + 1}/{len(seeds)}): {', '.join(v.name for v in plan)}")
        results[s] = run_experiment(seed_cfgs[s], resume=resume, log=lambda msg, s=s: log(f"[seed {s}] {msg}"),
                                    dataset=dataset)
        files = (write_tables(out, plan, dict(sorted(results.items())), which, cfg, reference=reference) if main
                 else table_paths(out))
    dist.barrier()  # the tables exist before any rank returns
    log(f"comparison written to {files['md']}")
    return {"rows": summarize_comparison(plan, results, which), "plan": plan, "output": out, "files": files,
            "paired": paired_differences(plan, results, reference, which)}


def _quiet(*args, **kwargs) -> None:
    pass


def _plain(obj):
    """``obj`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(obj, default=str))


def _check_or_write_plan(out: Path, plan, cfg, seeds, preset, mode, meta_in_train, resume) -> None:
    path = out / "compare.json"
    started = path.exists() and any(has_progress(d) for d in out.glob("seed_*"))
    if started and not resume:
        raise OTReweightError(f"{out} already holds a comparison; pass --resume to continue it, or choose another --output")
    if path.exists() and not started:
        resume = False  # a comparison that failed at its start: begin it afresh
    plain = as_run_config(cfg).to_dict()
    entries = [v.to_dict() for v in plan]
    record = {"config": {k: plain[k] for k in ("data", "model", "stage1")}, "seeds": seeds, "preset": preset,
              "mode": mode, "meta_in_train": meta_in_train, "plan": entries}
    if path.exists() and resume:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            raise OTReweightError(f"{path} is damaged; delete it to start the comparison afresh") from None
        old_data = old.get("config", {}).get("data")
        if isinstance(old_data, dict):
            old_data = {"split_file": None, **old_data}  # a comparison saved before data.split_file
        if old_data != _plain(plain["data"]) or old.get("config", {}).get("model") != _plain(plain["model"]):
            raise OTReweightError(f"{out} holds a comparison on other data or another model; use another --output")
        old_plan = {v["name"]: v for v in old.get("plan", [])}
        changed = [v["name"] for v in entries if v["name"] in old_plan and old_plan[v["name"]] != _plain(v)]
        if changed or old.get("config", {}).get("stage1") != _plain(plain["stage1"]):
            what = ", ".join(changed) if changed else "stage1"
            raise OTReweightError(
                f"the settings of {what} changed since {out} was started; resume with the same settings or use another --output"
            )
        record["plan"] = [*entries, *(v for n, v in old_plan.items() if n not in {p["name"] for p in entries})]
        record["seeds"] = sorted(set(seeds) | set(old.get("seeds", [])))
    dist.barrier()  # every rank has read the folder before rank 0 writes in it
    if dist.is_main():
        check_output_dir(out, "--output")
        atomic_save(json.dumps(record, indent=2, default=str), path)
    dist.barrier()


# ----------------------------------------------------------------------------- tables
def _trains(v: PlanEntry) -> bool:
    """Whether a plan entry runs training epochs (post-hoc adjustment and zero-epoch variants do not)."""
    if not _is_variant(v):
        return True
    return v.epochs > 0 and bool(getattr(METHODS.get(v.method), "trains", True))


def _stage_of(v: PlanEntry) -> str:
    return f"stage2_{v.name}" if _is_variant(v) else "stage1"


def summarize_comparison(plan: list, results: dict, which: str = "best") -> list[dict]:
    """Mean and std over seeds per method (metrics in percent; seconds per epoch; total seconds,
    stage 1 included for the methods that start from it)."""
    rows = []
    for v in map(as_plan_entry, plan):
        stage = _stage_of(v)
        runs = [r for r in results.values() if stage in r]
        row = {"method": v.name, "seeds": len(runs)}
        for key in METRICS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(
                [100.0 * r[stage][which][key] for r in runs if r[stage][which].get(key) is not None])
        spe = [r[stage]["seconds_per_epoch"] for r in runs] if _trains(v) else []
        tot = [r[stage]["seconds"] + (r["stage1"]["seconds"] if _is_variant(v) and v.start == "stage1" and "stage1" in r else 0.0)
               for r in runs]
        row["seconds_per_epoch_mean"], row["seconds_per_epoch_std"] = mean_std(spe)
        row["total_seconds_mean"], row["total_seconds_std"] = mean_std(tot)
        chosen = [r[stage]["test_selected"] for r in runs if r[stage].get("test_selected")]
        if chosen:  # watch_test: the best test score over the epochs (reported only, never selected on)
            row["test_selected_mean"], row["test_selected_std"] = mean_std(
                [100.0 * t["balanced_accuracy"] for t in chosen])
            row["test_selected_seeds"] = len(chosen)
        stats = [r[stage].get("method_stats") for r in runs if r[stage].get("method_stats")]
        if stats:
            row["forward_per_step"] = float(np.mean([s["forward_per_step"] for s in stats]))
            row["backward_per_step"] = float(np.mean([s["backward_per_step"] for s in stats]))
        rows.append(row)
    return rows


def reference_method(plan: list, reference: str | None = None) -> str:
    """The reference of the paired differences: ``reference`` (one line if it is not compared),
    else ``cb`` when it is in the plan, else the plan's first method."""
    names = [as_plan_entry(v).name for v in plan]
    if reference is None:
        return "cb" if "cb" in names else names[0]
    if reference not in names:
        raise OTReweightError(f"--reference {reference} is not among the compared methods ({', '.join(names)}); "
                              "name one of them")
    return reference


def paired_stats(diffs, level: float = 0.95) -> dict:
    """Mean, sample std (ddof 1), ``level`` t interval and verdict of per-seed paired differences."""
    from scipy import stats

    d = np.asarray([float(x) for x in diffs], dtype=np.float64)
    out = {"paired_seeds": int(d.size), "diff_mean": None, "diff_std": None, "ci_low": None, "ci_high": None,
           "verdict": "no seed"}
    if d.size == 0:
        return out
    out["diff_mean"] = float(d.mean())
    if d.size == 1:
        out["verdict"] = "one seed"
        return out
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * sd / np.sqrt(d.size)
    lo, hi = out["diff_mean"] - half, out["diff_mean"] + half
    out.update(diff_std=sd, ci_low=lo, ci_high=hi,
               verdict="better" if lo > 0 else ("worse" if hi < 0 else "within noise"))
    return out


def paired_differences(plan: list, results: dict, reference: str, which: str = "best",
                       metric: str = "balanced_accuracy") -> list[dict]:
    """Per method, its test ``metric`` (points) minus the reference's on each seed both ran, and
    :func:`paired_stats` of those differences (see the module docstring for the reading rule)."""
    plan = [as_plan_entry(v) for v in plan]
    ref_stage = _stage_of(next(v for v in plan if v.name == reference))
    rows = []
    for v in plan:
        stage = _stage_of(v)
        per_seed = {}
        for seed, r in sorted(results.items()):
            if stage in r and ref_stage in r:
                a, b = r[stage][which].get(metric), r[ref_stage][which].get(metric)
                if a is not None and b is not None:
                    per_seed[int(seed)] = 100.0 * (a - b)
        row = {"method": v.name, "reference": reference, "metric": metric, "diff_per_seed": per_seed}
        row.update(paired_stats(list(per_seed.values())) if v.name != reference else
                   {"paired_seeds": len(per_seed), "diff_mean": 0.0, "diff_std": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                    "verdict": "reference"})
        rows.append(row)
    return rows


def _transductive(v: PlanEntry) -> bool:
    return _is_variant(v) and v.method in METHODS and bool(getattr(METHODS.get(v.method), "transductive", False))


def _describe(v: PlanEntry, cfg: RunConfig) -> list[str]:
    extra = " +meta" if v.meta_in_train else ""
    if not _is_variant(v):
        s1 = cfg.stage1
        what = "classifier (frozen backbone)" if s1.trainable == "classifier" else "whole network"
        return ["ce (stage 1)" + extra, "scratch", what, str(s1.epochs), str(s1.batch_size), f"{s1.lr:g}", ""]
    opts = ", ".join(f"{k}={val}" for k, val in (v.options or {}).items())
    trains = "nothing" if not _trains(v) else ("whole network" if v.trainable == "all" else "classifier")
    if trains == "nothing":
        if _transductive(v):
            trains += " (transductive: predicts from the whole test split)"
        return [v.method + extra, v.start, trains, "-", "-", "-", opts]
    return [v.method + extra, v.start, trains, str(v.epochs), str(v.batch_size), f"{v.lr:g}", opts]


def _imbalance_text(out: Path, d: DataConfig, seeds: list) -> str:
    """``IF 100 (exp)``; for ``profile: given`` (which ignores the factor) the set's own training
    imbalance ratio (largest / smallest class count of the first seed's split), when it is known."""
    if d.profile != "given":
        return f"IF {d.imbalance_factor} ({d.profile})"
    try:
        counts = [c for c in json.loads((out / f"seed_{seeds[0]}" / "split.json").read_text())["train_counts"] if c > 0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        counts = []
    if not counts:
        return "the given class counts (profile given)"
    return f"the given class counts (profile given; training imbalance ratio {max(counts) / min(counts):,.0f})"


def write_tables(out: Path, plan: list, results: dict, which: str, cfg: dict, reference: str | None = None) -> dict:
    """Write ``compare.md``, ``compare.csv``, ``compare_results.json`` and ``compare.png`` into
    ``out`` (the paired differences to ``reference``, see :func:`reference_method`); return their paths."""
    plan = [as_plan_entry(v) for v in plan]
    rows = summarize_comparison(plan, results, which)
    reference = reference_method(plan, reference)
    paired = paired_differences(plan, results, reference, which)
    transductive = {v.name for v in plan if _transductive(v)}
    seeds = sorted(results)
    sel = "validation-selected epoch" if which == "best" else "last epoch"
    cfg = as_run_config(cfg)
    d = cfg.data
    lines = [
        "# Comparison", "",
        f"Data `{d.source}`, {_imbalance_text(out, d, seeds)}, model `{cfg.model.name}`; "
        f"seeds {', '.join(map(str, seeds))}. Test metrics (%) at the {sel}, mean ± std over seeds; "
        "many / medium / few: classes with > "
        f"{d.many_threshold} / {d.few_threshold}-{d.many_threshold} / < {d.few_threshold} training examples. "
        "s/epoch: the method's own training stage; total s: its training time, stage 1 included for the "
        "methods that start from the stage-1 model.", "",
        "| method | acc | bal.acc | many | medium | few | gmean | s/epoch | total s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [cell(r, k) for k in METRICS] + [cell(r, "seconds_per_epoch", None), cell(r, "total_seconds", None)]
        mark = " (transductive)" if r["method"] in transductive else ""
        lines.append(f"| {r['method']}{mark} | " + " | ".join(cells) + " |")
    watched = [r for r in rows if "test_selected_mean" in r]
    if watched:
        lines += ["", "Best test balanced accuracy over the epochs (%), mean ± std over seeds: what papers that select "
                  "on the test set report (`watch_test: true`); shown for comparison with them only, never used for "
                  "any selection here: " + "; ".join(
                      f"{r['method']} {cell(r, 'test_selected')}" for r in watched) + "."]
    lines += _paired_lines(paired, reference)
    passes = [r for r in rows if "forward_per_step" in r]
    if passes:
        lines += ["", "Passes through the trained model per step (forward / backward; plain CE: 1 / 1): " + "; ".join(
            f"{r['method']} {r['forward_per_step']:.0f} / {r['backward_per_step']:.0f}" for r in passes) + "."]
    lines += ["", "## How each method was run", "",
              "| name | method | starts from | trains | epochs | batch | lr | options |", "|---|---|---|---|---|---|---|---|"]
    for v in plan:
        lines.append(f"| {v.name} | " + " | ".join(_describe(v, cfg)) + " |")
    out.mkdir(parents=True, exist_ok=True)
    files = table_paths(out)
    md, csv_path, png = files["md"], files["csv"], files["png"]
    atomic_save("\n".join(lines) + "\n", md)
    keys = ["method", "seeds"] + [f"{k}_{s}" for k in (*METRICS, "seconds_per_epoch", "total_seconds") for s in ("mean", "std")]
    pkeys = ["reference", "paired_seeds", "diff_mean", "diff_std", "ci_low", "ci_high", "verdict"]
    by_name = {p["method"]: p for p in paired}
    pcols = [k if k.startswith("paired_") else f"paired_{k}" for k in pkeys]
    csv_rows = [{**r, "transductive": r["method"] in transductive,
                 **{c: by_name[r["method"]][k] for c, k in zip(pcols, pkeys)}} for r in rows]
    atomic_save(to_csv(csv_rows, keys + ["transductive"] + pcols), csv_path)
    atomic_save(json.dumps({"which": which, "seeds": seeds, "metric": "balanced_accuracy", "reference": reference,
                            "transductive": sorted(transductive), "rows": rows, "paired": paired}, indent=2,
                           default=str), files["json"])
    _plot(rows, png, sel, paired, reference)
    return files


def _fmt(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:+.{digits}f}"


def _paired_lines(paired: list[dict], reference: str) -> list[str]:
    lines = ["", f"## Paired differences to `{reference}`", "",
             f"Test balanced accuracy minus `{reference}`'s on the same seed (points; the methods of a seed share its "
             "split and stage-1 model): mean ± sample std over seeds, 95 % t interval, verdict (better / worse: the "
             "interval excludes 0; within noise: it contains 0; one seed: no interval).", "",
             "| method | seeds | Δ bal.acc | 95 % interval | verdict |", "|---|---|---|---|---|"]
    for p in paired:
        if p["verdict"] == "reference":
            lines.append(f"| {p['method']} | {p['paired_seeds']} | (reference) | - | - |")
            continue
        diff = "-" if p["diff_mean"] is None else (
            _fmt(p["diff_mean"]) + ("" if p["diff_std"] is None else f" ± {p['diff_std']:.2f}"))
        ci = "-" if p["ci_low"] is None else f"[{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]"
        lines.append(f"| {p['method']} | {p['paired_seeds']} | {diff} | {ci} | {p['verdict']} |")
    return lines


def table_paths(out: Path) -> dict:
    """Where :func:`write_tables` writes the tables of a comparison in ``out``."""
    return {"md": out / "compare.md", "csv": out / "compare.csv", "png": out / "compare.png",
            "json": out / "compare_results.json"}


def _plot(rows: list[dict], path: Path, sel: str, paired: list[dict] | None = None, reference: str | None = None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [r["method"] for r in rows]
    mean = np.array([np.nan if r["balanced_accuracy_mean"] is None else r["balanced_accuracy_mean"] for r in rows])
    std = np.array([0.0 if r["balanced_accuracy_std"] is None else r["balanced_accuracy_std"] for r in rows])
    fig = Figure(figsize=(13.0 if paired else 7.0, 0.45 * len(rows) + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if paired else 1, 1)
    y = np.arange(len(rows))[::-1]
    colors = ["#d62728" if n == "ot" else ("#7f7f7f" if n == "ce" else "#1f77b4") for n in names]
    ax.barh(y, np.nan_to_num(mean), xerr=std, color=colors, capsize=3)
    ax.set_yticks(y, names)
    finite = mean[np.isfinite(mean)]
    lo = max(0.0, float(finite.min()) - 10.0) if finite.size else 0.0
    ax.set_xlim(lo, min(100.0, (float(finite.max()) + float(std.max()) + 3.0) if finite.size else 100.0))
    for yi, m, s in zip(y, mean, std):
        if np.isfinite(m):
            ax.text(lo + 0.3, yi, f"{m:.1f} ± {s:.1f}", va="center", fontsize=8, color="white")
    ax.set_xlabel(f"test balanced accuracy (%), {sel}; mean ± std over seeds")
    if paired:
        _plot_paired(fig.add_subplot(1, 2, 2), paired, reference, y)
    fig.savefig(path, dpi=110, format="png")


def _plot_paired(ax, paired: list[dict], reference: str, y) -> None:
    """The second panel: paired difference to the reference per method, with its 95 % interval."""
    color = {"better": "#2ca02c", "worse": "#d62728", "within noise": "#7f7f7f", "one seed": "#7f7f7f"}
    ax.axvline(0.0, color="black", lw=0.8)
    for yi, p in zip(y, paired):
        if p["diff_mean"] is None or p["verdict"] == "reference":
            continue
        lo = p["ci_low"] if p["ci_low"] is not None else p["diff_mean"]
        hi = p["ci_high"] if p["ci_high"] is not None else p["diff_mean"]
        c = color.get(p["verdict"], "#7f7f7f")
        ax.errorbar([p["diff_mean"]], [yi], xerr=[[p["diff_mean"] - lo], [hi - p["diff_mean"]]], fmt="o", color=c,
                    capsize=3)
        ax.annotate(p["verdict"], (hi, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=c)
    ax.set_yticks(y, [p["method"] if p["verdict"] != "reference" else f"{p['method']} (reference)" for p in paired])
    ax.margins(x=0.25)
    ax.set_xlabel(f"minus {reference}, same seed (points): mean, 95 % t interval")


__all__ = ["DEFAULT_METHODS", "ablation_variants", "paired_differences", "paired_stats", "plan_comparison",
           "reference_method", "run_comparison", "summarize_comparison", "table_paths", "write_tables"]
