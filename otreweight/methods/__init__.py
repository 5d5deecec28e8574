"""Training methods (OT re-weighting and baselines), one small module each, in a registry.

``create_method("ot", init="uniform")`` builds one; ``METHODS.names()`` lists them.
"""
from ..registry import Registry
from .base import Batch, MetaView, Method, TrainInfo

METHODS: Registry[Method] = Registry("method")


def create_method(name: str, **kwargs) -> Method:
    """Build a registered method by name with its keyword options."""
    return METHODS.create(name, **kwargs)


from . import ce, class_balanced, ot_reweight  # noqa: E402,F401  (register their methods)
from . import (  # noqa: E402,F401  (the baselines)
    balanced_softmax, crt, focal, l2rw, ldam_drw, logit_adjust, mwnet, ot_posthoc, resample,
)

__all__ = ["METHODS", "Batch", "MetaView", "Method", "TrainInfo", "create_method"]
