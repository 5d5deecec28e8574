"""Point clouds (issue 14): sources (ModelNet .off trees, the HDF5 release, point-set folders, MNIST
as 2-D point sets), the points modality and its augmentation, PointNet / DGCNN, bad input, and
runs through the one loop. Meshes are generated with trimesh primitives."""
import gzip
import struct

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
h5py = pytest.importorskip("h5py")

from otreweight._errors import OTReweightError  # noqa: E402
from otreweight.config import DataConfig, load_config  # noqa: E402
from otreweight.data.modalities.points import PointAugment, PointsModality, normalize_clouds  # noqa: E402
from otreweight.data.sources import DataError, load_dataset  # noqa: E402
from otreweight.data.sources import points as P  # noqa: E402
from otreweight.experiment import run_experiment  # noqa: E402
from otreweight.models import create_model  # noqa: E402

SHAPES = {
    "box": lambda: trimesh.creation.box(extents=(1.0, 2.0, 0.5)),
    "sphere": lambda: trimesh.creation.icosphere(subdivisions=1, radius=0.8),
    "cylinder": lambda: trimesh.creation.cylinder(radius=0.3, height=2.0, sections=12),
    "cone": lambda: trimesh.creation.cone(radius=0.7, height=1.5, sections=12),
    "capsule": lambda: trimesh.creation.capsule(height=1.0, radius=0.3, count=(6, 6)),
    "torus": lambda: trimesh.creation.torus(major_radius=1.0, minor_radius=0.25, major_sections=12, minor_sections=6),
}


