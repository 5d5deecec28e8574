"""`compare`: the classifier-only stage-2 methods of a seed share one augmented frozen-feature pass per epoch,
and each ends exactly as when it runs alone."""
import numpy as np
import pytest
import torch

import otreweight.train.loop as loop
from otreweight.compare import run_comparison
from otreweight.experiment import load_config
from otreweight.train.features import FeatureCache


def tiny_config(src, out, *extra):
    return load_config("configs/cifar10_lt_if100.yaml", [
        f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "model.name=small_cnn", "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1",
        "stage1.batch_size=16", f"output_dir={out}", "progress=false", "threads=1", *extra])


@pytest.fixture
def count_passes(monkeypatch):
    seeds = []
    real = loop.augmented_pass

    def counted(run, seed):
        seeds.append(seed)
        return real(run, seed)

    monkeypatch.setattr(loop, "augmented_pass", counted)
    return seeds


def stage_files(out, name):
    from otreweight import read_model

    best = read_model(out / "seed_0" / f"stage2_{name}")["state_dict"]
    w = out / "seed_0" / f"stage2_{name}" / "weights.npz"
    return best, (dict(np.load(w)) if w.exists() else {})


@pytest.mark.parametrize("store", ["off", "auto"])
def test_classifier_only_methods_share_one_augmented_pass_per_epoch(tiny_npz, tmp_path, count_passes, store):
    extra = [f"feature_store={store}"]
    if store == "auto":  # a frozen stage-1 checkpoint: the per-epoch views go to the feature store on disk
        run_comparison(tiny_config(tiny_npz, tmp_path / "s1"), ["ce"], seeds=(0,), output=tmp_path / "s1",
                       log=lambda *a: None)
        extra.append(f"stage1.checkpoint={tmp_path / 's1' / 'seed_0' / 'stage1' / 'model.json'}")
        count_passes.clear()
    cfg = tiny_config(tiny_npz, tmp_path / "run", *extra)
    fast = ["*.epochs=3", "*.batch_size=16"]
    logs = []
    both = run_comparison(cfg, ["cb", "ot"], seeds=(0,), mode="decoupled", method_sets=fast, output=tmp_path / "both",
                          log=logs.append)
    joint_seeds = list(count_passes)
    # one pass per epoch for both methods, each epoch its own draw, seeded by (seed, epoch)
    assert joint_seeds == [loop.augmentation_seed(0, e) for e in range(3)] and len(set(joint_seeds)) == 3
    if store == "off":
        assert any(m.endswith("augmented frozen-feature passes: 3 (each epoch's view once, shared by the "
                              "classifier-only stages)") for m in logs)
    for name in ("cb", "ot"):
        count_passes.clear()
        alone = run_comparison(cfg, [name], seeds=(0,), mode="decoupled", method_sets=fast,
                               output=tmp_path / f"alone_{name}", log=lambda *a: None)
        if store == "off":
            assert count_passes == joint_seeds  # the same draws computed again
        a = next(r for r in both["rows"] if r["method"] == name)
        b = alone["rows"][0]
        keys = [k for k in a if k.endswith(("_mean", "_std")) and "seconds" not in k]
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}, name
        (s1, w1), (s2, w2) = stage_files(tmp_path / "both", name), stage_files(tmp_path / f"alone_{name}", name)
        for k in s1:
            assert torch.equal(s1[k], s2[k]), (name, k)
        assert w1.keys() == w2.keys() and all(np.array_equal(w1[k], w2[k]) for k in w1)
        assert (name != "ot") or len(w1) > 0


def test_a_private_cache_keeps_no_augmented_view_and_a_full_one_computes_again():
    class Loader:
        name, source = "train", object()

    model = torch.nn.Linear(2, 2)
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(4, 2)

    shared, private = FeatureCache(), FeatureCache(keep_augmented=False)
    for cache in (shared, private):
        for _ in range(2):
            cache.augmented(model, Loader, 0, 123, "aug", compute)
    assert shared.augmented_passes == 1 and private.augmented_passes == 2
    full = FeatureCache()
    full.AUGMENTED_BYTES = 8
    full.augmented(model, Loader, 0, 1, "aug", compute), full.augmented(model, Loader, 0, 1, "aug", compute)
    assert full.augmented_passes == 2
