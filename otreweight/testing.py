"""Conformance checks for plug-ins: a method, model, data source or modality is tested the day it is
registered (as timm tests every ``list_models()`` entry and imbalanced-learn runs its estimator
checks over every estimator).

``tests/test_conformance.py`` runs these over every name in ``METHODS``, ``MODELS``, ``SOURCES`` and
``MODALITIES``; a plug-in of your own can call them from its tests::

    from otreweight.testing import check_method
    check_method("my_method")

Each check raises ``AssertionError`` naming what is wrong and returns nothing otherwise. They use
tiny generated data and take well under a second each on a CPU.
"""
from __future__ import annotations

import copy
import inspect

import numpy as np
import torch

from .config import DataConfig, FitConfig, recipe_keys
from .data.dataset import example_shape
from .data.modalities import MODALITIES, get_modality
from .data.samplers import SAMPLINGS
from .methods import METHODS, create_method
from .models import MODELS, create_model


def _blobs(n_per_class=(24, 10, 6), d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)]).astype(np.int64)
    centers = rng.normal(0, 3, (len(n_per_class), d))
    x = (centers[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32)
    return x, y


def _meta(k=3, d=5, per=4, seed=1):
    x, y = _blobs((per,) * k, d, seed)
    return x, y


def model_input(name: str, n: int = 4, seed: int = 0) -> torch.Tensor:
    """A batch of inputs for the registered model ``name``: images ``(n, 3, 16, 16)`` for factories
    taking ``in_channels``, vectors ``(n, 5)`` for ``in_features``, else the factory's own
    ``example_input(n)``."""
    factory = MODELS.get(name)
    g = torch.Generator().manual_seed(seed)
    if hasattr(factory, "example_input"):
        return factory.example_input(n)
    params = inspect.signature(factory).parameters
    if "in_channels" in params:
        return torch.randn(n, 3, 16, 16, generator=g)
    if "in_features" in params:
        return torch.randn(n, 5, generator=g)
    raise AssertionError(f"model {name!r}: give its factory in_channels, in_features or an example_input(n)")


def _build_model(name: str, num_classes: int = 3):
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    kw = dict(getattr(factory, "example_kwargs", {}))
    if "in_features" in params:
        kw["in_features"] = 5
    return create_model(name, num_classes=num_classes, **kw)


def check_model(name: str) -> None:
    """The model contract: ``features(x) -> (N, feature_dim)``, a linear ``classifier`` over them,
    ``forward = classifier(features)``, ``backbone_parameters`` = everything but the classifier,
    deterministic in eval mode, trainable on a batch of two, state dict round trip."""
    torch.manual_seed(0)
    m = _build_model(name)
    x = model_input(name)
    m.eval()
    f = m.features(x)
    assert f.dim() == 2 and f.shape == (x.shape[0], m.feature_dim), f"{name}: features {tuple(f.shape)}"
    assert isinstance(m.classifier, torch.nn.Linear), f"{name}: classifier is not a torch.nn.Linear"
    assert m.classifier.in_features == m.feature_dim and m.classifier.out_features == 3, f"{name}: classifier shape"
    logits = m(x)
    assert logits.shape == (x.shape[0], 3) and torch.isfinite(logits).all(), f"{name}: logits {tuple(logits.shape)}"
    assert torch.allclose(logits, m.classifier(f), atol=1e-5), f"{name}: forward is not classifier(features)"
    assert torch.equal(m(x), logits), f"{name}: eval mode is not deterministic"
    head = {id(p) for p in m.classifier.parameters()}
    backbone = list(m.backbone_parameters())
    assert all(id(p) not in head for p in backbone), f"{name}: backbone_parameters include the classifier"
    assert len(backbone) + len(head) == len(list(m.parameters())), f"{name}: parameters neither backbone nor head"
    m.train()
    loss = torch.nn.functional.cross_entropy(m(x[:2]), torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in m.classifier.parameters()), f"{name}: no gradient to the classifier"
    m2 = _build_model(name)
    m2.load_state_dict(copy.deepcopy(m.state_dict()))
    m.eval(), m2.eval()
    assert torch.allclose(m(x), m2(x)), f"{name}: state dict round trip changes the outputs"


def check_method(name: str) -> None:
    """The method contract: declared protocol attributes are valid, it builds with its defaults,
    trains a classifier-only stage and a whole-network stage on tiny data to finite losses,
    is deterministic for a seed, and its state survives ``state_dict`` / ``load_state_dict``."""
    cls = METHODS.get(name)
    assert getattr(cls, "sampling", "instance") in SAMPLINGS, f"{name}: unknown sampling {cls.sampling!r}"
    for attr in ("uses_meta", "trains", "end_to_end"):
        assert isinstance(getattr(cls, attr, False), bool), f"{name}: {attr} must be a bool"
    recipe = getattr(cls, "recipe", None)
    if recipe is not None:
        unknown = set(recipe) - set(recipe_keys())
        assert not unknown, f"{name}: recipe keys {sorted(unknown)} are not stage recipe fields"
    from .engine import fit

    x, y = _blobs()
    xv, yv = _blobs((5, 5, 5), seed=2)
    meta = _meta()
    results = []
    for trainable in ("classifier", "all", "classifier"):
        torch.manual_seed(0)
        model = create_model("mlp", in_features=5, num_classes=3, hidden=(8,))
        method = create_method(name)
        assert isinstance(repr(method), str)
        cfg = FitConfig(epochs=2, batch_size=8, lr=0.05, trainable=trainable, progress=False, seed=3)
        try:
            res = fit(model, method, (x, y), (xv, yv), meta, cfg, device="cpu")
        except Exception as err:  # a method may refuse one mode with a one-line error
            from ._errors import OTReweightError

            assert isinstance(err, OTReweightError) and "\n" not in str(err), f"{name} ({trainable}): {err!r}"
            results.append(None)
            continue
        losses = [r["train_loss"] for r in res.history if r["epoch"] > 0]
        assert all(np.isfinite(losses)), f"{name} ({trainable}): training loss {losses}"
        assert (len(losses) == 2) == cls.trains, f"{name}: trains={cls.trains} but ran {len(losses)} epochs"
        state = method.state_dict()
        fresh = create_method(name)
        fresh.load_state_dict(copy.deepcopy(state))
        results.append(res.history[-1]["val"])
    assert results[0] == results[2], f"{name}: two runs with one seed differ"
    assert any(r is not None for r in results), f"{name}: works neither on the classifier nor the whole network"


def check_modality(name: str) -> None:
    """The modality contract: statistics from training data, finite float inputs (or int64 ids), ``collate`` = ``to_tensor`` of the stacked examples, a seeded augmentation that keeps
    shapes, and its default model accepting its inputs."""
    mod = get_modality(name)
    assert mod.name == name, f"modality {name!r} calls itself {mod.name!r}"
    assert hasattr(mod, "example_batch"), f"modality {name!r}: give it example_batch(n, rng) for the checks"
    rng = np.random.default_rng(0)
    raw = mod.example_batch(6, rng)
    mod.check(raw)
    stats = mod.stats(raw, True)
    chunked = mod.stats_from_chunks(iter([raw[:2], raw[2:]]), True)
    for key, value in stats.items():
        same = (value == chunked[key]) if isinstance(value, (str, int)) else np.allclose(
            np.asarray(value, dtype=float), np.asarray(chunked[key], dtype=float))
        assert same, f"{name}: stats_from_chunks disagrees with stats on {key!r}"
    t = mod.to_tensor(raw, stats)
    assert t.dtype in (torch.float32, torch.int64) and t.shape[0] == 6, f"{name}: to_tensor gives {t.dtype}"
    assert t.dtype == torch.int64 or torch.isfinite(t).all(), f"{name}: to_tensor gives non-finite values"
    items = [(raw[i], i % 3) for i in range(6)]
    assert torch.equal(mod.collate(items, stats)[0], t), f"{name}: collate differs from to_tensor"
    aug = mod.augment(DataConfig(augment=mod.augments[0] if getattr(mod, "augments", ()) else "none"), stats)
    if aug is not None:
        a1 = aug(t.clone(), torch.Generator().manual_seed(0))
        a2 = aug(t.clone(), torch.Generator().manual_seed(0))
        assert a1.shape == t.shape and torch.equal(a1, a2), f"{name}: augmentation changes shape or is not seeded"
    kw = mod.model_kwargs(tuple(raw.shape[1:]), stats)
    model = create_model(mod.default_model, num_classes=3, **kw).eval()
    assert model(t).shape == (6, 3), f"{name}: default model {mod.default_model!r} does not take its inputs"


def check_source(dataset) -> None:
    """The dataset protocol of a loaded source: ``train`` / ``test`` splits with int64 labels in
    ``0..K-1``, class names, a registered modality that accepts its examples, and ``__getitem__``
    agreeing with ``labels``."""
    assert dataset.modality in MODALITIES, f"{dataset!r}: modality {dataset.modality!r} is not registered"
    mod = get_modality(dataset.modality)
    k = len(dataset.classes)
    assert k >= 1 and len(set(dataset.classes)) == k, "class names must be unique and at least one"
    for which in ("train", "test"):
        split = dataset.split(which)
        labels = np.asarray(split.labels)
        assert labels.dtype == np.int64 and labels.ndim == 1 and len(split) == labels.shape[0], f"{which}: labels"
        if labels.size:
            assert 0 <= labels.min() and labels.max() < k, f"{which}: labels outside 0..{k - 1}"
            x0, y0 = split[0]
            assert int(y0) == int(labels[0]), f"{which}: __getitem__ label differs from labels"
            assert tuple(np.shape(x0)) == example_shape(split), f"{which}: example shape"
            mod.check(np.stack([np.asarray(split[i][0]) for i in range(min(3, len(split)))]))
    assert len(dataset.split("train")) > 0, "the training split is empty"


__all__ = ["check_method", "check_modality", "check_model", "check_source", "model_input"]


# --- Host synchronisations ------------------------------------------------------------------------
# The Tensor methods that hand a value to Python: on an accelerator each waits for the device to
# finish everything queued. On the CPU they are free, but counting them there finds every one a GPU
# run would pay (the loop's budget: at most 2 per training step, tests/test_host_syncs.py).
SYNC_METHODS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "cpu")


class HostSyncCounter:
    """Counts calls of :data:`SYNC_METHODS` on tensors while active (a context manager).

    ``counts`` maps each method name to its number of calls; ``total`` is their sum. Calls made by
    the counted methods themselves (``tolist`` calling ``__index__``, say) are counted once.
    """

    def __init__(self) -> None:
        self.counts = {name: 0 for name in SYNC_METHODS}
        self._saved: dict = {}
        self._depth = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _wrap(self, name, original):
        counter = self

        def counted(*args, **kwargs):
            if counter._depth == 0:
                counter.counts[name] += 1
            counter._depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                counter._depth -= 1

        return counted

    def __enter__(self) -> "HostSyncCounter":
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = torch.Tensor.__dict__.get(name, None)
            setattr(torch.Tensor, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)
        self._saved.clear()


def count_host_syncs(fn, *args, **kwargs) -> tuple[object, HostSyncCounter]:
    """Run ``fn(*args, **kwargs)`` and return its result with the :class:`HostSyncCounter` of the call."""
    with HostSyncCounter() as counter:
        out = fn(*args, **kwargs)
    return out, counter
