"""Training: the loop in parts (``loop``), frozen features and their cache (``features``), the meta
view (``meta``), optimiser and schedule factories (``optim``) and checkpoints (``checkpoint``)."""
from .features import FeatureCache, compute_features, predict_logits
from .loop import FitResult, evaluate_split, fit, train_one_epoch

__all__ = ["FeatureCache", "FitResult", "compute_features", "evaluate_split", "fit", "predict_logits",
           "train_one_epoch"]
