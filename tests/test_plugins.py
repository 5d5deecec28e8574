"""The plug-in seams: a modality and a path source registered from outside the package run end to end,
the modalities' declarations drive the config and data checks, and otreweight.data has no import circle."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from otreweight import OTReweightError
from otreweight.config import DataConfig
from otreweight.data.modalities import MODALITIES, Modality, augment_names, get_modality, input_kinds
from otreweight.data.sources import SOURCES, ArraySplits, DataError, load_dataset, path_sources, register_source

ROOT = Path(__file__).resolve().parents[1]
NOISE_CALLS = []  # batches the toy augmentation has seen


# ----------------------------------------------------------------------------- the plug-ins
class ToyModality(Modality):
    """Feature vectors ``(N, D)`` divided by the training split's largest magnitude (a test's plug-in)."""

    name = "toy_vec"
    default_model = "mlp"
    model_input = "in_features"
    augments = ("toy_noise",)
    noun = "toy vectors"

    def check(self, x, what: str = "inputs") -> None:
        if getattr(x, "ndim", None) != 2:
            raise OTReweightError(f"toy vectors are (N, D), got {np.shape(x)}")

    def stats(self, x_train, normalize: bool = True) -> dict:
        self.check(x_train)
        scale = float(np.abs(np.asarray(x_train, dtype=np.float64)).max()) if normalize else 1.0
        return {"scale": scale or 1.0}

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        return torch.as_tensor(np.asarray(x, dtype=np.float32) / np.float32(stats["scale"]), device=device)

    def augment(self, data_cfg, stats: dict):
        if data_cfg.augment != "toy_noise":
            return None
        def noise(x, gen):
            NOISE_CALLS.append(x.shape[0])
            return x + 0.01 * torch.randn(x.shape, generator=gen).to(x.device, x.dtype)

        return noise

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {"in_features": int(example_shape[-1])}

    def example_batch(self, n: int, rng: np.random.Generator):
        return rng.normal(0, 2, (n, 5)).astype(np.float32)


class ToyData(ArraySplits):
    """Train / test arrays read from a ``.toy`` file; modality ``toy_vec``."""

    modality = "toy_vec"

    def __init__(self, doc: dict, name: str) -> None:
        self.x_train, self.x_test = (np.asarray(doc[k], dtype=np.float32) for k in ("x_train", "x_test"))
        self.y_train, self.y_test = (np.asarray(doc[k], dtype=np.int64) for k in ("y_train", "y_test"))
        self.classes, self.name = list(doc["classes"]), name


def _is_toy(path: Path) -> bool:
    return path.suffix.lower() == ".toy"


def load_toy(root, download=True, cache_dir=None):
    """A ``.toy`` file: JSON with ``x_train``, ``y_train``, ``x_test``, ``y_test`` and ``classes``."""
    path = Path(root)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    return ToyData(json.loads(path.read_text()), f"toy:{path}")


@pytest.fixture
def plugins():
    """The toy modality and source registered as a user's module would, removed afterwards."""
    MODALITIES.register("toy_vec")(ToyModality)
    register_source("toy", sniff=_is_toy, what="a .toy file")(load_toy)
    try:
        yield
    finally:
        SOURCES.unregister("toy")
        MODALITIES.unregister("toy_vec")


def write_toy(path: Path, k: int = 3, d: int = 6, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))

    def part(n):
        y = np.repeat(np.arange(k), n)
        return (centers[y] + rng.normal(0, 1, (len(y), d))).tolist(), y.tolist()

    (xtr, ytr), (xte, yte) = part(n_train), part(n_test)
    path.write_text(json.dumps({"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte,
                                "classes": [f"c{i}" for i in range(k)]}))
    return path


