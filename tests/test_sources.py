"""Tests for otreweight.data.sources on tiny files generated in the real formats."""

import hashlib
import os
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
from PIL import Image

from otreweight.data import sources
from otreweight.data.sources import cifar, folder
from otreweight.data.sources import (
    SOURCES,
    ArrayDataset,
    DataError,
    default_cache_dir,
    load_cifar,
    load_dataset,
    load_image_folder,
    load_npz,
    register_source,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Never touch ~/.cache in tests, even where a test does not pass cache_dir.
    monkeypatch.setenv("OTREWEIGHT_CACHE", str(tmp_path / "env-cache"))


# ---------------------------------------------------------------------------
# Fake CIFAR archives in the official python format
# ---------------------------------------------------------------------------


def _py_pickle(obj) -> bytes:
    """Protocol-2 pickle naming numpy.core, as the official files (numpy 1.x era) do."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar_gz(src_dir, top, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src_dir / top, arcname=top)
    return archive


def make_cifar10(where, per_batch=2, n_test=3, seed=0):
    """Write cifar-10-batches-py/ under ``where`` and return (folder, expected arrays)."""
    rng = np.random.default_rng(seed)
    folder = where / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    label = 0
    for b in range(1, 6):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(label + i) % 10 for i in range(per_batch)]
        label += per_batch
        if b == 1:  # a known pattern: image 0 has one pure red pixel at row 0, column 1
            data[0] = 0
            data[0, 0 * 1024 + 0 * 32 + 1] = 255
        (folder / f"data_batch_{b}").write_bytes(_py_pickle({
            b"batch_label": f"training batch {b} of 5".encode(), b"labels": labels,
            b"data": data, b"filenames": [f"f{b}_{i}.png".encode() for i in range(per_batch)]}))
        xs.append(data)
        ys += labels
    test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    test_labels = [9 - i for i in range(n_test)]
    (folder / "test_batch").write_bytes(_py_pickle({b"batch_label": b"testing batch 1 of 1",
                                                    b"labels": test_labels, b"data": test}))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(_py_pickle({
        b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072}))
    return folder, (np.concatenate(xs), np.array(ys), test, np.array(test_labels), names)


def make_cifar100(where, n_train=6, n_test=4, seed=1):
    rng = np.random.default_rng(seed)
    folder = where / "cifar-100-python"
    folder.mkdir(parents=True)
    train = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    test = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    fine_tr, fine_te = [0, 99, 50, 3, 3, 7][:n_train], [99, 1, 2, 0][:n_test]
    for fname, data, fine in (("train", train, fine_tr), ("test", test, fine_te)):
        (folder / fname).write_bytes(_py_pickle({
            b"filenames": [b"x.png"] * len(data), b"batch_label": fname.encode(),
            b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": data}))
    names = [f"fine{i:02d}" for i in range(100)]
    (folder / "meta").write_bytes(_py_pickle({
        b"fine_label_names": [n.encode() for n in names],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}))
    return folder, (train, np.array(fine_tr), test, np.array(fine_te), names)


@pytest.fixture
def cifar10_archive(tmp_path):
    """(archive path in its own folder, expected arrays); MD5 not yet patched."""
    src = tmp_path / "src10"
    _, expected = make_cifar10(src)
    archive = _tar_gz(src, "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    return archive, expected


def _hwc(rows):
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _check_cifar(ds, expected, name):
    x_tr, y_tr, x_te, y_te, names = expected
    assert ds.name == name
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (len(x_tr), 32, 32, 3)
    assert ds.x_test.shape == (len(x_te), 32, 32, 3)
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.classes == names and ds.num_classes == len(names)
    np.testing.assert_array_equal(ds.x_train, _hwc(x_tr))
    np.testing.assert_array_equal(ds.x_test, _hwc(x_te))
    # Channel planes R, G, B, each row-major 32x32, become (row, col, channel).
    for n, r, c, ch in [(0, 5, 7, 0), (1, 31, 0, 1), (len(x_tr) - 1, 12, 30, 2)]:
        assert ds.x_train[n, r, c, ch] == x_tr[n, ch * 1024 + r * 32 + c]


def test_cifar10_archive_loads_with_hwc_layout(cifar10_archive, tmp_path, monkeypatch):
    archive, expected = cifar10_archive
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    ds = load_cifar("cifar10", archive.parent, download=False, cache_dir=tmp_path / "cache")
    _check_cifar(ds, expected, "cifar10")
    assert ds.x_train[0, 0, 1].tolist() == [255, 0, 0]  # the pure red pixel
    assert ds.x_train[0].sum() == 255
    assert not (archive.parent / "cifar-10-batches-py").exists()  # read in place


def test_cifar10_extracted_folder_loads(tmp_path):
    _, expected = make_cifar10(tmp_path / "data")
    ds = load_cifar("cifar10", tmp_path / "data", download=False, cache_dir=tmp_path / "cache")
    _check_cifar(ds, expected, "cifar10")


def test_cifar100_archive_and_folder_load(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _, expected = make_cifar100(src)
    root = tmp_path / "root"
    root.mkdir()
    archive = _tar_gz(src, "cifar-100-python", root / "cifar-100-python.tar.gz")
    monkeypatch.setattr(cifar, "CIFAR100_MD5", _md5(archive))
    ds = load_cifar("cifar100", root, download=False, cache_dir=tmp_path / "c1")
    _check_cifar(ds, expected, "cifar100")
    assert ds.num_classes == 100
    ds2 = load_cifar("cifar100", src, download=False, cache_dir=tmp_path / "c2")
    _check_cifar(ds2, expected, "cifar100")


def test_cifar_archive_with_wrong_md5_is_an_error(cifar10_archive, tmp_path):
    archive, _ = cifar10_archive
    with pytest.raises(DataError) as e:
        load_cifar("cifar10", archive.parent, download=True, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and str(archive) in msg
    assert _md5(archive) in msg and cifar.CIFAR10_MD5 in msg


def test_cifar_download_from_url_verifies_and_extracts(cifar10_archive, tmp_path, monkeypatch):
    archive, expected = cifar10_archive
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    root = tmp_path / "fresh" / "root"
    ds = load_cifar("cifar10", root, download=True, cache_dir=tmp_path / "cache")
    _check_cifar(ds, expected, "cifar10")
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert _md5(root / "cifar-10-python.tar.gz") == _md5(archive)
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar_download_with_wrong_md5_removes_file(cifar10_archive, tmp_path, monkeypatch):
    archive, _ = cifar10_archive
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        load_cifar("cifar10", root, cache_dir=tmp_path / "cache")
    assert "0" * 32 in str(e.value) and _md5(archive) in str(e.value)
    assert list(root.iterdir()) == []  # neither the archive nor a partial file is left


def _expected_missing_message(root):
    return (f"CIFAR-10 not found: put cifar-10-python.tar.gz (from {cifar.CIFAR10_URL}) "
            f"into {root}, or its extracted folder cifar-10-batches-py/ there")


def test_cifar_offline_gives_clear_error(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(cifar, "_urlretrieve", offline)
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        load_cifar("cifar10", root, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert msg.startswith(_expected_missing_message(root)) and "no network" in msg and "\n" not in msg
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert list(root.iterdir()) == []


def test_cifar_download_false_gives_clear_error(tmp_path, monkeypatch):
    def fail(url, dest):
        raise AssertionError("must not download")

    monkeypatch.setattr(cifar, "_urlretrieve", fail)
    with pytest.raises(DataError) as e:
        load_cifar("cifar10", tmp_path, download=False)
    assert str(e.value) == _expected_missing_message(tmp_path)


def test_cifar_incomplete_folder_names_missing_file(tmp_path):
    folder, _ = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        load_cifar("cifar10", tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_cifar_unknown_variant():
    with pytest.raises(DataError, match="cifar10"):
        load_cifar("cifar1000", "/nonexistent")


def test_cifar_rejects_pickled_code(tmp_path):
    folder, _ = make_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": os.getcwd}, protocol=2))
    with pytest.raises(DataError, match="test_batch"):
        load_cifar("cifar10", tmp_path, download=False, cache_dir=tmp_path / "cache")


def test_cifar_cache_hit_and_corrupt_cache(tmp_path, monkeypatch):
    _, expected = make_cifar10(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_cifar("cifar10", tmp_path / "data", download=False, cache_dir=cache)
    (cached_file,) = cache.glob("*.npz")

    def no_decode(*a, **k):
        raise AssertionError("decoded again despite the cache")

    with monkeypatch.context() as m:
        m.setattr(cifar, "_decode_cifar", no_decode)
        second = load_cifar("cifar10", tmp_path / "data", download=False, cache_dir=cache)
    _check_cifar(second, expected, "cifar10")
    np.testing.assert_array_equal(first.x_train, second.x_train)

    cached_file.write_bytes(b"not an npz file")
    third = load_cifar("cifar10", tmp_path / "data", download=False, cache_dir=cache)
    _check_cifar(third, expected, "cifar10")
    assert np.load(cached_file)["x_train"].shape == (10, 32, 32, 3)  # rebuilt


# ---------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------


def _color(k, j):
    return (40 * k + 10, 20 * j + 5, 200 - 30 * k)


def make_folder(root, spec, size=(6, 5), n=(3, 2)):
    """``spec``: {class: extension}; image j of class k is a solid ``_color(k, j)``.

    Files are written in reverse order, so loading must sort them.
    """
    for split, count in zip(("train", "test"), n):
        for k, (cls, ext) in enumerate(sorted(spec.items())):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for j in reversed(range(count)):
                img = Image.new("RGB", (size[1], size[0]), _color(k, j))
                if ext.lower() in (".jpg", ".jpeg"):
                    img.save(d / f"img{j:02d}{ext}", format="JPEG", quality=95)
                else:
                    img.save(d / f"img{j:02d}{ext}", format=ext.lstrip(".").upper())
    return root


SPEC = {"cat": ".jpeg", "ant": ".png", "bee": ".JPG", "dog": ".bmp"}


def _check_folder(ds, size=(6, 5), n=(3, 2)):
    classes = sorted(SPEC)
    assert ds.classes == classes
    assert ds.x_train.shape == (len(classes) * n[0], *size, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (len(classes) * n[1], *size, 3)
    np.testing.assert_array_equal(ds.y_train, np.repeat(np.arange(len(classes)), n[0]))
    np.testing.assert_array_equal(ds.y_test, np.repeat(np.arange(len(classes)), n[1]))
    for split, count in zip(("train", "test"), n):
        x = getattr(ds, f"x_{split}")
        for k, cls in enumerate(classes):
            for j in range(count):
                img = x[k * count + j].astype(int)
                tol = 0 if SPEC[cls] in (".png", ".bmp") else 4
                assert np.abs(img - np.array(_color(k, j))).max() <= tol, (split, cls, j)


def test_image_folder_png_jpeg_bmp(tmp_path):
    root = make_folder(tmp_path / "imgs", SPEC)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    ds = load_image_folder(root, cache_dir=tmp_path / "cache")
    _check_folder(ds)
    assert ds.name == f"folder:{root}"


def test_image_folder_converts_gray_and_rgba_to_rgb(tmp_path):
    for split in ("train", "test"):
        d = tmp_path / "f" / split / "only"
        d.mkdir(parents=True)
        Image.new("L", (4, 4), 77).save(d / "a.png")
        Image.new("RGBA", (4, 4), (1, 2, 3, 4)).save(d / "b.png")
    ds = load_image_folder(tmp_path / "f", cache_dir=tmp_path / "cache")
    assert ds.x_train.shape == (2, 4, 4, 3)
    assert ds.x_train[0, 0, 0].tolist() == [77, 77, 77] and ds.x_train[1, 0, 0].tolist() == [1, 2, 3]


def test_image_folder_mismatched_test_classes(tmp_path):
    root = make_folder(tmp_path / "imgs", SPEC)
    (root / "test" / "bee").rename(root / "test" / "wasp")
    with pytest.raises(DataError, match=r"only in train/: bee; only in test/: wasp"):
        load_image_folder(root, cache_dir=tmp_path / "cache")


def test_image_folder_mixed_sizes_and_resize(tmp_path):
    root = make_folder(tmp_path / "imgs", SPEC)
    odd = root / "test" / "dog" / "img01.bmp"
    Image.new("RGB", (9, 7), (1, 2, 3)).save(odd)
    with pytest.raises(DataError) as e:
        load_image_folder(root, cache_dir=tmp_path / "cache", num_workers=2)
    assert str(odd) in str(e.value) and "7x9" in str(e.value) and "image_size" in str(e.value)
    ds = load_image_folder(root, cache_dir=tmp_path / "cache", image_size=(8, 8))
    assert ds.x_train.shape == (12, 8, 8, 3) and ds.x_test.shape == (8, 8, 8, 3)
    assert ds.x_test[-1, 4, 4].tolist() == [1, 2, 3]


def test_image_folder_undecodable_file_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs", SPEC)
    bad = root / "train" / "bee" / "img00.JPG"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError) as e:
        load_image_folder(root, cache_dir=tmp_path / "cache")
    assert str(bad) in str(e.value) and e.value.__cause__ is None


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train/ and test/"):
        load_image_folder(tmp_path / "empty")
    root = make_folder(tmp_path / "imgs", SPEC)
    for f in (root / "train" / "cat").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="cat has no images"):
        load_image_folder(root, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="image_size"):
        load_image_folder(root, image_size=(8,))


@pytest.mark.parametrize("nested, suffix", [(True, ".tar.gz"), (False, ".tgz")])
def test_image_folder_from_archive(tmp_path, nested, suffix):
    src = make_folder(tmp_path / "src" / "myset", SPEC)
    archive = tmp_path / f"myset{suffix}"
    with tarfile.open(archive, "w:gz") as tar:
        if nested:
            tar.add(src, arcname="myset")
        else:
            tar.add(src / "train", arcname="train")
            tar.add(src / "test", arcname="test")
    cache = tmp_path / "cache"
    ds = load_image_folder(archive, cache_dir=cache)
    _check_folder(ds)
    assert ds.name == f"folder:{archive}"
    assert [p.suffix for p in cache.iterdir()] == [".npz"]  # nothing extracted to disk
    direct = load_image_folder(src, cache_dir=cache)
    np.testing.assert_array_equal(ds.x_train, direct.x_train)


def test_image_folder_cache_hit_and_key(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", SPEC)
    cache = tmp_path / "cache"
    first = load_image_folder(root, cache_dir=cache)

    calls = []
    real = folder._decode_image
    monkeypatch.setattr(folder, "_decode_image", lambda *a: calls.append(a) or real(*a))
    second = load_image_folder(root, cache_dir=cache)
    assert calls == []  # served from the cache
    _check_folder(second)
    np.testing.assert_array_equal(first.x_test, second.x_test)

    assert load_image_folder(root, cache_dir=cache, image_size=(3, 3)).x_train.shape[1:] == (3, 3, 3)
    assert len(calls) == 20  # another size is another cache entry
    Image.new("RGB", (5, 6), (0, 0, 0)).save(root / "test" / "ant" / "img09.png")
    assert len(load_image_folder(root, cache_dir=cache).x_test) == 9  # a new file: rebuilt
    assert len(calls) == 41

    for f in cache.glob("*.npz"):
        f.write_bytes(b"\x00" * 10)
    third = load_image_folder(root, cache_dir=cache)  # corrupt cache: ignored and rebuilt
    assert len(third.x_test) == 9 and len(calls) == 62
    assert load_image_folder(root, cache_dir=cache).x_train.shape == third.x_train.shape
    assert len(calls) == 62


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OTREWEIGHT_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    root = make_folder(tmp_path / "imgs", {"a": ".png"}, n=(1, 1))
    load_image_folder(root)
    assert len(list((tmp_path / "here").glob("folder-*.npz"))) == 1
    monkeypatch.delenv("OTREWEIGHT_CACHE")
    assert default_cache_dir() == default_cache_dir().home() / ".cache" / "otreweight"


# ---------------------------------------------------------------------------
# .npz and validation
# ---------------------------------------------------------------------------


def _arrays(rng, n=8, d=5, k=3):
    return dict(x_train=rng.normal(size=(n, d)), y_train=np.arange(n) % k,
                x_test=rng.normal(size=(4, d)).astype(np.float32), y_test=np.arange(4) % k)


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    np.savez(tmp_path / "f.npz", classes=np.array(["x", "y", "z"]), **arrays)
    ds = load_npz(tmp_path / "f.npz")
    assert ds.classes == ["x", "y", "z"] and ds.num_classes == 3 and ds.name == f"npz:{tmp_path / 'f.npz'}"
    for key, value in arrays.items():
        np.testing.assert_array_equal(getattr(ds, key), value)
    assert ds.y_train.dtype == np.int64 and ds.x_test.dtype == np.float32

    images = dict(x_train=rng.integers(0, 256, (4, 2, 2, 3), dtype=np.uint8), y_train=np.array([0, 1, 2, 2]),
                  x_test=np.zeros((1, 2, 2, 3), np.uint8), y_test=np.array([1], dtype=np.int32))
    np.savez(tmp_path / "g.npz", **images)
    ds = load_npz(tmp_path / "g.npz")
    assert ds.classes == ["0", "1", "2"] and ds.x_train.shape == (4, 2, 2, 3) and ds.y_test.dtype == np.int64


def test_npz_missing_keys(tmp_path):
    np.savez(tmp_path / "f.npz", x_train=np.zeros((2, 2)), y_train=np.zeros(2, int))
    with pytest.raises(DataError, match=r"lacks keys x_test, y_test"):
        load_npz(tmp_path / "f.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")


def test_npz_nan_features(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    arrays["x_test"][1, 2] = np.nan
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(DataError, match=r"x_test has 1 non-finite") as e:
        load_npz(tmp_path / "f.npz")
    assert "\n" not in str(e.value) and str(tmp_path / "f.npz") in str(e.value)


def test_npz_label_out_of_range(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    arrays["y_test"][0] = 3
    np.savez(tmp_path / "f.npz", classes=np.array(["a", "b", "c"]), **arrays)
    with pytest.raises(DataError, match=r"y_test has label 3 outside 0..2"):
        load_npz(tmp_path / "f.npz")
    arrays["y_test"][0] = -1
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(DataError, match=r"label -1"):
        load_npz(tmp_path / "g.npz")


def test_npz_object_arrays_rejected(tmp_path):
    arrays = _arrays(np.random.default_rng(0))
    np.savez(tmp_path / "f.npz", classes=np.array(["a", "b", "c"], dtype=object), **arrays)
    with pytest.raises(DataError, match="str array"):
        load_npz(tmp_path / "f.npz")


def test_array_dataset_validation():
    x, y = np.zeros((3, 2)), np.array([0, 1, 0])
    with pytest.raises(DataError, match="3 rows but y_test has 2"):
        ArrayDataset(x, y, x, y[:2], ["a", "b"], "t")
    with pytest.raises(DataError, match="dtype float64"):
        ArrayDataset(x, y.astype(float), x, y, ["a", "b"], "t")
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(np.zeros((3, 2, 2, 3)), y, np.zeros((3, 2, 2, 3)), y, ["a", "b"], "t")
    with pytest.raises(DataError, match="same example shape"):
        ArrayDataset(x, y, np.zeros((3, 4)), y, ["a", "b"], "t")
    with pytest.raises(DataError, match="x_train has 1 non-finite"):
        ArrayDataset(np.array([[np.inf, 0], [0, 0], [0, 0]]), y, x, y, ["a", "b"], "t")
    ds = ArrayDataset(x, y.astype(np.uint8), x, y, ["a", "b"], "t")
    assert ds.y_train.dtype == np.int64 and ds.num_classes == 2


# ---------------------------------------------------------------------------
# Dispatch and registry
# ---------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path, monkeypatch):
    _, expected = make_cifar10(tmp_path / "cifar")
    _check_cifar(load_dataset("cifar10", root=tmp_path / "cifar", download=False, cache_dir=tmp_path / "c"),
                 expected, "cifar10")
    _, expected = make_cifar100(tmp_path / "cifar")
    _check_cifar(load_dataset("CIFAR100", root=tmp_path / "cifar", download=False, cache_dir=tmp_path / "c"),
                 expected, "cifar100")

    np.savez(tmp_path / "f.npz", **_arrays(np.random.default_rng(0)))
    assert load_dataset(str(tmp_path / "f.npz")).name == f"npz:{tmp_path / 'f.npz'}"
    assert load_dataset(f"npz:{tmp_path / 'f.npz'}").num_classes == 3

    root = make_folder(tmp_path / "imgs", SPEC)
    _check_folder(load_dataset(str(root), cache_dir=tmp_path / "c"))
    assert load_dataset(f"folder:{root}", cache_dir=tmp_path / "c", image_size=(2, 2)).x_train.shape[1:] == (2, 2, 3)

    with pytest.raises(DataError, match="unknown dataset 'nosuch'.*cifar10, cifar100"):
        load_dataset("nosuch")


def test_register_source(monkeypatch):
    def toy(root=None, download=True, cache_dir=None, n=2):
        x = np.zeros((n, 1))
        return ArrayDataset(x, np.zeros(n, int), x, np.zeros(n, int), ["only"], "toy")

    with monkeypatch.context() as m:
        m.setattr(SOURCES, "_factories", dict(SOURCES._factories))  # registrations undone after the block
        register_source("Toy")(toy)
        assert sources.SOURCES["toy"] is toy
        assert len(load_dataset("toy", n=5).x_train) == 5
        with pytest.raises(ValueError, match="already registered"):
            register_source("toy")(toy)
    assert "toy" not in SOURCES


@pytest.mark.parametrize("with_filter", [True, False])
def test_extraction_refuses_paths_outside_destination(tmp_path, monkeypatch, with_filter):
    if not with_filter:  # the hand-written check used on Pythons without tarfile filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    payload = tmp_path / "payload.txt"
    payload.write_text("x")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../escaped.txt")
    dest = tmp_path / "a" / "dest"
    with pytest.raises(DataError, match="evil.tar.gz"):
        sources._safe_extract(archive, dest)
    assert not (tmp_path / "a" / "escaped.txt").exists() and list(dest.iterdir()) == []
