"""Any timm image backbone by name: ``model.name: timm/<name>`` (``timm/resnet50``, ``timm/resnext50_32x4d``, ...).

The network is ``timm.create_model(<name>, num_classes=K, in_chans=C, **options)``; its features
are timm's pooled pre-logits,

    f(x) = net.forward_head(net.forward_features(x), pre_logits=True),

and the classifier is the model's own linear head (``net.get_classifier()``, taken out of the
network so ``forward = classifier(features)``; a model whose head is not one linear layer gets a
new ``nn.Linear`` over its pre-logits). So every method, OT included, sees the same ``(N, d)``
features as for the CIFAR ResNets: a classifier-only stage 2 on frozen features
(``trainable: classifier``) and whole-network stages work unchanged.

Weights (``model.options``):

* ``pretrained: true`` (or ``model.pretrained: true``) - timm's default pretrained weights for the name (a tag such as
  ``resnet50.a1_in1k`` picks others), from the Hugging Face cache, downloaded when online. Offline
  (``HF_HUB_OFFLINE=1``) or without a network, weights not in the cache are one line saying what
  to download and where it goes;
* ``checkpoint: <file>`` - a local ``.safetensors`` / ``.pth`` / ``.bin`` state dict of that
  architecture (e.g. the file downloaded elsewhere), loaded offline; a classifier of another size
  is dropped (the head is the new one);
* neither: random initialisation.

With pretrained weights the backbone is timm's and the classifier always starts afresh (a new task,
whatever its number of classes).

Other options go to ``timm.create_model`` (``drop_rate``, ``drop_path_rate``, ``img_size`` for
vision transformers, ...). An unknown name is one line with the closest timm names.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch
from torch import nn

from .._errors import OTReweightError
from . import MODELS
from .base import FeatureClassifier
from .hf import hub_offline, hub_unreachable

PREFIX = "timm/"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar")


def _require_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        raise OTReweightError("timm/ models need timm and torchvision: pip install 'otreweight[vision]' "
                              "(or pip install timm)") from None
    import timm

    return timm


def check_name(name: str) -> str:
    """``name`` when timm knows the architecture (a ``.tag`` suffix allowed), else a one-line error
    with the closest names."""
    timm = _require_timm()
    arch = name.split(".", 1)[0]
    if timm.is_model(arch):
        return name
    close = difflib.get_close_matches(arch, timm.list_models(), n=4, cutoff=0.6)
    hint = f"did you mean {', '.join('timm/' + c for c in close)}?" if close else \
        "list them with python -c \"import timm; print(timm.list_models('resnet*'))\""
    raise OTReweightError(f"timm has no model {arch!r}; {hint}")


def _pretrained_cfg(name: str):
    """timm's pretrained config of ``name`` (its default tag without one), or ``None``."""
    import timm

    try:
        return timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except (RuntimeError, KeyError, ValueError):
        return None


def _cached_weights(name: str) -> Path | None:
    """The local file of timm's pretrained weights for ``name`` in the Hugging Face / torch hub cache."""
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return None
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin", getattr(cfg, "hf_hub_filename", None)):
            if fname:
                hit = try_to_load_from_cache(hub, fname)
                if isinstance(hit, str):
                    return Path(hit)
        return None
    url = getattr(cfg, "url", None)
    if url:
        f = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        return f if f.is_file() else None
    return None


def _hub_hint(name: str) -> str:
    hub = getattr(_pretrained_cfg(name), "hf_hub_id", None)
    where = f"huggingface-cli download {hub} (into the Hugging Face cache)" if hub else \
        f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""
    return (f"download them where you are online ({where}) or give the weights file as "
            "model.options.checkpoint")


