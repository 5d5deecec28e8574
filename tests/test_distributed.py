"""Several processes (gloo on the CPU, spawned here as torchrun would start them) against one.

Two ranks with per-rank batch b must follow one process with batch 2b: the same global batches
(the sampler's ``rank::world_size`` slices of one global order), gradients averaged over the ranks
(DistributedDataParallel for the whole network, an all-reduce for the classifier alone), hence the
same validation metrics and weights. The training set holds 48 examples and the global batch is 8,
so every step's global batch is full and each rank's half of it holds 4 (with a last partial batch
the two halves differ in size and the mean of per-rank means is not the global mean).

Also here: evaluation in shares (each rank's forward passes counted), the dataset-level OT
objectives, the feature store, SyncBatchNorm's refusal on CPU ranks, ``compare`` on 2 ranks against
1 process, and a ``torchrun`` job killed with SIGKILL mid-stage then resumed. One spawn of 2 ranks
(the ``two_ranks`` fixture) runs every 2-rank case; the torchrun test starts two jobs.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch import nn

from otreweight import FitConfig, compute_features, create_method, create_model, fit, predict_logits
from otreweight import distributed as dist
from otreweight.models import MODELS
from otreweight.models.base import FeatureClassifier

CASES = [("ce", "classifier"), ("ce", "all"), ("cb", "classifier"), ("cb", "all"), ("cb_resample", "all"),
         ("ot", "classifier"), ("ot", "all"), ("ot_normalized", "all"),
         ("ot_kl_dataset", "classifier"), ("ot_cc_dataset", "all")]
METHODS = {"ot_normalized": ("ot", {"weighting": "normalized"}),
           # the dataset-level objectives: the whole training set's features once per epoch, one solve
           "ot_kl_dataset": ("ot", {"objective": "kl_regularized", "scope": "dataset", "lam": 0.1}),
           "ot_cc_dataset": ("ot", {"objective": "class_conditional", "scope": "dataset", "lam": 0.1,
                                    "weighting": "normalized"})}


class PlainMLP(FeatureClassifier):
    """Linear-ReLU layers without batch norm: a batch's statistics do not depend on how it is split."""

    def __init__(self, d=5, h=12, k=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU())
        self.classifier = nn.Linear(h, k)

    def features(self, x):
        return self.backbone(x)


class CountingMLP(PlainMLP):
    """PlainMLP counting the rows of its evaluation (eval-mode) forward passes."""

    def __init__(self):
        super().__init__()
        self.eval_rows = 0

    def features(self, x):
        if not self.training:
            self.eval_rows += x.shape[0]
        return super().features(x)


if "ddp_plain_mlp" not in MODELS:  # a model without batch norm for the run configs below
    MODELS.register("ddp_plain_mlp")(lambda in_features, num_classes, hidden=12: PlainMLP(in_features, hidden,
                                                                                          num_classes))


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
            "initial": method.reweighter.initial_scores() if getattr(method, "reweighter", None) is not None else None,
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
        result = globals()[fn_name](Path(folder))
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
    out["shard"] = shard_cases()
    out["store"] = store_cases(folder)
    out["sync_bn"] = sync_bn_cases(folder)
    # the uninterrupted run of the kill -9 test below, on 2 ranks
    from otreweight.experiment import load_config, run_experiment

    run_experiment(load_config(write_config(folder, KILL_CONFIG, "uninterrupted")), log=lambda *a: None)
    from otreweight.compare import run_comparison

    try:  # a look-ahead method in a comparison: refused before anything runs
        run_comparison(load_config(write_config(folder, COMPARE_CONFIG, "compare_mwnet", "cmp.npz")), ["ce", "mwnet"],
                       seeds=(0,), output=folder / "compare_mwnet", log=lambda *a: None)
    except dist.OTReweightError as err:
        out["compare_mwnet"] = str(err)
    # last: the command line's compare (it leaves the process group when it ends)
    out["compare"] = run_compare_cli(folder, "compare2", batch=4)
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """One spawn of 2 gloo ranks running every 2-rank case (each spawn costs two interpreter starts)."""
    folder = tmp_path_factory.mktemp("two_ranks")
    write_vectors(folder / "vec.npz")
    write_vectors(folder / "cmp.npz", counts=(30, 16, 12))
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
            assert len(ranks[0][c]["scores"]) == 3 and not torch.equal(ranks[0][c]["initial"], ranks[0][c]["scores"][-1])
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


