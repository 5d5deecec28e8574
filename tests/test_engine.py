import numpy as np
import pytest
import torch

from otreweight import FitConfig, OTReweightError, create_method, create_model, evaluate, fit, make_long_tailed


def blobs(n_per_class=60, k=3, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = np.repeat(np.arange(k), n_per_class)
    x = (centers[y] + rng.normal(0, 1, (y.size, d))).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def data():
    x, y = blobs()
    split = make_long_tailed(y, 5, n_meta_per_class=5, n_val_per_class=10, seed=0)
    return {
        "train": (x[split.train], y[split.train]),
        "val": (x[split.val], y[split.val]),
        "meta": (x[split.meta], y[split.meta]),
    }


def model():
    torch.manual_seed(0)
    return create_model("mlp", in_features=6, num_classes=3, hidden=(16,))


def test_stage1_learns_and_selects_on_validation(data):
    m = model()
    res = fit(m, create_method("ce"), data["train"], data["val"], config=FitConfig(epochs=8, batch_size=16, lr=0.05, progress=False), device="cpu")
    assert len(res.history) == 8
    assert res.best_score == max(r["val"]["balanced_accuracy"] for r in res.history)
    m.load_state_dict(res.best_state)
    assert evaluate(m, *data["val"])["balanced_accuracy"] == pytest.approx(res.best_score)
    assert res.best_score > 0.8


def test_classifier_only_freezes_the_backbone_and_ot_moves_scores(data):
    m = model()
    fit(m, create_method("ce"), data["train"], data["val"], config=FitConfig(epochs=3, batch_size=16, lr=0.05, progress=False), device="cpu")
    backbone = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("classifier")}
    head = m.classifier.weight.detach().clone()
    method = create_method("ot", lr=1.0, steps=2)
    cfg = FitConfig(epochs=2, batch_size=8, lr=0.01, trainable="classifier", progress=False)
    fit(m, method, data["train"], data["val"], data["meta"], cfg, device="cpu")
    for k, v in m.state_dict().items():
        if k in backbone:
            assert torch.equal(v, backbone[k]), k  # weights and batch-norm statistics untouched
    assert not torch.equal(m.classifier.weight, head)
    rw = method.reweighter
    assert not torch.allclose(rw.scores, rw.initial_scores())
    assert torch.isfinite(rw.scores).all()


def test_whole_network_ot_with_augmentation_and_image_prototypes(data):
    m = model()
    calls = []

    def augment(x, gen):
        calls.append(x.shape[0])
        return x + 0.01 * torch.randn(x.shape, generator=gen)

    cfg = FitConfig(epochs=2, batch_size=16, lr=0.01, trainable="all", progress=False)
    method = create_method("ot", targets="prototype_image", weighting="normalized", meta_ce=1.0)
    res = fit(m, method, data["train"], data["val"], data["meta"], cfg, device="cpu", augment=augment)
    assert calls and len(res.history) == 2


def test_runs_are_reproducible(data):
    def run():
        m = model()
        cfg = FitConfig(epochs=2, batch_size=8, lr=0.05, seed=4, progress=False)
        fit(m, create_method("ot"), data["train"], data["val"], data["meta"], cfg, device="cpu")
        return m.classifier.weight.detach().clone()

    assert torch.equal(run(), run())


@pytest.mark.parametrize("kw", [{}, {"targets": "whole"}, {"targets": "prototype_image", "trainable": "all"},
                                {"objective": "class_conditional", "scope": "dataset", "lam": 0.1}],
                         ids=["prototype", "whole", "prototype_image", "cc"])
def test_ot_class_without_meta_example_uses_its_training_examples(data, kw):
    """A class with no meta example (a class of 1-3 examples under profile: given) takes its OT
    targets from its own training examples; the solved objective still balances it exactly."""
    kw = dict(kw)
    trainable = kw.pop("trainable", "classifier")
    mx, my = data["meta"]
    method = create_method("ot", **kw)
    cfg = FitConfig(epochs=2, batch_size=8, lr=0.01, trainable=trainable, progress=False)
    res = fit(model(), method, data["train"], data["val"], (mx[my != 2], my[my != 2]), cfg, device="cpu")
    assert len(res.history) == 2 and np.isfinite(res.history[-1]["train_loss"])
    t = method.targets
    assert 2 in t.labels.tolist() and torch.isfinite(t.features).all()
    if kw.get("targets", "prototype") != "whole":
        assert sorted(t.labels.tolist()) == [0, 1, 2]
    if "objective" in kw:
        y = data["train"][1]
        w = method.reweighter.weights().numpy()
        assert np.allclose(np.bincount(y, w) / w.sum(), 1 / 3)


def test_bad_input(data):
    x, y = data["train"]
    bad = x.copy()
    bad[0, 0] = np.nan
    cfg = FitConfig(epochs=1, progress=False)
    with pytest.raises(OTReweightError, match="training inputs contains NaN"):
        fit(model(), create_method("ce"), (bad, y), data["val"], config=cfg, device="cpu")
    with pytest.raises(OTReweightError, match="lie in 0..2"):
        fit(model(), create_method("ce"), (x, y + 5), data["val"], config=cfg, device="cpu")
    with pytest.raises(OTReweightError, match="needs a meta set"):
        fit(model(), create_method("ot"), data["train"], data["val"], config=cfg, device="cpu")
    mx, my = data["meta"]
    with pytest.raises(OTReweightError, match="no example of class"):  # MW-Net needs every class in its meta set
        fit(model(), create_method("mwnet"), data["train"], data["val"], (mx[my != 2], my[my != 2]), cfg, device="cpu")
    with pytest.raises(OTReweightError, match="length mismatch"):
        fit(model(), create_method("ce"), (x, y[:-1]), data["val"], config=cfg, device="cpu")
    with pytest.raises(OTReweightError, match="unknown method"):
        create_method("mixup")
    with pytest.raises(OTReweightError, match="unknown trainable"):
        fit(model(), create_method("ce"), data["train"], data["val"], config=FitConfig(trainable="head"), device="cpu")
    with pytest.raises(OTReweightError, match="unknown device"):
        fit(model(), create_method("ce"), data["train"], data["val"], config=cfg, device="tpu9")


