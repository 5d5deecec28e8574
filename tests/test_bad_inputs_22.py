"""Issue 22's probe failures: each bad input is one `otreweight: error:` line naming the culprit
(exit status 2) before long work starts, or the behaviour a user expects (a byte-order mark
stripped, a form feed kept inside a text, a long field read)."""
import json

import numpy as np
import pytest

from otreweight.cli import main
from otreweight.data.sources import DataError, load_dataset

from test_bad_inputs import one_line_error, train
from test_image_lists import jpeg_tree, write_lists
from test_text import DOCS, write


# ----------------------------------------------------------------------------- text files
def _text_rows(ds):
    return [(ds.classes[y], str(x)) for x, y in zip(ds.x_train, ds.y_train)]


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_byte_order_mark_is_stripped(fmt, tmp_path):
    src = write(tmp_path / "d", fmt)
    for f in src.glob(f"*.{fmt}"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # as Notepad and Excel save UTF-8
    ds = load_dataset(f"text:{src}")
    assert ds.classes == ["politics", "science", "sport"], ds.classes
    assert _text_rows(ds) == [(lab, t) for lab, t in DOCS]


def test_a_byte_order_mark_in_a_class_folder_document_is_stripped(tmp_path):
    src = write(tmp_path / "d", "folders")
    f = sorted((src / "news-train" / "sport").iterdir())[0]
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert not any(str(x).startswith("\ufeff") for x in load_dataset(f"text:{src}").x_train)


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "csv"])
@pytest.mark.parametrize("char", ["\x0c", "\u2028", "\x0b", "\x1c", "\u0085"])
def test_form_feeds_and_unicode_line_separators_stay_inside_a_text(fmt, char, tmp_path):
    docs = [(lab, t.replace(" ", f" {char}", 1)) for lab, t in DOCS]
    src = write(tmp_path / "d", fmt, docs=docs, test=docs[:3])
    ds = load_dataset(f"text:{src}")
    assert _text_rows(ds) == docs


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_document_longer_than_the_csv_field_limit_is_read(fmt, tmp_path):
    import csv

    long = "word " * 40_000  # 200,000 characters
    docs = [("sport", long.strip()), *DOCS[1:]]
    src = write(tmp_path / "d", fmt, docs=docs)
    if fmt == "tsv":  # with a header row, read by csv
        f = src / "train.tsv"
        f.write_text("label\ttext\n" + f.read_text())
    limit = csv.field_size_limit()
    ds = load_dataset(f"text:{src}")
    assert len(str(ds.x_train[0])) == 199_999 and csv.field_size_limit() == limit  # the module's limit restored
    src2 = write(tmp_path / "e", "tsv", docs=docs)  # the headerless TSV: its first line is no header either
    assert len(str(load_dataset(f"text:{src2}").x_train[0])) == 199_999


@pytest.mark.parametrize("value, words", [("null", ["line 2", '"text" is null'])
                                          , ("5", ["line 2", '"text" is 5']),
                                          ('["a"]', ["line 2", '"text"'])])
def test_a_jsonl_text_that_is_not_a_string_is_refused_with_its_line(value, words, tmp_path, capsys):
    src = write(tmp_path / "d", "jsonl")
    f = src / "train.jsonl"
    lines = f.read_text().splitlines()
    lines[1] = '{"text": %s, "label": "politics"}' % value
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"text:{src}")
    for w in words:
        assert w in str(e.value), str(e.value)
    one_line_error(capsys, train(f"text:{src}", tmp_path / "run", "model.name=text_bag"), "train.jsonl", *words)


def test_a_jsonl_null_label_is_refused(tmp_path):
    src = write(tmp_path / "d", "jsonl")
    f = src / "test.jsonl"
    f.write_text('{"text": "a goal", "label": null}\n')
    with pytest.raises(DataError, match=r'test.jsonl line 1: "label" is null'):
        load_dataset(f"text:{src}")


# ----------------------------------------------------------------------------- image lists
@pytest.fixture
def image_lists(tmp_path):
    root = tmp_path / "imagenet"
    rows = jpeg_tree(root)
    return root, rows, write_lists(root, rows)


def test_a_list_file_with_a_byte_order_mark_is_read(image_lists):
    root, rows, files = image_lists
    for name in files.values():
        f = root / name
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ds = load_dataset("image_list", root=root, **files)
    assert len(ds.split("train")) == len(rows["train"])
    csv = root / "train.csv"
    csv.write_bytes(b"\xef\xbb\xbfpath,label\n" + "".join(f"{p},{c}\n" for p, c in rows["train"]).encode())
    assert len(load_dataset("image_list", root=root, train="train.csv", test=files["test"]).split("train")) == 23


