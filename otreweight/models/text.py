"""Text models over token ids ``(B, L)`` padded with ``pad_id`` (0 by default; the ``tokens`` modality).

``text_bag`` is fastText-style (Joulin et al., 2017): the features of a document are the mean of
its token embeddings, optionally with hashed bigrams,

    f(x) = (1 / |T(x)|) * sum_{t in T(x)} E[t],   T(x) = its non-padding tokens (+ bigram buckets),

then the linear classifier. It trains from scratch in seconds on a CPU; the pooled embedding is
what OT re-weighting transports.
"""
from __future__ import annotations

import torch
from torch import nn

from . import MODELS
from .base import FeatureClassifier

_PRIME = 1_000_003


class TextBag(FeatureClassifier):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int = 64, bigram_buckets: int = 0,
                 dropout: float = 0.0, pad_id: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.bigram_buckets, self.pad_id = int(vocab_size), int(bigram_buckets), int(pad_id)
        self.embed = nn.EmbeddingBag(self.vocab_size + self.bigram_buckets, embed_dim, mode="mean",
                                     padding_idx=self.pad_id)
        nn.init.normal_(self.embed.weight, std=0.1)
        with torch.no_grad():
            self.embed.weight[self.pad_id].zero_()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embed_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        if self.bigram_buckets and ids.shape[1] > 1:
            a, b = ids[:, :-1], ids[:, 1:]
            pair = (a * _PRIME + b) % self.bigram_buckets + self.vocab_size
            pair = torch.where((a != self.pad_id) & (b != self.pad_id), pair, torch.full_like(pair, self.pad_id))
            ids = torch.cat([ids, pair], dim=1)
        return self.dropout(self.embed(ids))


@MODELS.register("text_bag")
def text_bag(num_classes: int, vocab_size: int, embed_dim: int = 64, bigram_buckets: int = 0,
             dropout: float = 0.0, pad_id: int = 0) -> TextBag:
    """fastText-style bag of embeddings (mean pooling, optional hashed bigrams) + linear classifier.

    Parameters
    ----------
    embed_dim : int
        Width of the word embeddings, and of the features.
    bigram_buckets : int
        Hash buckets of word bigrams added to the bag (0: words only).
    dropout : float
        Dropout on the pooled features.
    """
    return TextBag(num_classes, vocab_size, embed_dim, bigram_buckets, dropout, pad_id)


def _example_input(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 50, (n, 12), generator=g)
    x[:, 9:] = 0  # padding
    return x


text_bag.example_input = _example_input
text_bag.example_kwargs = {"vocab_size": 50}
