"""Scoring a saved model on a data source (``otreweight evaluate``), optionally under a deployment prior."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._errors import OTReweightError, check_choice
from ..data.dataset import example_shape
from ..data.loaders import build_loader
from ..data.modalities import get_modality
from ..data.sources import load_dataset
from ..metrics import classification_metrics
from ..train import predict_logits
from ..utils import pick_device
from .bundle import input_kwargs, load_model

def evaluate_checkpoint(path, source: str, root=None, split: str = "test", device="auto", download=True,
                        cache_dir=None, prior=None, adjust: bool = False, model_prior: str = "train") -> dict:
    """Score a stage's saved model (see :func:`load_model`) on a data source's ``test`` (or ``train``) split; returns the metrics.

    ``prior`` (a deployment prior, :mod:`otreweight.prior`): ``"uniform"``, ``"train"`` (the
    model's training class frequencies), ``"estimate"`` (EM of Saerens et al. on the scored
    split's probabilities, ``model_prior`` as the source prior), a file of K numbers, or a vector.
    Adds ``prior_accuracy`` (per-class accuracies weighted by the prior) and ``prior``; with
    ``adjust`` the predictions are first logit-adjusted from ``model_prior`` (``"train"``: a
    cross-entropy model; ``"uniform"``: a model trained to be balanced) toward the prior.
    """
    from .. import prior as priors

    check_choice("split", split, ("test", "train"))
    check_choice("model prior", model_prior, ("train", "uniform"))
    if adjust and prior is None:
        raise OTReweightError("--adjust-to-prior needs a target prior (--prior uniform|train|estimate|FILE)")
    dev = pick_device(device)
    model, bundle = load_model(path, dev)
    k_model = bundle["num_classes"]
    counts = np.maximum(np.asarray(bundle["train_counts"], dtype=np.float64), 1.0)
    source_prior = counts / counts.sum() if model_prior == "train" else np.full(k_model, 1.0 / k_model)
    target = None
    if isinstance(prior, str) and prior in ("uniform", "train"):
        target = np.full(k_model, 1.0 / k_model) if prior == "uniform" else counts / counts.sum()
    elif isinstance(prior, (str, Path)) and prior != "estimate":
        target = priors.read_prior(prior, bundle.get("classes"))
    elif prior is not None and prior != "estimate":
        target = priors.check_prior(prior, k_model)
    inp = bundle["input"]
    kwargs = input_kwargs(inp)
    # the source's options of the training run (e.g. n_points) when scoring on a source of the same name
    same = str(source).lower() == str(inp.get("source", "")).lower()
    opts = (inp.get("source_options") or {}) if same else {}
    ds = load_dataset(source, root=root, download=download, cache_dir=cache_dir, **opts)
    if ds.num_classes != bundle["num_classes"]:
        raise OTReweightError(
            f"{source} has {ds.num_classes} classes but the checkpoint was trained on {bundle['num_classes']}"
        )
    data = ds.split(split)
    modality = get_modality(inp.get("modality") or ("image" if inp.get("is_image") else "vector"),
                            **inp.get("modality_options", {}))
    stats = inp.get("stats") or {"mean": inp["mean"], "std": inp["std"]}
    if ds.modality != modality.name:
        raise OTReweightError(f"the checkpoint was trained on {modality.name} inputs but {source} holds "
                              f"{ds.modality} inputs; evaluate it on data of the kind it was trained on")
    wanted = modality.model_kwargs(example_shape(data), stats)
    if any(kwargs.get(k) != v for k, v in wanted.items()):
        have = ", ".join(f"{k}={v}" for k, v in wanted.items())
        was = ", ".join(f"{k}={kwargs.get(k)}" for k in wanted)
        raise OTReweightError(f"{source} has {have} but the checkpoint's model was built for {was}")
    loader = build_loader(data, modality, stats, dev, "auto", None, f"{split} of {source}",
                          transforms=modality.worker_transforms())  # the training run's resize + centre crop
    y = data.labels
    cl = modality.channels_last
    if cl:
        model.to(memory_format=torch.channels_last)
    try:
        logits = predict_logits(model, loader, 256, cl).double().cpu()
    finally:
        loader.close()
    if prior == "estimate":
        target = priors.estimate_prior(torch.softmax(logits, 1).numpy(), source_prior, "em")
    if adjust:
        logits = priors.adjust_logits(logits, source_prior, target)
    pred = logits.argmax(1).numpy()
    th = bundle["thresholds"]
    out = classification_metrics(y, pred, bundle["train_counts"], bundle["num_classes"], th["many"], th["few"])
    if target is not None:
        out.update(prior_accuracy=priors.prior_accuracy(y, pred, target), prior=[float(v) for v in target],
                   prior_source=str(prior) if isinstance(prior, (str, Path)) else "given", adjusted=bool(adjust),
                   model_prior=model_prior)
    return out
