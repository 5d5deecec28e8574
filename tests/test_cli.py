import json

import pytest

from otreweight.cli import main


def test_demo_end_to_end_short(tmp_path, capsys):
    out = tmp_path / "demo.json"
    rc = main(["demo", "--seeds", "0", "--stage1-epochs", "3", "--stage2-epochs", "2", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for name in ("stage1-ce", "ce", "cb", "ot", "ot-no-meta-ce", "bal.acc", "gmean"):
        assert name in text
    result = json.loads(out.read_text())
    names = [row["method"] for row in result["summary"]]
    assert names == ["stage1-ce", "ce", "cb", "balanced_softmax", "logit_adjust_posthoc", "cb+meta", "ot", "ot-no-meta-ce"]
    for row in result["summary"]:
        assert 0 <= row["balanced_accuracy_mean"] <= 100
    assert set(result["runs"][0]["ot"]) >= {"best", "last", "best_epoch", "seconds"}


@pytest.mark.parametrize(
    "args, match",
    [
        (["--imbalance-factor", "0.5"], "imbalance factor"),
        (["--methods", "ce,nope"], "unknown method 'nope'"),
        (["--ot", "eps=0"], "eps"),
        (["--ot", "cost=emd"], "unknown cost"),
        (["--ot", "init=zeros"], "unknown initialisation"),
        (["--ot", "colour=blue"], "has no option 'colour'"),
        (["--ot", "targets=all"], "unknown meta target kind"),
        (["--imbalance-factor", "1000"], "no training example"),
        (["--device", "cuda:7"], "device"),
        (["--stage1-epochs", "0"], "--stage1-epochs"),
    ],
)
def test_bad_input_is_one_clear_line(args, match, capsys):
    rc = main(["demo", "--seeds", "0", "--stage1-epochs", "1", "--stage2-epochs", "1", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("otreweight: error:") and "\n" not in err
    assert match in err


def test_help(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    for opt in ("--seeds", "--imbalance-factor", "--methods", "--ot", "--device", "--json"):
        assert opt in text
