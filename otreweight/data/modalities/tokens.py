"""The ``tokens`` modality: raw texts in, token ids out, tokeniser trained on the training split.

A text split holds its documents as strings (``ArraySplit`` of an object array). The modality

* builds a Hugging Face ``tokenizers`` vocabulary from the **training split only** (``stats``):
  ``tokenizer: wordlevel`` (default: BERT-style normalisation and pre-tokenisation, then the
  ``vocab_size`` most frequent words, ties broken alphabetically, so the same data always give the
  same vocabulary), ``wordpiece`` or ``bpe`` (byte-level), trained by ``tokenizers``' own trainers,
  which break frequency ties in hash order: their vocabularies, hence the runs, are not
  reproducible bit for bit from one process to the next. ``[PAD]`` = id 0, ``[UNK]`` = 1; the
  tokeniser is saved with the run (its JSON is part of the statistics written into the stage's ``model.json`` card);
* encodes documents truncated to ``max_length`` tokens and pads each batch to its longest document
  with id 0 (``to_tensor`` / ``collate``); token ids are never normalised. With the in-memory
  loader a split is tokenised once per run.

* ``tokenizer: hf/<name or folder>`` uses a pretrained model's own tokenizer
  (``transformers.AutoTokenizer``; its special tokens, e.g. ``[CLS] ... [SEP]``, are kept through
  truncation); ``tokenizer: auto`` (the default) is the model's own for an ``hf/`` model and
  ``wordlevel`` otherwise. Padding is the tokenizer's pad id (``pad_id`` in the statistics);
* with the in-memory loader a split is tokenised once and cached across runs: its ids are a
  ``(N, L)`` int32 memory map ``<cache>/tokens/<key>.npy`` (``$OTREWEIGHT_CACHE`` or
  ``~/.cache/otreweight``), the key a hash of the tokenizer, ``max_length`` and the texts, written
  atomically; ``cache_tokens: false`` turns it off. Each batch is cut to its longest document
  (``MemoryLoader.lengths``), and ``data.bucket_by_length: true`` batches documents of similar length
  together (:class:`~otreweight.data.samplers.EpochSampler`), so padding costs little.

Options come from ``data.modality_options`` (``max_length``, ``vocab_size``, ``tokenizer``,
``min_frequency``, ``cache_tokens``). Models of this modality take ``vocab_size`` and ``pad_id``
(:mod:`otreweight.models.text`, :mod:`otreweight.models.hf`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..._errors import OTReweightError, check_choice
from ...utils import atomic_write
from .base import MODALITIES, Modality

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
    """Documents as strings -> padded ``(N, L)`` int64 token ids (padding = ``pad_id``).

    Parameters
    ----------
    max_length : int
        Tokens kept per document (longer ones are truncated).
    vocab_size : int
        Size of the vocabulary trained on the training split (word-level, WordPiece or BPE).
    tokenizer : {"auto", "wordlevel", "wordpiece", "bpe", "hf/<name>"}
        How documents are split: a tokenizer trained on the training split, or a pretrained one (``auto``: the model's own for ``hf/`` models, else word-level).
    min_frequency : int
        A word (or sub-word merge) must occur this often in the training split to enter the vocabulary.
    cache_tokens : bool
        Keep a tokenised split on disk as an int32 memory map for the next run (in-memory loader).
    """

    name = "tokens"
    default_model = "text_bag"
    model_input = "vocab_size"
    noun = "texts"

    def __init__(self, max_length: int = 256, vocab_size: int = 30000, tokenizer: str = "auto",
                 min_frequency: int = 2, cache_tokens: bool = True) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise OTReweightError(f"max_length must be an integer >= 2, got {max_length!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(_SPECIAL) + 1:
            raise OTReweightError(f"vocab_size must be an integer >= 3, got {vocab_size!r}")
        if not isinstance(tokenizer, str) or not (tokenizer.startswith(PRETRAINED) and len(tokenizer) > 3):
            tokenizer = "wordlevel" if tokenizer == "auto" else check_choice("tokenizer", tokenizer,
                                                                              [*TOKENIZERS, "auto", "hf/<name>"])
        self.max_length, self.vocab_size = max_length, vocab_size
        self.kind, self.min_frequency = tokenizer, int(min_frequency)
        self.cache_tokens = bool(cache_tokens)
        self._tok = self._tok_src = None

    def check(self, x, what: str = "inputs") -> None:
        arr = np.asarray(x, dtype=object)
        if arr.ndim != 1 or not all(isinstance(t, str) for t in arr[:1000]):
            raise OTReweightError(f"this model expects texts (a 1-d array of strings), got {np.shape(x)}")

    def stats(self, x_train, normalize: bool = True) -> dict:
        self.check(x_train)
        if self.kind.startswith(PRETRAINED):
            tok, pad = pretrained_tokenizer(self.kind[len(PRETRAINED):])
        else:
            tok, pad = train_tokenizer(list(x_train), self.kind, self.vocab_size, self.min_frequency), 0
        stats = {"tokenizer": tok.to_str(), "vocab_size": int(tok.get_vocab_size()), "max_length": self.max_length,
                 "pad_id": int(pad)}
        self._tok, self._tok_src = None, None
        return stats

    def stats_from_chunks(self, chunks, normalize: bool = True) -> dict:
        return self.stats(np.concatenate([np.asarray(c, dtype=object) for c in chunks]), normalize)

    def tokenizer(self, stats: dict):
        """The tokeniser saved in ``stats`` (rebuilt from its JSON once per statistics), truncating
        to ``max_length`` (special tokens kept) and never padding (batches are padded here)."""
        if self._tok is None or self._tok_src is not stats["tokenizer"]:
            _require_tokenizers()
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(stats["tokenizer"])
            tok.no_padding()
            tok.enable_truncation(int(stats.get("max_length", self.max_length)))
            self._tok, self._tok_src = tok, stats["tokenizer"]
        return self._tok

    def token_ids(self, texts, stats: dict) -> list[list[int]]:
        """The truncated token ids of each document (no padding)."""
        return [e.ids for e in self.tokenizer(stats).encode_batch([str(t) for t in texts])]

    def encode(self, texts, stats: dict) -> torch.Tensor:
        """Token ids ``(N, L)``, ``L`` = the longest document (at most ``max_length``), padded with ``pad_id``."""
        return torch.from_numpy(_pad(self.token_ids(texts, stats), int(stats.get("pad_id", 0))))

    def lengths(self, texts, stats: dict) -> np.ndarray:
        """The number of tokens of each document after truncation."""
        return np.asarray([len(i) for i in self.token_ids(texts, stats)], dtype=np.int64)

    def to_tensor(self, x, stats: dict, device="cpu") -> torch.Tensor:
        self.check(x)
        if not self.cache_tokens:
            return self.encode(x, stats).to(device)
        return torch.from_numpy(np.asarray(cached_token_ids(self, x, stats), dtype=np.int64)).to(device)

    def collate(self, items: list, stats: dict):
        y = torch.as_tensor(np.asarray([int(b) for _, b in items], dtype=np.int64))
        return self.encode([a for a, _ in items], stats), y

    def batch_lengths(self, x: torch.Tensor, stats: dict) -> torch.Tensor:
        """Tokens per row of an encoded ``(N, L)`` tensor (the padding is at the end)."""
        pad = int(stats.get("pad_id", 0))
        nonpad = (x != pad).long()
        # position of the last non-padding token + 1 (a pad id inside a document is not the end)
        pos = torch.arange(1, x.shape[1] + 1, device=x.device)
        return (nonpad * pos).amax(1) if x.shape[1] else torch.zeros(x.shape[0], dtype=torch.long)

    def model_kwargs(self, example_shape: tuple, stats: dict | None = None) -> dict:
        if not stats:
            return {}
        return {"vocab_size": int(stats["vocab_size"]), "pad_id": int(stats.get("pad_id", 0))}

    def example_batch(self, n: int, rng: np.random.Generator):
        words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
        return np.array([" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(n)], dtype=object)

    def bytes_per_example(self, example_shape: tuple) -> int:
        return 8 * self.max_length


PRETRAINED = "hf/"


def pretrained_tokenizer(name_or_path: str):
    """``(tokenizers.Tokenizer, pad id)`` of a pretrained model's own (fast) tokenizer."""
    from ...models.hf import load_pretrained

    hf = load_pretrained("AutoTokenizer", name_or_path)
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise OTReweightError(f"hf/{name_or_path}: its tokenizer has no fast (Rust) version; give a model with a "
                              "tokenizer.json, or train one (tokenizer: wordpiece)")
    if hf.pad_token_id is None:
        raise OTReweightError(f"hf/{name_or_path}: its tokenizer has no padding token; give an encoder model "
                              "(BERT-, RoBERTa-, MiniLM-style) or train a tokenizer (tokenizer: wordpiece)")
    return backend, int(hf.pad_token_id)


def _pad(ids: list, pad: int, width: int | None = None, dtype=np.int64) -> np.ndarray:
    width = max(1, max((len(i) for i in ids), default=1)) if width is None else width
    out = np.full((len(ids), width), pad, dtype=dtype)
    for r, i in enumerate(ids):
        out[r, : len(i)] = i
    return out


def token_cache_dir() -> Path:
    from ..sources.cache import default_cache_dir

    return default_cache_dir() / "tokens"


def cached_token_ids(modality: TokensModality, texts, stats: dict, cache_dir=None) -> np.ndarray:
    """The padded ids of ``texts`` as a read-only ``(N, L)`` int32 memory map, tokenised on the
    first call and read from ``<cache>/tokens/<key>.npy`` afterwards (key: tokenizer, ``max_length``,
    pad id and the texts)."""
    h = hashlib.sha256()
    h.update(stats["tokenizer"].encode())
    h.update(repr((int(stats.get("max_length", modality.max_length)), int(stats.get("pad_id", 0)), len(texts))).encode())
    for t in texts:
        b = str(t).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    folder = Path(cache_dir) if cache_dir is not None else token_cache_dir()
    path = folder / f"{h.hexdigest()[:24]}.npy"
    if path.exists():
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.ndim == 2 and arr.shape[0] == len(texts):
                return arr
        except (OSError, ValueError):
            pass  # damaged: tokenise again
    ids = _pad(modality.token_ids(texts, stats), int(stats.get("pad_id", 0)), dtype=np.int32)
    try:
        atomic_write(path, lambda f: np.save(f, ids))
    except OSError:  # a read-only or full cache never stops a run: the ids are in memory
        return ids
    return np.load(path, mmap_mode="r")


__all__ = ["TOKENIZERS", "TokensModality", "cached_token_ids", "pretrained_tokenizer", "train_tokenizer"]
