"""The typed config: base: inheritance, unknown keys, wrong types, YAML round trips of every field."""
from dataclasses import fields

import pytest
import yaml

from otreweight import OTReweightError
from otreweight.config import (FitConfig, RunConfig, Stage1Config, Stage2Config, dump_config, load_config,
                               recipe_keys, resume_keys, yaml_fields)
from otreweight.methods import create_method

CIFAR = "configs/cifar10_lt_if100.yaml"


def test_shipped_configs_are_a_base_plus_a_few_keys():
    from otreweight.config import config_dir

    for p in config_dir().glob("*.yaml"):
        text = [l for l in p.read_text().splitlines() if l.strip() and not l.startswith("#")]
        assert text[0].startswith("base: _base/") and len(text) <= 9, p.name
        cfg = load_config(p)
        assert cfg.name == p.stem and cfg.output_dir == f"runs/{p.stem}"
        assert [v.name for v in cfg.stage2][:1] == ["ot_classifier"]
    c100 = load_config("configs/cifar100_lt_if50.yaml")
    assert (c100.data.source, c100.data.imbalance_factor, c100.data.n_val_per_class) == ("cifar100", 50, 10)
    assert c100.stage2[0].options["meta_ce"] == 10.0 and c100.stage1.milestones == (0.8, 0.9)


def test_base_chain_child_wins_and_lists_are_replaced(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 3\ndata:\n  imbalance_factor: 10\n  profile: step\n"
                                     "stage2:\n- name: x\n  method: cb\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ndata:\n  imbalance_factor: 20\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nstage2:\n- name: y\n  method: ce\n  epochs: 3\n")
    c = load_config(tmp_path / "c.yaml")
    assert (c.seed, c.data.imbalance_factor, c.data.profile) == (3, 20, "step")
    assert [(v.name, v.method, v.epochs) for v in c.stage2] == [("y", "ce", 3)]
    shipped = tmp_path / "d.yaml"
    shipped.write_text("base: cifar10_lt_if50\nseed: 1\n")  # a shipped config by name
    assert load_config(shipped).data.imbalance_factor == 50
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(OTReweightError, match="names itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "nobase.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(OTReweightError, match="not found"):
        load_config(tmp_path / "nobase.yaml")


@pytest.mark.parametrize("override, match", [
    ("stage1.epochs=ten", r"^stage1\.epochs must be an integer, got 'ten'$"),
    ("stage1.batch_size=abc", r"stage1\.batch_size must be an integer, got 'abc'"),
    ("seed=abc", r"^seed must be an integer, got 'abc'$"),
    ("threads=-1", r"threads must be an integer >= 1"),
    ("stage1.milestones=5", r"stage1\.milestones must be a list of finite numbers, got 5"),
    ("stage1.warmup_epochs=abc", r"stage1\.warmup_epochs must be an integer"),
    ("data.many_threshold=abc", r"data\.many_threshold must be an integer"),
    ("data.n_meta_per_class=abc", r"data\.n_meta_per_class must be an integer"),
    ("stage2.0.options.meta_ce=ten", r"meta_ce must be a number, got 'ten'"),
    ("stage2.0.options.alpha=abc", r"alpha must be a number"),
    ("stage2.0.options.steps=abc", r"steps must be a number"),
    ("stage2.0.options.beta=abc", r"beta must be a number"),
    ("stage2={a: 1}", r"stage2 must be a list of Stage2Config mappings, got a mapping"),
    ("stage1.nesterov=maybe", r"stage1\.nesterov must be true or false, got 'maybe'"),
    ("stage1.lr=.inf", r"stage1\.lr must be a finite number"),
    ("stage1.optimizer=adam", r"unknown optimizer 'adam'"),
    ("stage1.schedule=exponential", r"unknown lr schedule"),
    ("stage1.eval_batch_size=0", r"eval_batch_size must be an integer >= 1"),
    ("data=5", r"data must be a mapping, got 5"),
])
def test_wrong_values_are_one_line_naming_key_value_and_type(override, match):
    with pytest.raises(OTReweightError, match=match) as err:
        load_config(CIFAR, [override])
    assert "\n" not in str(err.value)


def test_unknown_keys_are_refused_everywhere(tmp_path):
    for text, match in [("stage1:\n  epoch: 3\n", "unknown config key 'stage1.epoch'"),
                        ("dataa: {}\n", "unknown config key 'dataa'"),
                        ("stage2:\n- name: a\n  lrr: 1\n", r"unknown config key 'stage2\[0\].lrr'"),
                        ("stage1:\n  seed: 3\n", "unknown config key 'stage1.seed'")]:
        p = tmp_path / "c.yaml"
        p.write_text(text)
        with pytest.raises(OTReweightError, match=match):
            load_config(p)


def test_python_api_gets_the_same_one_line_type_errors():
    with pytest.raises(OTReweightError, match="epochs must be an integer, got 'ten'"):
        FitConfig(epochs="ten").validate()
    with pytest.raises(OTReweightError, match="meta_ce must be a number, got 'ten'"):
        create_method("ot", meta_ce="ten")
    with pytest.raises(OTReweightError, match="must be true or false"):
        create_method("ldam_drw", head="linear", max_margin=0.5, s=30.0).__class__  # valid
        create_method("cb_resample", **{}) and FitConfig(nesterov="yes").validate()


def test_every_stage_field_round_trips_yaml(tmp_path):
    values = {"epochs": 7, "batch_size": 9, "optimizer": "adamw", "lr": 0.003, "momentum": 0.8, "nesterov": True,
              "weight_decay": 0.01, "schedule": "cosine", "warmup_epochs": 2, "milestones": [0.5], "lr_factors": [0.1],
              "trainable": "all", "select_metric": "gmean", "eval_batch_size": 64, "channels_last": False,
              "amp": "none", "compile": True, "accumulate_steps": 3, "lr_scaling": "sqrt", "reference_batch": 128}
    names = {f.name for f in yaml_fields(FitConfig)}
    assert names == set(values)  # the test names every stage field of the loop
    s1 = {**values, "checkpoint": None, "meta_in_train": True}
    s2 = {**values, "name": "v", "method": "cb", "options": {"beta": 0.99}, "meta_in_train": True,
          "start": "scratch"}
    assert {f.name for f in yaml_fields(Stage1Config)} == set(s1)
    assert {f.name for f in yaml_fields(Stage2Config)} == set(s2)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"stage1": s1, "stage2": [s2]}))
    cfg = load_config(p)
    assert cfg.stage1.to_dict() == s1 and cfg.stage2[0].to_dict() == s2
    fit = cfg.stage_fit(cfg.stage2[0])
    for k, v in values.items():
        assert fit.to_dict()[k] == v, k
    q = tmp_path / "d.yaml"
    q.write_text(dump_config(cfg))  # a config dumps as its plain mapping
    assert load_config(q) == cfg and load_config(q).to_dict() == yaml.safe_load(q.read_text())