def test_torch_version_check():
    from otreweight._errors import check_torch_version

    with pytest.raises(OTReweightError, match="too old"):
        check_torch_version("2.0.1+cu118")
    check_torch_version("2.1.0")
    check_torch_version("2.13.0+cpu")


def test_method_hooks_sampling_and_train_free_methods(data):
    from otreweight.methods import Method

    seen = []

    class Balanced(Method):
        name = "balanced-probe"
        sampling = "class_balanced"

        def loss(self, batch, meta):
            seen.append(batch.y.clone())
            assert batch.x is not None and batch.x.shape[0] == batch.y.shape[0]
            return torch.nn.functional.cross_entropy(batch.logits, batch.y)

    cfg = FitConfig(epochs=4, batch_size=16, lr=0.01, progress=False)
    fit(model(), Balanced(), data["train"], data["val"], config=cfg, device="cpu")
    counts = torch.bincount(torch.cat(seen), minlength=3).double()
    assert (counts / counts.sum() - 1 / 3).abs().max() < 0.08  # the raw split is 5:2.2:1

    class BiasShift(Method):
        name = "bias-shift"
        trains = False

        def prepare_model(self, m):
            with torch.no_grad():
                m.classifier.bias.add_(torch.tensor([0.0, 0.0, 100.0]))

    m = model()
    res = fit(m, BiasShift(), data["train"], data["val"], config=cfg, device="cpu")
    assert res.best_epoch == 0 and len(res.history) == 1
    assert res.best_score == pytest.approx(1 / 3)  # everything is predicted as class 2


def test_kill_and_resume_gives_the_same_result(data, tmp_path):
    cfg = FitConfig(epochs=4, batch_size=8, lr=0.05, seed=2, progress=False)

    def run(stop_after=None, resume=False, ckpt=None):
        m = model()
        method = create_method("ot", lr=0.5)

        def stop(epoch, record):
            if stop_after is not None and epoch + 1 == stop_after:
                raise KeyboardInterrupt

        try:
            res = fit(m, method, data["train"], data["val"], data["meta"], cfg, device="cpu",
                      augment=lambda x, g: x + 0.05 * torch.randn(x.shape, generator=g),
                      on_epoch_end=stop, checkpoint=ckpt, resume=resume)
        except KeyboardInterrupt:
            return None
        return m, method, res

    m_full, meth_full, res_full = run()
    ckpt = tmp_path / "ck.pt"
    assert run(stop_after=2, ckpt=ckpt) is None and ckpt.exists()
    m_res, meth_res, res_res = run(resume=True, ckpt=ckpt)
    assert [r["epoch"] for r in res_res.history] == [1, 2, 3, 4]
    assert res_res.best_epoch == res_full.best_epoch
    for k, v in m_full.state_dict().items():
        assert torch.equal(v, m_res.state_dict()[k]), k
    assert torch.equal(meth_full.reweighter.scores, meth_res.reweighter.scores)
    other = FitConfig(epochs=4, batch_size=16, lr=0.05, seed=2, progress=False)
    with pytest.raises(OTReweightError, match="different settings"):
        fit(model(), create_method("ot"), data["train"], data["val"], data["meta"], other, device="cpu", checkpoint=ckpt, resume=True)


def test_accelerator_code_path_runs_on_the_cpu():
    """bf16 autocast, channels_last and on-device augmentation: the GPU path, exercised here on the CPU."""
    from otreweight.data.transforms import PadCropFlip

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    x = rng.normal(size=(36, 3, 8, 8)).astype(np.float32) + y[:, None, None, None]
    torch.manual_seed(0)
    m = create_model("small_cnn", num_classes=3, width=4)
    cfg = FitConfig(epochs=2, batch_size=8, lr=0.05, amp="bf16", progress=False)
    method = create_method("ot", weighting="normalized")
    res = fit(m, method, (x, y), (x[:9], y[:9]), (x[::4], y[::4]), cfg, device="cpu",
              augment=PadCropFlip(pad=2, fill=[0.0, 0.0, 0.0]))
    assert np.isfinite(res.history[-1]["train_loss"])
    assert torch.isfinite(method.reweighter.scores).all()
    assert m.convs[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_frozen_features_are_computed_once_across_runs(data, monkeypatch):
    import otreweight.train.features as engine
    from otreweight.train import FeatureCache

    calls = []
    real = engine.compute_features
    monkeypatch.setattr(engine, "compute_features", lambda m, x, *a, **k: calls.append(x.shape[0]) or real(m, x, *a, **k))
    base = model()
    x_tr, y_tr = (torch.as_tensor(a) for a in data["train"])
    x_va, y_va = (torch.as_tensor(a) for a in data["val"])
    x_me, y_me = (torch.as_tensor(a) for a in data["meta"])
    cfg = FitConfig(epochs=2, batch_size=8, lr=0.01, trainable="classifier", progress=False)
    cache = FeatureCache()
    for name in ("cb", "ot", "ce"):
        m = model()
        m.load_state_dict(base.state_dict())
        fit(m, create_method(name), (x_tr, y_tr), (x_va, y_va), (x_me, y_me), cfg, device="cpu", feature_cache=cache)
    assert sorted(calls) == sorted([x_tr.shape[0], x_va.shape[0], x_me.shape[0]])  # each set once, for three runs
