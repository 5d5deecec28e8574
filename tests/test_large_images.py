"""Large images: torchvision transforms in the loader workers, timm backbones, float16 feature memory maps.

Generated JPEGs of different sizes in ImageNet-LT-style split files; a timm ``resnet18`` (random
init) for one epoch on 64 px crops with 2 workers; the feature store's round trip and resume; the
bad inputs of this part of the issue (unknown timm name, weights unavailable offline, a checkpoint of
another architecture, inconsistent crop settings)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from otreweight import OTReweightError
from otreweight.model_file import read_model
from otreweight.data.loaders import MemoryLoader, StreamLoader, TransformedSplit
from otreweight.data.modalities import get_modality
from otreweight.data.transforms import IMAGENET_MEAN, WorkerTransforms
from otreweight.experiment import load_config, run_experiment
from otreweight.models import create_model
from otreweight.train.features import FeatureStore

pytest.importorskip("torchvision")
pytest.importorskip("timm")

SYNSETS = ["n01440764", "n01443537", "n01484850"]


def varied_jpegs(root, per_class=(24, 10, 5), seed=0):
    """root/<split>/<synset>/<i>.JPEG of sizes between 40 and 90 px, coloured by class; the lists."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "val": [], "test": []}
    for c, (syn, n) in enumerate(zip(SYNSETS, per_class)):
        for split, count in (("train", n), ("val", 3), ("test", 3)):
            d = root / split / syn
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = (int(v) for v in rng.integers(40, 90, 2))
                img = rng.integers(0, 60, (h, w, 3)).astype(np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(d / f"{i}.JPEG", quality=90)
                rows[split].append((f"{split}/{syn}/{i}.JPEG", c))
    for split, items in rows.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("".join(f"{p} {c}\n" for p, c in items))
    return rows


class _Split:
    """Images of different sizes, as a lazy source gives them."""

    modality = "image"

    def __init__(self, n=10, seed=0):
        rng = np.random.default_rng(seed)
        self.images = [rng.integers(0, 256, (int(rng.integers(30, 70)), int(rng.integers(30, 70)), 3)).astype(np.uint8)
                       for _ in range(n)]
        self.labels = np.arange(n) % 2
        self.classes = ["a", "b"]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_worker_transforms_resize_crop_and_seeded_draws():
    tf = WorkerTransforms(crop=32, augment=True, jitter=0.4)
    assert tf.resize == 37  # 32 / 0.875
    img = np.random.default_rng(0).integers(0, 256, (50, 80, 3)).astype(np.uint8)
    ev = tf(img)
    assert ev.shape == (3, 32, 32) and ev.dtype == torch.uint8
    # the evaluation view: the shorter side resized to 37, the centre 32 x 32
    assert torch.equal(ev, tf.eval(torch.from_numpy(img).permute(2, 0, 1)))
    state = torch.random.get_rng_state()
    a, b, c = tf(img, seed=5), tf(img, seed=5), tf(img, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (3, 32, 32)


def test_training_crops_are_the_same_for_any_number_of_workers():
    split, mod = _Split(), get_modality("image", crop_size=24)
    tf = WorkerTransforms(24, augment=True)
    stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
    batches = [torch.tensor([3, 1, 4]), torch.tensor([0, 9])]
    out = {}
    for workers in (0, 2):
        loader = StreamLoader(split, mod, stats, "cpu", workers, transforms=tf)
        try:
            assert loader.worker_augment
            out[workers] = [torch.cat(list(loader.batches(batches, torch.Generator().manual_seed(s)))) for s in (0, 1)]
            out[f"eval{workers}"] = torch.cat(list(loader.chunks(4)))
        finally:
            loader.close()
    assert all(torch.equal(a, b) for a, b in zip(out[0], out[2]))  # same draws whatever the workers
    assert not torch.equal(out[0][0], out[0][1])  # another generator state: other crops
    assert torch.equal(out["eval0"], out["eval2"]) and out["eval0"].shape == (10, 3, 24, 24)
    x = torch.from_numpy(split.images[3]).permute(2, 0, 1)
    want = (tf.eval(x).float() / 255 - 0.5) / 0.25
    assert torch.allclose(out["eval0"][3], want)  # evaluation: resize + centre crop, then normalised
    assert TransformedSplit(split, tf).example_shape == (24, 24, 3)


def test_feature_store_float16_memory_map_round_trip_and_resume(tmp_path, monkeypatch):
    from otreweight.train import features

    torch.manual_seed(0)
    model = create_model("mlp", in_features=6, num_classes=3, hidden=(16,))
    x = torch.randn(40, 6)
    loader = MemoryLoader(x, torch.arange(40) % 3, "train")
    want = features.compute_features(model, x).to(torch.float16)

    store = FeatureStore(tmp_path / "s", dtype="float16")
    real = features._feature_chunks

    def interrupted(*a, **k):  # a run killed after two batches of the extraction
        for i, chunk in enumerate(real(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(features, "_feature_chunks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.features(model, loader, "plain", batch_size=8)
    path = store.path(model, loader)
    assert not path.exists() and json.loads(path.with_suffix(".partial.json").read_text())["done"] == 16
    monkeypatch.setattr(features, "_feature_chunks", real)
    starts = []
    monkeypatch.setattr(features, "_feature_chunks", lambda m, ld, bs, cl, start: starts.append(start) or
                        real(m, ld, bs, cl, start))
    got = store.features(model, loader, "plain", batch_size=8)
    assert starts == [16] and store.resumed == 1  # the 16 rows on disk were not computed again
    assert got.dtype == torch.float16 and torch.equal(got, want) and path.exists()
    assert not path.with_suffix(".partial.npy").exists() and np.load(path).dtype == np.float16
    again = FeatureStore(tmp_path / "s", dtype="float16").features(model, loader, "plain", batch_size=8)
    assert torch.equal(again, want) and starts == [16]  # read back: no pass at all
    # float32 is another entry; other weights are another key
    assert FeatureStore(tmp_path / "s").path(model, loader) != path
    with torch.no_grad():
        model.backbone_parameters()[0].add_(1.0)
    assert store.path(model, loader) != path
    with pytest.raises(OTReweightError, match="feature dtype"):
        FeatureStore(tmp_path, dtype="int8")


def run_cfg(root, out, *extra):
    return load_config("configs/cifar10_lt_if100.yaml", [
        "data.source=image_list", f"data.root={root}", "data.source_options.train=ImageNet_LT_train.txt",
        "data.source_options.val=ImageNet_LT_val.txt", "data.source_options.test=ImageNet_LT_test.txt",
        "data.profile=given", "data.n_meta_per_class=2", "data.num_workers=2", "data.augment=random_resized_crop",
        "data.crop_size=64", "data.normalize=imagenet", "model.name=timm/resnet18", "stage1.epochs=1",
        "stage1.batch_size=8", 'stage2=[{"name": "ot", "method": "ot", "epochs": 1}, '
        '{"name": "cb", "method": "cb", "epochs": 1}]', "progress=false", "threads=1", f"output_dir={out}", *extra])


def test_timm_resnet18_one_epoch_on_64px_crops_with_two_workers(tmp_path, monkeypatch):
    from otreweight.data import loaders

    root = tmp_path / "inet"
    varied_jpegs(root)
    monkeypatch.setattr(loaders, "raw_chunks", lambda *a, **k: pytest.fail("imagenet statistics need no pass"))
    store = tmp_path / "store"
    res = run_experiment(run_cfg(root, tmp_path / "run"), log=lambda *a: None)
    assert set(res) == {"stage1", "stage2_ot", "stage2_cb"}
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["validation"] == "given" and split["train_counts"] == [22, 8, 4]
    saved = read_model(tmp_path / "run" / "stage1" / "model.json")
    assert saved["input"]["stats"]["mean"] == list(IMAGENET_MEAN)
    assert saved["input"]["modality_options"] == {"crop_size": 64, "resize_size": None}
    assert any(k.startswith("net.layer4") for k in saved["state_dict"])
    final = json.loads((tmp_path / "run" / "stage2_ot" / "final.json").read_text())
    assert 0.0 <= final["best"]["balanced_accuracy"] <= 1.0 and len(final["best"]["per_class"]) == 3
    # evaluate: the checkpoint alone rebuilds the model and the evaluation resize + centre crop
    from otreweight.experiment import evaluate_checkpoint

    s1 = json.loads((tmp_path / "run" / "stage1" / "final.json").read_text())["best"]
    m = evaluate_checkpoint(tmp_path / "run" / "stage1" / "model.json", "image_list", root=root, device="cpu")
    assert m["per_class"] == pytest.approx(s1["per_class"], abs=1e-6)
    # a frozen backbone (classifier-only stage 1): float16 features stored once, read back by the next run
    frozen = ("stage1.trainable=classifier", f"feature_store={store}", "feature_dtype=float16")
    logs = []
    first = run_experiment(run_cfg(root, tmp_path / "f1", *frozen), log=logs.append)
    assert any("features are computed once from the evaluation crop" in line for line in logs)
    stored = sorted(store.glob("*.npy"))
    assert len(stored) == 4 and all(np.load(p, mmap_mode="r").dtype == np.float16 for p in stored)
    from test_text_hf import count_feature_passes

    calls = count_feature_passes(monkeypatch)
    again = run_experiment(run_cfg(root, tmp_path / "f2", *frozen), log=lambda *a: None)
    assert calls == [] and {k: v["best"] for k, v in again.items()} == {k: v["best"] for k, v in first.items()}


def test_timm_names_options_and_weights_give_one_line(tmp_path):
    import timm
    from safetensors.torch import save_file

    with pytest.raises(OTReweightError, match=r"timm has no model 'resnet5O'; did you mean timm/resnet50"):
        create_model("timm/resnet5O", num_classes=3)
    with pytest.raises(OTReweightError, match=r"not in the local cache and HF_HUB_OFFLINE is set; download them .*"
                       r"huggingface-cli download timm/resnet18\.\S+ .*model\.options\.checkpoint"):
        create_model("timm/resnet18", num_classes=3, pretrained=True)
    with pytest.raises(OTReweightError, match="unexpected keyword argument 'wings'; remove it from model.options"):
        create_model("timm/resnet18", num_classes=3, wings=2)
    with pytest.raises(OTReweightError, match="is not a file"):
        create_model("timm/resnet18", num_classes=3, checkpoint=tmp_path / "none.pth")
    net = timm.create_model("resnet18", num_classes=1000)
    save_file(net.state_dict(), tmp_path / "r18.safetensors")
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    for f in ("r18.safetensors", "r18.pth"):
        m = create_model("timm/resnet18", num_classes=3, checkpoint=tmp_path / f)
        assert torch.equal(m.net.layer4[1].conv2.weight, net.layer4[1].conv2.weight)
        assert m.classifier.out_features == 3
    with pytest.raises(OTReweightError, match=r"is not a timm/resnet34 state dict: \d+ tensors of it are missing"):
        create_model("timm/resnet34", num_classes=3, checkpoint=tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(OTReweightError, match="cannot read .*junk.pth"):
        create_model("timm/resnet18", num_classes=3, checkpoint=tmp_path / "junk.pth")
    m = create_model("timm/resnet18", num_classes=3)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m.eval()(x), m.classifier(m.features(x)))
    assert m.features(x).shape == (2, 512) and not isinstance(m.net.get_classifier(), torch.nn.Linear)


@pytest.mark.parametrize("override,match", [
    ("data.crop_scale=[0.5, 0.2]", "crop_scale must be"),
    ("data.resize_size=32", r"resize_size \(32\) is smaller than data.crop_size \(64\)"),
    ("data.loader=memory", "use data.loader: stream or auto"),
    ("data.normalize=imagenette", "data.normalize must be true, false or imagenet"),
    ("data.color_jitter=2", "color_jitter must be in"),
])
def test_bad_crop_settings_are_one_line(tmp_path, override, match):
    with pytest.raises(OTReweightError, match=match):
        run_cfg(tmp_path, tmp_path / "run", override)


def test_crop_settings_on_other_data_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "v.npz"
    np.savez(path, x_train=rng.normal(size=(60, 4)), y_train=np.arange(60) % 3, x_test=rng.normal(size=(9, 4)),
             y_test=np.arange(9) % 3)
    cfg = load_config("configs/cifar10_lt_if100.yaml", [f"data.source={path}", "data.crop_size=32", "model.name=mlp",
                                                        f"output_dir={tmp_path / 'r'}", "progress=false"])
    with pytest.raises(OTReweightError, match="data.crop_size / augment: random_resized_crop are for images"):
        run_experiment(cfg, log=lambda *a: None)


def _write_inat(root, rows):
    """iNaturalist 2018-style train2018.json / val2018.json over the same generated images."""
    cats = [5, 2, 9]
    for split, name in (("train", "train2018.json"), ("val", "val2018.json")):
        items = rows[split] + (rows["test"] if split == "val" else [])
        doc = {"images": [{"id": i, "file_name": p} for i, (p, _) in enumerate(items)],
               "annotations": [{"id": i, "image_id": i, "category_id": cats[c]} for i, (_, c) in enumerate(items)],
               "categories": [{"id": c, "name": f"species {c}"} for c in cats]}
        (root / name).write_text(json.dumps(doc))


@pytest.mark.parametrize("config", ["imagenet_lt_resnext50", "imagenet_lt_resnet50", "places_lt_resnet152",
                                    "inaturalist2018_resnet50"])
def test_large_image_configs_run_on_data_of_their_format(config, tmp_path):
    """Each shipped recipe, shrunk (resnet18, 32 px, one epoch, random init), on generated files of its format."""
    from otreweight.experiment import resolve_config_path

    root = tmp_path / "data"
    rows = varied_jpegs(root)
    if config.startswith("places"):
        for split in rows:
            (root / f"ImageNet_LT_{split}.txt").rename(root / f"Places_LT_{split}.txt")
    if config.startswith("inaturalist"):
        _write_inat(root, rows)
    cfg = load_config(resolve_config_path(config), [
        f"data.root={root}", "model.name=timm/resnet18", "model.options={}", "data.crop_size=32", "data.resize_size=36",
        "data.n_meta_per_class=2", "data.n_val_per_class=2", "data.num_workers=0", "stage1.epochs=1",
        "stage1.batch_size=8", "stage2.*.epochs=1", "stage2.*.batch_size=8", "progress=false", "threads=1",
        f"output_dir={tmp_path / 'run'}", f"feature_store={tmp_path / 'store'}"])
    res = run_experiment(cfg, log=lambda *a: None)
    assert set(res) == {"stage1", *(f"stage2_{s.name}" for s in cfg.stage2)}
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    if config.startswith("inaturalist"):  # validation drawn from train; val2018.json is the test set
        assert split.get("validation") != "given" and sum(split["val_counts"]) > 0
    else:
        assert split["validation"] == "given"


def test_a_truncated_image_in_a_worker_stops_the_run_with_one_line(tmp_path):
    root = tmp_path / "inet"
    rows = varied_jpegs(root)
    bad = root / rows["train"][5][0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a download cut short
    with pytest.raises(OTReweightError) as err:
        run_experiment(run_cfg(root, tmp_path / "run", "stage2=[]"), log=lambda *a: None)
    assert str(err.value) == (f"ImageNet_LT_train.txt:{rows['train'][5][0]} does not decode as an image (OSError): "
                              "remove or replace the file")
    # the folder is reusable: the same run with the file replaced starts again
    bad.write_bytes(data)
    assert set(run_experiment(run_cfg(root, tmp_path / "run", "stage2=[]"), log=lambda *a: None)) == {"stage1"}


def test_training_split_statistics_after_the_evaluation_crop(tmp_path):
    from otreweight.data.loaders import stats_sample

    root = tmp_path / "inet"
    varied_jpegs(root)
    run_experiment(run_cfg(root, tmp_path / "run", "stage2=[]", "data.normalize=true", "data.num_workers=0"),
                   log=lambda *a: None)
    stats = read_model(tmp_path / "run" / "stage1" / "model.json")["input"]["stats"]
    # dark images (0-60) but for their class's channel (+150); 22, 8 and 4 training images per class
    assert len(stats["mean"]) == 3 and stats["mean"][0] > stats["mean"][1] > stats["mean"][2] > 0.1
    big = _Split(n=50)
    sample = stats_sample(big, limit=10)
    assert len(sample) == 10 and sample.indices.tolist() == np.linspace(0, 49, 10).astype(int).tolist()
    assert stats_sample(big, limit=50) is big


def test_model_pretrained_is_a_shorthand_for_the_option():
    cfg = load_config("configs/cifar10_lt_if100.yaml", ["model.name=timm/resnet18", "model.pretrained=true"])
    assert cfg.model.options == {"pretrained": True} and cfg.model.pretrained is None
    with pytest.raises(OTReweightError, match="'resnet32' has no pretrained weights to load"):
        load_config("configs/cifar10_lt_if100.yaml", ["model.pretrained=true"])
    with pytest.raises(OTReweightError, match="disagree"):
        load_config("configs/cifar10_lt_if100.yaml", ["model.name=timm/resnet18", "model.pretrained=true",
                                                      "model.options.pretrained=false"])
