"""Hugging Face encoders (hf/<folder>), the model's own tokenizer, the token cache, length buckets.

A tiny BERT is built from a ``transformers`` config with random weights and a WordPiece tokenizer
trained on the test corpus (nothing is downloaded)."""
import json
import types

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from otreweight import OTReweightError  # noqa: E402
from otreweight.model_file import read_model  # noqa: E402
from otreweight.data.loaders import MemoryLoader, build_loader  # noqa: E402
from otreweight.data.dataset import ArraySplit  # noqa: E402
from otreweight.data.modalities import get_modality  # noqa: E402
from otreweight.data.samplers import EpochSampler  # noqa: E402
from otreweight.experiment import load_config, run_experiment  # noqa: E402
from otreweight.models import MODELS, create_model  # noqa: E402
from otreweight.testing import check_model  # noqa: E402
from conftest import corpus  # noqa: E402

def write_tsv(folder, docs, test):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("".join(f"{lab}\t{t}\n" for lab, t in docs))
    (folder / "test.tsv").write_text("".join(f"{lab}\t{t}\n" for lab, t in test))
    return folder


def test_the_models_own_tokenizer_keeps_special_tokens_through_truncation(tiny_bert):
    mod = get_modality("tokens", tokenizer=f"hf/{tiny_bert}", max_length=5)
    stats = mod.stats(np.array(["match goal"], dtype=object))
    vocab = json.loads(stats["tokenizer"])["model"]["vocab"]
    ids = mod.to_tensor(np.array(["match goal team score win", "vote"], dtype=object), stats)
    assert stats["pad_id"] == vocab["[PAD]"] and stats["vocab_size"] == len(vocab)
    assert ids[0, 0] == vocab["[CLS]"] and ids[0, -1] == vocab["[SEP]"] and ids.shape == (2, 5)
    assert ids[1].tolist()[:3] == [vocab["[CLS]"], vocab["vote"], vocab["[SEP]"]]
    assert (ids[1, 3:] == stats["pad_id"]).all()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_hf_model_contract_and_padding_is_masked(tiny_bert, pooling):
    name = f"hf/{tiny_bert}"
    assert name in MODELS
    m = create_model(name, num_classes=3, vocab_size=60, pooling=pooling).eval()
    assert m.feature_dim == 16
    a = torch.tensor([[2, 7, 8, 3, 0, 0]])
    assert torch.allclose(m.features(a), m.features(a[:, :4]), atol=1e-5)  # padding does not move the features
    check_model(name)  # the contract (also run by tests/test_conformance.py for every prefix family)


def test_hf_bad_inputs_are_one_line(tiny_bert, tmp_path):
    with pytest.raises(OTReweightError, match="HF_HUB_OFFLINE is set; download it where you are online") as e:
        create_model("hf/no-such-org/no-such-model", num_classes=2, vocab_size=10)
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OTReweightError, match="holds no loadable model"):
        create_model(f"hf/{tmp_path / 'empty'}", num_classes=2, vocab_size=10)
    with pytest.raises(OTReweightError, match="tokenizer has 5000 ids but the encoder embeds only"):
        create_model(f"hf/{tiny_bert}", num_classes=2, vocab_size=5000)
    from otreweight.models.hf import read_hidden_size

    with pytest.raises(OTReweightError, match="cannot read the encoder's hidden size"):
        read_hidden_size(types.SimpleNamespace(n_embd=None), "odd")
    with pytest.raises(OTReweightError, match="unknown pooling"):
        create_model(f"hf/{tiny_bert}", num_classes=2, vocab_size=10, pooling="max")


def hf_cfg(src, out, tiny_bert, *extra):
    return load_config("configs/20newsgroups_lt_if10_frozen_encoder.yaml", [
        f"data.source={src}", f"output_dir={out}", f"model.name=hf/{tiny_bert}", "stage1.epochs=3",
        "stage2.*.epochs=2", "data.imbalance_factor=4", "data.n_val_per_class=2", "data.n_meta_per_class=2",
        "data.modality_options.max_length=16", "data.allow_cut=true", "progress=false", "threads=1", *extra])


