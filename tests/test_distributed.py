"""Several processes (gloo on the CPU, spawned here as torchrun would start them) against one.

Two ranks with per-rank batch b must follow one process with batch 2b: the same global batches
(the sampler's ``rank::world_size`` slices of one global order), gradients averaged over the ranks
(DistributedDataParallel for the whole network, an all-reduce for the classifier alone), hence the
same validation metrics and weights. The training set holds 48 examples and the global batch is 8,
so every step's global batch is full and each rank's half of it holds 4 (with a last partial batch
the two halves differ in size and the mean of per-rank means is not the global mean).
"""
from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch import nn

from otreweight import FitConfig, create_method, create_model, fit
from otreweight import distributed as dist
from otreweight.models.base import FeatureClassifier

CASES = [("ce", "classifier"), ("ce", "all"), ("cb", "classifier"), ("cb", "all"), ("cb_resample", "all"),
         ("ot", "classifier"), ("ot", "all"), ("ot_normalized", "all")]
METHODS = {"ot_normalized": ("ot", {"weighting": "normalized"})}


class PlainMLP(FeatureClassifier):
    """Linear-ReLU layers without batch norm: a batch's statistics do not depend on how it is split."""

    def __init__(self, d=5, h=12, k=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.classifier = nn.Linear(h, k)

    def features(self, x):
        return self.backbone(x)


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    counts = [24, 16, 8]
    centers = rng.normal(0, 2, (3, 5))
    y = np.repeat(np.arange(3), counts)
    x = (centers[y] + rng.normal(0, 1.5, (y.size, 5))).astype(np.float32)
    yv = np.repeat(np.arange(3), 6)
    xv = (centers[yv] + rng.normal(0, 1.5, (yv.size, 5))).astype(np.float32)
    ym = np.repeat(np.arange(3), 2)
    xm = (centers[ym] + rng.normal(0, 1.5, (ym.size, 5))).astype(np.float32)
    return (x, y), (xv, yv), (xm, ym)


def run_cases(batch_size):
    """Every case of CASES trained from the same initialisation; what must agree across world sizes."""
    train, val, meta = tiny_data()
    out = {}
    for name, trainable in CASES:
        torch.manual_seed(0)
        model = PlainMLP()
        lr = 0.005 if name.startswith("ot") else 0.1  # raw OT weights sum to ~K per batch, meta_ce=10: a smaller step
        cfg = FitConfig(epochs=3, batch_size=batch_size, lr=lr, momentum=0.9, trainable=trainable,
                        progress=False, seed=1)
        method_name, options = METHODS.get(name, (name, {}))
        method = create_method(method_name, **options)
        scores = []

        def keep_scores(epoch, record, method=method, scores=scores):
            if getattr(method, "reweighter", None) is not None:
                scores.append(method.reweighter.scores.detach().clone())

        res = fit(model, method, train, val, meta=meta if method.uses_meta else None, config=cfg, device="cpu",
                  on_epoch_end=keep_scores)
        out[(name, trainable)] = {
            "scores": scores,
            "val": [r["val"] for r in res.history],
            "train_loss": [r["train_loss"] for r in res.history],
            "best_epoch": res.best_epoch,
            "weights": {k: v.clone() for k, v in res.last_state.items()},
        }
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, folder, fn_name):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OTREWEIGHT_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    dist.init("cpu")
    try:
        result = globals()[fn_name](folder)
        torch.save(result, os.path.join(folder, f"result{rank}.pt"))
    finally:
        dist.finish()


def spawn(fn_name, folder, world=2):
    mp.spawn(_worker, args=(world, free_port(), str(folder), fn_name), nprocs=world, join=True)
    return [torch.load(os.path.join(folder, f"result{r}.pt"), weights_only=False) for r in range(world)]


