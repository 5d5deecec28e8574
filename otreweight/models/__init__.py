"""Models: a backbone ``features(x) -> (N, d)`` followed by a linear ``classifier``.

Every model registered here follows that split so stage 2 can freeze the backbone and train only
the classifier. Build one with :func:`create_model`; add one with ``@MODELS.register("name")``.
"""
from ..registry import Registry
from .base import FeatureClassifier

MODELS: Registry[FeatureClassifier] = Registry("model")


def create_model(name: str, **kwargs) -> FeatureClassifier:
    """Build a registered model by name, e.g. ``create_model("mlp", in_features=64, num_classes=10)``."""
    return MODELS.create(name, **kwargs)


from . import hf, mlp, points, resnet_cifar, small_cnn, text, timm_nets  # noqa: E402,F401  (register their models)

__all__ = ["MODELS", "FeatureClassifier", "create_model"]
