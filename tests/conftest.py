import os
import tempfile

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run on 2 cores; keep torch from oversubscribing them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """A tiny image data set (4 classes, 8x8 RGB, 40 train / 10 test per class) as an .npz source."""
    rng = np.random.default_rng(0)
    k = 4
    y, yt = np.repeat(np.arange(k), 40), np.repeat(np.arange(k), 10)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 8, 8, 3)).astype(np.uint8)
        for c in range(k):
            x[labels == c, :, :, c % 3] += 100 + 30 * c
        return x

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=images(y), y_train=y, x_test=images(yt), y_test=yt)
    return path


@pytest.fixture
def kill_mid_epoch(monkeypatch):
    """``kill_mid_epoch(epoch_call, batch)``: the ``epoch_call``-th call of ``train_one_epoch`` raises
    KeyboardInterrupt at its ``batch``-th batch (a kill in the middle of an epoch); the returned
    function restores the loop."""
    import otreweight.train.loop as loop

    real = loop.train_one_epoch

    def arm(epoch_call: int, batch: int):
        calls = {"n": 0}

        def dying(run, epoch):
            calls["n"] += 1
            if calls["n"] == epoch_call:
                loss, seen = run.method.loss, []

                def dies(b, meta):
                    seen.append(1)
                    if len(seen) == batch:
                        raise KeyboardInterrupt
                    return loss(b, meta)

                run.method.loss = dies
            return real(run, epoch)

        monkeypatch.setattr(loop, "train_one_epoch", dying)
        return lambda: monkeypatch.setattr(loop, "train_one_epoch", real)

    return arm


# Tests never touch the user's cache (token memory maps, decoded arrays) nor the network.
os.environ.setdefault("OTREWEIGHT_CACHE", tempfile.mkdtemp(prefix="otreweight-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# A tiny text corpus and a tiny BERT built from it (tests/test_text_hf.py, tests/test_conformance.py).
WORDS = {"sport": "match goal team score win referee league coach",
         "politics": "vote law parliament minister election party senate bill",
         "science": "cell light experiment energy atom theory lab data"}


def corpus(n_per_class=(24, 10, 6), seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for (lab, words), n in zip(WORDS.items(), n_per_class):
        w = words.split()
        for _ in range(n):
            docs.append((lab, " ".join(rng.choice(w, size=int(rng.integers(3, 14))))))
    return docs


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A folder with a randomly initialised 2-layer BERT and its WordPiece tokenizer."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator([t for _, t in corpus()], trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials,
                                                                                show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder)
    return folder