def two_rank_cases(folder):
    assert dist.world_size() == 2
    out = run_cases(batch_size=4)
    train, val, meta = tiny_data()
    try:  # a look-ahead method refuses several processes, before any training
        fit(PlainMLP(), create_method("mwnet"), train, val, meta=meta, config=FitConfig(epochs=1, progress=False),
            device="cpu")
    except dist.OTReweightError as err:
        out["mwnet"] = str(err)
    draws = []

    def augment(x, gen):  # records this rank's augmentation draws
        draws.append(float(torch.rand((), generator=gen)))
        return x

    fit(PlainMLP(), create_method("ce"), train, val, config=FitConfig(epochs=2, batch_size=4, progress=False),
        device="cpu", augment=augment)
    out["draws"] = draws
    torch.manual_seed(0)  # a model with batch norm: each rank's running statistics come from its own examples
    bn = create_model("mlp", in_features=5, num_classes=3, hidden=(8,))
    out["bn_state"] = fit(bn, create_method("ce"), train, val, config=FitConfig(epochs=2, batch_size=4, progress=False),
                          device="cpu").last_state
    out["resume"] = resume_cases(folder)
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One spawn of 2 gloo ranks running every 2-rank case (each spawn costs two interpreter starts)."""
    folder = tmp_path_factory.mktemp("two_ranks")
    return spawn("two_rank_cases", folder), folder


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert dist.init("cpu") is None and dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    t = torch.arange(3.0)
    assert dist.all_gather(t) is t
    dist.barrier()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.env() is None


def test_torchrun_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(dist.OTReweightError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set"):
        dist.env()


def test_two_ranks_follow_one_process_with_twice_the_batch(two_ranks):
    one = run_cases(batch_size=8)
    ranks, _ = two_ranks
    for case in CASES:
        ref = one[case]
        for r, res in enumerate(ranks):
            got = res[case]
            assert got["best_epoch"] == ref["best_epoch"], (case, r)
            np.testing.assert_allclose(got["train_loss"], ref["train_loss"], rtol=1e-5, atol=1e-6, err_msg=str(case))
            for e, (a, b) in enumerate(zip(got["val"], ref["val"])):
                for key, v in b.items():
                    if isinstance(v, float):
                        assert a[key] == pytest.approx(v, abs=1e-4), (case, r, e, key)
            for k, w in ref["weights"].items():
                torch.testing.assert_close(got["weights"][k], w, rtol=1e-5, atol=1e-6, msg=f"{case} {k}")
            assert len(got["scores"]) == len(ref["scores"])
            for e, (a, b) in enumerate(zip(got["scores"], ref["scores"])):  # the learned OT scores, every epoch
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{case} OT scores, epoch {e + 1}")
    # the two ranks hold the same model and the same OT scores after every epoch (not merely close)
    for case in CASES:
        for k, w in ranks[0][case]["weights"].items():
            assert torch.equal(ranks[1][case]["weights"][k], w)
        for a, b in zip(ranks[0][case]["scores"], ranks[1][case]["scores"]):
            assert torch.equal(a, b), case
    for c in CASES:
        if c[0].startswith("ot"):  # the scores were learned (they moved), so their agreement says something
            assert len(ranks[0][c]["scores"]) == 3 and not torch.equal(ranks[0][c]["scores"][0], ranks[0][c]["scores"][-1])
    assert all("does not run on several processes" in r.get("mwnet", "") for r in ranks)
    # with batch norm, every rank still ends with rank 0's model, running statistics included
    assert any("running_mean" in k for k in ranks[0]["bn_state"])
    for k, v in ranks[0]["bn_state"].items():
        assert torch.equal(ranks[1]["bn_state"][k], v), k
    # each rank augments its examples with its own draws, not the other rank's at the same position
    assert len(ranks[0]["draws"]) == len(ranks[1]["draws"]) == 12
    assert len(set(ranks[0]["draws"]) & set(ranks[1]["draws"])) == 0


CONFIG = """
name: ddp_tiny
seed: 0
device: cpu
threads: 1
progress: false
data: {{source: {src}, imbalance_factor: 3, n_meta_per_class: 2, n_val_per_class: 4, normalize: true}}
model: {{name: mlp, options: {{hidden: [8]}}}}
stage1: {{epochs: 2, batch_size: 8, lr: 0.05, weight_decay: 0.0}}
stage2:
- {{name: cb_classifier, method: cb, trainable: classifier, epochs: 2, batch_size: 4, lr: 0.05}}
output_dir: {out}
"""


@pytest.fixture
def tiny_vectors(tmp_path):
    rng = np.random.default_rng(0)
    y, yt = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 5)
    centers = rng.normal(0, 3, (3, 4))
    x = (centers[y] + rng.normal(0, 1, (y.size, 4))).astype(np.float32)
    xt = (centers[yt] + rng.normal(0, 1, (yt.size, 4))).astype(np.float32)
    path = tmp_path / "vec.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def test_torchrun_train_rank0_alone_writes_files(tiny_vectors, tmp_path):
    """``torchrun --nproc_per_node=2 -m otreweight train``: both ranks train, rank 0 alone writes the run folder."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "run"
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(CONFIG.format(src=tiny_vectors, out=out))
    audit = Path(__file__).with_name("_torchrun_audit.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           str(audit), str(out), str(tmp_path / "writes"), "train", "--config", str(cfg)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OTREWEIGHT_DIST_TIMEOUT="60",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"writes{r}.json").read_text()) for r in (0, 1))
    assert r0["rc"] == r1["rc"] == 0
    assert r1["writes"] == [], r1["writes"][:5]
    written = {Path(p).name for _, p in r0["writes"]}
    assert {"config.yaml", "split.json", "results.json", "report.md", "metrics.jsonl", "best.pt", "final.json"} <= written
    final = json.loads((out / "stage2_cb_classifier" / "final.json").read_text())
    assert (final["processes"], final["batch_size_per_process"], final["global_batch_size"]) == (2, 4, 8)
    assert "global batch = batch_size x 2" in (out / "config.yaml").read_text()
    assert proc.stdout.count("stage1 epoch 1/2") == 1  # rank 0 alone prints progress
    assert "global batch" in proc.stdout


def resume_cases(folder):
    """OT, whole network, 2 ranks: uninterrupted, then stopped after epoch 2 of 4 and resumed."""
    train, val, meta = tiny_data()
    cfg = FitConfig(epochs=4, batch_size=4, lr=0.005, progress=False, seed=3)

    def run(ckpt, resume=False, stop_after=None):
        torch.manual_seed(0)
        model, method = PlainMLP(), create_method("ot")
        ran = []

        def stop(epoch, record):
            ran.append(epoch + 1)
            if stop_after is not None and epoch + 1 == stop_after:
                raise KeyboardInterrupt  # the whole job stops here, after the epoch's checkpoint

        try:
            res = fit(model, method, train, val, meta=meta, config=cfg, device="cpu", checkpoint=ckpt,
                      resume=resume, on_epoch_end=stop)
        except KeyboardInterrupt:
            return None
        return {"history": [(r["train_loss"], r["val"]) for r in res.history], "scores": method.reweighter.scores,
                "weights": res.last_state, "ran": ran}

    full = run(os.path.join(folder, "full.pt"))
    assert run(os.path.join(folder, "cut.pt"), stop_after=2) is None
    dist.barrier()
    return {"full": full, "resumed": run(os.path.join(folder, "cut.pt"), resume=True)}


def test_resume_on_two_ranks_continues_exactly(two_ranks):
    ranks, folder = two_ranks
    ranks = [r["resume"] for r in ranks]
    for r in ranks:
        full, resumed = r["full"], r["resumed"]
        assert full["ran"] == [1, 2, 3, 4] and resumed["ran"] == [3, 4]  # it did continue from the checkpoint
        assert resumed["history"] == full["history"]
        assert torch.equal(resumed["scores"], full["scores"])
        for k, w in full["weights"].items():
            assert torch.equal(resumed["weights"][k], w), k
    assert torch.equal(ranks[0]["resumed"]["scores"], ranks[1]["resumed"]["scores"])
    # a checkpoint of 2 processes is refused by 1 (its batches would differ)
    train, val, meta = tiny_data()
    with pytest.raises(dist.OTReweightError, match="written by 2 process"):
        fit(PlainMLP(), create_method("ot"), train, val, meta=meta,
            config=FitConfig(epochs=4, batch_size=4, lr=0.005, progress=False, seed=3), device="cpu",
            checkpoint=folder / "cut.pt", resume=True)


@pytest.mark.parametrize("sampling", ["instance", "class_balanced"])
def test_sampler_gives_every_rank_the_same_steps(sampling):
    """51 examples on 2 ranks, batch 4, a last batch of one dropped: both ranks must take the same
    number of steps (else one waits for the other's all-reduce), and together they cover the order."""
    from otreweight.data.samplers import EpochSampler

    y = np.arange(51) % 3
    parts = []
    for r in range(2):
        s = EpochSampler(y, 3, 4, sampling, drop_single=True, rank=r, world_size=2)
        parts.append(s.batches(torch.Generator().manual_seed(5)))
    assert [len(b) for b in parts[0]] == [len(b) for b in parts[1]]
    order = EpochSampler(y, 3, 4, sampling).order(torch.Generator().manual_seed(5))
    seen = torch.cat([torch.cat(p) for p in parts])
    assert set(order.tolist()) == set(seen.tolist())
    assert seen.numel() == 52  # 51 padded by the order's first id
