"""A run resumed from the checkpoint of epoch k equals the uninterrupted run in every state, not only
in its final metrics: model weights, optimizer and scheduler states, every RNG state, the OT score
buffer (method ``ot``), the validation-selected state and the history (issue 22)."""
import shutil

import pytest
import torch

import otreweight.train.checkpoint as ckpt
from otreweight.experiment import run_experiment

from test_experiment import tiny_config

SECONDS = {"seconds"}  # wall-clock time is the one thing a resumed run may differ in


def assert_same(a, b, where="checkpoint"):
    """Bit-for-bit equality of nested checkpoint values (tensors by ``torch.equal`` and dtype)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b) if isinstance(b, dict) else b)
        for k in a:
            if k not in SECONDS:
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), (where, a, b)  # NaN equals NaN here


def _cfg(tiny_npz, out):
    cfg = tiny_config(tiny_npz, out)
    cfg.stage2 = [v for v in cfg.stage2 if v.name == "ot_full"]  # OT scores and the whole network
    assert cfg.stage2 and cfg.stage2[0].method == "ot"
    return cfg


@pytest.mark.parametrize("k", [1, 2])
def test_resumed_run_equals_the_uninterrupted_one_in_every_state(k, tiny_npz, tmp_path, monkeypatch, kill_mid_epoch):
    real_save = ckpt.save_checkpoint
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()

    def keep_every_epoch(path, epoch, *args):  # the uninterrupted run's checkpoint after every epoch
        real_save(path, epoch, *args)
        shutil.copy(path, snapshots / f"{path.parent.name}_{epoch}.pt")

    monkeypatch.setattr(ckpt, "save_checkpoint", keep_every_epoch)
    full = run_experiment(_cfg(tiny_npz, tmp_path / "full"), log=lambda *a: None)
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)

    disarm = kill_mid_epoch(3 + k + 1, 2)  # stage 1 has 3 epochs; killed in stage 2's epoch k+1, batch 2
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_cfg(tiny_npz, tmp_path / "cut"), log=lambda *a: None)
    disarm()
    stage = tmp_path / "cut" / "stage2_ot_full"
    at_k = ckpt.read_checkpoint(stage / "checkpoint.pt")
    assert at_k["epoch"] == k and not (stage / "final.json").exists()
    assert_same(at_k, ckpt.read_checkpoint(snapshots / f"stage2_ot_full_{k}.pt"))  # the state resumed from

    resumed = run_experiment(_cfg(tiny_npz, tmp_path / "cut"), resume=True, log=lambda *a: None)
    a = ckpt.read_checkpoint(tmp_path / "full" / "stage2_ot_full" / "checkpoint.pt")
    b = ckpt.read_checkpoint(stage / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 3
    for part in ("model", "optimizer", "scheduler", "rng", "method", "best_state", "best_epoch", "best_score",
                 "history"):
        assert_same(a[part], b[part], part)
    scores = a["method"]["reweighter"]["scores"]  # the OT score buffer moved during training, identically
    assert not torch.equal(scores, torch.full_like(scores, scores[0])) or scores.numel() == 1
    assert set(a["rng"]) >= {"generator", "torch", "numpy", "python"}
    assert_same(a, b)  # nothing else differs either
    assert resumed == {s: {**full[s], "seconds": resumed[s]["seconds"],
                           "seconds_per_epoch": resumed[s]["seconds_per_epoch"]} for s in full}
