"""A stage's model: built from the registry for the data's inputs, its shareable card
(:mod:`otreweight.model_file`), and read back for scoring (:func:`load_model`)."""
from __future__ import annotations

import inspect

from .._errors import OTReweightError
from ..model_file import read_model
from ..data.modalities import input_kinds
from ..models import MODELS, create_model
from ..registry import check_options
from ..utils import pick_device


def build_model(name: str, options: dict, num_classes: int, input_kwargs: dict):
    """Create a registered model, passing ``in_channels`` / ``in_features`` where its factory takes them."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    kw = {k: v for k, v in input_kwargs.items() if k in params}
    kinds = input_kinds()  # {factory argument: modality}, the registered modalities' model_input
    needed = [k for k in kinds if k in params and params[k].default is inspect.Parameter.empty
              and k not in kw and k not in (options or {})]
    if needed and input_kwargs:
        given = next((kinds[k] for k in input_kwargs if k in kinds), "these")
        raise OTReweightError(f"model {name!r} takes {kinds[needed[0]]} inputs ({needed[0]}) but the data are "
                              f"{given} inputs; choose a model for {given} data")
    kw.update(options or {})
    check_options(f"model {name!r}", factory, {"num_classes": num_classes, **kw})
    return create_model(name, num_classes=num_classes, **kw)


def model_card(cfg, prep) -> dict:
    """A run's model card (:mod:`otreweight.model_file`) without the weights and the stage's metrics:
    what ``otreweight evaluate`` needs to rebuild and score a model on new data, and what documents it."""
    return {
        "model": {"name": cfg.model.name, "options": cfg.model.options or {}},
        "num_classes": len(prep.classes),
        "classes": prep.classes,
        "input": {"modality": prep.modality.name, "modality_options": dict(prep.modality_options),
                  "stats": prep.stats, "mean": prep.mean, "std": prep.std,
                  "is_image": prep.modality.name == "image", **prep.model_kwargs(),
                  "model_kwargs": prep.model_kwargs(),
                  "source": str(cfg.data.source), "source_options": dict(cfg.data.source_options or {})},
        "train_counts": prep.split.train_counts.tolist(),
        "thresholds": {"many": cfg.data.many_threshold, "few": cfg.data.few_threshold},
        "config": cfg.to_dict(),
        "data_fingerprint": prep.fingerprint,
    }


def input_kwargs(inp: dict) -> dict:
    """The model factory's input arguments saved in a bundle's ``input``."""
    if "model_kwargs" in inp:
        return dict(inp["model_kwargs"])
    return {k: inp[k] for k in input_kinds() if k in inp}  # checkpoints written before model_kwargs was saved


def load_model(path, device="cpu"):
    """The model saved by a stage (its ``model.json``, ``model.safetensors``, folder, or an old ``best.pt``) on ``device``, in eval mode, and the checkpoint's bundle
    (``classes``, ``input`` modality and statistics, ``train_counts``, thresholds)."""
    bundle = read_model(path)
    inp = bundle["input"]
    options = dict(bundle["model"]["options"] or {})
    if "pretrained" in options:  # the state dict holds every weight: no download, no weights file needed
        options["pretrained"] = False
    options.pop("checkpoint", None)
    model = build_model(bundle["model"]["name"], options, bundle["num_classes"], input_kwargs(inp))
    model.load_state_dict(bundle["state_dict"])
    return model.to(pick_device(device)).eval(), bundle

