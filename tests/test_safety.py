"""Loading never runs code (issue 22): a pickle that would run code is refused on every path that
reads a file (evaluate, stage1.checkpoint, --resume, the Python API), and a file that is not what
it claims is one line."""
import json
import pickle
import shutil

import pytest
import torch

from otreweight import OTReweightError
from otreweight.cli import main
from otreweight.experiment import evaluate_checkpoint, load_model
from otreweight.model_file import read_model, save_model

from test_bad_inputs import one_line_error, train


class _Evil:
    """Unpickling this creates ``path`` (what an attacker's shell command would do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_files(tmp_path):
    """The same payload as a raw pickle and as a torch zip file (``torch.save``)."""
    marker = tmp_path / "PWNED"
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"model": {"name": "small_cnn"}, "state_dict": _Evil(marker)}))
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "history": [_Evil(marker)]}, zipped)
    assert not marker.exists()
    return marker, [raw, zipped]


@pytest.fixture(scope="module")
def shared_run(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "run"
    assert train(tiny_npz, out, "stage2=[]") == 0
    return out


def test_a_malicious_pickle_is_refused_by_evaluate(tiny_npz, tmp_path, capsys):
    marker, files = _evil_files(tmp_path)
    for f in files:
        one_line_error(capsys, main(["evaluate", str(f), "--data", str(tiny_npz)]), str(f), "cannot be loaded safely")
        assert not marker.exists()


def test_a_malicious_pickle_is_refused_as_stage1_checkpoint(tiny_npz, tmp_path, capsys):
    marker, files = _evil_files(tmp_path)
    for i, f in enumerate(files):
        one_line_error(capsys, train(tiny_npz, tmp_path / f"run{i}", f"stage1.checkpoint={f}"), "cannot be loaded safely")
        assert not marker.exists()


def test_a_malicious_pickle_is_refused_as_the_resume_checkpoint(shared_run, tiny_npz, tmp_path, capsys):
    marker, files = _evil_files(tmp_path)
    for i, f in enumerate(files):
        run = tmp_path / f"run{i}"
        shutil.copytree(shared_run, run)
        (run / "stage1" / "final.json").unlink()
        shutil.copy(f, run / "stage1" / "checkpoint.pt")
        one_line_error(capsys, train(tiny_npz, run, "stage2=[]", resume=True), "checkpoint.pt", "cannot be loaded safely")
        assert not marker.exists()


def test_a_malicious_pickle_is_refused_by_the_python_api(tiny_npz, tmp_path):
    marker, files = _evil_files(tmp_path)
    for f in files:
        with pytest.raises(OTReweightError, match="cannot be loaded safely"):
            load_model(f)
        with pytest.raises(OTReweightError, match="cannot be loaded safely"):
            evaluate_checkpoint(f, str(tiny_npz), device="cpu")
        with pytest.raises(OTReweightError, match="cannot be loaded safely"):
            read_model(f)
    assert not marker.exists()


def test_the_shared_model_is_safetensors_and_a_card(shared_run, tiny_npz, tmp_path, capsys):
    stage = shared_run / "stage1"
    assert not (stage / "best.pt").exists()
    card = json.loads((stage / "model.json").read_text())
    assert card["format"] == "otreweight-model" and card["weights"] == "model.safetensors"
    assert card["classes"] and card["num_classes"] == len(card["classes"])
    assert set(card["input"]["stats"]) == {"mean", "std"} and card["data_fingerprint"]
    assert card["config"]["model"]["name"] == "small_cnn" and card["metrics"]["test"]["accuracy"] >= 0
    assert set(card["versions"]) == {"otreweight", "torch"} and card["command"]
    from safetensors.torch import load_file

    assert set(load_file(stage / "model.safetensors")) == set(load_model(stage)[0].state_dict())
    # read back in the model's order (safetensors alone returns its entries in no fixed order)
    assert list(read_model(stage)["state_dict"]) == list(load_model(stage)[0].state_dict())
    # the card, the weights file and the folder all name the same model
    scores = []
    for path in (stage / "model.json", stage / "model.safetensors", stage):
        assert main(["evaluate", str(path), "--data", str(tiny_npz), "--json", str(tmp_path / "m.json")]) == 0
        scores.append(json.loads((tmp_path / "m.json").read_text()))
    assert scores[0] == scores[1] == scores[2]
    # a best.pt of an earlier version (tensors and plain values) is still read, through the safe loader
    bundle = read_model(stage)
    torch.save(bundle, tmp_path / "best.pt")
    assert evaluate_checkpoint(tmp_path / "best.pt", str(tiny_npz), device="cpu") == scores[0]
    # and save_model converts it
    save_model(read_model(tmp_path / "best.pt"), tmp_path / "converted")
    assert evaluate_checkpoint(tmp_path / "converted", str(tiny_npz), device="cpu") == scores[0]


@pytest.mark.parametrize("damage, words", [
    ("garbage", ["not a model written by otreweight"]),
    ("truncated_weights", ["model.safetensors", "not a readable safetensors file"]),
    ("card_list", ["model.json", "not a model card"]),
    ("card_missing_key", ["model.json", "classes"]),
    ("card_truncated", ["model.json", "not a readable model card"]),
    ("card_without_weights", ["do not exist"]),
    ("truncated_pt", ["best.pt", "damaged"]),
    ("pt_of_other_shape", ["best.pt", "not a model written by otreweight"]),
])
def test_a_file_that_is_not_what_it_claims(damage, words, shared_run, tiny_npz, tmp_path, capsys):
    stage = tmp_path / "stage"
    shutil.copytree(shared_run / "stage1", stage)
    card, weights = stage / "model.json", stage / "model.safetensors"
    target = card
    if damage == "garbage":
        target = tmp_path / "x.pt"
        target.write_bytes(b"\x00\x01garbage bytes, not a model" * 10)
    elif damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "card_list":
        card.write_text("[1, 2, 3]")
    elif damage == "card_missing_key":
        c = json.loads(card.read_text())
        del c["classes"]
        card.write_text(json.dumps(c))
    elif damage == "card_truncated":
        card.write_text(card.read_text()[:50])
    elif damage == "card_without_weights":
        weights.unlink()
    else:
        target = tmp_path / "best.pt"
        torch.save(read_model(stage) if damage == "truncated_pt" else {"weights": torch.zeros(3)}, target)
        if damage == "truncated_pt":
            target.write_bytes(target.read_bytes()[:200])
    one_line_error(capsys, main(["evaluate", str(target), "--data", str(tiny_npz)]), *words)
