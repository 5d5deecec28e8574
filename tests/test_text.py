"""Text: sources in the formats users have, the tokens modality, text_bag, a run on 20 Newsgroups."""
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from otreweight import OTReweightError
from otreweight.cli import main
from otreweight.data.modalities import get_modality
from otreweight.data.sources import DataError, load_dataset
from otreweight.experiment import load_config, run_experiment

NG = Path(__file__).resolve().parents[2] / "shared" / "data" / "20newsgroups"

DOCS = [("sport", "the match ended in a draw"), ("politics", "the vote in parliament"),
        ("sport", "a goal in the last minute"), ("science", "the cell divides"), ("politics", "a new law passed"),
        ("science", "an experiment with light")]


def write(folder, fmt, docs=DOCS, test=DOCS[:3], gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", docs), ("test", test)):
        if fmt == "tsv":
            text = "".join(f"{lab}\t{t}\n" for lab, t in rows)
        elif fmt == "csv":
            text = "id,text,label\n" + "".join(f'{i},"{t}",{lab}\n' for i, (lab, t) in enumerate(rows))
        elif fmt == "jsonl":
            text = "".join(json.dumps({"text": t, "label": lab}) + "\n" for lab, t in rows)
        else:  # class folders
            for i, (lab, t) in enumerate(rows):
                d = folder / f"news-{split}" / lab
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{i}.txt").write_text(t)
            continue
        name = folder / f"train.{fmt}" if split == "train" else folder / f"test.{fmt}"
        if gz:
            Path(str(name) + ".gz").write_bytes(gzip.compress(text.encode()))
        else:
            name.write_text(text)
    return folder


@pytest.mark.parametrize("fmt, gz", [("tsv", False), ("tsv", True), ("csv", False), ("jsonl", False), ("folders", False)])
def test_text_sources_in_every_format(fmt, gz, tmp_path):
    ds = load_dataset(str(write(tmp_path / "d", fmt, gz=gz)))
    assert ds.modality == "tokens" and ds.classes == ["politics", "science", "sport"]
    pairs = sorted(zip(ds.y_train.tolist(), ds.x_train.tolist()))
    assert pairs == sorted(zip([2, 0, 2, 1, 0, 1], [t for _, t in DOCS])) and len(ds.x_test) == 3
    if fmt != "folders":  # files keep their order; class folders are read class by class
        assert ds.split("train")[3] == ("the cell divides", 1)


@pytest.mark.parametrize("content, match", [
    (b"sport\tgood\nno tab here\n", "line 2 has no tab"),
    (b"\tno label\n", "empty label"),
    (b"sport\t   \n", "empty text"),
    (b"sport\tcaf\xe9\n", "line 1 is not UTF-8"),
])
def test_bad_tsv_lines_are_one_line_with_file_and_line(content, match, tmp_path):
    (tmp_path / "train.tsv").write_bytes(content)
    (tmp_path / "test.tsv").write_text("sport\tok\n")
    with pytest.raises(DataError, match=match) as err:
        load_dataset(str(tmp_path))
    assert "\n" not in str(err.value) and "train.tsv" in str(err.value)


def test_other_bad_text_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train.csv").write_text("body,label\nx,1\n")
    (tmp_path / "a" / "test.csv").write_text("body,label\nx,1\n")
    with pytest.raises(DataError, match="no text column"):
        load_dataset(str(tmp_path / "a"))
    write(tmp_path / "b", "tsv", test=[("cooking", "a recipe")])
    with pytest.raises(DataError, match="'cooking', which no training document has"):
        load_dataset(str(tmp_path / "b"))
    with pytest.raises(OTReweightError, match="max_length must be an integer >= 2"):
        get_modality("tokens", max_length=1)


def test_tokens_are_ids_from_the_training_split_never_normalised():
    mod = get_modality("tokens", max_length=4, vocab_size=50, min_frequency=1)
    train = np.array(["red apple", "green apple", "red car"], dtype=object)
    stats = mod.stats(train)
    ids = mod.to_tensor(np.array(["red apple pie is red", "car"], dtype=object), stats)
    vocab = json.loads(stats["tokenizer"])["model"]["vocab"]
    assert ids.dtype == torch.int64 and ids.shape == (2, 4)  # truncated to max_length, padded per batch
    assert ids[0].tolist() == [vocab["red"], vocab["apple"], 1, 1] and ids[1].tolist() == [vocab["car"], 0, 0, 0]
    assert "pie" not in vocab  # the vocabulary comes from the training split only
    assert mod.stats(train)["tokenizer"] == stats["tokenizer"]  # deterministic
    x, _ = mod.collate([("red", 0), ("green apple car", 1)], stats)
    assert x.shape == (2, 3)  # a streamed batch is padded to its own longest document


def test_text_bag_ignores_padding():
    from otreweight import create_model

    m = create_model("text_bag", num_classes=2, vocab_size=20, embed_dim=4, bigram_buckets=7).eval()
    a = torch.tensor([[3, 4, 5, 0, 0]])
    b = torch.tensor([[3, 4, 5]])
    assert torch.allclose(m.features(a), m.features(b))


@pytest.mark.skipif(not (NG / "train.tsv.gz").exists(), reason="20 Newsgroups copy not in ../shared/data")
def test_a_long_tailed_run_on_20_newsgroups(tmp_path):
    """The real TSV format end to end, on the first 3 classes, every stage on both loader paths."""
    sub = tmp_path / "ng3"
    sub.mkdir()
    for split in ("train", "test"):
        lines = gzip.decompress((NG / f"{split}.tsv.gz").read_bytes()).decode().splitlines()
        keep = [l for l in lines if l.split("\t", 1)[0] in ("alt.atheism", "comp.graphics", "sci.space")]
        (sub / f"{split}.tsv").write_text("\n".join(keep[:: 3 if split == "train" else 6]) + "\n")
    res = {}
    for loader in ("memory", "stream"):
        cfg = load_config("configs/20newsgroups_lt_if10.yaml", [
            f"data.source={sub}", f"output_dir={tmp_path / loader}", "stage1.epochs=4", "stage2.*.epochs=2",
            "data.n_val_per_class=5", "data.n_meta_per_class=5", "data.modality_options.vocab_size=3000",
            "progress=false", "threads=1", f"data.loader={loader}", "data.num_workers=1"])
        res[loader] = run_experiment(cfg, log=lambda *a: None)
    for stage in res["memory"]:
        assert res["memory"][stage]["best"] == res["stream"][stage]["best"], stage
    assert res["memory"]["stage2_ot_classifier"]["best"]["balanced_accuracy"] > 0.4  # well above chance (1/3)
    # the saved model evaluates on the source by itself (tokeniser travels in model.json)
    assert main(["evaluate", str(tmp_path / "memory" / "stage2_ot_classifier" / "model.json"), "--data", str(sub)]) == 0


def test_a_text_run_killed_mid_stage_resumes_exactly(tmp_path, kill_mid_epoch):
    src = write(tmp_path / "d", "tsv", docs=[(lab, f"{t} {i}") for i in range(12) for lab, t in DOCS],
                test=DOCS * 2)

    def cfg(out):
        return load_config("configs/20newsgroups_lt_if10.yaml", [
            f"data.source={src}", f"output_dir={out}", "stage1.epochs=3", "stage1.batch_size=8",
            "stage2.*.epochs=2", "data.imbalance_factor=2", "data.n_val_per_class=3", "data.n_meta_per_class=3",
            "data.modality_options.min_frequency=1", "progress=false", "threads=1"])

    full = run_experiment(cfg(tmp_path / "full"), log=lambda *a: None)
    disarm = kill_mid_epoch(2, 2)  # killed inside stage 1's second epoch
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg(tmp_path / "cut"), log=lambda *a: None)
    disarm()
    resumed = run_experiment(cfg(tmp_path / "cut"), resume=True, log=lambda *a: None)
    for stage in full:
        assert full[stage]["best"] == resumed[stage]["best"] and full[stage]["last"] == resumed[stage]["last"]


def test_a_class_left_without_training_documents_is_one_line_naming_it(tmp_path):
    docs = [(lab, f"{t} {i}") for i in range(8) for lab, t in DOCS[:2]] + [("science", "the cell divides")] * 2
    src = write(tmp_path / "d", "tsv", docs=docs, test=DOCS)
    cfg = load_config("configs/20newsgroups_lt_if10.yaml", [
        f"data.source={src}", f"output_dir={tmp_path / 'o'}", "data.n_val_per_class=2", "data.n_meta_per_class=2"])
    with pytest.raises(OTReweightError, match=r"class 1 \('science'\) has 2 examples, too few .*data.profile: given") as e:
        run_experiment(cfg, log=lambda *a: None)
    assert "\n" not in str(e.value) and not (tmp_path / "o" / "config.yaml").exists()
