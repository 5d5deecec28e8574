"""Several processes under ``torchrun``: the process group, this process's rank, rank-0 writing.

``torchrun --nproc_per_node=N -m otreweight train ...`` starts N processes and tells each, through
its environment, who it is: ``RANK`` (0..WORLD_SIZE-1 over all nodes), ``LOCAL_RANK`` (on this
node), ``WORLD_SIZE`` and the rendezvous address ``MASTER_ADDR`` / ``MASTER_PORT``. :func:`init`
reads them and joins the process group: NCCL when the process trains on a CUDA device (device
``cuda:LOCAL_RANK``, one per local rank), gloo on the CPU. Without those variables, or with
``WORLD_SIZE=1``, nothing is initialised and every helper here is the single-process identity
(``rank() == 0``, ``world_size() == 1``, ``barrier()`` does nothing, ``all_gather(t)`` is ``t``).

Every collective has a timeout (``OTREWEIGHT_DIST_TIMEOUT`` seconds, default 600): a rank that
crashed makes the others fail at their next collective with an error instead of waiting forever,
and torchrun then stops the whole job.

How the loop uses it (:mod:`otreweight.train.loop`): every rank draws the same global order of
examples from the same seeded generator and takes the slice ``rank::world_size``, so one step's
global batch is the per-rank batch times the world size; gradients are averaged over the ranks
(``DistributedDataParallel`` for the whole network, :func:`average_gradients` for the classifier
alone). With equal per-rank batches the average of per-rank mean losses is the mean loss over the
global batch, so N processes with batch b follow the run of one process with batch N x b.
Whole splits (validation, test, the training features of the dataset-level OT objectives, frozen
features) are evaluated in shares: each rank runs the rows of :func:`shard` and
:func:`all_gather_rows` puts them back in id order on every rank, so metrics computed from the
gathered predictions are the one-process ones. :func:`convert_sync_batchnorm` (the run's
``sync_batchnorm``) normalises batch norm over the global batch on CUDA devices.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ._errors import OTReweightError

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def env() -> dict | None:
    """torchrun's variables as ints/strings, or ``None`` for a single process (unset or ``WORLD_SIZE=1``)."""
    ws = os.environ.get("WORLD_SIZE")
    if ws is None:
        return None
    try:
        world = int(ws)
    except ValueError:
        raise OTReweightError(f"WORLD_SIZE={ws!r} is not an integer; start several processes with torchrun") from None
    if world <= 1:
        return None
    missing = [k for k in ENV_KEYS if k not in os.environ]
    if missing:
        raise OTReweightError(f"WORLD_SIZE={world} but {', '.join(missing)} are not set; start the processes with "
                              "torchrun (e.g. torchrun --nproc_per_node=2 -m otreweight train ...)")
    try:
        rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise OTReweightError("RANK and LOCAL_RANK must be integers; start the processes with torchrun") from None
    if not 0 <= rank < world:
        raise OTReweightError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return {"rank": rank, "local_rank": local, "world_size": world,
            "master_addr": os.environ["MASTER_ADDR"], "master_port": os.environ["MASTER_PORT"]}


def timeout_seconds() -> float:
    v = os.environ.get("OTREWEIGHT_DIST_TIMEOUT", "600")
    try:
        s = float(v)
    except ValueError:
        raise OTReweightError(f"OTREWEIGHT_DIST_TIMEOUT={v!r} is not a number of seconds") from None
    if s <= 0:
        raise OTReweightError(f"OTREWEIGHT_DIST_TIMEOUT must be > 0 seconds, got {v}")
    return s


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(device: str = "auto") -> dict | None:
    """Join the process group described by torchrun's environment (see the module docstring).

    ``device``: the run's device setting; ``auto`` or ``cuda`` with CUDA available means NCCL and
    ``cuda:LOCAL_RANK``, anything else gloo. Returns the environment (``None``: one process, nothing
    done). Calling it again in an initialised process does nothing.
    """
    e = env()
    if e is None or is_initialized():
        return e
    if not dist.is_available():
        raise OTReweightError("this torch build has no torch.distributed; run one process, without torchrun")
    cuda = torch.cuda.is_available() and str(device) in ("auto", "cuda")
    if cuda:
        if e["local_rank"] >= torch.cuda.device_count():
            raise OTReweightError(f"LOCAL_RANK={e['local_rank']} but this node has {torch.cuda.device_count()} "
                                  "GPU(s); start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(e["local_rank"])
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=e["rank"], world_size=e["world_size"],
                            timeout=datetime.timedelta(seconds=timeout_seconds()))
    e["backend"] = backend
    return e


