"""Any Hugging Face ``transformers`` encoder as a backbone: ``model.name: hf/<name or local folder>``.

The backbone is ``transformers.AutoModel.from_pretrained(<name or folder>)``; the features of a
document with token ids ``x`` (padding = the tokenizer's pad id, mask ``m = x != pad``) are its
pooled last hidden states ``H`` (``(L, d)``):

* ``pooling: cls``  - ``f(x) = H[0]`` (the first token, ``[CLS]`` / ``<s>``);
* ``pooling: mean`` - ``f(x) = sum_t m_t H[t] / sum_t m_t`` (the sentence-transformers pooling);

then the linear classifier over ``d = config.hidden_size``. Every method (OT included) sees these
pooled features, so a frozen encoder is the decoupled stage 2 (``trainable: classifier``: features
once, without gradients, cached) and ``trainable: all`` fine-tunes it (AdamW with a linear warm-up
and decay: ``optimizer: adamw``, ``schedule: linear``). The tokenizer is the model's own: the
``tokens`` modality takes it from the same name or folder (``tokenizer: auto``).

Offline, a name that is neither a local folder nor in the Hugging Face cache is one line saying how
to download it or what to pass instead. ``pretrained: false`` builds the architecture from its
``config.json`` with random weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .._errors import OTReweightError, check_choice
from . import MODELS
from .base import FeatureClassifier

POOLINGS = ("cls", "mean")
PREFIX = "hf/"


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise OTReweightError("hf/ models need the transformers package: pip install 'otreweight[text]' "
                              "(or pip install transformers)") from None


def _quiet():
    """Silence transformers' progress bars and advice; errors still surface as exceptions."""
    import transformers

    transformers.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older transformers
        pass


def resolve(name_or_path: str) -> str:
    """A local folder as an absolute path, a hub name as it is."""
    p = Path(name_or_path).expanduser()
    return str(p.resolve()) if p.exists() else name_or_path


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids Hugging Face hub downloads (hf/ and timm/ models)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


_REACHABLE: dict = {}


