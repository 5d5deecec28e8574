import json

import numpy as np
import pytest
import yaml

from otreweight import OTReweightError
from otreweight.cli import main
from otreweight.config import dump_config
from otreweight.experiment import load_config, run_experiment



def tiny_config(src, out, **extra):
    sets = [
        f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "model.name=small_cnn", "model.options.width=4", "stage1.epochs=3", "stage1.warmup_epochs=1",
        "stage1.batch_size=16", "stage2.*.epochs=3", "stage2.*.batch_size=8", f"output_dir={out}", "progress=false",
        "threads=1",
    ]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config("configs/cifar10_lt_if100.yaml", sets)


def test_tiny_run_end_to_end(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "run")
    results = run_experiment(cfg, log=lambda *a: None)
    assert set(results) == {"stage1", "stage2_ot_classifier", "stage2_ot_full"}
    run = tmp_path / "run"
    for stage in results:
        d = run / stage
        for f in ("metrics.jsonl", "final.json", "predictions.npz", "model.json", "checkpoint.pt"):
            assert (d / f).stat().st_size > 0, (stage, f)
        lines = (d / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]
        final = json.loads((d / "final.json").read_text())
        assert {"best", "last", "best_epoch", "val_best"} <= set(final)
    w = np.load(run / "stage2_ot_classifier" / "weights.npz")
    assert w["scores"].shape == w["initial"].shape == w["labels"].shape
    split = json.loads((run / "split.json").read_text())
    assert split["train_counts"] == [33, 20, 13, 8]  # int(33 * 4^(-c/3)), n_max = 40 - 3 meta - 4 val
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg
    from otreweight.report import write_report

    report = write_report(run)
    assert report.stat().st_size > 0 and len(list((run / "figures").glob("*.png"))) >= 4
    # evaluate the saved model on the same data through the CLI
    assert main(["evaluate", str(run / "stage1" / "model.json"), "--data", str(tiny_npz)]) == 0
    # a finished run is not overwritten by accident
    with pytest.raises(OTReweightError, match="already holds a run"):
        run_experiment(cfg, log=lambda *a: None)


def test_kill_and_resume_gives_identical_final_metrics(tiny_npz, tmp_path):
    full = run_experiment(tiny_config(tiny_npz, tmp_path / "full"), log=lambda *a: None)

    class Killed(Exception):
        pass

    def killer(msg):
        if "stage2_ot_classifier epoch 2/3" in msg:
            raise Killed

    cfg = tiny_config(tiny_npz, tmp_path / "killed")
    with pytest.raises(Killed):
        run_experiment(cfg, log=killer)
    assert not (tmp_path / "killed" / "stage2_ot_classifier" / "final.json").exists()
    msgs = []
    resumed = run_experiment(cfg, resume=True, log=msgs.append)
    assert any("finished earlier" in m for m in msgs) and any("resuming from epoch 2" in m for m in msgs)
    for stage in full:
        for which in ("best", "last"):
            assert resumed[stage][which] == full[stage][which], (stage, which)
        assert resumed[stage]["best_epoch"] == full[stage]["best_epoch"]
    lines = (tmp_path / "killed" / "stage2_ot_classifier" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_stage1_checkpoint_seeds_stage2(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "a")
    cfg.stage2 = cfg.stage2[:1]
    run_experiment(cfg, log=lambda *a: None)
    cfg2 = tiny_config(tiny_npz, tmp_path / "b", **{"stage1.checkpoint": tmp_path / "a" / "stage1" / "model.json"})
    p = tmp_path / "b.yaml"
    p.write_text(dump_config(cfg2))
    assert main(["train", "--config", str(p)]) == 0  # through the CLI, report included
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert "stage1" not in res and "stage2_ot_full" in res
    assert (tmp_path / "b" / "report.md").stat().st_size > 0


def test_config_round_trip_and_errors(tmp_path):
    cfg = load_config("configs/cifar100_lt_if50.yaml", ["stage1.epochs=7", "stage2.*.epochs=2", "stage2.0.options.init=uniform"])
    assert cfg.stage1.epochs == 7 and [v.epochs for v in cfg.stage2] == [2, 2]
    assert cfg.stage2[0].options["init"] == "uniform" and cfg.data.imbalance_factor == 50
    p = tmp_path / "c.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg
    for bad, match in [
        (["stage1.epoch=3"], "unknown key"),
        (["data.augment=mixup"], "unknown augmentation"),
        (["model.name=vit"], "unknown model"),
        (["stage2.0.method=nope"], "unknown method"),
        (["stage2.0.options.eps=0"], "eps"),
        (["stage2.5.epochs=1"], "not an index"),
        (["stage1.batch_size=0"], "batch_size"),
    ]:
        with pytest.raises(OTReweightError, match=match):
            load_config("configs/cifar10_lt_if100.yaml", bad)
    with pytest.raises(OTReweightError, match="not found"):
        main_cfg = "configs/none.yaml"
        from otreweight.experiment import resolve_config_path

        resolve_config_path(main_cfg)


def test_resume_refuses_changed_settings(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "r")
    cfg.stage2 = cfg.stage2[:1]
    run_experiment(cfg, log=lambda *a: None)
    changed = tiny_config(tiny_npz, tmp_path / "r", **{"stage2.0.lr": 0.5})
    changed.stage2 = changed.stage2[:1]
    with pytest.raises(OTReweightError, match="differ from this config"):
        run_experiment(changed, resume=True, log=lambda *a: None)
    added = tiny_config(tiny_npz, tmp_path / "r")  # the same settings plus a new variant: allowed
    res = run_experiment(added, resume=True, log=lambda *a: None)
    assert set(res) == {"stage1", "stage2_ot_classifier", "stage2_ot_full"}


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path):
    cfg = load_config("configs/cifar10_lt_if100.yaml", ["stage2.0.lr=2e-5", "stage1.weight_decay=5e-4"])
    assert cfg.stage2[0].lr == pytest.approx(2e-5) and cfg.stage1.weight_decay == pytest.approx(5e-4)
    p = tmp_path / "c.yaml"
    p.write_text("stage1:\n  lr: 1e-2\n")
    assert load_config(p).stage1.lr == pytest.approx(0.01)
    with pytest.raises(OTReweightError, match="lr must be a finite number"):
        load_config("configs/cifar10_lt_if100.yaml", ["stage1.lr=fast"])


def test_checkpoint_every(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path / "none", checkpoint_every=0)
    cfg.stage2 = cfg.stage2[:1]
    res = run_experiment(cfg, log=lambda *a: None)
    assert not list((tmp_path / "none").glob("*/checkpoint.pt")) and (tmp_path / "none" / "stage1" / "model.json").exists()
    same = tiny_config(tiny_npz, tmp_path / "two", checkpoint_every=2)
    same.stage2 = same.stage2[:1]
    assert run_experiment(same, log=lambda *a: None)["stage1"]["best"] == res["stage1"]["best"]
    assert (tmp_path / "two" / "stage1" / "checkpoint.pt").exists()  # the last epoch is always written
