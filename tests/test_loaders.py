"""Loaders: the in-memory and the streamed path serve the same batches; sampling; resume."""
import json

import numpy as np
import pytest
import torch

from otreweight.data.dataset import ArraySplit, Subset, subset
from otreweight.data.loaders import MemoryLoader, StreamLoader, build_loader, resolve_mode
from otreweight.data.modalities import get_modality
from otreweight.data.samplers import EpochSampler
from otreweight.experiment import load_config, run_experiment


def images(n=60, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.integers(0, 255, (n, 8, 8, 3)).astype(np.uint8)
    return ArraySplit(x, y, [str(c) for c in range(k)], "image")


def test_memory_and_stream_give_the_same_batches_for_the_same_sampler():
    split = images()
    mod = get_modality("image")
    stats = mod.stats(split.x)
    mem = build_loader(split, mod, stats, "cpu", "memory", name="train")
    stream = build_loader(split, mod, stats, "cpu", "stream", num_workers=2, name="train")
    assert isinstance(mem, MemoryLoader) and isinstance(stream, StreamLoader)
    try:
        sampler = EpochSampler(split.labels, 3, 16, "instance", drop_single=True)
        b1 = sampler.batches(torch.Generator().manual_seed(5))
        b2 = sampler.batches(torch.Generator().manual_seed(5))
        assert all(torch.equal(a, b) for a, b in zip(b1, b2))
        for xa, xb in zip(mem.batches(b1), stream.batches(b2)):
            assert torch.equal(xa, xb)
        assert torch.equal(torch.cat(list(mem.chunks(7))), torch.cat(list(stream.chunks(7))))
        assert torch.equal(mem.labels, stream.labels)
        for _ in range(2):  # persistent workers serve a second pass
            assert sum(x.shape[0] for x in stream.chunks(32)) == 60
    finally:
        stream.close()


def test_class_balanced_sampling_draws_classes_uniformly():
    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    s = EpochSampler(y, 3, 100, "class_balanced")
    g = torch.Generator().manual_seed(0)
    drawn = np.concatenate([torch.cat(s.batches(g)).numpy() for _ in range(20)])
    freq = np.bincount(y[drawn], minlength=3) / drawn.size
    assert np.allclose(freq, 1 / 3, atol=0.02)
    inst = torch.cat(EpochSampler(y, 3, 100).batches(g)).numpy()
    assert sorted(inst.tolist()) == list(range(1000))  # instance sampling: every example once


def test_sharded_orders_partition_the_global_order():
    y = np.arange(10) % 2
    parts = [torch.cat(EpochSampler(y, 2, 3, rank=r, world_size=2).batches(torch.Generator().manual_seed(1)))
             for r in range(2)]
    full = torch.cat(EpochSampler(y, 2, 3).batches(torch.Generator().manual_seed(1)))
    assert torch.equal(parts[0], full[0::2]) and torch.equal(parts[1], full[1::2])


def test_auto_streams_what_does_not_fit_and_lazy_splits():
    split = images(n=30)
    assert resolve_mode(split, "auto", "cpu") == "memory"
    assert resolve_mode(split, "auto", "cpu", budget=100) == "stream"

    class Lazy:  # the dataset protocol without arrays
        def __init__(self, base):
            self.base, self.labels, self.classes, self.modality = base, base.labels, base.classes, "image"

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            return self.base[i]

    lazy = Subset(Lazy(split), np.arange(10))
    assert resolve_mode(lazy, "auto", "cpu") == "stream"
    mod = get_modality("image")
    stats = mod.stats(split.x)
    forced = build_loader(lazy, mod, stats, "cpu", "memory", num_workers=0)
    assert torch.equal(forced.x, mod.to_tensor(split.x[:10], stats))
    assert isinstance(subset(split, [1, 2]), ArraySplit)


def small_run(src, out, loader, **extra):
    sets = [f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
            "model.name=small_cnn", "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1",
            "stage1.batch_size=16", "stage2.*.epochs=2", "stage2.*.batch_size=8", f"output_dir={out}",
            "progress=false", "threads=1", f"data.loader={loader}", "data.num_workers=2"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config("configs/cifar10_lt_if100.yaml", sets)


def test_a_streamed_run_ends_exactly_as_the_in_memory_run(tiny_npz, tmp_path):
    res = {}
    for mode in ("memory", "stream"):
        res[mode] = run_experiment(small_run(tiny_npz, tmp_path / mode, mode), log=lambda *a: None)
    for stage in res["memory"]:
        for which in ("best", "last"):
            assert res["memory"][stage][which] == res["stream"][stage][which], (stage, which)
    w = [np.load(tmp_path / m / "stage2_ot_classifier" / "weights.npz")["scores"] for m in ("memory", "stream")]
    assert np.array_equal(w[0], w[1])


def test_stream_run_killed_mid_stage_resumes_exactly(tiny_npz, tmp_path, kill_mid_epoch):
    full = run_experiment(small_run(tiny_npz, tmp_path / "full", "stream"), log=lambda *a: None)
    disarm = kill_mid_epoch(2, 3)  # killed inside stage 1's second epoch, after two of its batches
    with pytest.raises(KeyboardInterrupt):
        run_experiment(small_run(tiny_npz, tmp_path / "cut", "stream"), log=lambda *a: None)
    disarm()
    resumed = run_experiment(small_run(tiny_npz, tmp_path / "cut", "stream"), resume=True, log=lambda *a: None)
    for stage in full:
        assert full[stage]["best"] == resumed[stage]["best"] and full[stage]["last"] == resumed[stage]["last"]
    saved = json.loads((tmp_path / "cut" / "stage1" / "final.json").read_text())
    assert saved["best_epoch"] == full["stage1"]["best_epoch"]


def png_folder(root, per_class=(12, 6, 4), test_per_class=3, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in (("train", per_class), ("test", [test_per_class] * len(per_class))):
        for c, n in enumerate(counts):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                arr[..., c % 3] += 120
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("packed", ["folder", "tar", "tar.gz"])
def test_lazy_image_sources_decode_in_workers_like_the_eager_source(tmp_path, packed):
    import tarfile

    from otreweight.data.sources import load_dataset

    root = png_folder(tmp_path / "imgs")
    src = root
    if packed != "folder":
        src = tmp_path / f"imgs.{packed}"
        with tarfile.open(src, "w:gz" if packed == "tar.gz" else "w") as tar:
            tar.add(root, arcname="imgs")
    eager = load_dataset(str(src), cache_dir=tmp_path / "cache")
    lazy = load_dataset(str(src), lazy=True)
    assert lazy.classes == eager.classes and np.array_equal(lazy.y_train, eager.y_train)
    tr = lazy.split("train")
    if packed == "tar":
        assert isinstance(tr.items[0], tuple)  # member offsets, read on demand
    assert all(np.array_equal(tr[i][0], eager.x_train[i]) for i in range(len(tr)))
    mod = get_modality("image")
    stats = mod.stats(eager.x_train)
    streamed = mod.stats_from_chunks(iter([eager.x_train[:5], eager.x_train[5:]]))
    assert np.allclose(streamed["mean"], stats["mean"]) and np.allclose(streamed["std"], stats["std"])
    loader = build_loader(tr, mod, stats, "cpu", "auto", num_workers=2)
    assert isinstance(loader, StreamLoader)
    try:
        assert torch.equal(torch.cat(list(loader.chunks(5))), mod.to_tensor(eager.x_train, stats))
    finally:
        loader.close()


def test_a_run_on_a_lazy_folder_streams_end_to_end(tmp_path):
    root = png_folder(tmp_path / "imgs", per_class=(20, 12, 9), test_per_class=4)
    sets = [f"data.source={root}", "data.imbalance_factor=2", "data.allow_cut=true", "data.n_val_per_class=2", "data.n_meta_per_class=2",
            "data.loader=stream", "data.num_workers=1", "model.name=small_cnn", "model.options.width=4",
            "stage1.epochs=1", "stage1.warmup_epochs=0", "stage1.batch_size=8", "stage2.*.epochs=1",
            "stage2.*.batch_size=8", f"output_dir={tmp_path / 'run'}", "progress=false", "threads=1"]
    res = run_experiment(load_config("configs/cifar10_lt_if100.yaml", sets), log=lambda *a: None)
    assert set(res) == {"stage1", "stage2_ot_classifier", "stage2_ot_full"}
    assert all(0.0 <= r["best"]["accuracy"] <= 1.0 for r in res.values())
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["train_counts"][0] > split["train_counts"][-1]