def count_feature_passes(monkeypatch) -> list:
    """The names of the splits whose features are computed (in memory or into the store), in order."""
    from otreweight.train import features

    calls = []
    real, real_chunks = features.compute_features, features._feature_chunks
    monkeypatch.setattr(features, "compute_features", lambda m, loader, *a, **k: calls.append(loader.name) or
                        real(m, loader, *a, **k))
    monkeypatch.setattr(features, "_feature_chunks", lambda m, loader, *a, **k: calls.append(loader.name) or
                        real_chunks(m, loader, *a, **k))
    return calls


def test_a_frozen_encoder_run_computes_features_once_and_fine_tunes(tiny_bert, tmp_path, monkeypatch):
    """Stage 1 and the classifier-only OT stage on one feature pass per split; a fine-tuning stage
    (AdamW, linear schedule) trains the encoder; the model's tokenizer is taken by itself."""

    src = write_tsv(tmp_path / "d", corpus((30, 14, 10)), corpus((4, 4, 4), seed=1))
    calls = count_feature_passes(monkeypatch)
    stage2 = ('stage2=[{"name": "ot_classifier", "method": "ot"}, {"name": "ot_finetune", "method": "ot", '
              '"trainable": "all", "optimizer": "adamw", "schedule": "linear", "lr": 0.0005, "warmup_epochs": 1, '
              '"batch_size": 8, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2}]')
    res = run_experiment(hf_cfg(src, tmp_path / "run", tiny_bert, stage2), log=lambda *a: None)
    # stage 1 and ot_classifier share one frozen pass per split (the fine-tuning stage predicts directly)
    assert sorted(calls) == ["meta", "test", "train", "val"], calls
    assert set(res) == {"stage1", "stage2_ot_classifier", "stage2_ot_finetune"}
    saved = read_model(tmp_path / "run" / "stage2_ot_finetune" / "model.json")
    first = read_model(tmp_path / "run" / "stage1" / "model.json")
    assert list(saved["state_dict"]) == list(first["state_dict"])  # the model's order, read back
    key = "encoder.embeddings.word_embeddings.weight"  # (the unused pooler stays where it was)
    assert not torch.equal(saved["state_dict"][key], first["state_dict"][key])  # fine-tuning moved the encoder
    assert saved["input"]["modality_options"]["tokenizer"] == f"hf/{tiny_bert}"


def scores(res):
    return {k: (v["best"], v["last"], v["best_epoch"]) for k, v in res.items()}


def test_frozen_features_are_stored_on_disk_for_the_next_run(tiny_bert, tmp_path, monkeypatch):

    src = write_tsv(tmp_path / "d", corpus((30, 14, 10)), corpus((4, 4, 4), seed=1))
    store = tmp_path / "store"
    first = run_experiment(hf_cfg(src, tmp_path / "a", tiny_bert, f"feature_store={store}"), log=lambda *a: None)
    assert len(list(store.glob("*.npy"))) == 4  # train, val, meta, test
    calls = count_feature_passes(monkeypatch)
    again = run_experiment(hf_cfg(src, tmp_path / "b", tiny_bert, f"feature_store={store}"), log=lambda *a: None)
    assert calls == [] and scores(again) == scores(first)  # every split read back, the same results to the last digit
    monkeypatch.undo()
    other = run_experiment(hf_cfg(src, tmp_path / "c", tiny_bert, f"feature_store={store}", "seed=1"),
                           log=lambda *a: None)
    assert len(list(store.glob("*.npy"))) == 7 and scores(other) != scores(first)  # another seed: other splits, the same test set
    off = hf_cfg(src, tmp_path / "e", tiny_bert, "feature_store=off")
    assert scores(run_experiment(off, log=lambda *a: None)) == scores(first)


