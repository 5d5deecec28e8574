r"""Learning to re-weight examples, L2RW (Ren et al., ICML 2018).

For every batch, with per-example weights :math:`\epsilon_i = 0` and the look-ahead step
:math:`\hat\theta(\epsilon) = \theta - \eta\nabla_\theta\sum_i \epsilon_i\,\ell_i(\theta)`
(:mod:`otreweight.methods._lookahead`):

.. math:: \tilde w_i = \max\Bigl(-\frac{\partial}{\partial\epsilon_i}\,
          \frac1m\sum_{j\in M}\ell_{CE}\bigl(x'_j, y'_j;\hat\theta(\epsilon)\bigr)\Big|_{\epsilon=0},\ 0\Bigr),
          \qquad w_i = \frac{\tilde w_i}{\sum_k \tilde w_k}\ \ (w = 0 \text{ if all } \tilde w_i = 0),

then the real step minimises :math:`\sum_i w_i\,\ell_i(\theta)` with the loop's optimiser. To first
order :math:`\tilde w_i \propto \nabla_\theta\ell_i \cdot \nabla_\theta L_{meta}`: an example whose
gradient agrees with the balanced meta set's gets weight, one that disagrees (e.g. mislabelled)
gets none. No weight is kept between batches. Cost: about 3 forward-backward passes per step
(see ``stats()``). ``meta_batch_size`` (default: the whole meta set) meta examples per step.
"""
from __future__ import annotations

import torch

from . import METHODS
from ._lookahead import LookAhead
from ._meta_common import LookAheadReweighter, MetaBatches, PassCounter, lookahead_meta_loss, normalise


class L2RW(LookAheadReweighter):
    """Per-batch example weights from the meta-loss gradient of a look-ahead step.

    Parameters
    ----------
    meta_batch_size : int or None
        Meta examples per step (null: the whole meta set).
    """

    name = "l2rw"
    end_to_end = True  # its paper trains it from scratch, whole network

    def __init__(self, meta_batch_size: int | None = None) -> None:
        self.meta_batches = MetaBatches(meta_batch_size)
        self.counter = PassCounter()
        self.last_weights: torch.Tensor | None = None

    def bind(self, info):
        super().bind(info)
        self.lookahead = LookAhead(info.model, info.optimizer)
        self.meta_batches.seed(int(torch.randint(2**31 - 1, ())))  # from the run's seeded global RNG

    def batch_weights(self, losses: torch.Tensor, meta) -> torch.Tensor:
        """The normalised, detached weights of a batch from its per-example losses (with graph)."""
        c = self.counter
        c.start()
        eps = torch.zeros_like(losses, requires_grad=True)
        meta_loss = lookahead_meta_loss(self.lookahead, self.meta_batches, c, (eps * losses.float()).sum(), meta)
        (grad_eps,) = torch.autograd.grad(meta_loss, eps)
        c.backward += 1
        w = normalise((-grad_eps).clamp_min(0.0))
        c.stop()
        return w.detach()

    def state_dict(self):
        return {"meta_batches": self.meta_batches.state_dict()}

    def load_state_dict(self, state):
        if state:
            self.meta_batches.load_state_dict(state["meta_batches"])

    def __repr__(self):
        return f"L2RW(meta_batch_size={self.meta_batches.batch_size})"


METHODS.register("l2rw")(L2RW)