def local_device(device="auto"):
    """The device of this process: ``cuda:LOCAL_RANK`` under torchrun with CUDA, else ``device``."""
    from .utils import pick_device

    e = env()
    if e is not None and torch.cuda.is_available() and str(device) in ("auto", "cuda"):
        return torch.device("cuda", e["local_rank"])
    return pick_device(device)


def backend() -> str:
    """The process group's backend (``nccl`` or ``gloo``), ``none`` with one process."""
    return str(dist.get_backend()) if is_initialized() else "none"


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes files and prints progress (rank 0, or the only process)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank arrives here (nothing with one process)."""
    if world_size() > 1:
        dist.barrier()


def all_gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` of every rank concatenated along dim 0 in rank order (``t`` itself with one process).
    Every rank must pass a tensor of the same shape."""
    n = world_size()
    if n == 1:
        return t
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(n)]
    dist.all_gather(parts, t)
    return torch.cat(parts)


def gather_batch(*tensors: torch.Tensor):
    """Every rank's part of one step's global batch, in the order of the global batch.

    Rank ``r`` holds the examples at positions ``i * world_size + r`` of the global batch (the
    sampler's slice ``rank::world_size``); the parts may differ in length by the last batch. Returns
    ``(gathered, local)``: each tensor's rows of the whole global batch in that order (the order one
    process with the global batch would see), and the positions of this rank's rows in it. With one
    process: ``(tensors, None)``. Every rank receives the same tensors.
    """
    n = world_size()
    if n == 1:
        return tensors, None
    first = tensors[0]
    sizes = all_gather(torch.tensor([first.shape[0]], device=first.device))
    m = int(sizes.max())
    valid = (torch.arange(m, device=first.device)[:, None] < sizes[None, :]).reshape(-1)  # (m * n,): position i*n+r
    gathered = []
    for t in tensors:
        pad = t.new_zeros((m - t.shape[0], *t.shape[1:]))
        g = all_gather(torch.cat([t, pad])[None])  # (n, m, ...)
        gathered.append(g.transpose(0, 1).reshape(m * n, *t.shape[1:])[valid])
    pos = (torch.cumsum(valid.long(), 0) - 1).view(m, n)
    return tuple(gathered), pos[: first.shape[0], rank()]


