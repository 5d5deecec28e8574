r"""Classifier re-training, cRT (Kang et al., "Decoupling representation and classifier", ICLR 2020).

Keep the stage-1 backbone frozen, re-initialise the linear classifier and train it alone with
class-balanced sampling and the plain cross-entropy:

.. math:: \min_{W, b}\ \mathbb E_{c\sim U(K)}\,\mathbb E_{x\sim D_c}\ \ell_{CE}(W f(x) + b,\ c).

Run it with ``trainable="classifier"`` (anything else is refused at bind time).
"""
from __future__ import annotations

import torch.nn.functional as F

from .._errors import OTReweightError
from . import METHODS
from .base import Method


class ClassifierRetraining(Method):
    name = "crt"
    sampling = "class_balanced"
    # Kang et al.'s classifier re-training recipe, scaled to a short budget.
    recipe = {"epochs": 10, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4,
              "warmup_epochs": 0, "milestones": [0.6], "lr_factors": [0.1]}

    def prepare_model(self, model):
        model.classifier.reset_parameters()

    def bind(self, info):
        super().bind(info)
        head = {id(p) for p in info.model.classifier.parameters()}
        if any(id(p) not in head for g in info.optimizer.param_groups for p in g["params"]):
            raise OTReweightError("crt re-trains the classifier of a frozen backbone; use trainable: classifier")

    def loss(self, batch, meta):
        return F.cross_entropy(batch.logits, batch.y)

    def __repr__(self):
        return "ClassifierRetraining()"


METHODS.register("crt")(ClassifierRetraining)