def test_recipe_and_resume_keys_come_from_the_field_definitions():
    assert recipe_keys() == ("epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay",
                             "schedule", "warmup_epochs", "milestones", "lr_factors", "accumulate_steps",
                             "lr_scaling", "reference_batch")
    assert set(resume_keys()) == set(recipe_keys()) | {"trainable", "select_metric", "seed", "sync_batchnorm"}
    assert {f.name for f in fields(RunConfig)} == {"name", "output_dir", "seed", "device", "threads", "progress", "log",
                                                   "checkpoint_every", "feature_store", "feature_dtype", "sync_batchnorm", "watch_test",
                                                   "data", "model", "stage1", "stage2"}


def test_cosine_schedule_and_adamw():
    import torch

    from otreweight.train.optim import build_optimizer

    c = FitConfig(epochs=10, warmup_epochs=2, schedule="cosine").validate()
    f = [c.lr_factor(e) for e in range(10)]
    assert f[:2] == [0.5, 1.0] and f[2] == pytest.approx(1.0) and f[-1] == pytest.approx(0.5 * (1 + __import__("math").cos(__import__("math").pi * 7 / 8)))
    assert all(a >= b for a, b in zip(f[1:], f[2:]))
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], FitConfig(optimizer="adamw", lr=1e-3, momentum=0.9))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)


def test_importing_config_leaves_pyyaml_safe_dumper_alone():
    """The config's YAML representer lives on a local dumper: yaml.safe_dump of anyone else is unchanged."""
    from otreweight.config import Section

    assert Section not in yaml.SafeDumper.yaml_multi_representers
    cfg = load_config(None, ["stage1.epochs=3"])
    with pytest.raises(yaml.representer.RepresenterError):
        yaml.safe_dump(cfg)  # PyYAML's own behaviour for an unknown object
    assert yaml.safe_load(dump_config(cfg)) == cfg.to_dict()
    assert yaml.safe_load(dump_config({"run": cfg.stage1})) == {"run": cfg.stage1.to_dict()}


def test_one_override_parser_for_set_ot_and_method_set():
    """--set, --ot and --method-set share one KEY=VALUE parser: values read as YAML, one line naming the flag."""
    from otreweight.cli import _parse_kv
    from otreweight.compare import _apply_method_sets

    assert _parse_kv(["eps=1e-2", " init = uniform", "lam=.inf", "cost="]) == {"eps": 0.01, "init": "uniform",
                                                                              "lam": float("inf"), "cost": None}
    plan = [{"name": "cb", "method": "cb", "options": None, "epochs": 3}]
    plan = _apply_method_sets(plan, ["cb.options.beta=0.99", "*.epochs=5"])
    assert plan[0].options == {"beta": 0.99} and plan[0].epochs == 5 and plan[0].to_dict()["epochs"] == 5
    assert load_config(None, ["stage1.lr=2e-3"]).stage1.lr == 0.002
    for call, flag in ((lambda: _parse_kv(["eps"]), "--ot expects KEY=VALUE"),
                       (lambda: _parse_kv(["=3"]), "--ot expects KEY=VALUE"),
                       (lambda: load_config(None, ["stage1.epochs"]), "--set expects KEY=VALUE"),
                       (lambda: _apply_method_sets(plan, ["cb=3"]), r"--method-set expects METHOD\.KEY=VALUE"),
                       (lambda: _apply_method_sets(plan, ["cb.=3"]), r"--method-set expects METHOD\.KEY=VALUE")):
        with pytest.raises(OTReweightError, match=flag) as e:
            call()
        assert "\n" not in str(e.value)


def test_reading_a_section_like_a_mapping_still_works_with_a_deprecation_warning():
    cfg = load_config(CIFAR)
    with pytest.warns(DeprecationWarning, match=r"RunConfig\['stage1'\].*use the attribute \(RunConfig\.stage1\)"):
        s1 = cfg["stage1"]
    assert s1 is cfg.stage1
    with pytest.warns(DeprecationWarning, match=r"Stage1Config\.get\('lr'\).*\(Stage1Config\.lr\)"):
        assert s1.get("lr") == cfg.stage1.lr
    with pytest.warns(DeprecationWarning, match=r"Stage1Config\['lr'\] = \.\.\."):
        s1["lr"] = 0.5
    assert cfg.stage1.lr == 0.5
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        s1["no_such_key"]
    assert "lr" in s1 and s1.to_dict()["lr"] == 0.5  # membership and the plain form: no warning
