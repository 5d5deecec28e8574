"""What a run prints and logs: progress bars only on a terminal, TensorBoard scalars per epoch, --version."""
import subprocess
import sys

import pytest

from otreweight import OTReweightError, __version__
from otreweight.experiment import load_config, run_experiment
from otreweight.utils import show_progress


def tiny_config(src, out, *extra):
    sets = [
        f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "model.name=small_cnn", "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1",
        "stage1.batch_size=16", "stage2.*.epochs=2", "stage2.*.batch_size=8", f"output_dir={out}", "threads=1",
        "stage2=[{name: ot_classifier, method: ot, epochs: 2, batch_size: 8}]",
    ]
    return load_config("configs/cifar10_lt_if100.yaml", sets + list(extra))


def test_progress_auto_draws_bars_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert show_progress("auto") and show_progress(True) and not show_progress(False)
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert not show_progress("auto") and show_progress(True)


def test_default_progress_is_auto_and_checked(tiny_npz, tmp_path):
    assert tiny_config(tiny_npz, tmp_path / "a").progress == "auto"
    with pytest.raises(OTReweightError, match="progress must be true, false or auto"):
        tiny_config(tiny_npz, tmp_path / "b", "progress=sometimes")
    with pytest.raises(OTReweightError, match="unknown logger"):
        tiny_config(tiny_npz, tmp_path / "c", "log=wandb")


def test_no_carriage_return_frames_in_a_log(tiny_npz, tmp_path):
    """``train`` with its output in a file (not a terminal): plain per-epoch lines, no tqdm frames."""
    cmd = [sys.executable, "-m", "otreweight", "train", "--config", "configs/cifar10_lt_if100.yaml", "--no-report"]
    cfg = tiny_config(tiny_npz, tmp_path / "run")
    for k, v in (("data.source", tiny_npz), ("output_dir", tmp_path / "run")):
        cmd += ["--set", f"{k}={v}"]
    for s in ("data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3", "model.name=small_cnn",
              "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1", "stage1.batch_size=16",
              "stage2=[{name: ce, method: ce, epochs: 2, batch_size: 8}]", "threads=1"):
        cmd += ["--set", s]
    assert cfg.progress == "auto"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    assert "\r" not in log
    assert "stage1 epoch 1/2: loss" in log and "stage2_ce epoch 2/2: loss" in log


def test_tensorboard_event_file_holds_the_per_epoch_scalars(tiny_npz, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tiny_npz, tmp_path / "run", "log=tensorboard")
    assert cfg.log == ("tensorboard",)
    run_experiment(cfg, log=lambda *a: None)
    for stage, ot in (("stage1", False), ("stage2_ot_classifier", True)):
        acc = EventAccumulator(str(tmp_path / "run" / "tensorboard" / stage))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/lr", "val/accuracy", "val/balanced_accuracy"} <= tags, tags
        loss = acc.Scalars("train/loss")
        assert [e.step for e in loss] == [1, 2]
        assert all(e.value > 0 for e in loss)
        per_class = sorted(t for t in tags if t.startswith("weights/class_"))
        if ot:
            assert per_class == [f"weights/class_{k}" for k in range(4)]
            assert [e.step for e in acc.Scalars("weights/class_3")] == [1, 2]
            assert all(e.value > 0 for e in acc.Scalars("weights/mean"))
        else:
            assert not per_class
    # log given as a list is the same
    assert tiny_config(tiny_npz, tmp_path / "x", "log=[tensorboard]").log == ("tensorboard",)


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "otreweight", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"otreweight {__version__}"


def test_compare_header_names_the_given_profile_and_its_ratio(tmp_path):
    import json

    from otreweight.compare import _imbalance_text
    from otreweight.config import DataConfig

    d = DataConfig(imbalance_factor=100, profile="given")
    assert _imbalance_text(tmp_path, d, [0]) == "the given class counts (profile given)"
    (tmp_path / "seed_0").mkdir()
    (tmp_path / "seed_0" / "split.json").write_text(json.dumps({"train_counts": [5620, 40, 2, 0]}))
    text = _imbalance_text(tmp_path, d, [0])
    assert "IF" not in text and "100" not in text and "ratio 2,810" in text
    assert _imbalance_text(tmp_path, DataConfig(imbalance_factor=100, profile="exp"), [0]) == "IF 100 (exp)"