def _create(name: str, num_classes: int, in_channels: int, pretrained: bool, checkpoint, options: dict) -> nn.Module:
    timm = _require_timm()
    kw = dict(num_classes=num_classes, in_chans=in_channels, **options)
    if checkpoint is not None:
        net = timm.create_model(name, pretrained=False, **kw)
        _load_checkpoint(net, name, checkpoint)
        return net
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kw)
    cached = _cached_weights(name)
    if cached is not None:  # from the cache: no network request at all
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(cached)}, **kw)
    if hub_offline():  # huggingface_hub, through which timm downloads, would refuse anyway
        raise OTReweightError(f"timm/{name}: the pretrained weights are not in the local cache and HF_HUB_OFFLINE is "
                              f"set; {_hub_hint(name)}")
    cfg = _pretrained_cfg(name)
    host = hub_unreachable(None if getattr(cfg, "hf_hub_id", None) else getattr(cfg, "url", None))
    if host is not None:
        raise OTReweightError(f"timm/{name}: the pretrained weights are not in the local cache and {host} cannot be "
                              f"reached; {_hub_hint(name)} (a local file needs no network); set HF_HUB_OFFLINE=1 to "
                              "never try it")
    try:
        return timm.create_model(name, pretrained=True, **kw)
    except (OSError, RuntimeError, ValueError) as e:
        raise OTReweightError(f"timm/{name}: cannot fetch the pretrained weights ({str(e).splitlines()[0][:120]}); "
                              f"{_hub_hint(name)}") from None


def _load_checkpoint(net: nn.Module, name: str, checkpoint) -> None:
    """Load a local state dict into ``net`` (its classifier left as built); every backbone tensor must
    be there with its shape: a file of another architecture is an error, not a partial load."""
    from timm.models import load_state_dict

    path = Path(str(checkpoint)).expanduser()
    if not path.is_file():
        raise OTReweightError(f"model.options.checkpoint {path} is not a file; give a .safetensors or .pth "
                              "state dict of the timm architecture")
    try:
        state = load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001 - torch / safetensors raise many kinds for a bad file
        raise OTReweightError(f"timm/{name}: cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
                              "give a state dict (.safetensors or .pth) saved from timm") from None
    head = net.get_classifier()
    head_name = next((n for n, m in net.named_modules() if m is head), None)
    mine = net.state_dict()
    prefix = f"{head_name}." if head_name else None
    state = {k: v for k, v in state.items() if not (prefix and k.startswith(prefix))}
    missing = [k for k in mine if k not in state and not (prefix and k.startswith(prefix))]
    unexpected = [k for k in state if k not in mine]
    wrong = [k for k in state if k in mine and tuple(state[k].shape) != tuple(mine[k].shape)]
    if missing or unexpected or wrong:
        what = (f"{len(missing)} tensors of it are missing (e.g. {missing[0]})" if missing else
                f"{len(unexpected)} tensors are not in it (e.g. {unexpected[0]})" if unexpected else
                f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, not {tuple(mine[wrong[0]].shape)}")
        raise OTReweightError(f"{path} is not a timm/{name.split('.')[0]} state dict: {what}; give the weights of "
                              "that architecture")
    net.load_state_dict(state, strict=False)


class TimmClassifier(FeatureClassifier):
    """A timm network without its head (``features``: pooled pre-logits) and the head as ``classifier``."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        head = net.get_classifier()
        if isinstance(head, nn.Linear) and head.out_features == num_classes:
            classifier = head
        else:  # a head that is not one linear layer (or none): a new one over the pre-logits
            width = getattr(net, "head_hidden_size", None) or net.num_features
            classifier = nn.Linear(int(width), num_classes)
        net.reset_classifier(0)  # the network ends at its pre-logits; the head lives here only
        self.net, self.classifier = net, classifier

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


def timm_model(num_classes: int, name: str, in_channels: int = 3, pretrained: bool = False, checkpoint=None,
               **options) -> TimmClassifier:
    """``timm/<name>``: timm's network (pooled pre-logit features) and its linear head (see the module docstring).

    Parameters
    ----------
    pretrained : bool
        Load timm's pretrained weights for ``name`` (from the local cache; the head starts afresh).
    checkpoint : str or None
        A weights file for the network (safetensors or a ``weights_only`` torch file; the head starts afresh).
    **options
        Further keyword arguments of ``timm.create_model`` (e.g. ``drop_rate``).
    """
    name = check_name(name)
    try:
        net = _create(name, num_classes, int(in_channels), bool(pretrained), checkpoint, options)
    except TypeError as e:  # an option the architecture does not take
        raise OTReweightError(f"timm/{name}: {str(e).splitlines()[0][:160]}; remove it from model.options "
                              "(they go to timm.create_model)") from None
    model = TimmClassifier(net, num_classes)
    if pretrained or checkpoint is not None:  # a new task: the head starts afresh (timm keeps a 1,000-class one at K = 1,000)
        model.classifier.reset_parameters()
    return model


def _example_input(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


timm_model.example_input = _example_input
MODELS.register_prefix(PREFIX, timm_model, "name")

__all__ = ["TimmClassifier", "check_name", "timm_model"]
