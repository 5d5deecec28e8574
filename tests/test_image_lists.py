"""Large-image sources as users download them: ImageNet-LT-style split files, iNaturalist-style JSON, CSV.

Generated JPEG trees; nothing is decoded when a source is opened; a given validation file is the
validation split; every bad input is one line naming the file and the line."""
import json

import numpy as np
import pytest
from PIL import Image

from otreweight.data.sources import DataError, load_dataset
from otreweight.experiment import load_config, run_experiment

SYNSETS = ["n01440764", "n01443537", "n01484850"]


def jpeg_tree(root, per_class=(12, 7, 4), size=16, seed=0):
    """root/train/<synset>/<synset>_<i>.JPEG and root/val/<synset>/..., coloured by class."""
    rng = np.random.default_rng(seed)
    rows = {"train": [], "val": [], "test": []}
    for c, (syn, n) in enumerate(zip(SYNSETS, per_class)):
        for split, count in (("train", n), ("val", 3), ("test", 3)):
            d = root / ("val" if split != "train" else "train") / syn
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                name = f"{syn}_{split}_{i}.JPEG"
                img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(d / name, quality=95)
                rows[split].append((f"{d.relative_to(root).as_posix()}/{name}", c))
    return rows


def write_lists(root, rows, prefix="ImageNet_LT"):
    for split, items in rows.items():
        (root / f"{prefix}_{split}.txt").write_text("".join(f"{p} {c}\n" for p, c in items))
    return {s: f"{prefix}_{s}.txt" for s in rows}


@pytest.fixture
def imagenet_lt(tmp_path):
    root = tmp_path / "imagenet"
    rows = jpeg_tree(root)
    return root, rows, write_lists(root, rows)


def test_split_files_open_lazily_with_the_given_validation(imagenet_lt, monkeypatch):
    from otreweight.data.sources import folder

    root, rows, files = imagenet_lt
    calls = []
    real = folder._decode_image
    monkeypatch.setattr(folder, "_decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = load_dataset("image_list", root=root, **files)
    assert calls == []  # listed, not decoded
    assert ds.has_val and ds.classes == ["0", "1", "2"] and ds.modality == "image"
    assert ds.split("train").labels.tolist() == [c for _, c in rows["train"]]
    assert len(ds.split("val")) == 9 and len(ds.split("test")) == 9
    x, y = ds.split("train")[13]
    assert x.shape == (16, 16, 3) and y == 1 and x[..., 1].mean() > x[..., 0].mean() + 80 and calls == [1]


def test_inaturalist_json_and_csv_lists(imagenet_lt, tmp_path):
    root, rows, _ = imagenet_lt
    cats = [17, 3, 42]  # category ids need not be 0..K-1 nor sorted by label

    def coco(items, with_annotations=True):
        doc = {"images": [{"id": 100 + i, "file_name": p} for i, (p, _) in enumerate(items)],
               "categories": [{"id": cid, "name": f"species {cid}"} for cid in cats]}
        if with_annotations:
            doc["annotations"] = [{"id": i, "image_id": 100 + i, "category_id": cats[c]} for i, (_, c) in enumerate(items)]
        return json.dumps(doc)

    (root / "train2018.json").write_text(coco(rows["train"]))
    (root / "val2018.json").write_text(coco(rows["val"]))
    ds = load_dataset("image_list", root=root, train="train2018.json", test="val2018.json")
    assert ds.classes == ["species 3", "species 17", "species 42"] and not ds.has_val
    order = {17: 1, 3: 0, 42: 2}  # labels follow the category ids' order
    assert ds.split("train").labels.tolist() == [order[cats[c]] for _, c in rows["train"]]
    (root / "test2018.json").write_text(coco(rows["test"], with_annotations=False))
    with pytest.raises(DataError, match="test2018.json has no 'annotations'"):
        load_dataset("image_list", root=root, train="train2018.json", test="test2018.json")

    names = ["tench", "goldfish", "shark"]
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text("path,label,source\n" + "".join(
            f"{p},{names[c]},x\n" for p, c in rows[split]))
    ds = load_dataset("image_list", root=root, train="train.csv", test="test.csv")
    assert ds.classes == sorted(names) and ds.split("test").labels.tolist() == [sorted(names).index(names[c])
                                                                                 for _, c in rows["test"]]


@pytest.mark.parametrize("line, match", [
    ("train/n01440764/missing.JPEG 0\n", r"ImageNet_LT_train.txt line 1 names train/n01440764/missing.JPEG, which is not"),
    ("{path} 7\n", r"ImageNet_LT_val.txt line 1: label 7 is outside the 3 classes"),
    ("{path}\n", r"ImageNet_LT_val.txt line 1 is not 'path label'"),
    ("{path} fish\n", r"ImageNet_LT_val.txt line 1: label 'fish' is not an integer"),
])
def test_bad_split_file_lines_are_one_line_with_file_and_line(imagenet_lt, line, match):
    root, rows, files = imagenet_lt
    target = "train" if "missing" in line else "val"
    text = (root / files[target]).read_text()
    (root / files[target]).write_text(line.format(path=rows["val"][0][0]) + text)
    with pytest.raises(DataError, match=match) as e:
        load_dataset("image_list", root=root, **files)
    assert "\n" not in str(e.value)


def test_other_bad_inputs(imagenet_lt, tmp_path):
    root, rows, files = imagenet_lt
    with pytest.raises(DataError, match="needs data.source_options.train and .test"):
        load_dataset("image_list", root=root, train=files["train"])
    with pytest.raises(DataError, match="split file nope.txt is not in"):
        load_dataset("image_list", root=root, train="nope.txt", test=files["test"])
    (root / "bad.csv").write_text("file,label\na.jpg,1\n")
    with pytest.raises(DataError, match="bad.csv has no 'path' column"):
        load_dataset("image_list", root=root, train="bad.csv", test=files["test"])
    (root / "broken.json").write_text('{"images": [')
    with pytest.raises(DataError, match="broken.json line 1 is not valid JSON"):
        load_dataset("image_list", root=root, train="broken.json", test=files["test"])


def run_cfg(root, files, out, *extra):
    return load_config("configs/cifar10_lt_if100.yaml", [
        "data.source=image_list", f"data.root={root}", f"data.source_options.train={files['train']}",
        f"data.source_options.val={files['val']}", f"data.source_options.test={files['test']}",
        "data.profile=given", "data.n_meta_per_class=2", "data.loader=stream", "data.num_workers=0",
        "data.augment=none", "model.name=small_cnn", "stage1.epochs=1", "stage2.*.epochs=1", "stage1.batch_size=8",
        "progress=false", "threads=1", f"output_dir={out}", *extra])


def test_a_run_on_split_files_takes_the_given_splits(imagenet_lt, tmp_path):
    root, rows, files = imagenet_lt
    res = run_experiment(run_cfg(root, files, tmp_path / "run"), log=lambda *a: None)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["validation"] == "given" and split["val_counts"] == [3, 3, 3]
    assert split["meta_counts"] == [2, 2, 1] and split["train_counts"] == [10, 5, 3]  # given: nothing dropped
    assert set(res) >= {"stage1", "stage2_ot_classifier"}
    # an image that does not decode stops the run with one line naming it
    bad = root / rows["train"][0][0]
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"ImageNet_LT_train.txt:train/n01440764/\S+ does not decode as an image"):
        run_experiment(run_cfg(root, files, tmp_path / "run2"), log=lambda *a: None)