def test_duplicated_lines_in_an_image_list_are_refused_with_counts(image_lists, tmp_path, capsys):
    root, rows, files = image_lists
    f = root / files["train"]
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines + lines[:2] + lines[:1]) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("image_list", root=root, **files)
    msg = str(e.value)
    assert "2 image(s) more than once" in msg and "3 repeated lines" in msg and "line 1 and 24" in msg, msg
    assert lines[0].split()[0] in msg


def _inat(root, rows, images=None, annotations="default", categories=None):
    imgs = images if images is not None else [{"id": i, "file_name": p} for i, (p, _) in enumerate(rows)]
    ann = ([{"image_id": i, "category_id": c} for i, (_, c) in enumerate(rows)] if annotations == "default"
           else annotations)
    doc = {"images": imgs, "annotations": ann,
           "categories": categories if categories is not None else [{"id": c, "name": f"c{c}"} for c in range(3)]}
    return json.dumps(doc)


@pytest.mark.parametrize("case, words", [
    ("annotations_null", ["has no 'annotations'"]),
    ("annotations_dict", ["'annotations' is a dict, not a list"]),
    ("string_ids", ["annotation 0", "category id \"abc\" is not an integer"]),
    ("string_category_list", ["categories", "category id \"x\""]),
])
def test_inaturalist_json_of_the_wrong_shape_is_one_line(case, words, image_lists, capsys, tmp_path):
    root, rows, files = image_lists
    f = root / "train2018.json"
    if case == "annotations_null":
        f.write_text(_inat(root, rows["train"], annotations=None))
    elif case == "annotations_dict":
        f.write_text(_inat(root, rows["train"], annotations={"a": 1}))
    elif case == "string_ids":
        ann = [{"image_id": i, "category_id": "abc"} for i in range(len(rows["train"]))]
        f.write_text(_inat(root, rows["train"], annotations=ann))
    else:
        f.write_text(_inat(root, rows["train"], categories=[{"id": "x", "name": "a"}]))
    with pytest.raises(DataError) as e:
        load_dataset("image_list", root=root, train="train2018.json", test=files["test"])
    for w in words:
        assert w in str(e.value), str(e.value)


def test_inaturalist_string_ids_that_are_integers_are_read(image_lists):
    root, rows, files = image_lists
    ann = [{"image_id": i, "category_id": str(c)} for i, (_, c) in enumerate(rows["train"])]
    (root / "train2018.json").write_text(_inat(root, rows["train"], annotations=ann))
    ds = load_dataset("image_list", root=root, train="train2018.json", test=files["test"])
    assert ds.split("train").labels.tolist() == [c for _, c in rows["train"]]


# ----------------------------------------------------------------------------- feature store
def test_a_feature_store_entry_with_damaged_bytes_is_computed_again(tmp_path):
    import torch

    from otreweight import create_model
    from otreweight.data.loaders import MemoryLoader
    from otreweight.train.features import FeatureStore

    torch.manual_seed(0)
    model = create_model("mlp", in_features=6, num_classes=3, hidden=(16,))
    loader = MemoryLoader(torch.randn(40, 6), torch.arange(40) % 3, "train")
    store = FeatureStore(tmp_path / "s")
    first = store.features(model, loader, "plain", batch_size=8).clone()
    path = store.path(model, loader)
    assert path.with_suffix(".sha256").exists() and store.misses == 1
    raw = bytearray(path.read_bytes())
    raw[-64:] = b"\x00" * 64  # the header intact, the last rows overwritten
    path.write_bytes(bytes(raw))
    assert np.load(path).shape == tuple(first.shape)  # still a valid .npy: only the checksum tells
    again = FeatureStore(tmp_path / "s")
    got = again.features(model, loader, "plain", batch_size=8)
    assert again.misses == 1 and again.hits == 0 and torch.equal(got, first)
    third = FeatureStore(tmp_path / "s")  # repaired on disk: a hit now
    assert torch.equal(third.features(model, loader, "plain", batch_size=8), first) and third.hits == 1
    path.with_suffix(".sha256").unlink()  # an entry without its checksum is not trusted either
    fourth = FeatureStore(tmp_path / "s")
    assert torch.equal(fourth.features(model, loader, "plain", batch_size=8), first) and fourth.misses == 1


# ----------------------------------------------------------------------------- point clouds
def test_a_class_that_exists_only_under_test_is_refused_with_counts(tmp_path):
    pytest.importorskip("trimesh")
    from test_points import point_folder

    root = point_folder(tmp_path / "pf", n_train=(3, 3), n_test=2, normals=False, txt=False)
    extra = root / "test" / "cone"
    extra.mkdir()
    for i in range(3):
        np.save(extra / f"{i}.npy", np.random.default_rng(i).normal(size=(40, 3)).astype(np.float32))
    with pytest.raises(DataError, match=r"test holds 1 class folder\(s\) that train/ lacks \(cone; 3 test shapes\)"):
        load_dataset("point_folder", root=root, cache_dir=tmp_path / "c", n_points=8)