# ----------------------------------------------------------------------------- end to end
def test_toy_source_and_modality_run_end_to_end(plugins, tmp_path):
    from otreweight.experiment import evaluate_checkpoint, load_config, run_experiment

    data = write_toy(tmp_path / "blobs.toy")
    cfg = load_config("configs/cifar10_lt_if100.yaml", [
        f"data.source={data}", "data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3",
        "data.augment=toy_noise", "model.name=mlp", "model.options.hidden=[16]", "stage1.epochs=2",
        "stage1.warmup_epochs=1", "stage1.batch_size=16", "stage2.*.epochs=1", "stage2.*.batch_size=8",
        f"output_dir={tmp_path / 'run'}", "progress=false", "threads=1"])
    NOISE_CALLS.clear()
    results = run_experiment(cfg, log=lambda *a: None)
    assert NOISE_CALLS  # data.augment: toy_noise reached the training loop
    assert set(results) == {"stage1", "stage2_ot_classifier", "stage2_ot_full"}
    for stage in results:
        for f in ("final.json", "model.json", "predictions.npz"):
            assert (tmp_path / "run" / stage / f).stat().st_size > 0, (stage, f)
    card = json.loads((tmp_path / "run" / "stage1" / "model.json").read_text())
    assert card["input"]["modality"] == "toy_vec" and card["input"]["model_kwargs"] == {"in_features": 6}
    scored = evaluate_checkpoint(tmp_path / "run" / "stage1" / "model.json", str(data), device="cpu")
    assert 0 <= scored["accuracy"] <= 1


# ----------------------------------------------------------------------------- the source seam
def test_a_registered_sniffer_claims_its_paths(plugins, tmp_path):
    from otreweight.testing import check_modality, check_source

    data = write_toy(tmp_path / "a.toy")
    assert path_sources() == ["npz", "text", "toy", "folder"]
    for spec in (str(data), f"toy:{data}"):
        ds = load_dataset(spec)
        assert isinstance(ds, ToyData) and ds.num_classes == 3 and ds.name == f"toy:{data}"
    check_source(load_dataset(str(data)))
    check_modality("toy_vec")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.toy"))  # the sniffer claims a path that is not there yet
    with pytest.raises(DataError) as e:
        load_dataset("nosuch")
    assert str(e.value).endswith(", a .npz file, a .toy file, or an image folder / .tar.gz archive")


def test_the_path_sources_keep_their_order_and_message(tmp_path):
    assert path_sources() == ["npz", "text", "folder"]
    with pytest.raises(DataError, match="missing.npz does not exist"):
        load_dataset(str(tmp_path / "missing.npz"))  # the suffix decides, before the folder fallback
    with pytest.raises(DataError) as e:
        load_dataset(str(tmp_path / "missing"))
    assert str(e.value) == (f"unknown dataset {str(tmp_path / 'missing')!r}: use one of cifar10, cifar100, image_list, "
                            "mnist_points, modelnet, modelnet_h5, point_folder, a .npz file, or an image folder / "
                            ".tar.gz archive")
    with pytest.raises(DataError, match="unknown dataset 'npz'"):
        load_dataset("npz")  # a path source is never chosen by its bare name


def test_after_the_fixture_nothing_is_left():
    assert "toy" not in SOURCES and "toy_vec" not in MODALITIES and "toy" not in path_sources()
    with pytest.raises(OTReweightError, match="unknown modality 'toy_vec'"):
        MODALITIES.unregister("toy_vec")


# ----------------------------------------------------------------------------- the modality declarations
def test_augment_names_come_from_the_modalities(plugins):
    assert augment_names() == ["none", "pad_crop_flip", "point_cloud", "random_resized_crop", "toy_noise"]
    DataConfig(augment="toy_noise").validate()


def test_an_unknown_augment_keeps_its_message():
    assert augment_names() == ["none", "pad_crop_flip", "point_cloud", "random_resized_crop"]
    with pytest.raises(OTReweightError) as e:
        DataConfig(augment="toy_noise").validate()
    assert str(e.value) == ("unknown augmentation 'toy_noise'; choose one of: none, pad_crop_flip, point_cloud, "
                            "random_resized_crop")


def test_input_kinds_come_from_the_modalities(plugins):
    # the table experiment.INPUT_KINDS writes by hand; the toy's in_features does not take it from vector
    assert input_kinds() == {"in_features": "vector", "in_channels": "image", "vocab_size": "tokens",
                             "in_dims": "points"}
    assert {n: MODALITIES.get(n).model_input for n in MODALITIES.names()} == {
        "image": "in_channels", "points": "in_dims", "tokens": "vocab_size", "toy_vec": "in_features",
        "vector": "in_features"}


