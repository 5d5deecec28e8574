"""Every registered method, model, data source and modality passes its conformance check
(:mod:`otreweight.testing`); a plug-in is tested the day it is registered."""
import numpy as np
import pytest

from otreweight.data import SOURCES
from otreweight.data.modalities import MODALITIES
from otreweight.data.sources import load_dataset
from otreweight.methods import METHODS
from otreweight.models import MODELS
from otreweight.testing import check_method, check_modality, check_model, check_source


@pytest.mark.parametrize("name", METHODS.names())
def test_method(name):
    check_method(name)


@pytest.mark.parametrize("name", MODELS.names())
def test_model(name):
    check_model(name)


# A model name of each registered prefix family (MODELS.register_prefix), built by a fixture.
FAMILY_EXAMPLES = {"hf/": lambda request: f"hf/{request.getfixturevalue('tiny_bert')}",
                   "timm/": lambda request: "timm/resnet18"}


@pytest.mark.parametrize("prefix", MODELS.prefixes())
def test_model_family(prefix, request):
    assert prefix in FAMILY_EXAMPLES, f"model prefix {prefix!r} has no example in FAMILY_EXAMPLES"
    check_model(FAMILY_EXAMPLES[prefix](request))


@pytest.mark.parametrize("name", MODALITIES.names())
def test_modality(name):
    check_modality(name)


def _cifar(tmp_path, name):
    from test_sources import make_cifar10, make_cifar100

    (make_cifar10 if name == "cifar10" else make_cifar100)(tmp_path / "data")
    return load_dataset(name, root=tmp_path / "data", download=False, cache_dir=tmp_path / "cache")


def _npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "v.npz"
    np.savez(path, x_train=rng.normal(size=(12, 4)), y_train=np.arange(12) % 3, x_test=rng.normal(size=(6, 4)),
             y_test=np.arange(6) % 3)
    return load_dataset(str(path))


def _folder(tmp_path, lazy=False):
    from test_loaders import png_folder

    return load_dataset(str(png_folder(tmp_path / "imgs")), cache_dir=tmp_path / "cache", lazy=lazy)


def _text(tmp_path):
    d = tmp_path / "txt"
    d.mkdir()
    (d / "train.tsv").write_text("".join(f"{'ab'[i % 2]}\tdoc {i} words here\n" for i in range(8)))
    (d / "test.tsv").write_text("a\tone doc\nb\ttwo doc\n")
    return load_dataset(str(d))


def _image_list(tmp_path):
    import test_image_lists as til

    rows = til.jpeg_tree(tmp_path / "il", per_class=(3, 2, 2), size=8)
    return load_dataset("image_list", root=tmp_path / "il", **til.write_lists(tmp_path / "il", rows))


def _points(tmp_path, kind):
    pytest.importorskip("trimesh")
    import test_points as tp

    if kind == "modelnet":
        return load_dataset("modelnet", root=tp.modelnet_tree(tmp_path / "mn"), cache_dir=tmp_path / "cache", n_points=32)
    if kind == "modelnet_h5":
        pytest.importorskip("h5py")
        return load_dataset("modelnet_h5", root=tp.h5_release(tmp_path / "h5"), n_points=32)
    if kind == "point_folder":
        return load_dataset("point_folder", root=tp.point_folder(tmp_path / "pf"), cache_dir=tmp_path / "cache",
                            n_points=32)
    return load_dataset("mnist_points", root=tp.idx_files(tmp_path / "mnist"), cache_dir=tmp_path / "cache", n_points=16)


# One generated example per registered source; a new source adds its builder here.
BUILDERS = {
    "cifar10": lambda p: _cifar(p, "cifar10"),
    "cifar100": lambda p: _cifar(p, "cifar100"),
    "npz": _npz,
    "folder": _folder,
    "text": _text,
    "modelnet": lambda p: _points(p, "modelnet"),
    "modelnet_h5": lambda p: _points(p, "modelnet_h5"),
    "point_folder": lambda p: _points(p, "point_folder"),
    "mnist_points": lambda p: _points(p, "mnist_points"),
    "image_list": lambda p: _image_list(p),
}


def test_every_registered_source_has_a_conformance_builder():
    assert set(SOURCES.names()) <= set(BUILDERS), "add a builder for the new source to BUILDERS"


@pytest.mark.parametrize("name", SOURCES.names())
def test_source(name, tmp_path, monkeypatch):
    monkeypatch.setenv("OTREWEIGHT_CACHE", str(tmp_path / "cache"))
    check_source(BUILDERS[name](tmp_path))


def test_lazy_folder_source(tmp_path):
    check_source(_folder(tmp_path, lazy=True))