def _h5(root, labels, name="ply_data_train0.h5"):
    h5py = pytest.importorskip("h5py")
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / name, "w") as f:
        f["data"] = np.random.default_rng(0).normal(size=(len(labels), 16, 3)).astype(np.float32)
        f["label"] = np.asarray(labels, np.int64).reshape(-1, 1)
    return root


def test_modelnet_h5_empty_train_file_and_negative_label(tmp_path, capsys):
    root = _h5(tmp_path / "empty", [])
    _h5(root, [0, 1], "ply_data_test0.h5")
    with pytest.raises(DataError, match=r"ply_data_train0.h5 in .* hold no cloud"):
        load_dataset("modelnet_h5", root=root, n_points=8)
    root = _h5(tmp_path / "neg", [0, 1, 2, -1, 1, 0])
    _h5(root, [0, 1], "ply_data_test0.h5")
    with pytest.raises(DataError, match=r"train label -1 \(cloud 3; 1 such\) is outside 0..2"):
        load_dataset("modelnet_h5", root=root, n_points=8)


# ----------------------------------------------------------------------------- arrays and the split
def _npz(path, x_train, y_train, x_test, y_test):
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_a_test_label_outside_the_training_classes_is_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    p = _npz(tmp_path / "d.npz", rng.normal(size=(160, 6)), np.arange(160) % 4, rng.normal(size=(20, 6)),
             np.r_[np.arange(19) % 4, 4])
    one_line_error(capsys, train(p, tmp_path / "run", "model.name=mlp"), "test split", "label 4", "1 test example")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("normalize", [True, False])
def test_features_near_the_float32_maximum_are_refused_before_training(normalize, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6))
    x[:, 2] = np.where(rng.random(160) < 0.5, 3.3e38, -3.3e38) if normalize else 1e20
    p = _npz(tmp_path / "d.npz", x.astype(np.float32), np.arange(160) % 4, rng.normal(size=(20, 6)),
             np.arange(20) % 4)
    one_line_error(capsys, train(p, tmp_path / "run", "model.name=mlp", f"data.normalize={str(normalize).lower()}"),
                   "feature column 2", "float32", "rescale")
    assert not (tmp_path / "run" / "stage1").exists()


def test_features_large_but_safe_to_centre_train(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, 6))  # a column near the maximum, all of one sign: centring stays finite
    x[:, 0] = 3.0e38 + rng.normal(size=160) * 1e36
    p = _npz(tmp_path / "d.npz", x.astype(np.float32), np.arange(160) % 4, x[:20].astype(np.float32),
             np.arange(20) % 4)
    assert train(p, tmp_path / "run", "model.name=mlp", "model.options={}", "stage2=[]") == 0