@pytest.mark.parametrize("name", ["vector", "tokens", "points"])
def test_check_data_config_refuses_image_settings(name):
    cls = MODALITIES.get(name)
    cls.check_data_config(DataConfig())  # the defaults fit every modality
    cls.check_data_config(DataConfig(normalize=False))
    with pytest.raises(OTReweightError) as e:
        cls.check_data_config(DataConfig(normalize="imagenet"))
    assert str(e.value) == (f"data.normalize: imagenet is for images; these data are {name} inputs: use true "
                            "or false")
    crop_msg = (f"data.crop_size / augment: random_resized_crop are for images; these data are {name} inputs: "
                "remove them")
    for data_cfg in (DataConfig(crop_size=64), DataConfig(augment="random_resized_crop"),
                     DataConfig(augment="random_resized_crop", loader="stream").validate()):
        with pytest.raises(OTReweightError) as e:
            get_modality(name).check_data_config(data_cfg)  # on an instance as on the class
        assert str(e.value) == crop_msg


def test_check_data_config_takes_image_settings_for_images():
    cls = MODALITIES.get("image")
    for data_cfg in (DataConfig(), DataConfig(normalize="imagenet"), DataConfig(crop_size=64, resize_size=72),
                     DataConfig(augment="random_resized_crop", loader="stream").validate()):
        cls.check_data_config(data_cfg)


def test_check_data_config_of_a_plugin(plugins):
    with pytest.raises(OTReweightError, match="imagenet is for images; these data are toy_vec inputs: use true or false"):
        ToyModality.check_data_config(DataConfig(normalize="imagenet"))
    ToyModality.check_data_config(DataConfig(augment="toy_noise"))


# ----------------------------------------------------------------------------- no import circle
def _imports(path: Path, module: str) -> set[str]:
    """The otreweight modules ``path`` imports when it is imported (imports inside functions left out)."""
    pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - child.level + 1] + ([child.module] if child.module else [])) \
                    if child.level else child.module
                out.update(f"{base}.{a.name}" for a in child.names)
                out.add(base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in out if m.startswith("otreweight")}


def import_circles(package: Path = ROOT / "otreweight" / "data", root: Path = ROOT) -> list[list[str]]:
    """Groups of modules of ``package`` (below ``root``) that import each other, directly or through others."""
    mods = {}
    for p in package.rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: {t for t in _imports(p, m) if t in mods and t != m} for m, p in mods.items()}

    def reach(m):
        seen, todo = set(), [m]
        while todo:
            for t in graph[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return seen

    reachable = {m: reach(m) for m in mods}
    groups = {tuple(sorted(m2 for m2 in reachable[m] if m in reachable[m2])) for m in mods if m in reachable[m]}
    return sorted(list(g) for g in groups)


def test_no_import_circle_in_the_data_package(tmp_path):
    assert import_circles() == []
    pkg = tmp_path / "otreweight" / "data"  # the check finds one: a <-> b on import; a -> c only inside a function
    pkg.mkdir(parents=True)
    for p in (pkg.parent / "__init__.py", pkg / "__init__.py"):
        p.write_text("")
    (pkg / "a.py").write_text("from .b import x\n\n\ndef f():\n    from .c import y\n")
    (pkg / "b.py").write_text("from . import a\nx = 1\n")
    (pkg / "c.py").write_text("from .a import f\ny = 2\n")
    assert import_circles(pkg, tmp_path) == [["otreweight.data.a", "otreweight.data.b"]]


def test_the_data_packages_import_alone_without_optional_dependencies():
    code = ("import sys, otreweight.data.sources, otreweight.data.modalities, otreweight.data.modality; "
            "heavy = ('tokenizers', 'transformers', 'timm', 'torchvision', 'trimesh', 'h5py', 'PIL', 'tensorboard'); "
            "print(sorted(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
