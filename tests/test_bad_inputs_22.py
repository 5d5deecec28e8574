"""Issue 22's probe failures: each bad input is one `otreweight: error:` line naming the culprit
(exit status 2) before long work starts, or the behaviour a user expects (a byte-order mark
stripped, a form feed kept inside a text, a long field read)."""
import json

import numpy as np
import pytest

from otreweight.cli import main
from otreweight.data.sources import DataError, load_dataset

from test_bad_inputs import one_line_error, train
from test_image_lists import jpeg_tree, write_lists
from test_text import DOCS, write


# ----------------------------------------------------------------------------- text files
def _text_rows(ds):
    return [(ds.classes[y], str(x)) for x, y in zip(ds.x_train, ds.y_train)]


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_byte_order_mark_is_stripped(fmt, tmp_path):
    src = write(tmp_path / "d", fmt)
    for f in src.glob(f"*.{fmt}"):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # as Notepad and Excel save UTF-8
    ds = load_dataset(f"text:{src}")
    assert ds.classes == ["politics", "science", "sport"], ds.classes
    assert _text_rows(ds) == [(lab, t) for lab, t in DOCS]


def test_a_byte_order_mark_in_a_class_folder_document_is_stripped(tmp_path):
    src = write(tmp_path / "d", "folders")
    f = sorted((src / "news-train" / "sport").iterdir())[0]
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    assert not any(str(x).startswith("\ufeff") for x in load_dataset(f"text:{src}").x_train)


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "csv"])
@pytest.mark.parametrize("char", ["\x0c", "\u2028", "\x0b", "\x1c", "\u0085"])
def test_form_feeds_and_unicode_line_separators_stay_inside_a_text(fmt, char, tmp_path):
    docs = [(lab, t.replace(" ", f" {char}", 1)) for lab, t in DOCS]
    src = write(tmp_path / "d", fmt, docs=docs, test=docs[:3])
    ds = load_dataset(f"text:{src}")
    assert _text_rows(ds) == docs


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_a_document_longer_than_the_csv_field_limit_is_read(fmt, tmp_path):
    import csv

    long = "word " * 40_000  # 200,000 characters
    docs = [("sport", long.strip()), *DOCS[1:]]
    src = write(tmp_path / "d", fmt, docs=docs)
    if fmt == "tsv":  # with a header row, read by csv
        f = src / "train.tsv"
        f.write_text("label\ttext\n" + f.read_text())
    limit = csv.field_size_limit()
    ds = load_dataset(f"text:{src}")
    assert len(str(ds.x_train[0])) == 199_999 and csv.field_size_limit() == limit  # the module's limit restored
    src2 = write(tmp_path / "e", "tsv", docs=docs)  # the headerless TSV: its first line is no header either
    assert len(str(load_dataset(f"text:{src2}").x_train[0])) == 199_999


@pytest.mark.parametrize("value, words", [("null", ["line 2", '"text" is null'])
                                          , ("5", ["line 2", '"text" is 5']),
                                          ('["a"]', ["line 2", '"text"'])])
def test_a_jsonl_text_that_is_not_a_string_is_refused_with_its_line(value, words, tmp_path, capsys):
    src = write(tmp_path / "d", "jsonl")
    f = src / "train.jsonl"
    lines = f.read_text().splitlines()
    lines[1] = '{"text": %s, "label": "politics"}' % value
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset(f"text:{src}")
    for w in words:
        assert w in str(e.value), str(e.value)
    one_line_error(capsys, train(f"text:{src}", tmp_path / "run", "model.name=text_bag"), "train.jsonl", *words)


def test_a_jsonl_null_label_is_refused(tmp_path):
    src = write(tmp_path / "d", "jsonl")
    f = src / "test.jsonl"
    f.write_text('{"text": "a goal", "label": null}\n')
    with pytest.raises(DataError, match=r'test.jsonl line 1: "label" is null'):
        load_dataset(f"text:{src}")


# ----------------------------------------------------------------------------- image lists
@pytest.fixture
def image_lists(tmp_path):
    root = tmp_path / "imagenet"
    rows = jpeg_tree(root)
    return root, rows, write_lists(root, rows)


def test_a_list_file_with_a_byte_order_mark_is_read(image_lists):
    root, rows, files = image_lists
    for name in files.values():
        f = root / name
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ds = load_dataset("image_list", root=root, **files)
    assert len(ds.split("train")) == len(rows["train"])
    csv = root / "train.csv"
    csv.write_bytes(b"\xef\xbb\xbfpath,label\n" + "".join(f"{p},{c}\n" for p, c in rows["train"]).encode())
    assert len(load_dataset("image_list", root=root, train="train.csv", test=files["test"]).split("train")) == 23


def test_duplicated_lines_in_an_image_list_are_refused_with_counts(image_lists, tmp_path, capsys):
    root, rows, files = image_lists
    f = root / files["train"]
    lines = f.read_text().splitlines()
    f.write_text("\n".join(lines + lines[:2] + lines[:1]) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("image_list", root=root, **files)
    msg = str(e.value)
    assert "2 image(s) more than once" in msg and "3 repeated lines" in msg and "line 1 and 24" in msg, msg
    assert lines[0].split()[0] in msg


def _inat(root, rows, images=None, annotations="default", categories=None):
    imgs = images if images is not None else [{"id": i, "file_name": p} for i, (p, _) in enumerate(rows)]
    ann = ([{"image_id": i, "category_id": c} for i, (_, c) in enumerate(rows)] if annotations == "default"
           else annotations)
    doc = {"images": imgs, "annotations": ann,
           "categories": categories if categories is not None else [{"id": c, "name": f"c{c}"} for c in range(3)]}
    return json.dumps(doc)


@pytest.mark.parametrize("case, words", [
    ("annotations_null", ["has no 'annotations'"]),
    ("annotations_dict", ["'annotations' is a dict, not a list"]),
    ("string_ids", ["annotation 0", "category id \"abc\" is not an integer"]),
    ("string_category_list", ["categories", "category id \"x\""]),
])
def test_inaturalist_json_of_the_wrong_shape_is_one_line(case, words, image_lists, capsys, tmp_path):
    root, rows, files = image_lists
    f = root / "train2018.json"
    if case == "annotations_null":
        f.write_text(_inat(root, rows["train"], annotations=None))
    elif case == "annotations_dict":
        f.write_text(_inat(root, rows["train"], annotations={"a": 1}))
    elif case == "string_ids":
        ann = [{"image_id": i, "category_id": "abc"} for i in range(len(rows["train"]))]
        f.write_text(_inat(root, rows["train"], annotations=ann))
    else:
        f.write_text(_inat(root, rows["train"], categories=[{"id": "x", "name": "a"}]))
    with pytest.raises(DataError) as e:
        load_dataset("image_list", root=root, train="train2018.json", test=files["test"])
    for w in words:
        assert w in str(e.value), str(e.value)


def test_inaturalist_string_ids_that_are_integers_are_read(image_lists):
    root, rows, files = image_lists
    ann = [{"image_id": i, "category_id": str(c)} for i, (_, c) in enumerate(rows["train"])]
    (root / "train2018.json").write_text(_inat(root, rows["train"], annotations=ann))
    ds = load_dataset("image_list", root=root, train="train2018.json", test=files["test"])
    assert ds.split("train").labels.tolist() == [c for _, c in rows["train"]]
