"""The :class:`Modality` contract, the registry ``MODALITIES`` and what is read off all registered modalities.

A modality owns, for its kind of input, the raw array check, normalisation statistics from the
training split, the conversion to the model's input, the training augmentation, what a model
factory is told about its inputs, and which data settings fit it (see ``docs/extending.md``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..._errors import OTReweightError
from ...registry import Registry


class Modality:
    """Base class of a kind of input (the contract in the package docstring).

    Class attributes a modality declares: ``name``; ``default_model``; ``channels_last`` (conv
    nets); ``model_input``, the model-factory keyword its inputs fill (``in_features``,
    ``in_channels``, ...); ``augments``, the ``data.augment`` values it implements (``none`` is
    always allowed); ``normalizations``, the ``data.normalize`` values it takes; ``takes_crop_size``
    and ``crop_augments``, whether ``data.crop_size`` / ``resize_size`` apply and which of its
    augmentations crop; ``noun``, what its examples are called in messages.
    """

    name = "modality"
    default_model = "mlp"
    channels_last = False
    model_input: str | None = None
    augments: tuple[str, ...] = ()
    normalizations: tuple = (True, False)
    takes_crop_size = False
    crop_augments: tuple[str, ...] = ()
    noun = "inputs"

    @classmethod
    def check_data_config(cls, data_cfg) -> None:
        """Raise :class:`OTReweightError` if ``data.normalize``, ``data.crop_size`` or a cropping
        ``data.augment`` of ``data_cfg`` does not fit this modality."""
        norm = data_cfg.normalize
        if norm not in cls.normalizations:
            owners = _nouns(lambda m: norm in getattr(m, "normalizations", ()))
            allowed = " or ".join(_yaml_word(v) for v in cls.normalizations)
            raise OTReweightError(f"data.normalize: {_yaml_word(norm)} is for {owners}; these data are {cls.name} "
                                  f"inputs: use {allowed}")
        crops = sorted({a for _, f in MODALITIES.items() for a in getattr(f, "crop_augments", ())})
        if not cls.takes_crop_size and (data_cfg.crop_size is not None or data_cfg.augment in crops):
            raise OTReweightError(f"data.crop_size / augment: {' / '.join(crops)} are for "
                                  f"{_nouns(lambda m: getattr(m, 'takes_crop_size', False))}; these data are "
                                  f"{cls.name} inputs: remove them")

    def check(self, x, what: str = "inputs") -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats(self, x_train, normalize: bool = True) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def stats_need_data(self, normalize) -> bool:
        """Whether :meth:`stats` under ``data.normalize`` reads the training data (else fixed statistics,
        e.g. ImageNet's: no pass over a lazy split)."""
        return True

    def stats_from_chunks(self, chunks, normalize: bool = True) -> dict:
        """:meth:`stats` of a split read in chunks of raw examples (lazy data; one pass)."""
        return self.stats(np.concatenate(list(chunks)), normalize)

    def collate(self, items: list, stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A list of ``(raw example, label)`` -> ``(inputs, labels)`` on the CPU (loader workers)."""
        x = np.stack([np.asarray(a) for a, _ in items])
        y = torch.as_tensor(np.asarray([int(b) for _, b in items], dtype=np.int64))
        return self.to_tensor(x, stats, "cpu"), y

    def augment(self, data_cfg, stats: dict):
        """The training augmentation ``aug(x, generator)`` on the device for ``data_cfg.augment`` (``None``: none)."""
        return None

    def on_device(self, x: torch.Tensor, stats: dict) -> torch.Tensor:
        """What is left to do to a collated batch once it is on the device (default: nothing)."""
        return x

    def worker_transforms(self, data_cfg=None):
        """Per-example transforms the stream loader's workers apply (``None``: none; see
        :class:`~otreweight.data.transforms.WorkerTransforms`)."""
        return None

    def bytes_per_example(self, example_shape: tuple) -> int:
        """Bytes one example takes on the device once converted (float32 of its raw shape)."""
        return int(np.prod(example_shape)) * 4

    def example_batch(self, n: int, rng: np.random.Generator):  # pragma: no cover - abstract
        """``n`` random raw examples as the modality's sources give them (for conformance checks)."""
        raise NotImplementedError

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        """The model factory's keyword arguments about these inputs (``{model_input: ...}``)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


MODALITIES: Registry[Modality] = Registry("modality")


def _yaml_word(value) -> str:
    return {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def _nouns(test) -> str:
    """The ``noun`` of every registered modality passing ``test`` (``other inputs`` if none does)."""
    nouns = [getattr(f, "noun", name) for name, f in MODALITIES.items() if test(f)]
    return " or ".join(dict.fromkeys(nouns)) or "other inputs"


def get_modality(name: str, **options) -> Modality:
    """The registered modality ``name`` (a fresh instance with ``options``, e.g. ``max_length``)."""
    return MODALITIES.create(name, **options)


def infer_modality(x) -> str:
    """The modality of raw arrays or tensors handed to the Python API without one: ``image`` for
    4-d inputs, ``vector`` otherwise (sources declare theirs; this is the API's only guess)."""
    return "image" if getattr(x, "ndim", 0) == 4 else "vector"


def augment_names() -> list[str]:
    """The valid ``data.augment`` values: ``none`` and every registered modality's ``augments``."""
    names = {"none"}
    for _, f in MODALITIES.items():
        names.update(getattr(f, "augments", ()))
    return sorted(names)


def input_kinds() -> dict[str, str]:
    """``{model_input: modality name}`` of the registered modalities (``in_features``: ``vector``, ...);
    the first registered of those sharing a ``model_input`` names it."""
    kinds: dict[str, str] = {}
    for name, f in MODALITIES.items():
        if getattr(f, "model_input", None):
            kinds.setdefault(f.model_input, name)
    return kinds


__all__ = ["MODALITIES", "Modality", "augment_names", "get_modality", "infer_modality", "input_kinds"]