def test_token_ids_are_cached_across_runs_as_a_memory_map(tmp_path):
    from otreweight.data.modalities import cached_token_ids

    mod = get_modality("tokens", max_length=6, min_frequency=1)
    texts = np.array([t for _, t in corpus()], dtype=object)
    stats = mod.stats(texts)
    first = cached_token_ids(mod, texts, stats, tmp_path)
    assert isinstance(first, np.memmap) and first.dtype == np.int32 and len(list(tmp_path.glob("*.npy"))) == 1
    assert np.array_equal(first, mod.encode(texts, stats).numpy())
    mod.token_ids = None  # a second call must not tokenise again
    again = cached_token_ids(mod, texts, stats, tmp_path)
    assert np.array_equal(again, first)
    mod2 = get_modality("tokens", max_length=4, min_frequency=1)
    cached_token_ids(mod2, texts, {**stats, "max_length": 4}, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # another max_length is another entry
    for f in tmp_path.glob("*.npy"):
        f.write_bytes(b"damaged")  # a damaged entry is tokenised again, not served
    mod3 = get_modality("tokens", max_length=4, min_frequency=1)
    assert np.array_equal(cached_token_ids(mod3, texts, {**stats, "max_length": 4}, tmp_path),
                          mod3.encode(texts, {**stats, "max_length": 4}).numpy())


def test_memory_batches_are_cut_to_their_longest_document():
    mod = get_modality("tokens", max_length=32, min_frequency=1)
    texts = np.array(["a b c d e f g h", "a", "a b", "a b c"], dtype=object)
    stats = mod.stats(texts)
    loader = build_loader(ArraySplit(texts, np.arange(4) % 2, ["x", "y"], "tokens"), mod, stats, "cpu", "memory")
    assert isinstance(loader, MemoryLoader) and loader.lengths.tolist() == [8, 1, 2, 3]
    shapes = [b.shape for b in loader.batches([torch.tensor([1, 2]), torch.tensor([0, 3])])]
    assert shapes == [(2, 2), (2, 8)]
    assert [c.shape[1] for c in loader.chunks(2)] == [8, 3]


def test_length_buckets_visit_every_example_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, 1000)
    s = EpochSampler(np.zeros(1000, dtype=np.int64), 1, 10, lengths=lengths, bucket_window=20)
    g = torch.Generator().manual_seed(0)
    batches = s.batches(g)
    ids = torch.cat(batches)
    assert sorted(ids.tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b.numpy()]) for b in batches])
    plain = EpochSampler(np.zeros(1000, dtype=np.int64), 1, 10).batches(torch.Generator().manual_seed(0))
    assert spread < 0.2 * np.mean([np.ptp(lengths[b.numpy()]) for b in plain])
    again = EpochSampler(np.zeros(1000, dtype=np.int64), 1, 10, lengths=lengths, bucket_window=20).batches(
        torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # seeded: a resumed run draws the same
    nxt = s.batches(g)  # the next epoch: another order
    assert not all(torch.equal(a, b) for a, b in zip(batches, nxt))


def test_bucketed_text_run_and_non_sequence_data_refused(tmp_path, tiny_npz):
    src = write_tsv(tmp_path / "d", corpus((30, 14, 10)), corpus((4, 4, 4), seed=1))
    cfg = load_config("configs/20newsgroups_lt_if10.yaml", [
        f"data.source={src}", f"output_dir={tmp_path / 'b'}", "stage1.epochs=2", "stage2.*.epochs=1",
        "data.imbalance_factor=4", "data.n_val_per_class=2", "data.n_meta_per_class=2", "progress=false",
        "threads=1", "data.bucket_by_length=true", "data.modality_options.min_frequency=1", "data.allow_cut=true"])
    res = run_experiment(cfg, log=lambda *a: None)
    assert res["stage2_ot_classifier"]["best"]["balanced_accuracy"] > 0
    bad = load_config("configs/cifar10_lt_if100.yaml", [f"data.source={tiny_npz}", f"output_dir={tmp_path / 'c'}",
                                                        "model.name=small_cnn", "data.bucket_by_length=true",
                                                        "data.imbalance_factor=2", "data.n_meta_per_class=2",
                                                        "data.n_val_per_class=2"])
    with pytest.raises(OTReweightError, match="bucket_by_length needs sequences"):
        run_experiment(bad, log=lambda *a: None)
