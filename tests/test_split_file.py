"""Splits as files: `otreweight split`, `data.split_file` and `otreweight data verify` on small data in the real
formats (class folders of PNG / JPEG, an .npz, a TSV text folder) and, when present, the shared CIFAR-10 JPEG archive."""
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from otreweight.cli import main
from otreweight.data.splitfile import read_split_file
from otreweight.experiment import export_split, load_config, run_experiment, verify_data

CONFIG = "configs/cifar10_lt_if100.yaml"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def sets(src, out=None, *extra):
    return [f"data.source={src}", "data.imbalance_factor=4", "data.n_val_per_class=3", "data.n_meta_per_class=2",
            "model.name=small_cnn", "model.options.width=4", "stage1.epochs=2", "stage1.warmup_epochs=1",
            "stage1.batch_size=16", "stage2.*.epochs=2", "stage2.*.batch_size=8", f"output_dir={out or 'unused'}",
            "progress=false", "threads=1", *extra]


@pytest.fixture
def folder(tmp_path):
    """train/ and test/ class folders of 8x8 PNG and JPEG files (3 classes)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, n in (("train", 24), ("test", 5)):
        for k, c in enumerate(("cat", "dog", "emu")):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                x = rng.integers(0, 60, (8, 8, 3)).astype(np.uint8)
                x[..., k] += 120
                Image.fromarray(x).save(d / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(1)
    y, yt = np.repeat(np.arange(3), 24), np.repeat(np.arange(3), 5)
    path = tmp_path / "arrays.npz"
    np.savez(path, x_train=rng.integers(0, 255, (len(y), 8, 8, 3)).astype(np.uint8), y_train=y,
             x_test=rng.integers(0, 255, (len(yt), 8, 8, 3)).astype(np.uint8), y_test=yt)
    return path


@pytest.fixture
def tsv(tmp_path):
    root = tmp_path / "text"
    root.mkdir()
    words = {"sport": "goal team match", "law": "vote bill court", "lab": "atom cell light"}
    for split, n in (("train", 20), ("test", 4)):
        lines = [f"{c}\t{w} doc {i} {c}" for i in range(n) for c, w in words.items()]
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out.strip().splitlines(), err.strip().splitlines()


def verify_lines(capsys, src, split_file):
    args = ["data", "verify", "--config", CONFIG, "--split-file", str(split_file)]
    for s in sets(src):
        args += ["--set", s]
    return cli(capsys, *args)


def export(src, path):
    return export_split(load_config(CONFIG, sets(src)), path)


# ----------------------------------------------------------------------------- round trip
def test_a_run_from_the_exported_split_equals_the_run_that_drew_it(npz, tmp_path):
    drawn = run_experiment(load_config(CONFIG, sets(npz, tmp_path / "drawn")), log=lambda *a: None)
    res = export(npz, tmp_path / "split.tsv")
    table = read_split_file(tmp_path / "split.tsv")
    saved = json.loads((tmp_path / "drawn" / "split.json").read_text())
    assert table.long_tail_split().train_counts.tolist() == saved["train_counts"]
    # another seed in the config: the file decides the split, the seed only the training
    cfg = load_config(CONFIG, sets(npz, tmp_path / "from_file", f"data.split_file={tmp_path / 'split.tsv'}"))
    again = run_experiment(cfg, log=lambda *a: None)
    for stage in drawn:
        a, b = drawn[stage], again[stage]
        assert (a["best"], a["last"], a["best_epoch"], a["val_best"]) == (b["best"], b["last"], b["best_epoch"], b["val_best"])
        assert a["split_file"] is None and b["split_file"] == {"path": str(tmp_path / "split.tsv"), "sha256": res["sha256"]}
    w1 = np.load(tmp_path / "drawn" / "stage2_ot_classifier" / "weights.npz")
    w2 = np.load(tmp_path / "from_file" / "stage2_ot_classifier" / "weights.npz")
    for key in w1.files:
        np.testing.assert_array_equal(w1[key], w2[key])
    split_json = json.loads((tmp_path / "from_file" / "split.json").read_text())
    assert split_json["split_file"]["sha256"] == res["sha256"]
    assert {k: v for k, v in split_json.items() if k != "split_file"} == {k: v for k, v in saved.items() if k != "split_file"}
    head = (tmp_path / "from_file" / "config.yaml").read_text().splitlines()[0]
    assert head == f"# split read from {tmp_path / 'split.tsv'} (sha256 {res['sha256']})"


def test_a_folder_round_trip_writes_paths_and_the_run_reads_them(folder, tmp_path, capsys):
    args = ["split", "--config", CONFIG, "--output", str(tmp_path / "split.tsv")]
    for s in sets(folder):
        args += ["--set", s]
    rc, out, err = cli(capsys, *args)
    assert rc == 0 and len(out) == 1 and "sha256" in out[0], (out, err)
    table = read_split_file(tmp_path / "split.tsv")
    assert table.header["hashes"] == "files" and table.header["keys"] == "path"
    assert table.pools["train"]["path"][:2] == ["train/cat/000.jpg", "train/cat/001.png"]
    assert table.header["data"]["imbalance_factor"] == 4
    assert set(table.pools["train"]["role"]) == {"train", "meta", "val", "unused"}
    import hashlib

    assert table.pools["test"]["sha256"][0] == hashlib.sha256((folder / "test/cat/000.jpg").read_bytes()).hexdigest()
    rc, out, _ = verify_lines(capsys, folder, tmp_path / "split.tsv")
    assert rc == 0 and len(out) == 1 and out[0].startswith("ok: ")
    # the in-memory (decoded) and the streamed loaders take the same ids
    from otreweight.run.prepare import Prepared, open_source
    import torch

    for loader in ("memory", "stream"):
        cfg = load_config(CONFIG, sets(folder, None, f"data.split_file={tmp_path / 'split.tsv'}", f"data.loader={loader}",
                                       "data.num_workers=0"))
        prep = Prepared(cfg.data, cfg.seed, cfg.model.name, open_source(cfg.data, lazy=loader == "stream"),
                        torch.device("cpu"))
        assert prep.split.train.tolist() == table.long_tail_split().train.tolist()
        prep.close()


# ----------------------------------------------------------------------------- verify: every kind of mismatch
def test_verify_finds_every_kind_of_mismatch_in_a_folder(folder, tmp_path, capsys):
    export(folder, tmp_path / "split.tsv")
    (folder / "train/cat/004.jpg").unlink()                                  # missing
    shutil.copy(folder / "train/emu/000.jpg", folder / "train/emu/new.jpg")   # extra
    (folder / "train/dog/005.png").rename(folder / "train/emu/moved.png")     # wrong label (moved class)
    with open(folder / "train/cat/007.png", "ab") as fh:                     # changed bytes
        fh.write(b"\0")
    rc, out, err = verify_lines(capsys, folder, tmp_path / "split.tsv")
    assert rc == 2 and not err
    text = "\n".join(out)
    assert "missing: train pool train/cat/004.jpg (id 4), class cat" in text
    assert "extra: train pool train/emu/new.jpg" in text and "new.jpg" not in text.split("extra:")[0]
    assert "wrong label: train pool train/dog/005.png (class dog" in text and "is train/emu/moved.png (class emu)" in text
    assert "changed bytes: train pool train/cat/007.png (id 7)" in text
    assert "count: train pool class cat: 23 examples in the data, 24 in the split file" in text
    assert "count: train pool class emu: 26 examples in the data, 24 in the split file" in text
    assert not any("test pool" in line for line in out)  # the test files did not change
    # a run refuses the file in one line, before any training
    args = ["train", "--config", CONFIG, "--no-report"]
    for s in sets(folder, tmp_path / "run", f"data.split_file={tmp_path / 'split.tsv'}"):
        args += ["--set", s]
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and len(err) == 1 and err[0].startswith("otreweight: error: split file ")
    assert "otreweight data verify" in err[0] and not (tmp_path / "run" / "stage1").exists()


def test_verify_finds_a_count_change_alone(folder, tmp_path, capsys):
    export(folder, tmp_path / "split.tsv")
    shutil.copy(folder / "test/dog/000.jpg", folder / "test/dog/zzz.jpg")  # one more test image of dog, at the end
    rc, out, _ = verify_lines(capsys, folder, tmp_path / "split.tsv")
    assert rc == 2
    assert out == ["extra: test pool test/dog/zzz.jpg (id 10), class dog, not in the split file",
                   "ids: 5 files of the test pool have other ids in the data than in the split file "
                   "(first: test/emu/000.jpg, id 10 there, 11 here), as files were added or removed",
                   "count: test pool class dog: 6 examples in the data, 5 in the split file"]


def test_verify_finds_every_kind_of_mismatch_in_an_npz(npz, tmp_path, capsys):
    export(npz, tmp_path / "split.tsv")
    table = read_split_file(tmp_path / "split.tsv")
    assert table.header["hashes"] == "arrays" and table.header["keys"] == "id" and set(table.pools["train"]["path"]) == {"-"}
    z = dict(np.load(npz))
    z["y_train"] = z["y_train"].copy()
    z["y_train"][3] = 2                       # wrong label
    z["x_train"] = z["x_train"].copy()
    z["x_train"][5, 0, 0, 0] ^= 1             # changed bytes
    z["x_test"], z["y_test"] = z["x_test"][:-1], z["y_test"][:-1]  # a missing test row: a count change
    np.savez(npz, **z)
    rc, out, _ = verify_lines(capsys, npz, tmp_path / "split.tsv")
    assert rc == 2
    assert "wrong label: train pool id 3 is class 0 in the split file but 2 in the data" in out
    assert any(line.startswith("changed bytes: train pool id 5 (sha256") for line in out)
    assert "missing: test pool id 14, class 2, test" in out
    assert "count: test pool class 2: 4 examples in the data, 5 in the split file" in out
    assert "count: train pool class 0: 23 examples in the data, 24 in the split file" in out
    with pytest.raises(Exception, match=r"^split file .*: id 3 of the train pool \(-\) is class '0' there but '2' in the data"):
        run_experiment(load_config(CONFIG, sets(npz, tmp_path / "r", f"data.split_file={tmp_path / 'split.tsv'}")),
                       log=lambda *a: None)


def test_verify_finds_changes_in_a_text_file(tsv, tmp_path, capsys):
    export(tsv, tmp_path / "split.tsv")
    table = read_split_file(tmp_path / "split.tsv")
    assert table.pools["train"]["path"][:2] == ["train.tsv:1", "train.tsv:2"]
    lines = (tsv / "train.tsv").read_text().splitlines()
    lines[0] = lines[0].replace("goal", "GOAL")          # changed text
    lines[1] = "sport" + lines[1][len("law"):]           # wrong label
    (tsv / "train.tsv").write_text("\n".join(lines) + "\n")
    rc, out, _ = verify_lines(capsys, tsv, tmp_path / "split.tsv")
    assert rc == 2
    assert any(line.startswith("changed bytes: train pool train.tsv:1 (id 0)") for line in out)
    assert "wrong label: train pool train.tsv:2 (id 1) is class law in the split file but sport in the data" in out
    assert "count: train pool class sport: 21 examples in the data, 20 in the split file" in out
    # the run's check names the first mismatch (the label of id 1)
    with pytest.raises(Exception, match="id 1 of the train pool"):
        run_experiment(load_config(CONFIG, sets(tsv, tmp_path / "r", f"data.split_file={tmp_path / 'split.tsv'}",
                                                "model.name=mlp")), log=lambda *a: None)


# ----------------------------------------------------------------------------- bad split files
@pytest.mark.parametrize("edit, message", [
    (lambda t: "nothing\n" + t, "does not start with '# otreweight split v1'"),
    (lambda t: t.replace("# classes\t", "# klasses\t"), "the header lacks 'classes'"),
    (lambda t: t.replace("role\tid\t", "role\tidx\t"), "expected the column line"),
    (lambda t: t.replace("\ntrain\t0\t", "\nbogus\t0\t", 1), "role 'bogus' is not one of"),
    (lambda t: t.replace("\ntrain\t0\t0\t", "\ntrain\t0\t1\t", 1), "does not match the header's classes"),
    (lambda t: t.replace("\ntrain\t0\t0\t0\t-\t", "\ntrain\t0\t0\t0\t-\tzz", 1), "the sha256 is not 64 hex digits"),
    (lambda t: t.replace("\ntrain\t1\t", "\ntrain\t0\t", 1), "id 0 of the train pool is listed twice"),
    (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "data_sha256 does not match its lines"),
    (lambda t: t.replace("\t", " ", 30), "header line is not"),
])
def test_a_bad_split_file_is_one_line(npz, tmp_path, capsys, edit, message):
    export(npz, tmp_path / "split.tsv")
    text = (tmp_path / "split.tsv").read_text()
    if "train\t0\t0\t" not in text:
        pytest.skip("id 0 is not a training example in this draw")
    (tmp_path / "bad.tsv").write_text(edit(text))
    rc, out, err = verify_lines(capsys, npz, tmp_path / "bad.tsv")
    assert rc == 2 and out == [] and len(err) == 1 and err[0].startswith("otreweight: error: split file "), err
    assert message in err[0], err[0]
    args = ["train", "--config", CONFIG, "--no-report"]
    for s in sets(npz, tmp_path / "run", f"data.split_file={tmp_path / 'bad.tsv'}"):
        args += ["--set", s]
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and len(err) == 1 and message in err[0]


def test_missing_split_file_and_no_split_file_are_one_line(npz, tmp_path, capsys):
    rc, _, err = verify_lines(capsys, npz, tmp_path / "nope.tsv")
    assert rc == 2 and len(err) == 1 and "does not exist" in err[0]
    args = ["data", "verify", "--config", CONFIG, "--set", f"data.source={npz}"]
    rc, _, err = cli(capsys, *args)
    assert rc == 2 and len(err) == 1 and "--split-file" in err[0]


# ----------------------------------------------------------------------------- the shared CIFAR-10 JPEG archive
@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data/cifar10-jpeg.tar.gz is absent")
def test_the_shared_cifar10_archive_round_trip(tmp_path):
    cfg = load_config(CONFIG, [f"data.source={SHARED}"])
    res = export_split(cfg, tmp_path / "split.tsv")
    table = read_split_file(tmp_path / "split.tsv")
    tr = table.pools["train"]
    assert len(tr["path"]) == 50_000 and len(table.pools["test"]["path"]) == 10_000
    assert tr["path"][0].startswith("cifar10-jpeg/train/airplane/")  # the member name inside the archive
    split = res["split"]
    assert split.train_counts.tolist()[0] == 4970 and split.train_counts.tolist()[-1] == 49  # IF 100, meta + val carved
    with tarfile.open(SHARED) as tar:  # one member's bytes, read independently
        member = tar.getmember(tr["path"][0])
        import hashlib

        assert hashlib.sha256(tar.extractfile(member).read()).hexdigest() == tr["sha256"][0]
    problems, summary = verify_data(load_config(CONFIG, [f"data.source={SHARED}"]), tmp_path / "split.tsv")
    assert problems == [] and summary.startswith("ok: ") and "60000 examples" in summary


def test_runs_and_comparisons_saved_before_split_file_resume(npz, tmp_path):
    """A config.yaml / compare.json written before data.split_file existed still resumes."""
    import yaml

    from otreweight.compare import run_comparison

    cfg = load_config(CONFIG, sets(npz, tmp_path / "run"))
    run_comparison(cfg, ["ce"], seeds=(0,), output=tmp_path / "cmp", log=lambda *a: None)
    for path in (tmp_path / "cmp" / "seed_0" / "config.yaml",):
        saved = yaml.safe_load(path.read_text())
        del saved["data"]["split_file"]
        path.write_text(yaml.safe_dump(saved))
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    del record["config"]["data"]["split_file"]
    (tmp_path / "cmp" / "compare.json").write_text(json.dumps(record))
    msgs = []
    run_comparison(cfg, ["ce"], seeds=(0,), output=tmp_path / "cmp", resume=True, log=msgs.append)
    assert any("finished earlier" in m for m in msgs)
