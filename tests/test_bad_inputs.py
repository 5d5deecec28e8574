"""Bad inputs and faults: each is one `otreweight: error:` line naming the culprit (exit 2), raised
before any training, or the documented behaviour (issue 17's probes, table-driven)."""
import io
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from otreweight import FitConfig, OTReweightError, OTReweighter, create_method, create_model, fit, make_long_tailed
from otreweight.cli import main
from otreweight.engine import evaluate

TINY = ["data.imbalance_factor=4", "data.n_val_per_class=4", "data.n_meta_per_class=3", "model.name=small_cnn",
        "model.options.width=4", "stage1.epochs=1", "stage1.warmup_epochs=0", "stage1.batch_size=16",
        "stage2.*.epochs=1", "stage2.*.batch_size=8", "progress=false", "threads=1"]


def train(src, out, *sets, resume=False):
    args = ["train", "--config", "cifar10_lt_if100", "--no-report", "--set", f"data.source={src}",
            "--set", f"output_dir={out}"]
    for s in [*TINY, *sets]:
        args += ["--set", s]
    return main(args + (["--resume"] if resume else []))


def one_line_error(capsys, rc, *words):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("otreweight: error:") and "\n" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.mark.parametrize("setting, words", [
    ("stage1.epochs=ten", ["stage1.epochs", "'ten'", "integer"]),
    ("stage1.batch_size=abc", ["stage1.batch_size", "'abc'"]),
    ("seed=abc", ["seed", "integer"]),
    ("threads=-1", ["threads", ">= 1"]),
    ("stage1.milestones=5", ["stage1.milestones", "list"]),
    ("stage1.warmup_epochs=abc", ["stage1.warmup_epochs"]),
    ("data.many_threshold=abc", ["data.many_threshold"]),
    ("data.n_meta_per_class=abc", ["data.n_meta_per_class"]),
    ("stage2.0.options.meta_ce=ten", ["meta_ce", "'ten'"]),
    ("stage2.0.options.alpha=abc", ["alpha"]),
    ("stage2.0.options.steps=abc", ["steps"]),
    ("stage2.0.options.beta=abc", ["beta"]),
    ("stage2={a: 1}", ["stage2", "mapping"]),
    ("data.pad=-1", ["data.pad", ">= 0"]),
    ("data.loader=disk", ["data loader", "disk"]),
    ("data.num_workers=-2", ["data.num_workers"]),
    ("stage1.optimizer=adam", ["optimizer", "adam"]),
    ("stage1.schedule=exponential", ["schedule"]),
    ("stage2.0.trainable=head", ["trainable"]),
    ("stage1.lr=0", ["lr"]),
    ("data.profile=linear", ["profile"]),
    ("model.name=vit", ["unknown model"]),
    ("model.name=mlp", ["mlp", "vector inputs", "image"]),
    ("data.source=nope.npz", ["nope.npz"]),
    ("data.imbalance_factor=0.5", ["imbalance"]),
    ("device=cuda:7", ["cuda:7"]),
])
def test_cli_train_bad_values(setting, words, tiny_npz, tmp_path, capsys):
    one_line_error(capsys, train(tiny_npz, tmp_path / "run", setting), *words)


def test_features_with_a_conv_net_fail_before_training(tmp_path, capsys):
    rng = np.random.default_rng(0)
    p = tmp_path / "v.npz"
    np.savez(p, x_train=rng.normal(size=(120, 6)), y_train=np.arange(120) % 4, x_test=rng.normal(size=(20, 6)),
             y_test=np.arange(20) % 4)
    one_line_error(capsys, train(p, tmp_path / "run"), "small_cnn", "vector inputs", "mlp")
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing started


