"""`otreweight compare`: two methods x two seeds on tiny data, interrupted and resumed; plans and errors."""
import csv
import json

import pytest

from otreweight import OTReweightError
from otreweight.cli import main
from otreweight.compare import Stage1Entry, make_variant, plan_comparison, run_comparison, run_plan
from otreweight.config import Stage2Config
from otreweight.experiment import load_config, run_experiment
from otreweight.methods import METHODS
from otreweight.methods.ce import CrossEntropy



def tiny_sets(src, out):
    return [
        f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "model.name=small_cnn", "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1",
        "stage1.batch_size=16", f"output_dir={out}", "progress=false", "threads=1",
    ]


def tiny_config(src, out):
    return load_config("configs/cifar10_lt_if100.yaml", tiny_sets(src, out))


FAST = ["*.epochs=2", "*.batch_size=16"]


def rows_of(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_compare_two_methods_two_seeds_then_kill_and_resume(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "run")
    full = run_comparison(cfg, ["ce", "l2rw"], seeds=(0, 1), method_sets=FAST, output=tmp_path / "full",
                          log=lambda *a: None)
    out = tmp_path / "full"
    for f in ("compare.md", "compare.csv", "compare.png", "compare.json"):
        assert (out / f).stat().st_size > 0, f
    rows = rows_of(out / "compare.csv")
    assert [r["method"] for r in rows] == ["ce", "l2rw"] and all(r["seeds"] == "2" for r in rows)
    for r in rows:
        assert 0 <= float(r["balanced_accuracy_mean"]) <= 100 and float(r["seconds_per_epoch_mean"]) > 0
    md = (out / "compare.md").read_text()
    assert "| l2rw |" in md and "l2rw 2 / 3" in md  # forward / backward passes per step
    # identical splits across methods of a seed, different splits across seeds
    s0 = json.loads((out / "seed_0" / "split.json").read_text())
    s1 = json.loads((out / "seed_1" / "split.json").read_text())
    assert s0["train_counts"] == s1["train_counts"] and s0 != s1
    assert full["rows"][1]["forward_per_step"] == 2.0

    class Killed(Exception):
        pass

    def killer(msg):
        if msg.startswith("[seed 1] stage2_l2rw epoch 1/"):
            raise Killed

    with pytest.raises(Killed):
        run_comparison(cfg, ["ce", "l2rw"], seeds=(0, 1), method_sets=FAST, output=tmp_path / "cut", log=killer)
    assert (tmp_path / "cut" / "seed_0" / "stage2_l2rw" / "final.json").exists()
    assert not (tmp_path / "cut" / "seed_1" / "stage2_l2rw" / "final.json").exists()
    with pytest.raises(OTReweightError, match="--resume"):
        run_comparison(cfg, ["ce", "l2rw"], seeds=(0, 1), method_sets=FAST, output=tmp_path / "cut", log=lambda *a: None)
    with pytest.raises(OTReweightError, match="settings of l2rw changed"):
        run_comparison(cfg, ["ce", "l2rw"], seeds=(0, 1), method_sets=["*.epochs=3"], output=tmp_path / "cut",
                       resume=True, log=lambda *a: None)
    msgs = []
    res = run_comparison(cfg, ["ce", "l2rw"], seeds=(0, 1), method_sets=FAST, output=tmp_path / "cut", resume=True,
                         log=msgs.append)
    assert any(m.startswith("[seed 0] stage1: finished earlier") for m in msgs)
    assert any(m.startswith("[seed 1] stage2_l2rw: resuming from epoch 1") for m in msgs)
    metric_keys = ("accuracy_mean", "balanced_accuracy_mean", "many_mean", "few_mean", "accuracy_std")
    for a, b in zip(full["rows"], res["rows"]):
        assert {k: a[k] for k in metric_keys} == {k: b[k] for k in metric_keys}, a["method"]


def test_compare_cli_adds_a_method_to_a_finished_comparison(tiny_npz, tmp_path, capsys):
    args = ["compare", "--config", "configs/cifar10_lt_if100.yaml", "--seeds", "0", "--output", str(tmp_path / "c")]
    for s in tiny_sets(tiny_npz, tmp_path / "run"):
        args += ["--set", s]
    for s in FAST:
        args += ["--method-set", s]
    assert main([*args, "--methods", "ce,logit_adjust_posthoc"]) == 0
    assert main([*args, "--methods", "ce,logit_adjust_posthoc,crt", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "| crt |" in text and "stage1: finished earlier" in text
    rows = rows_of(tmp_path / "c" / "compare.csv")
    assert [r["method"] for r in rows] == ["ce", "logit_adjust_posthoc", "crt"]
    assert rows[1]["seconds_per_epoch_mean"] == ""  # post-hoc adjustment trains nothing
    plan = json.loads((tmp_path / "c" / "compare.json").read_text())["plan"]
    assert [v["name"] for v in plan] == ["ce", "logit_adjust_posthoc", "crt"]
    # adding a seed later keeps the finished seed in the table
    seed1 = [a if a != "0" else "1" for a in args]
    assert main([*seed1, "--methods", "ce,logit_adjust_posthoc,crt", "--resume"]) == 0
    rows = rows_of(tmp_path / "c" / "compare.csv")
    assert all(r["seeds"] == "2" for r in rows)
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["seeds"] == [0, 1]


def test_plans_of_the_presets_and_modes():
    cfg = load_config("configs/cifar10_lt_if100.yaml")
    plan = {v.name: v for v in plan_comparison(cfg)}
    assert list(plan) == ["ce", "focal", "cb", "ldam_drw", "balanced_softmax", "logit_adjust_posthoc", "crt", "mwnet",
                          "l2rw", "ot"]
    assert plan["ce"] == {"name": "ce", "stage": "stage1", "meta_in_train": False} and isinstance(plan["ce"], Stage1Entry)
    assert all(isinstance(v, Stage2Config) for n, v in plan.items() if n != "ce")  # typed stage configs
    assert plan["ldam_drw"].start == "scratch" and plan["ldam_drw"].epochs == 200
    assert plan["ldam_drw"].trainable == "all" and list(plan["ldam_drw"].milestones) == [0.8, 0.9]
    assert plan["crt"].trainable == "classifier" and plan["crt"].start == "stage1"
    assert plan["ot"].options["meta_ce"] == 10.0 and plan["ot"].lr == 2e-5 and plan["ot"].epochs == 90
    assert plan["logit_adjust_posthoc"].epochs == 0
    dec = {v.name: v for v in plan_comparison(cfg, ["cb", "mwnet"], mode="decoupled", meta_in_train=True)}
    assert dec["cb"].start == "stage1" and dec["cb"].trainable == "classifier" and dec["cb"].lr == 2e-5
    assert dec["mwnet"].meta_in_train is True
    abl = {v.name: v for v in plan_comparison(cfg, preset="ablation")}
    assert set(abl) == {"ce", "ot", "ot_cost_feature", "ot_cost_label", "ot_targets_whole", "ot_init_uniform",
                        "ot_no_meta_ce", "ot_steps_0", "ot_steps_5"}
    ref = abl["ot"].options
    for name, v in abl.items():
        if name not in ("ce", "ot"):
            diff = {k for k in v.options if v.options[k] != ref.get(k)}
            assert len(diff) == 1, name  # one option changed at a time
    over = {v.name: v for v in plan_comparison(cfg, ["ldam_drw", "mwnet"], method_sets=[
        "ldam_drw.epochs=7", "mwnet.options.meta_lr=0.001", "*.batch_size=32"])}
    assert over["ldam_drw"].epochs == 7 and over["mwnet"].options == {"meta_lr": 0.001}
    assert over["ldam_drw"].batch_size == over["mwnet"].batch_size == 32


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ["ce", "nope"]}, "unknown method 'nope'"),
    ({"methods": ["ce", "ce"]}, "twice"),
    ({"methods": ["ot_cost_emd"], "preset": "ablation"}, "unknown ablation"),
    ({"preset": "grid"}, "unknown compare preset"),
    ({"methods": ["focal"], "method_sets": ["focal.epoch=3"]}, "unknown key 'epoch'"),
    ({"methods": ["focal"], "method_sets": ["cb.epochs=3"]}, "not among the compared methods"),
    ({"methods": ["focal"], "method_sets": ["epochs=3"]}, "METHOD.KEY=VALUE"),
    ({"methods": ["ce"], "method_sets": ["ce.epochs=3"]}, "stage 1 itself"),
])
def test_plan_errors_are_one_clear_line(kwargs, match):
    cfg = load_config("configs/cifar10_lt_if100.yaml")
    with pytest.raises(OTReweightError, match=match) as err:
        plan_comparison(cfg, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_method_option_fails_before_any_training(tmp_path):
    cfg = load_config("configs/cifar10_lt_if100.yaml", [f"output_dir={tmp_path / 'x'}"])
    with pytest.raises(OTReweightError, match="gamma"):
        run_comparison(cfg, ["focal"], seeds=(0,), method_sets=["focal.options.gamma=-1"], log=lambda *a: None)
    with pytest.raises(OTReweightError, match="one stage-1 checkpoint"):
        run_comparison(load_config("configs/cifar10_lt_if100.yaml", ["stage1.checkpoint=a.pt"]), ["ce"], seeds=(0, 1))
    assert not (tmp_path / "x_compare").exists()


class _Probe(CrossEntropy):
    """Records how many training examples the loop handed over."""

    seen: list = []

    def bind(self, info):
        super().bind(info)
        _Probe.seen.append(int(info.train_labels.shape[0]))


if "probe_n" not in METHODS:
    METHODS.register("probe_n")(_Probe)


def test_meta_in_train_feeds_the_meta_set_to_methods_that_do_not_use_it(tiny_npz, tmp_path):
    cfg = load_config("configs/cifar10_lt_if100.yaml", tiny_sets(tiny_npz, tmp_path / "m") + ["stage1.epochs=1"])
    base = cfg.stage2[0].to_dict()
    cfg.stage2 = [
        {**base, "name": "plain", "method": "probe_n", "options": {}, "epochs": 1},
        {**base, "name": "fed", "method": "probe_n", "options": {}, "epochs": 1, "meta_in_train": True},
        {**base, "name": "scratch", "method": "probe_n", "options": {}, "epochs": 1, "start": "scratch",
         "trainable": "all"},
    ]
    _Probe.seen.clear()
    res = run_experiment(cfg, log=lambda *a: None)
    n_train, n_meta = 74, 12  # 33 + 20 + 13 + 8 long-tailed, 3 meta per class
    assert _Probe.seen == [n_train, n_train + n_meta, n_train]
    assert res["stage2_fed"]["meta_in_train"] is True and res["stage2_plain"]["meta_in_train"] is False
    # the many/medium/few groups keep the long-tailed split's counts
    assert res["stage2_fed"]["best"]["shot_thresholds"] == res["stage2_plain"]["best"]["shot_thresholds"]


def test_cli_print_plan_and_one_line_errors(capsys):
    assert main(["compare", "--config", "cifar10_lt_if100", "--print-plan", "--preset", "ablation"]) == 0
    out = capsys.readouterr().out
    assert "ot_no_meta_ce" in out and "ot_steps_5" in out and "the stage-1 model" in out
    rc = main(["compare", "--config", "cifar10_lt_if100", "--print-plan", "--methods", "ce,nope"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("otreweight: error:") and "\n" not in err and "nope" in err


def test_run_plan_runs_custom_variants_and_rejects_duplicate_names(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "run")
    recipe = {"epochs": 1, "batch_size": 16}
    plan = [make_variant("cb_fed", "cb", {}, recipe=recipe, meta_in_train=True),
            make_variant("ot_cc", "ot", {"objective": "class_conditional", "scope": "dataset", "lam": 0.1}, recipe=recipe)]
    res = run_plan(cfg, plan, [0], tmp_path / "custom", log=lambda *a: None)
    assert [r["method"] for r in res["rows"]] == ["cb_fed", "ot_cc"]
    assert all(r["balanced_accuracy_mean"] is not None for r in res["rows"])
    with pytest.raises(OTReweightError, match="names a method twice"):
        run_plan(cfg, plan + plan[:1], [0], tmp_path / "dup", log=lambda *a: None)


def test_named_ot_variants_are_methods_of_a_comparison():
    cfg = load_config("configs/cifar10_lt_if100.yaml")
    plan = {v.name: v for v in plan_comparison(cfg, ["ot", "ot-cc", "ot-no-meta-ce"])}
    ref = plan["ot"].options
    assert plan["ot-cc"].method == "ot" and plan["ot-cc"].options == {
        **ref, "objective": "class_conditional", "scope": "dataset", "lam": 0.1}
    assert plan["ot-no-meta-ce"].options["meta_ce"] == 0.0 and plan["ot-cc"].lr == plan["ot"].lr


def test_watch_test_reports_the_best_test_epoch_and_changes_nothing_else(tiny_npz, tmp_path):
    """watch_test scores the test split after every epoch into metrics.jsonl and final.json's
    test_selected (the best epoch on test), for whole-network and classifier-only stages; training,
    the validation-selected epoch and its test metrics are those of a run without it."""
    quiet = dict(seeds=(0,), method_sets=FAST, mode="decoupled", log=lambda *a: None)
    plain = run_comparison(tiny_config(tiny_npz, tmp_path / "a"), ["ce", "cb"], output=tmp_path / "plain", **quiet)
    cfg = load_config("configs/cifar10_lt_if100.yaml", tiny_sets(tiny_npz, tmp_path / "b") + ["watch_test=true"])
    watched = run_comparison(cfg, ["ce", "cb"], output=tmp_path / "watched", **quiet)
    for stage in ("stage1", "stage2_cb"):
        a = json.loads((tmp_path / "plain" / "seed_0" / stage / "final.json").read_text())
        b = json.loads((tmp_path / "watched" / "seed_0" / stage / "final.json").read_text())
        assert "test_selected" not in a
        sel = b.pop("test_selected")
        for d in (a, b):
            d.pop("seconds"), d.pop("seconds_per_epoch")
        assert a == b, stage
        history = [json.loads(line) for line in
                   (tmp_path / "watched" / "seed_0" / stage / "metrics.jsonl").read_text().splitlines()]
        assert all("test" in r for r in history) and len(history) == 2
        top = max(r["test"]["balanced_accuracy"] for r in history)
        assert sel["balanced_accuracy"] == top
        assert sel["epoch"] == next(r["epoch"] for r in history if r["test"]["balanced_accuracy"] == top)
    assert [r["balanced_accuracy_mean"] for r in plain["rows"]] == [r["balanced_accuracy_mean"] for r in watched["rows"]]
    assert all("test_selected_mean" in r for r in watched["rows"]) and not any("test_selected_mean" in r for r in plain["rows"])
    md = (tmp_path / "watched" / "compare.md").read_text()
    assert "Best test balanced accuracy over the epochs" in md and "never used for any selection" in md


def test_test_selected_needs_every_epoch_scored():
    """A stage resumed with watch_test switched on or off has no best-over-epochs figure (not the best of some epochs)."""
    from otreweight.config import FitConfig
    from otreweight.run.stage import _test_selected

    def rec(e, t=None):
        r = {"epoch": e, "val": {"balanced_accuracy": 0.5}}
        if t is not None:
            r["test"] = {"balanced_accuracy": t, "accuracy": t}
        return r

    cfg = FitConfig()
    assert _test_selected([rec(1, 0.4), rec(2, 0.6), rec(3, 0.6)], cfg) == {"epoch": 2, "balanced_accuracy": 0.6,
                                                                            "accuracy": 0.6}
    assert _test_selected([rec(1, 0.4), rec(2), rec(3, 0.6)], cfg) is None
    assert _test_selected([rec(1), rec(2)], cfg) is None and _test_selected([], cfg) is None