# stage 2 trains OT (classifier) for 6 epochs: long enough, with a pause per epoch, to be killed mid-stage
KILL_CONFIG = CONFIG.replace(
    "- {{name: cb_classifier, method: cb, trainable: classifier, epochs: 2, batch_size: 4, lr: 0.05}}",
    "- {{name: ot_classifier, method: ot, trainable: classifier, epochs: 6, batch_size: 4, lr: 0.005}}")
# compare: a model without batch norm; 40 training examples (a multiple of the global batch 8)
COMPARE_CONFIG = """
name: ddp_compare
seed: 0
device: cpu
threads: 1
progress: false
feature_store: off
data: {{source: {src}, profile: given, n_meta_per_class: 2, n_val_per_class: 4, normalize: true, augment: none}}
model: {{name: ddp_plain_mlp}}
stage1: {{epochs: 2, batch_size: 8, lr: 0.05, weight_decay: 0.0, warmup_epochs: 0, milestones: [], lr_factors: []}}
stage2:
- {{name: ot_classifier, method: ot, trainable: classifier, epochs: 2, batch_size: 8, lr: 0.005}}
output_dir: {out}
"""


def write_vectors(path, counts=(20, 20, 20)):
    """A tiny vector data set (3 classes, 4 features) as an .npz source."""
    rng = np.random.default_rng(0)
    y, yt = np.repeat(np.arange(3), counts), np.repeat(np.arange(3), 5)
    centers = rng.normal(0, 3, (3, 4))
    x = (centers[y] + rng.normal(0, 1, (y.size, 4))).astype(np.float32)
    xt = (centers[yt] + rng.normal(0, 1, (yt.size, 4))).astype(np.float32)
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


def write_config(folder, text, name, src="vec.npz"):
    """The config file ``name``; atomically, since every rank writes it and another may be reading it."""
    import os

    folder = Path(folder)
    path = folder / f"{name}.yaml"
    tmp = folder / f".{name}.{os.getpid()}.yaml"
    tmp.write_text(text.format(src=folder / src, out=folder / name))
    os.replace(tmp, path)
    return path


def run_compare_cli(folder, name, batch):
    """``otreweight compare`` of ce, cb and ot with per-process batch ``batch``; rank 0's stdout."""
    import contextlib
    import io

    from otreweight.cli import main

    import sys

    cfg = write_config(folder, COMPARE_CONFIG, name, "cmp.npz")
    watched, writes = str(folder / name), []

    def hook(event, a):  # files opened for writing, renamed or created below the comparison's folder
        if event == "open" and isinstance(a[0], (str, Path)) and str(a[0]).startswith(watched):
            if (any(c in a[1] for c in "wax+") if isinstance(a[1], str) else a[2] & (os.O_WRONLY | os.O_RDWR)):
                writes.append(str(a[0]))
        elif event in ("os.rename", "os.replace") and str(a[1]).startswith(watched):
            writes.append(str(a[1]))  # the destination
        elif event == "os.mkdir" and str(a[0]).startswith(watched):
            writes.append(str(a[0]))

    if dist.world_size() > 1:
        sys.addaudithook(hook)  # a spawned rank: the hook ends with the process
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["compare", "--config", str(cfg), "--methods", "ce,cb,ot", "--seeds", "0", "--output",
                   str(folder / name), "--set", f"stage1.batch_size={batch}", "--method-set", f"*.batch_size={batch}"])
    return {"rc": rc, "stdout": buf.getvalue(), "writes": list(writes)}


