r"""Meta-Weight-Net (Shu et al., NeurIPS 2019): an MLP maps each example's loss to its weight.

:math:`\mathcal V(\ell;\phi)`: :math:`1 \to 100 \to 1`, ReLU, sigmoid output. For every batch,
with :math:`w_i(\phi) = \mathcal V(\ell_i;\phi) / \sum_k \mathcal V(\ell_k;\phi)` (losses detached
as inputs):

1. look-ahead step :math:`\hat\theta(\phi) = \theta - \eta\nabla_\theta\sum_i w_i(\phi)\,\ell_i(\theta)`
   (:mod:`otreweight.methods._lookahead`);
2. one SGD step of the MLP on the meta loss of a meta mini-batch,

   .. math:: \phi \leftarrow \phi - \beta\,\nabla_\phi\,\frac1m\sum_{j}\ell_{CE}\bigl(x'_j, y'_j;\hat\theta(\phi)\bigr)

   (its own optimiser: ``meta_lr`` 1e-5, momentum 0.9, weight decay 5e-4);
3. the real step on :math:`\sum_i w_i(\phi)\,\ell_i(\theta)` with the updated MLP, by the loop's optimiser.

The MLP and its optimiser are part of the method's state (saved with checkpoints). Cost: about 3
forward-backward passes per step (``stats()``); the loop's forward is re-used for the look-ahead.
"""
from __future__ import annotations

import torch
from torch import nn

from .._errors import OTReweightError, is_number
from . import METHODS
from ._lookahead import LookAhead
from ._meta_common import LookAheadReweighter, MetaBatches, PassCounter, lookahead_meta_loss, normalise


class WeightNet(nn.Module):
    r"""The weighting function :math:`\mathcal V(\ell;\phi) = \sigma(W_2\,\mathrm{relu}(W_1\ell + b_1) + b_2)`."""

    def __init__(self, hidden: int = 100) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self.net(losses[:, None]).squeeze(1)


class MetaWeightNet(LookAheadReweighter):
    """Example weights from a small MLP of the example's loss, trained on the meta loss.

    Parameters
    ----------
    hidden : int
        Hidden units of the weighting MLP (1 -> hidden -> 1).
    meta_lr : float
        Learning rate of the weighting MLP's SGD (1e-5, the published value).
    meta_momentum : float
        Momentum of the weighting MLP's SGD.
    meta_weight_decay : float
        Weight decay of the weighting MLP's SGD.
    meta_batch_size : int or None
        Meta examples per step (null: the whole meta set).
    """

    name = "mwnet"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, hidden: int = 100, meta_lr: float = 1e-5, meta_momentum: float = 0.9,
                 meta_weight_decay: float = 5e-4, meta_batch_size: int | None = 100) -> None:
        if int(hidden) != hidden or hidden < 1:
            raise OTReweightError(f"mwnet hidden (width of the weighting MLP) must be an integer >= 1, got {hidden!r}")
        for what, v in (("meta_lr", meta_lr), ("meta_momentum", meta_momentum), ("meta_weight_decay", meta_weight_decay)):
            if not is_number(v, low=0):
                raise OTReweightError(f"mwnet {what} must be a finite number >= 0, got {v!r}")
        if meta_lr <= 0:
            raise OTReweightError(f"mwnet meta_lr must be > 0, got {meta_lr!r}")
        self.hidden, self.meta_lr = int(hidden), float(meta_lr)
        self.meta_momentum, self.meta_weight_decay = float(meta_momentum), float(meta_weight_decay)
        self.meta_batches = MetaBatches(meta_batch_size)
        self.counter = PassCounter()
        self.weight_net: WeightNet | None = None
        self.last_weights: torch.Tensor | None = None

    def bind(self, info):
        super().bind(info)
        self.lookahead = LookAhead(info.model, info.optimizer)
        self.weight_net = WeightNet(self.hidden).to(info.device)  # initialised from the run's seeded RNG
        self.meta_optimizer = torch.optim.SGD(
            self.weight_net.parameters(), lr=self.meta_lr, momentum=self.meta_momentum,
            weight_decay=self.meta_weight_decay,
        )
        self.meta_batches.seed(int(torch.randint(2**31 - 1, ())))

    def update_weight_net(self, losses: torch.Tensor, meta) -> torch.Tensor:
        """Steps 1-2: look-ahead with the current MLP, one SGD step of the MLP; returns the meta loss
        (a detached 0-d tensor: reading it syncs the device)."""
        c = self.counter
        c.start()
        w = normalise(self.weight_net(losses.detach().float()))
        meta_loss = lookahead_meta_loss(self.lookahead, self.meta_batches, c, (w * losses.float()).sum(), meta)
        grads = torch.autograd.grad(meta_loss, list(self.weight_net.parameters()))
        c.backward += 1
        self.meta_optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.weight_net.parameters(), grads):
            p.grad = g
        self.meta_optimizer.step()
        c.stop()
        return meta_loss.detach()

    def batch_weights(self, losses: torch.Tensor, meta) -> torch.Tensor:
        """Steps 1-2 (:meth:`update_weight_net`), then step 3's weights from the updated MLP."""
        self.update_weight_net(losses, meta)
        with torch.no_grad():
            return normalise(self.weight_net(losses.detach().float()))

    def state_dict(self):
        if self.weight_net is None:
            return {}
        return {"weight_net": self.weight_net.state_dict(), "meta_optimizer": self.meta_optimizer.state_dict(),
                "meta_batches": self.meta_batches.state_dict()}

    def load_state_dict(self, state):
        if state and self.weight_net is not None:
            self.weight_net.load_state_dict(state["weight_net"])
            self.meta_optimizer.load_state_dict(state["meta_optimizer"])
            self.meta_batches.load_state_dict(state["meta_batches"])

    def __repr__(self):
        return (f"MetaWeightNet(hidden={self.hidden}, meta_lr={self.meta_lr}, meta_momentum={self.meta_momentum}, "
                f"meta_weight_decay={self.meta_weight_decay}, meta_batch_size={self.meta_batches.batch_size})")


METHODS.register("mwnet")(MetaWeightNet)
