"""otreweight: imbalanced classification with per-example weights learned by optimal transport.

The method of Guo et al., "Learning to Re-weight Examples with Optimal Transport for Imbalanced
Classification" (NeurIPS 2022), with the standard baselines beside it.
"""
import torch as _torch

from ._errors import OTReweightError, check_torch_version

try:
    check_torch_version(_torch.__version__)
except OTReweightError as _err:
    raise ImportError(str(_err)) from None

from .class_weights import effective_number_weights  # noqa: E402
from .cost import combined_cost, cost_matrix, feature_cost, label_cost  # noqa: E402
from .data.longtail import LongTailSplit, long_tail_counts, make_long_tailed  # noqa: E402
from .engine import FitConfig, FitResult, compute_features, evaluate, fit, predict_logits  # noqa: E402
from .methods import METHODS, Method, create_method  # noqa: E402
from .metrics import classification_metrics, shot_groups  # noqa: E402
from .models import MODELS, FeatureClassifier, create_model  # noqa: E402
from .model_file import read_model, save_model  # noqa: E402
from .prior import estimate_prior  # noqa: E402
from .reweighter import OTReweighter  # noqa: E402
from .targets import MetaTargets, build_targets, class_means  # noqa: E402
from .transport import OTResult, entropic_ot  # noqa: E402
from .utils import pick_device, seed_everything  # noqa: E402

__version__ = "0.3.0"

__all__ = [
    "METHODS",
    "MODELS",
    "FeatureClassifier",
    "FitConfig",
    "FitResult",
    "LongTailSplit",
    "MetaTargets",
    "Method",
    "OTResult",
    "OTReweightError",
    "OTReweighter",
    "build_targets",
    "class_means",
    "classification_metrics",
    "combined_cost",
    "compute_features",
    "cost_matrix",
    "create_method",
    "create_model",
    "effective_number_weights",
    "entropic_ot",
    "estimate_prior",
    "evaluate",
    "feature_cost",
    "fit",
    "label_cost",
    "long_tail_counts",
    "make_long_tailed",
    "pick_device",
    "predict_logits",
    "read_model",
    "save_model",
    "seed_everything",
    "shot_groups",
]