def shard(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows in id order: rows ``n*r//W`` up to ``n*(r+1)//W``
    (``slice(0, n)`` with one process). The shares of the ranks, in rank order, are ``0..n-1``."""
    w, r = world_size(), rank()
    return slice(n * r // w, n * (r + 1) // w)


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of ``t`` concatenated in rank order (``t`` itself with one process).

    The ranks may hold different numbers of rows (none included); the other dimensions and the
    dtype must agree. With :func:`shard`, this puts a split's rows back in id order."""
    n = world_size()
    if n == 1:
        return t
    sizes = all_gather(torch.tensor([t.shape[0]], device=t.device)).tolist()
    m = max(sizes)
    if m == 0:
        return t
    padded = torch.cat([t, t.new_zeros((m - t.shape[0], *t.shape[1:]))]) if t.shape[0] < m else t
    g = all_gather(padded)  # (n * m, ...)
    return torch.cat([g[i * m : i * m + s] for i, s in enumerate(sizes)])


def all_true(flag: bool, device="cpu") -> bool:
    """Whether ``flag`` holds on every rank (``flag`` itself with one process); a collective."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    return int(all_reduce_sum(t)) == world_size()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (in place; ``t`` itself with one process)."""
    if world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(params) -> None:
    """Replace every parameter's gradient by its mean over the ranks (one flat all-reduce)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= n
    o = 0
    for g in grads:
        g.copy_(flat[o : o + g.numel()].view_as(g))
        o += g.numel()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics, which each rank updates from
    its own part of the batch), so all ranks hold the same model (nothing with one process)."""
    if world_size() == 1:
        return
    for b in model.buffers():
        dist.broadcast(b.data, src=0)


class FeaturesAndLogits(torch.nn.Module):
    """``x -> (model.features(x), model.classifier(features))`` as one module, so
    ``DistributedDataParallel`` sees the whole forward pass and averages every gradient."""

    def __init__(self, model: torch.nn.Module, features_fn=None) -> None:
        super().__init__()
        self.model = model
        self.features_fn = features_fn or model.features

    def forward(self, x):
        f = self.features_fn(x)
        return f, self.model.classifier(f)


def wrap_ddp(model: torch.nn.Module, device: torch.device, features_fn=None):
    """``model`` wrapped for whole-network training on several ranks (``None`` with one process)."""
    if world_size() == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(FeaturesAndLogits(model, features_fn), device_ids=ids)


def check_sync_batchnorm(device) -> None:
    """One line, before any training, when SyncBatchNorm is asked for where it cannot run: several
    processes on another device than CUDA (torch.nn.SyncBatchNorm refuses CPU tensors)."""
    if world_size() > 1 and torch.device(device).type != "cuda":
        raise OTReweightError("sync_batchnorm needs CUDA devices (torch.nn.SyncBatchNorm does not run on CPU tensors); "
                              "set sync_batchnorm: false to train on the CPU (each process then normalises its own part "
                              "of the global batch, and rank 0's running statistics are sent to all after each epoch)")


def convert_sync_batchnorm(model: torch.nn.Module) -> list:
    """Replace every batch-norm layer of ``model`` in place by a ``torch.nn.SyncBatchNorm`` sharing its
    parameters and buffers (statistics over the global batch, under several processes); returns what
    :func:`restore_batchnorm` needs to put the original layers back. Nothing with one process."""
    if world_size() == 1:
        return []
    swaps = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(child, torch.nn.SyncBatchNorm):
                sync = torch.nn.SyncBatchNorm.convert_sync_batchnorm(child)
                setattr(parent, name, sync)
                swaps.append((parent, name, child))
    return swaps


def restore_batchnorm(swaps: list) -> None:
    """Undo :func:`convert_sync_batchnorm`: the original layers back, holding the trained state."""
    for parent, name, original in reversed(swaps):
        original.load_state_dict(getattr(parent, name).state_dict())
        original.train(getattr(parent, name).training)
        setattr(parent, name, original)


_ERROR_STORE: list = []  # rank 0's view of torchrun's store after a one-line error


def error_line(message: str) -> str | None:
    """The line this process prints for a one-line error under torchrun, or ``None`` to stay quiet.

    Every rank usually meets the same error (a bad config, a missing file): rank 0 alone prints it.
    Rank 0 posts its message to torchrun's key-value store (``MASTER_ADDR:MASTER_PORT``, reachable
    before and after the process group exists); another rank stays quiet when rank 0 posts the same
    message within a few seconds and otherwise prints its own, marked with its rank (an error of that
    rank alone). Rank 0 returns once every rank has reported (at most 30 s), and a rank
    that the launcher stops while it reports exits with status 2 all the same, so every rank of a
    failed start ends with status 2. One process: the message as it is."""
    try:
        e = env()
    except OTReweightError:
        return message
    if e is None:
        return message
    import signal

    try:  # torchrun stops the other ranks once one has exited: they end with status 2 all the same
        signal.signal(signal.SIGTERM, lambda *_: os._exit(2))
    except ValueError:  # not the main thread
        pass
    try:
        from datetime import timedelta

        wait = timedelta(seconds=5)
        store = dist.PrefixStore("otreweight/error", dist.TCPStore(
            e["master_addr"], int(e["master_port"]), is_master=False, timeout=timedelta(seconds=30)))
        store.set(str(e["rank"]), message)
        if e["rank"] == 0:
            _ERROR_STORE.append(store)  # exit_if_launched waits for the other ranks' reports
            return message
        store.wait(["0"], wait)
        same = store.get("0").decode() == message
    except Exception:  # noqa: BLE001 - no store (not started by torchrun): rank 0 speaks for all
        same = True
    return None if same or e["rank"] == 0 else f"rank {e['rank']}: {message}"


def exit_if_launched(status: int) -> None:
    """Under torchrun, end this rank now with ``status`` (after its one-line error): the launcher stops
    the other ranks as soon as one has exited, so a rank still tearing down would end by SIGTERM."""
    try:
        launched = env() is not None
    except OTReweightError:
        launched = False
    if launched:
        import sys
        import time
        from datetime import timedelta

        sys.stdout.flush()
        sys.stderr.flush()
        if _ERROR_STORE:  # rank 0: the others report before it exits (and torchrun stops them)
            try:
                _ERROR_STORE[0].wait([str(r) for r in range(1, int(os.environ["WORLD_SIZE"]))], timedelta(seconds=30))
                time.sleep(0.5)  # ... and have exited
            except Exception:  # noqa: BLE001 - a rank that did not fail: rank 0 exits after the wait
                pass
        os._exit(status)


def finish() -> None:
    """Leave the process group (after a run under torchrun)."""
    if is_initialized():
        dist.destroy_process_group()


__all__ = ["FeaturesAndLogits", "all_gather", "all_gather_rows", "all_reduce_sum", "all_true", "average_gradients",
           "backend", "barrier", "broadcast_buffers", "check_sync_batchnorm", "convert_sync_batchnorm", "env",
           "error_line", "exit_if_launched", "finish", "gather_batch", "init", "is_initialized", "is_main", "local_device", "rank", "restore_batchnorm",
           "shard", "world_size", "wrap_ddp"]
