"""Checkpoints of a training stage: written atomically every epoch, read back for an exact resume.

A checkpoint holds the model, optimiser and scheduler states, the method's own state (the OT
scores), the loop's RNG states, the history and the best (validation-selected) state so far. It is
written to a temporary file beside the target and renamed over it, so a kill at any moment leaves
either the previous checkpoint or the new one, never a torn file.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .._errors import OTReweightError
from ..config import FitConfig, resume_keys
from ..distributed import world_size
from ..utils import atomic_save, rng_state, set_rng_state


def save_checkpoint(path, epoch: int, config: FitConfig, model, optimizer, scheduler, method, gen, result) -> None:
    """Write the state after ``epoch`` (1-based) epochs to ``path`` atomically."""
    atomic_save(
        {
            "epoch": epoch, "config": config.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "method": method.state_dict(), "rng": rng_state(gen), "history": result.history,
            "best_epoch": result.best_epoch, "best_score": result.best_score, "best_state": result.best_state,
            "world_size": world_size(),
        },
        path,
    )


def read_checkpoint(path, map_location="cpu") -> dict:
    """The checkpoint at ``path``, or a one-line error for a damaged or foreign file. Read with
    ``torch.load(weights_only=True)``: tensors and plain Python values only, never code."""
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal below is the one line
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        if "weights only" not in str(err).lower():
            raise OTReweightError(f"cannot read checkpoint {path} ({type(err).__name__}); delete it or start without "
                                  "--resume") from None
        raise OTReweightError(f"checkpoint {path} cannot be loaded safely (it holds Python objects beyond tensors "
                              "and plain values, which could run code); delete it or start without --resume") from None
    if not isinstance(ck, dict) or not {"epoch", "model", "optimizer", "history"} <= set(ck):
        raise OTReweightError(f"{path} is not a training checkpoint written by otreweight; delete it or start without --resume")
    return ck


def load_checkpoint(path, config: FitConfig, model, optimizer, scheduler, method, gen, result) -> int:
    """Restore every state from ``path``; return the number of finished epochs. Refuses a checkpoint
    written with other settings (the fields marked ``resume`` in :class:`FitConfig`)."""
    ck = read_checkpoint(path, next(model.parameters()).device)
    old = ck.get("config", {})
    new = config.to_dict()
    changed = [k for k in resume_keys() if k in old and old[k] != new[k]]
    if changed:
        raise OTReweightError(
            f"checkpoint {path} was written with different settings ({', '.join(changed)}); "
            "use a new output folder or start without --resume"
        )
    if int(ck.get("world_size", 1)) != world_size():
        raise OTReweightError(
            f"checkpoint {path} was written by {ck.get('world_size', 1)} process(es) and this run has {world_size()}: "
            "their batches differ; resume with the same number of processes (torchrun --nproc_per_node)"
        )
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    method.load_state_dict(ck["method"])
    set_rng_state(gen, ck["rng"])
    result.history = list(ck["history"])
    result.best_epoch, result.best_score, result.best_state = ck["best_epoch"], ck["best_score"], ck["best_state"]
    return int(ck["epoch"])


def exists(path) -> bool:
    return path is not None and Path(path).exists()


__all__ = ["exists", "load_checkpoint", "read_checkpoint", "save_checkpoint"]