def torchrun(args, folder, tag, env_extra=None, popen=False):
    """``torchrun --nproc_per_node=2 tests/_torchrun_audit.py ...`` (2 gloo processes) on the CPU."""
    import subprocess
    import sys

    audit = Path(__file__).with_name("_torchrun_audit.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
           str(audit), str(folder / "run"), str(folder / f"writes_{tag}"), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", OTREWEIGHT_DIST_TIMEOUT="60", **(env_extra or {}),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    if popen:  # its own process group, so the whole job can be killed at once
        log = open(folder / f"{tag}.log", "w")
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def job_processes(root: int) -> list[int]:
    """``root`` and every process below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def test_torchrun_kill_then_resume_is_exact_and_rank0_alone_writes(two_ranks, tmp_path):
    """``torchrun --nproc_per_node=2 -m otreweight train``, the whole job killed with SIGKILL mid-stage
    (after a checkpoint of epoch >= 1 of stage 2), then ``--resume`` under torchrun: the same final
    metrics and OT weights as the uninterrupted 2-process run; rank 0 alone writes the run folder."""
    import signal
    import time

    if not os.path.isdir("/proc"):  # not Linux
        pytest.skip("finding torchrun's worker processes reads /proc")
    ranks, shared = two_ranks
    out = tmp_path / "run"
    cfg = write_config(tmp_path, KILL_CONFIG, "run", src=shared / "vec.npz")
    ckpt = out / "stage2_ot_classifier" / "checkpoint.pt"
    job = torchrun(["train", "--config", str(cfg)], tmp_path, "killed", {"OTREWEIGHT_TEST_EPOCH_SLEEP": "0.3", "PYTHONUNBUFFERED": "1"},
                   popen=True)
    deadline = time.monotonic() + 90
    while job.poll() is None and not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
    assert ckpt.exists(), "no stage-2 checkpoint within 90 s"
    pids = job_processes(job.pid)  # torchrun starts each rank in a session of its own: find them all
    assert len(pids) >= 3, pids  # torchrun and both ranks
    for pid in pids:  # then SIGKILL each, the ranks' process groups included
        try:
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait(timeout=30)
    killed_log = (tmp_path / "killed.log").read_text()
    assert not (out / "stage2_ot_classifier" / "final.json").exists()  # it was killed mid-stage
    assert killed_log.count("stage1 epoch 1/2") == 1  # rank 0 alone prints progress
    assert "global batch" in killed_log

    proc = torchrun(["train", "--config", str(cfg), "--resume"], tmp_path, "resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage1: finished earlier, skipped (--resume)" in proc.stdout
    assert "stage2_ot_classifier: resuming from epoch" in proc.stdout
    r0, r1 = (json.loads((tmp_path / f"writes_resumed{r}.json").read_text()) for r in (0, 1))
    assert r0["rc"] == r1["rc"] == 0
    assert r1["writes"] == [], r1["writes"][:5]
    written = {Path(p).name for _, p in r0["writes"]}
    assert {"config.yaml", "split.json", "results.json", "report.md", "metrics.jsonl", "best.pt", "final.json"} <= written
    assert "stage1: effective batch 2 process(es) x 8 x 1 accumulation = 16" in (out / "config.yaml").read_text()

    ref = shared / "uninterrupted"
    for stage in ("stage1", "stage2_ot_classifier"):
        got, want = (json.loads((d / stage / "final.json").read_text()) for d in (out, ref))
        assert (got["processes"], got["batch_size_per_process"], got["global_batch_size"]) == (2, 8 if stage == "stage1" else 4, 16 if stage == "stage1" else 8)
        for key in ("best", "last", "val_best", "best_epoch", "score_change"):
            assert got.get(key) == want.get(key), (stage, key)
        a, b = (np.load(d / stage / "predictions.npz") for d in (out, ref))
        assert all(np.array_equal(a[k], b[k]) for k in b.files)
    w_got, w_ref = (np.load(d / "stage2_ot_classifier" / "weights.npz") for d in (out, ref))
    assert np.array_equal(w_got["scores"], w_ref["scores"])
    assert not np.array_equal(w_got["scores"], w_got["initial"])  # the OT weights were learned
    history = [json.loads(line) for line in (out / "stage2_ot_classifier" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]


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


def shard_cases():
    """Evaluation in shares: each rank runs the forward pass of its rows, every rank gets them all."""
    torch.manual_seed(0)
    model = CountingMLP()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    out = {"logits": predict_logits(model, x, batch_size=2, shard=True), "rows7": model.eval_rows}
    model.eval_rows = 0
    out["features1"] = compute_features(model, x[:1], shard=True)  # a share of no row on rank 0
    out["rows1"] = model.eval_rows
    from otreweight.data.loaders import MemoryLoader

    model.eval_rows = 0
    out["loader_logits"] = predict_logits(model, MemoryLoader(x, torch.zeros(7, dtype=torch.long)), 3, shard=True)
    out["rows_loader"] = model.eval_rows
    out["fit"] = fit_counting(epochs=2)
    return out


def fit_counting(epochs):
    """A whole-network CE fit of CountingMLP: its validation metrics and the rows it evaluated."""
    train, val, _ = tiny_data()
    torch.manual_seed(0)
    model = CountingMLP()
    res = fit(model, create_method("ce"), train, val, config=FitConfig(epochs=epochs, batch_size=4 * (3 - dist.world_size()),
                                                                       lr=0.1, progress=False), device="cpu")
    rows = model.eval_rows
    from sklearn.metrics import confusion_matrix

    pred = predict_logits(model, torch.as_tensor(val[0]), 5, shard=True).argmax(1).numpy()  # shares of 18 rows
    return {"val": [r["val"] for r in res.history], "rows": rows, "pred": pred,
            "confusion": confusion_matrix(val[1], pred, labels=np.arange(3))}


def assert_same_tree(a, b, where="metrics"):
    """Nested dicts / lists of numbers equal to 1e-4, keys and lengths exactly."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), where
        for k in b:
            assert_same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, (list, tuple, np.ndarray)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    elif b is None or isinstance(b, str):
        assert a == b, where
    else:
        assert float(a) == pytest.approx(float(b), abs=1e-4, nan_ok=True), where


def test_evaluation_is_sharded_and_metrics_equal_one_process(two_ranks):
    ranks, _ = two_ranks
    torch.manual_seed(0)
    model = PlainMLP()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    want = predict_logits(model, x)
    for r, res in enumerate(ranks):
        got = res["shard"]
        torch.testing.assert_close(got["logits"], want, rtol=1e-6, atol=1e-6)  # every row, in id order
        torch.testing.assert_close(got["loader_logits"], want, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["features1"], compute_features(model, x[:1]), rtol=1e-6, atol=1e-6)
    # each rank ran the forward pass of its contiguous share only: 7 rows -> 3 + 4, 1 row -> 0 + 1
    assert [res["shard"]["rows7"] for res in ranks] == [3, 4]
    assert [res["shard"]["rows_loader"] for res in ranks] == [3, 4]
    assert [res["shard"]["rows1"] for res in ranks] == [0, 1]
    one = fit_counting(epochs=2)
    for res in ranks:
        got = res["shard"]["fit"]
        assert len(got["val"]) == len(one["val"]) == 2
        for a, b in zip(got["val"], one["val"]):  # every metric, per-class recalls included
            assert_same_tree(a, b)
        # the gathered predictions are the whole split's, in id order: the same confusion matrix
        assert np.array_equal(got["pred"], one["pred"]) and np.array_equal(got["confusion"], one["confusion"])
    # 18 validation rows per epoch: 9 per rank (plus the 2 rows of the model probe in setup)
    assert one["rows"] == 2 + 2 * 18
    assert [res["shard"]["fit"]["rows"] for res in ranks] == [2 + 2 * 9, 2 + 2 * 9]


def store_cases(folder):
    """The feature store under 2 ranks: computed in shares and written by rank 0 once, then read by all."""
    from otreweight.train.features import FeatureCache, FeatureStore

    writes = []
    write = FeatureStore._write

    def spy(self, path, feats):
        writes.append(path.name)
        write(self, path, feats)

    FeatureStore._write = spy
    try:
        runs = []
        for _ in range(2):
            train, val, _ = tiny_data()
            store = FeatureStore(folder / "store")
            torch.manual_seed(0)
            model = CountingMLP()
            res = fit(model, create_method("ce"), train, val, config=FitConfig(epochs=2, batch_size=4, lr=0.1,
                      trainable="classifier", progress=False), device="cpu", feature_cache=FeatureCache(store))
            runs.append({"hits": store.hits, "misses": store.misses, "rows": model.eval_rows,
                         "weights": res.last_state, "val": [r["val"] for r in res.history]})
            dist.barrier()
    finally:
        FeatureStore._write = write
    return {"runs": runs, "writes": writes}


def test_feature_store_under_two_ranks(two_ranks):
    ranks, folder = two_ranks
    train, val, _ = tiny_data()
    torch.manual_seed(0)
    model = PlainMLP()
    one = fit(model, create_method("ce"), train, val, config=FitConfig(epochs=2, batch_size=8, lr=0.1,
              trainable="classifier", progress=False), device="cpu")
    for r, res in enumerate(ranks):
        first, second = res["store"]["runs"]
        assert (first["misses"], first["hits"]) == (2, 0)  # training and validation features, computed
        assert (second["misses"], second["hits"]) == (0, 2)  # then read back by every rank
        # computed in shares the first time (48 + 18 rows over 2 ranks), not at all the second (the probe's 2)
        assert first["rows"] == 2 + 24 + 9 and second["rows"] == 2
        for run in (first, second):
            for k, w in one.last_state.items():
                torch.testing.assert_close(run["weights"][k], w, rtol=1e-5, atol=1e-6)
    assert len(ranks[0]["store"]["writes"]) == 2 and ranks[1]["store"]["writes"] == []  # rank 0 alone writes
    assert len(list((folder / "store").glob("*.npy"))) == 2


def sync_bn_cases(folder):
    """SyncBatchNorm on 2 CPU ranks: refused with one line; the conversion itself and its undoing."""
    from otreweight.experiment import load_config, run_experiment

    out = {}
    train, val, _ = tiny_data()
    torch.manual_seed(0)
    bn = create_model("mlp", in_features=5, num_classes=3, hidden=(8,))
    try:
        fit(bn, create_method("ce"), train, val, config=FitConfig(epochs=1, batch_size=4, progress=False,
                                                                  sync_batchnorm=True), device="cpu")
    except dist.OTReweightError as err:
        out["fit_error"] = str(err)
    try:  # a run refuses before loading its data (the source does not exist)
        run_experiment(load_config(write_config(folder, CONFIG, "syncbn", src="missing.npz"), ["sync_batchnorm=true"]))
    except dist.OTReweightError as err:
        out["run_error"] = str(err)
    layer = bn.backbone[2]
    swaps = dist.convert_sync_batchnorm(bn)
    out["converted"] = type(bn.backbone[2]).__name__
    out["shares_weight"] = bn.backbone[2].weight is layer.weight
    dist.restore_batchnorm(swaps)
    out["restored"] = bn.backbone[2] is layer
    return out


def test_sync_batchnorm_refused_on_cpu_ranks_and_a_no_op_in_one_process(two_ranks):
    ranks, _ = two_ranks
    for res in ranks:
        got = res["sync_bn"]
        for key in ("fit_error", "run_error"):
            assert got[key].startswith("sync_batchnorm needs CUDA devices"), got.get(key)
            assert "\n" not in got[key]
        assert got["converted"] == "SyncBatchNorm" and got["shares_weight"] and got["restored"]
    # one process: the option changes nothing (no layer is converted)
    train, val, _ = tiny_data()
    states = []
    for sync in (False, True):
        torch.manual_seed(0)
        bn = create_model("mlp", in_features=5, num_classes=3, hidden=(8,))
        states.append(fit(bn, create_method("ce"), train, val, config=FitConfig(
            epochs=1, batch_size=8, progress=False, sync_batchnorm=sync), device="cpu").last_state)
        assert type(bn.backbone[2]).__name__ == "BatchNorm1d"
    for k, v in states[0].items():
        assert torch.equal(states[1][k], v), k


def test_compare_under_two_ranks_gives_the_one_process_table(two_ranks, tmp_path):
    """``otreweight compare`` of ce, cb and ot on 2 ranks at batch 4 against 1 process at batch 8."""
    import csv

    ranks, folder = two_ranks
    assert [r["compare"]["rc"] for r in ranks] == [0, 0]
    assert "| ot |" in ranks[0]["compare"]["stdout"] and ranks[1]["compare"]["stdout"] == ""  # rank 0 prints
    written = {Path(p).name for p in ranks[0]["compare"]["writes"]}
    assert {"compare.json", "compare.md", "compare.csv", "final.json", "weights.npz"} <= written, written
    assert ranks[1]["compare"]["writes"] == []  # and rank 0 alone writes
    (tmp_path / "cmp.npz").write_bytes((folder / "cmp.npz").read_bytes())
    one = run_compare_cli(tmp_path, "compare1", batch=8)
    assert one["rc"] == 0

    def table(path):
        with open(path) as fh:
            return {r["method"]: r for r in csv.DictReader(fh)}

    got, want = table(folder / "compare2" / "compare.csv"), table(tmp_path / "compare1" / "compare.csv")
    assert list(got) == list(want) == ["ce", "cb", "ot"]
    for method, row in want.items():
        for key in ("accuracy", "balanced_accuracy", "many", "medium", "few"):
            a, b = got[method][f"{key}_mean"], row[f"{key}_mean"]
            assert (a == b == "") or float(a) == pytest.approx(float(b), abs=1e-4), (method, key)
    train = json.loads((folder / "compare2" / "seed_0" / "split.json").read_text())["train_counts"]
    assert sum(train) % 8 == 0  # every global batch full, so 2 x 4 is exactly 1 x 8
    final = json.loads((folder / "compare2" / "seed_0" / "stage2_ot" / "final.json").read_text())
    assert (final["processes"], final["global_batch_size"]) == (2, 8)
    w2, w1 = (np.load(d / "seed_0" / "stage2_ot" / "weights.npz")["scores"]
              for d in (folder / "compare2", tmp_path / "compare1"))
    np.testing.assert_allclose(w2, w1, rtol=0, atol=1e-6)


def test_compare_refuses_look_ahead_methods_on_several_ranks(two_ranks):
    ranks, _ = two_ranks
    for r in ranks:
        assert r["compare_mwnet"].startswith("method(s) mwnet cannot run on several processes yet"), r["compare_mwnet"]