def hub_unreachable(url: str | None = None, timeout: float = 3.0) -> str | None:
    """The host of ``url`` (default: the Hugging Face hub, ``HF_ENDPOINT``) when a TCP connection to it
    fails within ``timeout`` seconds (name lookup included), else ``None`` (also behind a proxy); asked
    once per host. A model that is not cached is refused at once instead of after the hub client's
    retries."""
    import socket
    import threading
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):
        return None  # through a proxy: a direct connection says nothing; the hub client decides
    u = urlparse(url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = u.hostname or "huggingface.co", u.port or (80 if u.scheme == "http" else 443)
    if (host, port) not in _REACHABLE:
        ok = []

        def connect():
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                ok.append(True)
            except OSError:
                pass

        t = threading.Thread(target=connect, daemon=True)  # bounds a slow name lookup too
        t.start()
        t.join(timeout)
        _REACHABLE[(host, port)] = bool(ok)
    return None if _REACHABLE[(host, port)] else host


def load_pretrained(kind: str, name_or_path: str, **kwargs):
    """``transformers.Auto<kind>.from_pretrained`` from a local folder, the cache, or the hub (one try)."""
    _require_transformers()
    _quiet()
    import transformers

    auto = getattr(transformers, kind)
    src = resolve(name_or_path)
    local = Path(src).is_dir()
    if not local and Path(src).exists():
        raise OTReweightError(f"hf/{name_or_path}: a Hugging Face model is a folder (config.json and weights), "
                              f"not a file; pass the folder that holds it")
    try:
        return auto.from_pretrained(src, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        first = e
    if local or hub_offline():
        why = (f"the folder {src} holds no loadable {kind[4:].lower()} ({str(first).splitlines()[0][:160]})"
               if local else "it is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
        raise OTReweightError(f"hf/{name_or_path}: {why}; download it where you are online "
                              f"(huggingface-cli download {name_or_path}) or pass a local model folder (hf/path/to/model)")
    host = hub_unreachable()
    if host is not None:
        raise OTReweightError(f"hf/{name_or_path}: it is not in the Hugging Face cache and the hub ({host}) cannot be "
                              f"reached; download it where you are online (huggingface-cli download {name_or_path}) "
                              "and pass the local folder (hf/path/to/model); set HF_HUB_OFFLINE=1 to never try the "
                              "network")
    try:
        return auto.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as e:
        raise OTReweightError(f"hf/{name_or_path}: cannot load it ({str(e).splitlines()[0][:160]}); check the name, or "
                              f"download it where you are online (huggingface-cli download {name_or_path}) and pass "
                              "the local folder (hf/path/to/model)") from None


def read_hidden_size(config, name: str) -> int:
    """The width of the encoder's hidden states, from its config."""
    for key in ("hidden_size", "dim", "d_model", "embed_dim"):
        v = getattr(config, key, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    raise OTReweightError(f"hf/{name}: cannot read the encoder's hidden size (its config has none of hidden_size, "
                          "dim, d_model, embed_dim); give it as model.options.hidden_size")


class HFEncoderClassifier(FeatureClassifier):
    """A ``transformers`` encoder, pooled to ``(N, d)`` features, then ``classifier``."""

    def __init__(self, encoder: nn.Module, num_classes: int, feature_dim: int, pooling: str = "cls",
                 pad_id: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder, self.pooling, self.pad_id = encoder, check_choice("pooling", pooling, POOLINGS), int(pad_id)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        mask = (ids != self.pad_id).long()
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            f = h[:, 0]
        else:
            m = mask.unsqueeze(-1).to(h.dtype)
            f = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.dropout(f)


def hf_model(num_classes: int, vocab_size: int, name_or_path: str, pooling: str = "cls", pretrained: bool = True,
             pad_id: int = 0, dropout: float = 0.0, hidden_size: int | None = None) -> HFEncoderClassifier:
    """``hf/<name or folder>``: a ``transformers`` encoder (pooled features) + linear classifier.

    ``vocab_size`` / ``pad_id`` come from the tokenizer (the ``tokens`` modality); a tokenizer with
    more ids than the encoder has embeddings is refused.

    Parameters
    ----------
    pooling : {"cls", "mean"}
        Features: the first token's final state, or the mean over the non-padding tokens.
    pretrained : bool
        Load the encoder's weights (true) or only its architecture, randomly initialised.
    dropout : float
        Dropout on the pooled features.
    hidden_size : int or None
        Feature width when the encoder's config does not say it (null: read from the config).
    """
    if pretrained:
        encoder = load_pretrained("AutoModel", name_or_path)
    else:
        import transformers

        encoder = transformers.AutoModel.from_config(load_pretrained("AutoConfig", name_or_path))
    width = hidden_size if hidden_size is not None else read_hidden_size(encoder.config, name_or_path)
    emb = encoder.get_input_embeddings()
    rows = getattr(emb, "num_embeddings", None)
    if rows is not None and int(vocab_size) > rows:
        raise OTReweightError(f"hf/{name_or_path}: the tokenizer has {vocab_size} ids but the encoder embeds only "
                              f"{rows}; use the model's own tokenizer (data.modality_options.tokenizer: auto)")
    return HFEncoderClassifier(encoder, num_classes, int(width), pooling, pad_id, dropout)



def _modality_defaults(model_name: str) -> dict:
    """Options the ``tokens`` modality takes from the model ``hf/<name>``: its own tokenizer."""
    return {"tokenizer": model_name}


def _example_input(n: int) -> torch.Tensor:
    """Ids below 50 with trailing padding (0), for the conformance check (``vocab_size`` 50)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 50, (n, 10), generator=g)
    x[:, 7:] = 0
    return x


hf_model.modality_defaults = _modality_defaults
hf_model.example_input = _example_input
hf_model.example_kwargs = {"vocab_size": 50}
MODELS.register_prefix(PREFIX, hf_model, "name_or_path")

__all__ = ["HFEncoderClassifier", "POOLINGS", "hf_model", "load_pretrained", "read_hidden_size"]
