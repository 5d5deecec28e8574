"""The ``tokens`` modality: raw texts in, token ids out, tokeniser trained on the training split.

A text split holds its documents as strings (``ArraySplit`` of an object array). The modality

* builds a Hugging Face ``tokenizers`` vocabulary from the **training split only** (``stats``):
  ``tokenizer: wordlevel`` (default: BERT-style normalisation and pre-tokenisation, then the
  ``vocab_size`` most frequent words, ties broken alphabetically, so the same data always give the
  same vocabulary), ``wordpiece`` or ``bpe`` (byte-level), trained by ``tokenizers``' own trainers,
  which break frequency ties in hash order: their vocabularies, hence the runs, are not
  reproducible bit for bit from one process to the next. ``[PAD]`` = id 0, ``[UNK]`` = 1; the
  tokeniser is saved with the run (its JSON is part of the statistics written into ``best.pt``);
* encodes documents truncated to ``max_length`` tokens and pads each batch to its longest document
  with id 0 (``to_tensor`` / ``collate``); token ids are never normalised. With the in-memory
  loader a split is tokenised once per run.

Options come from ``data.modality_options`` (``max_length``, ``vocab_size``, ``tokenizer``,
``min_frequency``). Models of this modality take ``vocab_size`` and read id 0 as padding
(:mod:`otreweight.models.text`).
"""
from __future__ import annotations

import numpy as np
import torch

from .._errors import OTReweightError, check_choice
from .modality import MODALITIES, Modality

TOKENIZERS = ("wordlevel", "wordpiece", "bpe")
_SPECIAL = ["[PAD]", "[UNK]"]


def _require_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise OTReweightError("text data need the Hugging Face tokenizers package: pip install 'otreweight[text]' "
                              "(or pip install tokenizers)") from None


def train_tokenizer(texts, kind: str = "wordlevel", vocab_size: int = 30000, min_frequency: int = 2):
    """A ``tokenizers.Tokenizer`` trained on ``texts`` (an iterable of strings)."""
    _require_tokenizers()
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    check_choice("tokenizer", kind, TOKENIZERS)
    if kind == "wordlevel":
        from collections import Counter

        tok = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        counts: Counter = Counter()
        norm, pre = tok.normalizer, tok.pre_tokenizer
        for t in texts:
            counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(str(t))))
        words = sorted((w for w, c in counts.items() if c >= min_frequency), key=lambda w: (-counts[w], w))
        vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words[: vocab_size - 2])}}
        tok.model = models.WordLevel(vocab, unk_token="[UNK]")
        return tok
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=_SPECIAL,
                                            show_progress=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=_SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((str(t) for t in texts), trainer=trainer, length=len(texts))
    return tok


@MODALITIES.register("tokens")
class TokensModality(Modality):
    """Documents as strings -> padded ``(N, L)`` int64 token ids (0 = padding)."""

    name = "tokens"
    default_model = "text_bag"

    def __init__(self, max_length: int = 256, vocab_size: int = 30000, tokenizer: str = "wordlevel",
                 min_frequency: int = 2) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise OTReweightError(f"max_length must be an integer >= 2, got {max_length!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(_SPECIAL) + 1:
            raise OTReweightError(f"vocab_size must be an integer >= 3, got {vocab_size!r}")
        self.max_length, self.vocab_size = max_length, vocab_size
        self.kind, self.min_frequency = check_choice("tokenizer", tokenizer, TOKENIZERS), int(min_frequency)
        self._tok = self._tok_src = None

    def check(self, x, what: str = "inputs") -> None:
        arr = np.asarray(x, dtype=object)
        if arr.ndim != 1 or not all(isinstance(t, str) for t in arr[:1000]):
            raise OTReweightError(f"this model expects texts (a 1-d array of strings), got {np.shape(x)}")

    def stats(self, x_train, normalize: bool = True) -> dict:
        self.check(x_train)
        tok = train_tokenizer(list(x_train), self.kind, self.vocab_size, self.min_frequency)
        stats = {"tokenizer": tok.to_str(), "vocab_size": int(tok.get_vocab_size()), "max_length": self.max_length}
        self._tok, self._tok_src = tok, stats["tokenizer"]
        return stats

    def stats_from_chunks(self, chunks, normalize: bool = True) -> dict:
        return self.stats(np.concatenate([np.asarray(c, dtype=object) for c in chunks]), normalize)

    def tokenizer(self, stats: dict):
        """The tokeniser saved in ``stats`` (rebuilt from its JSON once per statistics)."""
        if self._tok is None or self._tok_src is not stats["tokenizer"]:
            _require_tokenizers()
            from tokenizers import Tokenizer

            self._tok, self._tok_src = Tokenizer.from_str(stats["tokenizer"]), stats["tokenizer"]
        return self._tok

    def encode(self, texts, stats: dict) -> torch.Tensor:
        """Token ids ``(N, L)``, ``L`` = the longest document (at most ``max_length``), 0 = padding."""
        tok = self.tokenizer(stats)
        length = int(stats.get("max_length", self.max_length))
        enc = tok.encode_batch([str(t) for t in texts])
        ids = [e.ids[:length] for e in enc]
        width = max(1, max((len(i) for i in ids), default=1))
        out = np.zeros((len(ids), width), dtype=np.int64)
        for r, i in enumerate(ids):
            out[r, : len(i)] = i
        return torch.from_numpy(out)

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        return self.encode(x, stats).to(device)

    def collate(self, items: list, stats: dict):
        y = torch.as_tensor(np.asarray([int(b) for _, b in items], dtype=np.int64))
        return self.encode([a for a, _ in items], stats), y

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        return {"vocab_size": int(stats["vocab_size"])} if stats else {}

    def example_batch(self, n: int, rng: np.random.Generator):
        words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
        return np.array([" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(n)], dtype=object)

    def bytes_per_example(self, example_shape: tuple) -> int:
        return 8 * self.max_length


__all__ = ["TOKENIZERS", "TokensModality", "train_tokenizer"]