@pytest.mark.parametrize("value", ["abc", None, 1.5, -1, "3"])
def test_make_long_tailed_bad_meta_count_is_one_line(value):
    from otreweight import OTReweightError, make_long_tailed

    with pytest.raises(OTReweightError, match="n_meta_per_class must be an integer >= 0"):
        make_long_tailed(np.arange(80) % 2, 2, n_meta_per_class=value)


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_a_negative_seed_is_refused_at_config_check(seed, tiny_npz, tmp_path, capsys):
    one_line_error(capsys, train(tiny_npz, tmp_path / "run", f"seed={seed}"), "seed", seed)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_yaml_key_given_twice_is_refused_with_the_key_and_lines(tiny_npz, tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(f"base: cifar10_lt_if100\ndata:\n  source: {tiny_npz}\nstage1:\n  epochs: 3\nseed: 1\n"
                   "stage1:\n  epochs: 5\n")
    one_line_error(capsys, main(["train", "--config", str(cfg), "--set", f"output_dir={tmp_path / 'o'}"]),
                   str(cfg), "'stage1' is given twice", "lines 4 and 7")
    one_line_error(capsys, main(["train", "--config", "cifar10_lt_if100", "--set", "stage2=[{name: a, name: b}]",
                                 "--set", f"output_dir={tmp_path / 'o'}"]), "'name' is given twice")
    from otreweight.utils import load_yaml

    assert load_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n") == {"a": {"b": 1}, "c": {"b": 2}}  # merges override
    import yaml

    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # PyYAML's own loaders are left as they are


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_of_another_size_in_a_list_is_one_line(workers, image_lists, tmp_path, capsys):
    from PIL import Image

    root, rows, files = image_lists
    odd = rows["train"][5][0]
    Image.fromarray(np.zeros((20, 16, 3), np.uint8)).save(root / odd)
    args = ["train", "--config", "cifar10_lt_if100", "--no-report"]
    for s in ["data.source=image_list", f"data.root={root}", f"data.source_options.train={files['train']}",
              f"data.source_options.val={files['val']}", f"data.source_options.test={files['test']}",
              "data.profile=given", "data.n_meta_per_class=2", "data.loader=stream", f"data.num_workers={workers}",
              "data.augment=none", "model.name=small_cnn", "stage1.epochs=1", "stage2=[]", "stage1.batch_size=8",
              "progress=false", "threads=1", f"output_dir={tmp_path / 'out'}"]:
        args += ["--set", s]
    one_line_error(capsys, main(args), "16x20", "16x16", "data.image_size")
    assert not (tmp_path / "out" / "stage1").exists()


# ----------------------------------------------------------------------------- the output lock
def test_a_lock_whose_pid_was_reused_is_taken_over(tiny_npz, tmp_path, capsys):
    import subprocess
    import sys

    from otreweight.outputs import _start_time

    out = tmp_path / "locked"
    out.mkdir()
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    named = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "otreweight", "train"])
    import time
    from pathlib import Path

    deadline = time.monotonic() + 10
    while b"otreweight" not in Path(f"/proc/{named.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd (before, /proc shows the parent's command line)
    try:
        # the PID lives, but it started after the lock was written: another process
        (out / ".lock").write_text(f"{unrelated.pid} {int(_start_time(unrelated.pid)) - 1}")
        from otreweight.outputs import OutputLock

        with OutputLock(out):
            assert (out / ".lock").read_text().split()[0] == str(__import__("os").getpid())
        # a lock of an older version (PID only): a live process that is no otreweight run is taken over
        (out / ".lock").write_text(str(unrelated.pid))
        with OutputLock(out):
            pass
        # ... and one whose command line names otreweight is respected, with advice that holds
        (out / ".lock").write_text(str(named.pid))
        from otreweight import OTReweightError

        with pytest.raises(OTReweightError, match=rf"PID {named.pid}.*taken over automatically"):
            with OutputLock(out):
                pass
    finally:
        for p in (unrelated, named):
            p.kill()
            p.wait()
    (out / ".lock").write_text(str(named.pid))  # its process has ended now
    assert train(tiny_npz, out) == 0 and not (out / ".lock").exists()


# ----------------------------------------------------------------------------- torchrun
@pytest.mark.parametrize("setting, words", [("stage1.epochs=ten", ["stage1.epochs", "'ten'"]),
                                            ("data.source=missing.npz", ["missing.npz", "does not exist"])])
def test_under_torchrun_an_error_is_one_line_from_rank_0_and_every_rank_exits_2(setting, words, tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from test_distributed import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           "-m", "otreweight", "train", "--config", "cifar10_lt_if100", "--set", setting,
           "--set", f"output_dir={tmp_path / 'run'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OTREWEIGHT_DIST_TIMEOUT="60",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "otreweight: error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("otreweight: error:") and "rank" not in lines[0], lines
    for w in words:
        assert w in lines[0], lines
    frames = [ln for ln in proc.stderr.splitlines() if ln.strip().startswith("File ")]
    assert not any("otreweight" in f for f in frames), frames  # no rank printed a traceback (torchrun's own remains)
    assert sorted(re.findall(r"exitcode\s+:\s*(-?\d+)", proc.stderr)) == ["2", "2"], proc.stderr[-2000:]


# ----------------------------------------------------------------------------- models not cached, hub unreachable
@pytest.mark.parametrize("name, kwargs, words", [
    ("timm/resnet18", {}, ["not in the local cache", "127.0.0.1 cannot be reached", "model.options.checkpoint",
                           "HF_HUB_OFFLINE"]),
    ("hf/no-such-org/no-such-model", {"vocab_size": 10}, ["not in the Hugging Face cache", "127.0.0.1",
                                                          "hf/path/to/model", "HF_HUB_OFFLINE"]),
])
def test_a_model_not_cached_is_refused_within_seconds_when_the_hub_is_unreachable(name, kwargs, words, monkeypatch):
    import time

    pytest.importorskip("timm" if name.startswith("timm") else "transformers")
    from otreweight import OTReweightError, create_model
    from otreweight.models import hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the hub cannot be reached
    monkeypatch.setattr(hf, "_REACHABLE", {})
    start = time.monotonic()
    with pytest.raises(OTReweightError) as e:
        create_model(name, num_classes=3, pretrained=True, **kwargs)
    assert time.monotonic() - start < 10
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value), str(e.value)
