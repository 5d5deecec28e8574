"""Gradient accumulation: the effective batch (processes x batch_size x accumulate_steps) is a setting.

For a model without batch norm, batch b with ``accumulate_steps: 2`` trains exactly as batch 2b:
the same sampler batches, the loss of the whole effective batch (OT's update runs on all of it),
the same weights and OT scores to float rounding."""
import numpy as np
import pytest
import torch

from otreweight import OTReweightError
from otreweight.config import FitConfig, load_config
from otreweight.engine import fit
from otreweight.methods import create_method
from otreweight.models.base import FeatureClassifier
from otreweight.testing import count_host_syncs

K, D = 4, 12


def data():
    rng = np.random.default_rng(3)
    counts = [60, 30, 14, 8]
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    centers = rng.normal(0, 2, (K, D))
    x = (centers[y] + rng.normal(0, 1, (len(y), D))).astype(np.float32)
    ym = np.repeat(np.arange(K), 3)
    xm = (centers[ym] + rng.normal(0, 1, (len(ym), D))).astype(np.float32)
    return (x, y), (xm, ym), (xm, ym)


class NoNorm(FeatureClassifier):
    """A two-layer perceptron without batch norm (a batch of 2b and two of b train alike)."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(D, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
                                            torch.nn.ReLU())
        self.classifier = torch.nn.Linear(16, K)

    def features(self, x):
        return self.backbone(x)


def train(method, batch_size, accumulate, trainable="all", epochs=2):
    torch.manual_seed(0)
    model = NoNorm()
    m = create_method(method)
    cfg = FitConfig(epochs=epochs, batch_size=batch_size, accumulate_steps=accumulate, lr=0.01, trainable=trainable,
                    progress=False, seed=1)
    tr, val, meta = data()
    res = fit(model, m, tr, val, meta=meta, config=cfg, device="cpu", num_classes=K)
    return model, m, res


@pytest.mark.parametrize("trainable", ["all", "classifier"])
@pytest.mark.parametrize("method", ["ce", "cb", "ot"])
def test_batch_b_with_two_accumulation_steps_equals_batch_2b(method, trainable):
    big, m_big, r_big = train(method, 32, 1, trainable)
    acc, m_acc, r_acc = train(method, 16, 2, trainable)
    for (name, a), b in zip(big.state_dict().items(), acc.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)
    if method == "ot":
        torch.testing.assert_close(m_big.reweighter.scores, m_acc.reweighter.scores, atol=1e-6, rtol=0)
        assert not torch.equal(m_acc.reweighter.scores, m_acc.reweighter.initial_scores())
    assert [h["train_loss"] for h in r_big.history] == pytest.approx([h["train_loss"] for h in r_acc.history], rel=1e-5)


def test_accumulation_adds_no_host_sync_per_step():
    _, c1 = count_host_syncs(train, "ot", 16, 2, "all", 1)
    _, c2 = count_host_syncs(train, "ot", 8, 2, "all", 1)  # twice the steps
    assert c2.total == c1.total


def test_lr_scaling_is_resolved_for_the_effective_batch():
    base = FitConfig(batch_size=64, accumulate_steps=2, lr=0.1, lr_scaling="linear", reference_batch=256).validate()
    assert base.effective_batch(2) == 256 and base.scaled(2).lr == pytest.approx(0.1)
    assert base.scaled(4).lr == pytest.approx(0.2) and base.scaled(4).lr_scaling == "none"
    assert base.scaled(4).scaled(4).lr == pytest.approx(0.2)  # resolving twice changes nothing
    sq = FitConfig(batch_size=64, accumulate_steps=4, lr=0.1, lr_scaling="sqrt", reference_batch=64).validate()
    assert sq.scaled(1).lr == pytest.approx(0.2)
    with pytest.raises(OTReweightError, match="reference_batch"):
        FitConfig(lr_scaling="linear").validate()
    with pytest.raises(OTReweightError, match="accumulate_steps"):
        FitConfig(accumulate_steps=0).validate()


def test_bilevel_methods_refuse_accumulation_in_one_line():
    with pytest.raises(OTReweightError, match="mwnet.*accumulate_steps: 1"):
        train("mwnet", 16, 2, "all", 1)


def test_run_saves_the_resolved_rate_and_prints_the_effective_batch(tiny_npz, tmp_path):
    from otreweight.experiment import run_experiment

    cfg = load_config("configs/cifar10_lt_if100.yaml", [
        f"data.source={tiny_npz}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "model.name=small_cnn", "model.options.width=4", "stage1.epochs=1", "stage1.warmup_epochs=0",
        "stage1.batch_size=8", "stage1.accumulate_steps=2", "stage1.lr_scaling=linear", "stage1.reference_batch=32",
        "stage1.lr=0.2", "stage2.*.epochs=1", "stage2.*.accumulate_steps=2", f"output_dir={tmp_path / 'run'}",
        "progress=false", "threads=1"])
    cfg.stage2 = cfg.stage2[:1]
    lines = []
    run_experiment(cfg, log=lines.append)
    assert any("stage 1: effective batch 1 process(es) x 8 x 2 accumulation = 16, lr 0.1 (linear scaling of lr 0.2 "
               "set for batch 32)" in line for line in lines)
    assert any(line.startswith("stage2_") and "x 16 x 2 accumulation = 32" in line for line in lines)
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert saved.stage1.lr == pytest.approx(0.1) and saved.stage1.lr_scaling == "none"
    assert "# run on 1 process(es)" in (tmp_path / "run" / "config.yaml").read_text()
    # resuming with the same settings agrees with the saved (resolved) config
    run_experiment(cfg, resume=True, log=lines.append)