def write_off(path, mesh, run_on: bool = False, quads: bool = False) -> None:
    """An OFF file of ``mesh``; ``run_on`` writes ModelNet's header ``OFF<V> <F> 0`` on one line."""
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    head = f"OFF{len(v)} {len(f)} 0\n" if run_on else f"OFF\n# a comment\n{len(v)} {len(f)} 0\n"
    rows = "".join(f"{a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in v)
    rows += "".join(f"3 {a} {b} {c}\n" for a, b, c in f)
    path.write_text(head + rows)


def modelnet_tree(root, shapes=("box", "sphere", "cylinder"), n_train=(4, 3, 2), n_test=2, jitter=0.05, seed=0):
    """``<class>/train/*.off`` and ``<class>/test/*.off``; odd files with the run-on header."""
    rng = np.random.default_rng(seed)
    for name, n in zip(shapes, n_train):
        for split, count in (("train", n), ("test", n_test)):
            d = root / name / split
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                mesh = SHAPES[name]()
                mesh.apply_scale(1 + jitter * rng.normal())
                write_off(d / f"{name}_{i:04d}.off", mesh, run_on=i % 2 == 1)
    return root


def h5_release(root, n_train=(6, 4, 3), n_test=2, n_points=64, normals=False):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(SHAPES)[: len(n_train)]
    for split, counts in (("train", n_train), ("test", (n_test,) * len(n_train))):
        data, labels, nrm = [], [], []
        for k, (name, n) in enumerate(zip(names, counts)):
            for _ in range(n):
                pts, fi = trimesh.sample.sample_surface(SHAPES[name](), n_points, seed=rng)
                data.append(pts), labels.append(k), nrm.append(SHAPES[name]().face_normals[fi])
        for part in (0, 1) if split == "train" else (0,):
            sl = slice(part, None, 2) if split == "train" else slice(None)
            with h5py.File(root / f"ply_data_{split}{part}.h5", "w") as f:
                f["data"] = np.asarray(data, np.float32)[sl]
                f["label"] = np.asarray(labels, np.uint8)[sl, None]
                if normals:
                    f["normal"] = np.asarray(nrm, np.float32)[sl]
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    return root


def point_folder(root, n_train=(5, 4, 3), n_test=2, n_points=40, normals=True, txt=True):
    rng = np.random.default_rng(1)
    for k, (name, n) in enumerate(zip(list(SHAPES)[: len(n_train)], n_train)):
        for split, count in (("train", n), ("test", n_test)):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                mesh = SHAPES[name]()
                pts, fi = trimesh.sample.sample_surface(mesh, n_points + 5 * i, seed=rng)
                arr = np.concatenate([pts, mesh.face_normals[fi]], 1) if normals else pts
                if txt and i % 2:
                    (d / f"{i}.txt").write_text("".join(",".join(f"{v:.5f}" for v in r) + "\n" for r in arr))
                else:
                    np.save(d / f"{i}.npy", arr.astype(np.float32))
    return root


def idx_files(root, n_train=60, n_test=20, seed=0):
    """Official-format MNIST IDX files (gzip) of synthetic digits: class c = a bar at row 2 + 2c."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def digits(n):
        y = np.arange(n) % 10
        x = np.zeros((n, 28, 28), np.uint8)
        for i, c in enumerate(y):
            x[i, 2 + 2 * c, 4 + rng.integers(0, 4): 20 + rng.integers(0, 4)] = 255
            x[i, 3 + 2 * c, 6:18] = 110  # below the default threshold 128
        return x, y.astype(np.uint8)

    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = digits(n)
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes()))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">II", 0x801, n) + y.tobytes()))
    return root


# ----------------------------------------------------------------------------- sources
def test_modelnet_tree_sampled_on_the_surface_seeded_and_cached(tmp_path, monkeypatch):
    root = modelnet_tree(tmp_path / "mn")
    ds = load_dataset("modelnet", root=root, cache_dir=tmp_path / "c", n_points=128)
    assert ds.modality == "points" and ds.classes == ["box", "cylinder", "sphere"]
    assert ds.x_train.shape == (9, 128, 3) and ds.x_test.shape == (6, 128, 3)
    assert ds.x_train.dtype == np.float32 and np.bincount(ds.y_train).tolist() == [4, 2, 3]
    # box extents (1, 2, 0.5) scaled by about 1 +- 0.05: every point on the surface, some on each face
    box = ds.x_train[ds.y_train == 0][0]
    half = np.abs(box).max(0)
    assert np.allclose(half / half[0], [1, 2, 0.5], atol=0.02)
    on_face = np.isclose(np.abs(box), half, atol=1e-4).any(1)
    assert on_face.all()
    sphere = ds.x_train[ds.y_train == 2][0]
    r = np.linalg.norm(sphere, axis=1)
    assert r.max() <= 0.8 * 1.2 and r.min() > 0.6  # on the (faceted) sphere, none inside
    # seeded: another seed draws other points; the same seed the same ones
    other = load_dataset("modelnet", root=root, cache_dir=tmp_path / "c2", n_points=128, seed=1)
    assert not np.allclose(other.x_train, ds.x_train)
    # the clouds do not depend on the number of worker processes
    two = load_dataset("modelnet", root=root, cache_dir=tmp_path / "c3", n_points=128, workers=2)
    assert np.array_equal(two.x_train, ds.x_train) and np.array_equal(two.x_test, ds.x_test)
    # sampled once: the second load reads the cache, no mesh is touched
    monkeypatch.setattr(P, "sample_mesh", lambda *a, **k: pytest.fail("sampled again"))
    again = load_dataset("modelnet", root=root, cache_dir=tmp_path / "c", n_points=128)
    assert np.array_equal(again.x_train, ds.x_train) and np.array_equal(again.y_test, ds.y_test)


def test_modelnet_normals_and_split_first_layout(tmp_path):
    root = tmp_path / "mn"
    for split in ("train", "test"):
        for name in ("cone", "torus"):
            (root / split / name).mkdir(parents=True)
            write_off(root / split / name / "a.off", SHAPES[name]())
    ds = load_dataset("modelnet", root=root, cache_dir=tmp_path / "c", n_points=64, normals=True)
    assert ds.x_train.shape == (2, 64, 6)
    assert np.allclose(np.linalg.norm(ds.x_train[..., 3:], axis=-1), 1, atol=1e-5)


def test_read_off_run_on_header_comments_and_polygons(tmp_path):
    mesh = SHAPES["box"]()
    write_off(tmp_path / "a.off", mesh)
    write_off(tmp_path / "b.off", mesh, run_on=True)
    va, fa = P.read_off(tmp_path / "a.off")
    vb, fb = P.read_off(tmp_path / "b.off")
    assert np.allclose(va, vb) and np.array_equal(fa, fb) and fa.shape == (12, 3)
    # a quad and a pentagon with a colour after the indices are fanned into triangles
    (tmp_path / "q.off").write_text("OFF\n6 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 0.5 0\n2 2 0\n"
                                    "4 0 1 2 3\n5 1 4 5 2 3 255 0 0\n")
    v, f = P.read_off(tmp_path / "q.off")
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2], [1, 2, 3]]


def test_modelnet_h5_release(tmp_path):
    root = h5_release(tmp_path / "h5", normals=True)
    ds = load_dataset("modelnet_h5", root=root, n_points=32)
    assert ds.classes == ["box", "sphere", "cylinder"] and ds.x_train.shape == (13, 32, 3)
    assert sorted(np.bincount(ds.y_train).tolist()) == [3, 4, 6] and ds.x_test.shape == (6, 32, 3)
    # a draw of 32 of the file's 64 points, without replacement
    with h5py.File(root / "ply_data_test0.h5") as f:
        first = np.asarray(f["data"][0])
    assert all(np.isclose(first, p).all(1).any() for p in ds.x_test[0]) and len(np.unique(ds.x_test[0], axis=0)) == 32
    with_n = load_dataset("modelnet_h5", root=root, n_points=32, normals=True)
    assert with_n.x_train.shape == (13, 32, 6)
    # asked for more points than the file holds: drawn again with replacement, or refused
    more = load_dataset("modelnet_h5", root=root, n_points=100)
    assert more.x_train.shape == (13, 100, 3)
    with pytest.raises(DataError, match="fewer than n_points=100"):
        load_dataset("modelnet_h5", root=root, n_points=100, short="refuse")


def test_point_folder_npy_and_txt_with_normals(tmp_path):
    root = point_folder(tmp_path / "pf")
    ds = load_dataset("point_folder", root=root, cache_dir=tmp_path / "c", n_points=40)
    assert ds.x_train.shape == (12, 40, 6) and ds.x_test.shape == (6, 40, 6)
    assert ds.classes == ["box", "cylinder", "sphere"]


def test_mnist_points_from_idx_files(tmp_path):
    root = idx_files(tmp_path / "mnist")
    ds = load_dataset("mnist_points", root=root, cache_dir=tmp_path / "c", n_points=24)
    assert ds.x_train.shape == (60, 24, 2) and ds.x_test.shape == (20, 24, 2) and ds.classes == [str(i) for i in range(10)]
    # every point is an inked pixel (> 128): row 2 + 2c, i.e. y = 27 - (2 + 2c), x in 4..23
    for c in range(10):
        pts = ds.x_train[ds.y_train == c]
        assert np.all(pts[..., 1] == 25 - 2 * c) and pts[..., 0].min() >= 4 and pts[..., 0].max() <= 23
    low = load_dataset("mnist_points", root=root, cache_dir=tmp_path / "c", n_points=24, threshold=100)
    assert {25 - 2 * 3, 24 - 2 * 3} <= set(np.unique(low.x_train[low.y_train == 3][..., 1]).tolist())


# ----------------------------------------------------------------------------- bad input
def _bad_off(tmp_path, text, name="x.off"):
    root = tmp_path / "bad"
    for split in ("train", "test"):
        (root / "a" / split).mkdir(parents=True, exist_ok=True)
        write_off(root / "a" / split / "ok.off", SHAPES["box"]())
    (root / "a" / "train" / name).write_text(text)
    return root


@pytest.mark.parametrize("text, match", [
    ("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", "x.off has no faces"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n", "x.off has zero surface area"),
    ("OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n", "x.off has NaN or inf"),
    ("OFF\n3 1 0\n0 0 0\ninf 0 0\n0 1 0\n3 0 1 2\n", "x.off has NaN or inf"),
    ("OFF\nthree 1 0\n0 0 0\n", r"x.off: the OFF header does not parse"),
    ("PLY\n3 1 0\n", "x.off does not start with an OFF header"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n", "x.off: the header announces 3 vertices"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "refers to vertex 7"),
])
def test_bad_meshes_are_one_line_naming_the_file(tmp_path, text, match):
    with pytest.raises(DataError, match=match) as err:
        load_dataset("modelnet", root=_bad_off(tmp_path, text), cache_dir=tmp_path / "c", n_points=16)
    assert "\n" not in str(err.value)


def test_bad_h5_point_files_and_folders(tmp_path):
    root = tmp_path / "h5"
    root.mkdir()
    with h5py.File(root / "ply_data_train0.h5", "w") as f:
        f["points"] = np.zeros((2, 8, 3), np.float32)
    with pytest.raises(DataError, match=r"ply_data_train0.h5 has no data or label dataset"):
        load_dataset("modelnet_h5", root=root)
    with pytest.raises(DataError, match="holds no ply_data_train"):
        load_dataset("modelnet_h5", root=tmp_path)
    pf = point_folder(tmp_path / "pf", n_train=(2, 2), normals=False)
    (pf / "train" / "box" / "0.npy").unlink()
    (pf / "train" / "box" / "1.txt").unlink()
    with pytest.raises(DataError, match=r"class folder .*box holds no shape"):
        load_dataset("point_folder", root=pf, cache_dir=tmp_path / "c", n_points=8)
    pf = point_folder(tmp_path / "pf2", n_train=(2, 2), normals=False)
    np.save(pf / "train" / "box" / "0.npy", np.full((40, 3), np.nan, np.float32))
    with pytest.raises(DataError, match=r"0.npy has NaN or inf"):
        load_dataset("point_folder", root=pf, cache_dir=tmp_path / "c", n_points=8)
    with pytest.raises(DataError, match=r"has 40 points, fewer than n_points=64; lower n_points or set short: replace"):
        load_dataset("point_folder", root=point_folder(tmp_path / "pf3", n_train=(2, 2)), cache_dir=tmp_path / "c",
                     n_points=64, short="refuse")
    with pytest.raises(DataError, match="short must be one of replace, refuse"):
        load_dataset("point_folder", root=pf, n_points=8, short="pad")
    with pytest.raises(DataError, match="n_points must be an integer >= 1"):
        load_dataset("mnist_points", root=tmp_path, n_points=0)
    with pytest.raises(DataError, match="has no train-images-idx3-ubyte"):
        load_dataset("mnist_points", root=tmp_path, n_points=8)


# ----------------------------------------------------------------------------- modality and models
def test_normalisation_puts_every_cloud_in_the_unit_sphere():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5, 50, 6)) * [3, 1, 2, 1, 1, 1] + [10, -4, 2, 0, 0, 0]).astype(np.float32)
    mod = PointsModality()
    t = mod.to_tensor(x, mod.stats(x))
    assert torch.allclose(t[..., :3].mean(1), torch.zeros(5, 3), atol=1e-5)
    assert torch.allclose(t[..., :3].norm(dim=-1).amax(1), torch.ones(5), atol=1e-5)
    assert torch.equal(t[..., 3:], torch.as_tensor(x[..., 3:]))  # normals untouched
    assert torch.equal(mod.to_tensor(x, mod.stats(x, normalize=False)), torch.as_tensor(x))
    assert torch.allclose(normalize_clouds(torch.as_tensor(x[..., :2]))[..., :2].norm(dim=-1).amax(1), torch.ones(5))


def test_augmentation_seeded_resumable_and_what_it_does():
    mod = PointsModality()
    x = mod.to_tensor(np.random.default_rng(0).normal(size=(8, 64, 6)).astype(np.float32),
                      {"normalize": True, "dims": 6})
    x[..., 3:] = torch.nn.functional.normalize(x[..., 3:], dim=-1)
    aug = mod.augment(DataConfig(augment="point_cloud"), {"dims": 6})
    assert mod.augment(DataConfig(augment="none"), {"dims": 6}) is None
    g = torch.Generator().manual_seed(5)
    a1 = aug(x, g)
    state = g.get_state()
    a2 = aug(x, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(aug(x, g2), a2) and not torch.equal(a1, a2)  # resumable from the generator's state
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), a1)  # seeded
    assert a1.shape == x.shape and torch.allclose(a1[..., 3:].norm(dim=-1), torch.ones(8, 64), atol=1e-5)
    # rotation about z alone keeps z and the xy radius
    rot = PointAugment(scale=(1, 1), translate=0, jitter=0, drop=0)
    r = rot(x, torch.Generator().manual_seed(0))
    assert torch.allclose(r[..., 2], x[..., 2]) and torch.allclose(r[..., :2].norm(dim=-1), x[..., :2].norm(dim=-1), atol=1e-5)
    # jitter is clipped at 0.05
    jit = PointAugment(rotate=False, scale=(1, 1), translate=0, jitter=1.0, drop=0)
    assert (jit(x, torch.Generator().manual_seed(0)) - x)[..., :3].abs().max() <= 0.05 + 1e-6
    # drop-out replaces points by the first point, scaling stays within 0.8-1.25 per axis
    drop = PointAugment(rotate=False, scale=(1, 1), translate=0, jitter=0, drop=0.8)
    d = drop(x, torch.Generator().manual_seed(0))
    kept, first = (d[..., :3] == x[..., :3]).all(-1), (d[..., :3] == x[:, :1, :3]).all(-1)
    assert (kept | first).all() and (~kept).any()
    sc = PointAugment(rotate=False, translate=0, jitter=0, drop=0)(x, torch.Generator().manual_seed(0))
    ratio = sc[..., :3] / x[..., :3]
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.25 + 1e-5
    with pytest.raises(OTReweightError, match="not an augmentation of point clouds"):
        mod.augment(DataConfig(augment="pad_crop_flip"), {"dims": 3})
    with pytest.raises(OTReweightError, match="up_axis must be one of x, y, z"):
        PointsModality(up_axis="w")
    with pytest.raises(OTReweightError, match="does not take spin"):
        PointsModality(spin=1)


@pytest.mark.parametrize("name, options", [("pointnet", {}), ("pointnet", {"input_transform": True,
                                           "feature_transform": True}), ("dgcnn", {"k": 8})])
def test_models_are_invariant_to_the_order_of_points(name, options):
    torch.manual_seed(0)
    m = create_model(name, num_classes=4, in_dims=6, **options)
    x = torch.randn(3, 40, 6)
    m.train()
    m(x).sum().backward()  # trains; then eval
    m.eval()
    perm = torch.randperm(40)
    with torch.no_grad():
        assert torch.allclose(m(x), m(x[:, perm]), atol=1e-4)
        assert m.features(x).shape == (3, m.feature_dim)
    assert m.feature_dim == (1024 if name == "pointnet" else 2048)


# ----------------------------------------------------------------------------- through the loop
def _run_cfg(tmp_path, root, out, model="pointnet", extra=()):
    return load_config("configs/modelnet10_lt_if10.yaml", [
        "data.source=point_folder", f"data.root={root}", "data.source_options={n_points: 32}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.imbalance_factor=2", "data.n_meta_per_class=2",
        "data.n_val_per_class=2", f"output_dir={out}", f"model.name={model}", "stage1.epochs=2", "stage1.batch_size=8",
        "stage2.*.epochs=1", "stage2.*.batch_size=8", "progress=false", "threads=1", *extra])


def test_point_runs_resume_exactly_after_a_kill(tmp_path, kill_mid_epoch):
    root = point_folder(tmp_path / "pf", n_train=(12, 10, 9), n_test=3, n_points=32, normals=False, txt=False)
    full = run_experiment(_run_cfg(tmp_path, root, tmp_path / "full"), log=lambda *a: None)
    assert set(full) == {"stage1", "stage2_ot_classifier"}
    disarm = kill_mid_epoch(2, 2)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_run_cfg(tmp_path, root, tmp_path / "cut"), log=lambda *a: None)
    disarm()
    resumed = run_experiment(_run_cfg(tmp_path, root, tmp_path / "cut"), resume=True, log=lambda *a: None)
    for stage in full:
        assert full[stage]["best"] == resumed[stage]["best"] and full[stage]["last"] == resumed[stage]["last"]


def test_dgcnn_and_whole_network_stage_two_and_evaluate(tmp_path, monkeypatch):
    from otreweight.cli import main
    from otreweight.experiment import evaluate_checkpoint

    root = point_folder(tmp_path / "pf", n_train=(8, 7, 7), n_test=2, n_points=32, normals=True, txt=False)
    extra = ["model.options={k: 6, emb_dims: 32}", "stage2=[{name: ot_full, method: ot, trainable: all, epochs: 1, "
             "batch_size: 8, lr: 0.01}, {name: crt, method: crt, trainable: classifier, epochs: 1, batch_size: 8}]"]
    res = run_experiment(_run_cfg(tmp_path, root, tmp_path / "dg", "dgcnn", extra), log=lambda *a: None)
    assert set(res) == {"stage1", "stage2_ot_full", "stage2_crt"}
    import otreweight.run.evaluate as ex

    seen, real = [], ex.load_dataset
    monkeypatch.setattr(ex, "load_dataset", lambda *a, **k: seen.append(k) or real(*a, **k))
    m = evaluate_checkpoint(tmp_path / "dg" / "stage2_crt" / "model.json", "point_folder", root=root,
                            cache_dir=tmp_path / "cache", device="cpu")
    monkeypatch.undo()
    assert 0 <= m["balanced_accuracy"] <= 1 and seen[0]["n_points"] == 32  # the training run's source options
    assert main(["train", "--config", "configs/modelnet10_lt_if10.yaml", "--set", "data.augment=pad_crop_flip",
                 "--set", "data.source=point_folder", "--set", f"data.root={root}", "--set",
                 f"output_dir={tmp_path / 'bad'}", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set",
                 "data.n_val_per_class=2", "--set", "data.n_meta_per_class=2"]) != 0


def test_class_order_count_ranks_classes_by_pool_and_finds_n_max():
    from types import SimpleNamespace

    from otreweight.data.longtail import make_long_tailed
    from otreweight.run.prepare import class_order

    labels = np.repeat([0, 1, 2, 3], [40, 200, 90, 25])
    d = SimpleNamespace(class_order="count", profile="exp", n_max=None, imbalance_factor=10, n_meta_per_class=2,
                        n_val_per_class=3)
    order, n_max = class_order(d, labels, 4)
    assert order == [1, 2, 0, 3]
    split = make_long_tailed(labels, 10, n_max=n_max, class_order=order, n_meta_per_class=2, n_val_per_class=3,
                             allow_cut=True)
    # the largest n_max that fits: one more does not
    with pytest.raises(OTReweightError):
        make_long_tailed(labels, 10, n_max=n_max + 1, class_order=order, n_meta_per_class=2, n_val_per_class=3,
                         allow_cut=True)
    assert split.train_counts[1] == n_max and split.train_counts[3] == int(n_max / 10)
    assert class_order(SimpleNamespace(**{**vars(d), "class_order": None}), labels, 4) == (None, None)
    with pytest.raises(OTReweightError, match="class_order must be null, count"):
        DataConfig(class_order="size").validate()


def test_streamed_point_clouds_end_as_the_in_memory_run(tmp_path):
    root = point_folder(tmp_path / "pf", n_train=(9, 8, 8), n_test=2, n_points=32, normals=False, txt=False)
    res = {mode: run_experiment(_run_cfg(tmp_path, root, tmp_path / mode, extra=(
        f"data.loader={mode}", "data.num_workers=0", "stage1.epochs=1")), log=lambda *a: None)
        for mode in ("memory", "stream")}
    for stage in res["memory"]:
        assert res["memory"][stage]["best"] == res["stream"][stage]["best"]