def test_a_failed_start_leaves_the_folder_reusable(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    one_line_error(capsys, train(tmp_path / "typo.npz", out))
    assert train(tiny_npz, out) == 0  # the fixed command runs without --resume
    capsys.readouterr()
    one_line_error(capsys, train(tiny_npz, out), "already holds a run", "--resume")


@pytest.mark.parametrize("where", ["file", "below_file"])
def test_output_dir_that_is_not_a_folder(where, tiny_npz, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    one_line_error(capsys, train(tiny_npz, out), "a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_output_dir_without_write_permission(tiny_npz, tmp_path, capsys):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        one_line_error(capsys, train(tiny_npz, d / "run"), "not writable")
    finally:
        d.chmod(0o700)


def test_compare_output_that_is_a_file(tiny_npz, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    args = ["compare", "--config", "cifar10_lt_if100", "--methods", "ce", "--seeds", "0", "--output", str(f),
            "--set", f"data.source={tiny_npz}", "--set", f"output_dir={tmp_path / 'o'}"]
    for s in TINY:
        args += ["--set", s]
    one_line_error(capsys, main(args), "a file, not a folder")


@pytest.mark.parametrize("cmd", ["demo", "evaluate"])
def test_json_into_a_missing_folder_fails_before_the_work(cmd, tmp_path, capsys):
    target = str(tmp_path / "missing" / "out.json")
    args = (["demo", "--seeds", "0", "--stage1-epochs", "1", "--stage2-epochs", "1", "--json", target] if cmd == "demo"
            else ["evaluate", str(tmp_path / "model.json"), "--data", "cifar10", "--json", target])
    one_line_error(capsys, main(args), "does not exist")


@pytest.fixture
def finished_run(tiny_npz, tmp_path, capsys):
    out = tmp_path / "done"
    assert train(tiny_npz, out, "stage2.*.epochs=2") == 0
    capsys.readouterr()
    return out


def test_half_size_checkpoint_then_resume(finished_run, tiny_npz, capsys):
    stage = finished_run / "stage2_ot_full"
    ck = stage / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    (stage / "final.json").unlink()
    one_line_error(capsys, train(tiny_npz, finished_run, "stage2.*.epochs=2", resume=True), "checkpoint", "delete it")


def test_truncated_final_json_then_resume_finishes_the_stage_again(finished_run, tiny_npz, capsys):
    final = finished_run / "stage2_ot_full" / "final.json"
    before = json.loads(final.read_text())
    final.write_text(final.read_text()[:40])
    assert train(tiny_npz, finished_run, "stage2.*.epochs=2", resume=True) == 0
    assert json.loads(final.read_text())["best"] == before["best"]


def test_data_replaced_between_kill_and_resume_is_refused(finished_run, tmp_path, capsys):
    rng = np.random.default_rng(5)
    p = tmp_path / "other.npz"
    k = 4
    y, yt = np.repeat(np.arange(k), 40), np.repeat(np.arange(k), 10)
    np.savez(p, x_train=rng.integers(0, 255, (len(y), 8, 8, 3)).astype(np.uint8), y_train=y,
             x_test=rng.integers(0, 255, (len(yt), 8, 8, 3)).astype(np.uint8), y_test=yt)
    cfg = (finished_run / "config.yaml").read_text()
    # the same source path, other contents
    src = json.loads((finished_run / "split.json").read_text())["source"]
    os.replace(p, src)
    one_line_error(capsys, train(src, finished_run, "stage2.*.epochs=2", resume=True), "changed")
    assert (finished_run / "config.yaml").read_text() == cfg


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(tiny_npz, tmp_path, capsys):
    out = tmp_path / "locked"
    out.mkdir()
    import subprocess
    import sys

    from otreweight.outputs import _start_time

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a live process that wrote the lock (its PID and start time)
        (out / ".lock").write_text(f"{other.pid} {_start_time(other.pid)}")
        one_line_error(capsys, train(tiny_npz, out), f"another otreweight process (PID {other.pid})")
    finally:
        other.kill()
        other.wait()
    (out / ".lock").write_text("999999999")  # no such process: stale
    assert train(tiny_npz, out) == 0
    assert not (out / ".lock").exists()


def test_corrupt_deflate_stream_in_a_compressed_npz(tmp_path, capsys):
    p = tmp_path / "c.npz"
    np.savez_compressed(p, x_train=np.zeros((50, 4)), y_train=np.zeros(50, int), x_test=np.zeros((5, 4)),
                        y_test=np.zeros(5, int))
    raw = bytearray(p.read_bytes())
    mid = len(raw) // 3
    raw[mid : mid + 40] = b"\xff" * 40
    p.write_bytes(bytes(raw))
    one_line_error(capsys, train(p, tmp_path / "run"), "c.npz")


def test_dangling_symlink_and_symlink_loop_in_an_image_folder_are_skipped(tmp_path):
    from test_loaders import png_folder

    from otreweight.data.sources import load_dataset

    root = png_folder(tmp_path / "imgs")
    (root / "train" / "class0" / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    loop = root / "train" / "class1" / "loop.png"
    loop.symlink_to(loop)
    ds = load_dataset(str(root), cache_dir=tmp_path / "cache")
    assert len(ds.y_train) == 12 + 6 + 4


def test_sixteen_bit_png_is_decoded_faithfully():
    from PIL import Image

    from otreweight.data.sources.folder import _decode_image

    a = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    x = _decode_image(buf.getvalue())
    assert x.dtype == np.uint8 and len(np.unique(x[..., 0])) == 64
    assert np.allclose(x[..., 0], np.rint(a / 65535 * 255), atol=1)


# ----------------------------------------------------------------------------- the Python API
def _blobs(n=30, d=4, k=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % k
    return rng.normal(size=(n, d)).astype(np.float32) + y[:, None], y


@pytest.mark.parametrize("call, words", [
    (lambda: FitConfig(epochs="ten").validate(), ["epochs", "'ten'"]),
    (lambda: FitConfig(nesterov="yes").validate(), ["nesterov", "true or false"]),
    (lambda: create_method("ot", meta_ce="ten"), ["meta_ce", "'ten'"]),
    (lambda: create_method("cb", beta="x"), ["beta"]),
    (lambda: OTReweighter([0, 1, 1], alpha="abc"), ["alpha", "'abc'"]),
    (lambda: OTReweighter([0, 1, 1], steps="abc"), ["steps"]),
    (lambda: make_long_tailed([0, 1, 1, 0], 2, seed="abc"), ["seed", "'abc'"]),
    (lambda: make_long_tailed([], 2), ["empty"]),
    (lambda: make_long_tailed(np.array([0, 2**40]), 2), ["2**40".replace("2**40", str(2**40)), "0..K-1"]),
    (lambda: create_model("mlp", num_classes=3), ["mlp", "in_features"]),
    (lambda: create_model("resnet32"), ["num_classes"]),
])
def test_api_bad_values_are_one_line(call, words):
    with pytest.raises(OTReweightError) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_fit_with_an_input_width_the_model_was_not_built_for():
    x, y = _blobs()
    m = create_model("mlp", in_features=7, num_classes=3)
    with pytest.raises(OTReweightError, match="does not take the training inputs"):
        fit(m, create_method("ce"), (x, y), (x, y), config=FitConfig(epochs=1, progress=False), device="cpu")


def test_fit_with_string_labels():
    x, _ = _blobs()
    m = create_model("mlp", in_features=4, num_classes=3)
    with pytest.raises(OTReweightError, match="integer class indices|map your labels|labels"):
        fit(m, create_method("ce"), (x, np.array(["a", "b", "c"] * 10)), (x, np.arange(30) % 3),
            config=FitConfig(epochs=1, progress=False), device="cpu")


def test_a_single_training_example_with_batch_norm():
    x = torch.rand(1, 3, 8, 8)
    m = create_model("small_cnn", num_classes=2, width=4)
    with pytest.raises(OTReweightError, match="batch norm"):
        fit(m, create_method("ce"), (x, [0]), (torch.rand(2, 3, 8, 8), [0, 1]),
            config=FitConfig(epochs=1, progress=False), device="cpu")


def test_evaluate_on_zero_examples_and_on_another_width():
    m = create_model("mlp", in_features=4, num_classes=3)
    with pytest.raises(OTReweightError, match="zero examples"):
        evaluate(m, np.zeros((0, 4), np.float32), np.zeros(0, int))
    with pytest.raises(OTReweightError, match="does not take the evaluation inputs"):
        evaluate(m, np.zeros((5, 9), np.float32), np.zeros(5, int))


# ----------------------------------------------------------------------------- property-based
@settings(max_examples=60, deadline=None)
@given(st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans(),
                 st.lists(st.integers(), max_size=3)))
def test_set_values_of_any_type_give_a_config_or_one_line(value):
    from otreweight.config import load_config

    import yaml

    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    for key in ("stage1.epochs", "stage1.lr", "stage1.milestones", "stage1.nesterov", "data.n_max", "seed"):
        try:
            cfg = load_config("configs/cifar10_lt_if100.yaml", [f"{key}={text}"])
        except OTReweightError as err:
            assert "\n" not in str(err)
        else:
            assert cfg.to_dict()  # a valid config of the right types


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 4), st.integers(0, 3), st.sampled_from(["u1", "i8", "f4", "f8", "b1", "U2", "c8"]))
def test_npz_with_random_shapes_and_dtypes_loads_or_gives_one_line(tmp_path_factory, ndim, n, dtype):
    from otreweight.data.sources import DataError, load_npz

    shape = (n + 1,) + (2,) * ndim
    x = np.zeros(shape, dtype=dtype)
    p = tmp_path_factory.mktemp("npz") / "r.npz"
    np.savez(p, x_train=x, y_train=np.zeros(n + 1, int), x_test=x, y_test=np.zeros(n + 1, int))
    try:
        ds = load_npz(p)
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert ds.modality in ("image", "vector")


def test_labels_with_gaps_get_the_remapping_advice():
    with pytest.raises(OTReweightError, match="skip values"):
        make_long_tailed(np.repeat([0, 5, 9], 40), 2, n_meta_per_class=2, n_val_per_class=2)


def test_image_size_reaches_folder_sources_and_is_refused_by_others(tiny_npz, tmp_path, capsys):
    from test_loaders import png_folder

    from otreweight.data.sources import load_dataset

    one_line_error(capsys, train(tiny_npz, tmp_path / "run", "data.image_size=[4, 4]"), "does not take image_size")
    one_line_error(capsys, train(tiny_npz, tmp_path / "run", "data.image_size=[4]"), "data.image_size")
    ds = load_dataset(str(png_folder(tmp_path / "imgs")), cache_dir=tmp_path / "c", image_size=(4, 6))
    assert ds.x_train.shape[1:] == (4, 6, 3)


def test_ot_core_bad_inputs_and_non_convergence():
    from otreweight import cost_matrix, entropic_ot
    from otreweight.targets import build_targets
    from otreweight.transport import OTConvergenceWarning

    c = torch.rand(5, 3, dtype=torch.float64)
    with pytest.raises(OTReweightError, match="summing to 1"):
        entropic_ot(c, torch.full((5,), 0.5, dtype=torch.float64))
    with pytest.raises(OTReweightError, match="labels must lie in 0..2"):
        cost_matrix("combined", torch.rand(4, 2), torch.tensor([0, 1, 2, 7]), torch.rand(3, 2), torch.tensor([0, 1, 2]), 3)
    with pytest.warns(OTConvergenceWarning, match="off by"):
        entropic_ot(torch.rand(40, 30, dtype=torch.float64) * 10, torch.full((40,), 1 / 40, dtype=torch.float64),
                    eps=1e-4, max_iter=20, method="log")
    rw = OTReweighter([0, 1, 2, 0, 1, 2])
    feats = torch.rand(3, 4)
    targets = build_targets("whole", feats, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(OTReweightError, match="example id 9 is outside 0..5"):
        rw.step(torch.tensor([0, 1, 9]), feats, torch.tensor([0, 1, 2]), targets)


def _mount_tmpfs(where, options):
    import subprocess

    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode})")


def _umount(where):
    import subprocess

    subprocess.run(["umount", str(where)], capture_output=True)


def test_a_full_disk_is_one_line_naming_it(tiny_npz, tmp_path, capsys):
    disk = tmp_path / "small"
    _mount_tmpfs(disk, "size=160k")
    try:
        err = one_line_error(capsys, train(tiny_npz, disk / "run", "stage2.*.epochs=3"), "No space left on device")
        assert "--resume" in err
    finally:
        _umount(disk)


def test_a_read_only_file_system_is_one_line(tiny_npz, tmp_path, capsys):
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=64k")
    try:
        one_line_error(capsys, train(tiny_npz, ro / "run"), "not writable", "Read-only file system")
    finally:
        _umount(ro)


def test_a_tar_gz_that_is_not_gzip_is_one_line(tmp_path, capsys):
    bad = tmp_path / "imgs.tar.gz"
    bad.write_bytes(b"not gzip at all")
    one_line_error(capsys, train(bad, tmp_path / "run"), "imgs.tar.gz", "not a readable tar")


def test_an_npz_label_of_2_to_the_40_does_not_allocate(tmp_path, capsys):
    p = tmp_path / "big.npz"
    np.savez(p, x_train=np.zeros((4, 3)), y_train=np.array([0, 1, 2, 2**40]), x_test=np.zeros((2, 3)),
             y_test=np.array([0, 1]))
    one_line_error(capsys, train(p, tmp_path / "run", "model.name=mlp"), "map them to 0..K-1")


def test_evaluate_on_data_of_another_kind_or_channel_count(finished_run, tmp_path, capsys):
    best = str(finished_run / "stage1" / "model.json")
    rng = np.random.default_rng(0)
    gray = tmp_path / "gray.npz"
    np.savez(gray, x_train=rng.integers(0, 255, (8, 8, 8, 1)).astype(np.uint8), y_train=np.arange(8) % 4,
             x_test=rng.integers(0, 255, (8, 8, 8, 1)).astype(np.uint8), y_test=np.arange(8) % 4)
    one_line_error(capsys, main(["evaluate", best, "--data", str(gray)]), "in_channels=1", "in_channels=3")
    vec = tmp_path / "vec.npz"
    np.savez(vec, x_train=rng.normal(size=(8, 5)), y_train=np.arange(8) % 4, x_test=rng.normal(size=(8, 5)),
             y_test=np.arange(8) % 4)
    one_line_error(capsys, main(["evaluate", best, "--data", str(vec)]), "image inputs", "vector inputs")


def test_an_empty_test_split_fails_before_stage_1(tmp_path, capsys):
    p = tmp_path / "notest.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x_train=rng.normal(size=(120, 4)), y_train=np.arange(120) % 4, x_test=np.zeros((0, 4)),
             y_test=np.zeros(0, int))
    one_line_error(capsys, train(p, tmp_path / "run", "model.name=mlp"), "test split is empty")
    assert not (tmp_path / "run" / "stage1").exists()
