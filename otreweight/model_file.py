"""A stage's model for sharing: ``model.safetensors`` (the weights) + ``model.json`` (its card).

Reading a model never runs code: the weights are read by ``safetensors`` (tensors only), the card
by ``json``; a pickled ``best.pt`` of an earlier version is read only through
``torch.load(weights_only=True)`` (tensors and plain Python values) and refused in one line when
it holds anything else. The card holds what rebuilding and scoring the model takes (model name and
options, classes, the input modality and its normalisation statistics, training counts, the
many/few thresholds) and what documents it (the config, the data fingerprint, the stage's test
metrics, the versions of otreweight and torch, the command that trained it).

``read_model(path)`` takes the card, the weights file or the stage folder holding them (or an old
``best.pt``) and returns the bundle ``{"model", "num_classes", "classes", "input", "train_counts",
"thresholds", "state_dict", ...}``.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from ._errors import OTReweightError
from .utils import atomic_save, atomic_write

WEIGHTS, CARD = "model.safetensors", "model.json"
FORMAT = "otreweight-model"
#: the card's keys that rebuilding and scoring a model needs, with their JSON types
REQUIRED = {"model": dict, "num_classes": int, "classes": list, "input": dict, "train_counts": list, "thresholds": dict}


def save_model(bundle: dict, folder) -> Path:
    """Write ``bundle`` (its ``state_dict`` and JSON-serialisable rest) as ``folder/model.safetensors``
    and ``folder/model.json``, each atomically (weights first: a card always has its weights);
    returns the card's path."""
    from safetensors.torch import save

    import otreweight

    folder = Path(folder)
    # one contiguous CPU copy per entry: tied weights (shared storage) are stored once each
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in bundle["state_dict"].items()}
    # safetensors reads entries back in no fixed order: the card's order restores the model's
    data = save(tensors, metadata={"format": FORMAT, "order": json.dumps(list(tensors))})
    atomic_write(folder / WEIGHTS, lambda fh: fh.write(data))
    card = {"format": FORMAT, "format_version": 1, "weights": WEIGHTS}
    card.update({k: v for k, v in bundle.items() if k != "state_dict"})
    card.setdefault("versions", {"otreweight": otreweight.__version__, "torch": torch.__version__})
    card.setdefault("command", " ".join(["otreweight" if i == 0 else a for i, a in enumerate(sys.argv)]))
    atomic_save(json.dumps(card, indent=2, default=_plain), folder / CARD)
    return folder / CARD


def _plain(o):
    import numpy as np

    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} cannot be written into {CARD}")


def _kind(p: Path) -> str:
    """What ``p`` holds by its first bytes: ``json``, ``safetensors``, ``torch`` (zip or pickle) or ``?``."""
    with open(p, "rb") as fh:
        head = fh.read(16)
    size = p.stat().st_size
    if len(head) >= 9 and head[8:9] == b"{" and 8 < int.from_bytes(head[:8], "little") + 8 <= size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if head.lstrip()[:1] in (b"{", b"[") or p.suffix == ".json":
        return "json"
    return "?"


def read_model(path) -> dict:
    """The bundle saved at ``path`` (a card, its weights file, the stage folder or an old ``best.pt``),
    or a one-line error naming the file and what is wrong with it."""
    p = Path(path)
    if p.is_dir():
        if (p / CARD).exists():
            p = p / CARD
        elif (p / "best.pt").exists():
            p = p / "best.pt"
        else:
            raise OTReweightError(f"{p} holds no {CARD} (a stage folder of `otreweight train` does)")
    if not p.exists():
        raise OTReweightError(f"model file {p} does not exist")
    try:
        kind = _kind(p)
    except OSError as err:
        raise OTReweightError(f"cannot read {p} ({err.strerror or type(err).__name__})") from None
    if kind == "torch":
        return _read_pickled(p)
    if kind == "safetensors":
        card = p.with_name(CARD)
        if not card.exists():
            raise OTReweightError(f"{p} has no {CARD} beside it; keep the card written with the weights")
        return _read_card(card, p)
    if kind == "json":
        return _read_card(p, None)
    raise OTReweightError(f"{p} is not a model written by otreweight ({CARD} + {WEIGHTS}, or an old best.pt)")


def _read_card(card: Path, weights: Path | None) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        meta = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise OTReweightError(f"{card} is not a readable model card ({type(err).__name__}); "
                              f"copy it again from the run folder") from None
    wrong = ([] if isinstance(meta, dict) else ["the top level"]) or [
        k for k, t in REQUIRED.items() if not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)]
    if not wrong and not isinstance(meta["model"].get("name"), str):
        wrong = ["model.name"]
    if wrong or meta.get("format") != FORMAT:
        what = f"{', '.join(wrong)} missing or of the wrong type" if wrong else f"no \"format\": \"{FORMAT}\""
        raise OTReweightError(f"{card} is not a model card written by otreweight ({what})")
    if weights is None:
        name = meta.get("weights", WEIGHTS)
        if not isinstance(name, str) or Path(name).name != name:
            raise OTReweightError(f"{card}: \"weights\" must name a file beside the card")
        weights = card.with_name(name)
    if not weights.exists():
        raise OTReweightError(f"the weights {weights} of {card} do not exist; copy them with the card")
    try:
        state = load(weights.read_bytes())
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise OTReweightError(f"{weights} is not a readable safetensors file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else 'damaged'}); copy it again") from None
    meta["state_dict"] = _in_saved_order(state, weights)
    return meta


def _in_saved_order(state: dict, weights: Path) -> dict:
    """``state`` in the order its entries were saved (the header's ``order``), else sorted by name."""
    try:
        with open(weights, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        order = json.loads(header.get("__metadata__", {}).get("order", "[]"))
    except (OSError, ValueError, AttributeError, TypeError):
        order = []
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(state):
        order = sorted(state)
    return {k: state[k] for k in order}


def _read_pickled(p: Path) -> dict:
    """An old ``best.pt``: tensors and plain values only (``torch.load(weights_only=True)``)."""
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal below is the one line
            warnings.simplefilter("ignore")
            bundle = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated or foreign bytes: one line
        if "weights only" not in str(err).lower():
            raise OTReweightError(f"cannot read {p} ({type(err).__name__}); it is damaged or not a model written "
                                  f"by otreweight") from None
        culprit = str(err).split("Unsupported global: GLOBAL ")[-1].split(" ")[0] if "GLOBAL" in str(err) else ""
        raise OTReweightError(
            f"{p} cannot be loaded safely: it holds Python objects beyond tensors and plain values"
            f"{f' ({culprit})' if culprit else ''}, which could run code; if you trust its source, load it with the "
            f"version that wrote it (torch.load(..., weights_only=False)) and save it with "
            f"otreweight.save_model(bundle, folder) as {WEIGHTS} + {CARD}"
        ) from None
    if not isinstance(bundle, dict) or "state_dict" not in bundle or "model" not in bundle:
        raise OTReweightError(f"{p} is not a model written by otreweight (use a stage's {CARD})")
    return bundle


__all__ = ["CARD", "WEIGHTS", "read_model", "save_model"]
