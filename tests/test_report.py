"""Tests for the per-run report: a synthetic run directory in the training command's format."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from otreweight._errors import OTReweightError
from otreweight.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metrics(rng, k, shift=0.0):
    per_class = np.clip(rng.uniform(0.2, 0.95, size=k) + shift, 0, 1)
    return {
        "accuracy": float(per_class.mean() + 0.03),
        "balanced_accuracy": float(per_class.mean()),
        "gmean": float(np.exp(np.log(per_class).mean())),
        "per_class": [float(v) for v in per_class],
        "many": float(per_class[: k // 3].mean()),
        "medium": float(per_class[k // 3: 2 * k // 3].mean()),
        "few": None,  # an empty shot group: must print as "-"
    }


def make_run(root, k, stages, epochs=6, seed=0):
    """Write a run directory; ``stages`` maps a stage name to True if it is an OT stage."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = np.maximum((500 * 0.01 ** (np.arange(k) / (k - 1))).astype(int), 5)
    split = {
        "classes": [f"class_{i}" for i in range(k)],
        "train_counts": train.tolist(),
        "meta_counts": [10] * k,
        "val_counts": [20] * k,
        "test_counts": [30] * k,
        "imbalance_factor": 100.0,
        "profile": "exp",
        "many_threshold": 100,
        "few_threshold": 20,
    }
    (root / "split.json").write_text(json.dumps(split))
    cfg = {"seed": 3, "method": {"name": "ot", "eps": 0.1}, "train": {"epochs": epochs, "lr": 0.05,
                                                                      "select_metric": "balanced_accuracy"}}
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    finals = {}
    for si, (name, is_ot) in enumerate(stages.items()):
        d = root / name
        d.mkdir()
        rows = [{"epoch": e, "lr": 0.05, "train_loss": float(2.0 / e + si), "seconds": 0.5,
                 "val": _metrics(rng, k)} for e in range(1, epochs + 1)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        best = max(rows, key=lambda r: r["val"]["balanced_accuracy"])  # selection on validation
        final = {"best_epoch": best["epoch"], "best": _metrics(rng, k, 0.02), "last": _metrics(rng, k),
                 "val_best": best["val"], "seconds": 12.345 + si}
        final["best"]["per_class"][-1] = None  # a class without test examples
        (d / "final.json").write_text(json.dumps(final))
        finals[name] = final
        y_true = np.repeat(np.arange(k), 30).astype(np.int64)
        noisy = rng.random(y_true.size) < 0.3
        pred = np.where(noisy, rng.integers(0, k, y_true.size), y_true).astype(np.int64)
        np.savez(d / "predictions.npz", y_true=y_true, pred_best=pred, pred_last=pred[::-1].copy())
        if is_ot:
            labels = np.repeat(np.arange(k), train).astype(np.int64)
            cb = (1 - 0.9999) / (1 - 0.9999 ** train)
            cb = cb / cb.sum() * k
            initial = cb[labels]
            scores = initial * (1 + rng.normal(0.0, 0.2, labels.size))
            np.savez(d / "weights.npz", labels=labels, scores=scores, initial=initial, class_balanced=cb)
    return finals


def _check_report(run_dir, finals):
    md_path = write_report(run_dir, title="Synthetic run")
    assert md_path == run_dir / "report.md"
    text = md_path.read_text()
    assert text.startswith("# Synthetic run")
    assert "Model selection is on the validation split" in text
    listed = re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", text)
    assert listed and len(listed) == len(set(listed))
    on_disk = sorted(p.name for p in (run_dir / "figures").glob("*.png") if p.name != "mine.png")
    assert sorted(p.split("/")[1] for p in listed) == on_disk
    for rel in listed:
        data = (run_dir / rel).read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, rel
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for name, final in finals.items():
        best_row = next(r for r in rows if r.startswith(f"| {name} | best"))
        last_row = next(r for r in rows if r.startswith(f"| {name} | last"))
        for key in ("accuracy", "balanced_accuracy", "many", "medium", "gmean"):
            assert f" {100 * final['best'][key]:.1f} " in best_row, (key, best_row)
            assert f" {100 * final['last'][key]:.1f} " in last_row, (key, last_row)
        assert f"| {final['best_epoch']} |" in best_row
        assert f"{final['seconds']:.1f}" in best_row
        assert " - |" in best_row and " - |" in last_row  # "few" is None
    return text, listed


def test_report_two_stages_with_ot(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    run = tmp_path / "run10"
    finals = make_run(run, 10, {"stage2_ot_classifier": True, "stage1": False})
    text, listed = _check_report(run, finals)
    assert matplotlib.get_backend() == backend  # writing figures never switches the user's backend
    names = {p.split("/")[1] for p in listed}
    assert names == {"stage1_per_class.png", "stage1_confusion.png", "stage2_ot_classifier_per_class.png",
                     "stage2_ot_classifier_weights.png", "stage2_ot_classifier_confusion.png",
                     "learning_curves.png"}
    assert text.index("### Stage `stage1`") < text.index("### Stage `stage2_ot_classifier`")
    assert "class_9" in text and "mean rel. change" in text  # full split table and weight table
    assert "select_metric" in text and "```yaml" in text


def test_report_100_classes_single_stage(tmp_path):
    run = tmp_path / "run100"
    finals = make_run(run, 100, {"stage1": False}, epochs=3, seed=1)
    text, listed = _check_report(run, finals)
    assert len(listed) == 3
    assert "| train | " in text and "class_57" not in text.split("## Figures")[0]  # split summarised


def test_missing_optional_files_skip_figures(tmp_path):
    run = tmp_path / "run"
    finals = make_run(run, 10, {"stage1": False, "stage2_ot_full": True}, epochs=2)
    (run / "stage2_ot_full" / "weights.npz").unlink()
    (run / "stage1" / "predictions.npz").unlink()
    (run / "stage1" / "metrics.jsonl").unlink()
    (run / "config.yaml").unlink()
    (run / "figures").mkdir()
    (run / "figures" / "stage9_confusion.png").write_bytes(PNG_SIGNATURE)  # left by an earlier report
    (run / "figures" / "mine.png").write_bytes(PNG_SIGNATURE)  # not the report's: kept
    text, listed = _check_report(run, finals)  # also checks that the stale figure is gone
    assert (run / "figures" / "mine.png").exists()
    assert not any("weights" in p or "stage1_confusion" in p for p in listed)
    assert "figures/learning_curves.png" in listed  # stage2 still has its metrics
    assert "## Notes" in text and "no `predictions.npz`" in text


def test_no_stage_is_a_clear_error(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    (run / "stage1").mkdir()  # a stage folder that never finished
    with pytest.raises(OTReweightError, match="no stage found") as info:
        write_report(run)
    assert "\n" not in str(info.value)
    with pytest.raises(OTReweightError, match="does not exist"):
        write_report(tmp_path / "nowhere")
