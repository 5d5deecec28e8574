"""Issue 27: paired statistics in `compare`, deployment priors (estimate_prior, evaluate --prior), ot-posthoc."""
import csv
import json

import numpy as np
import pytest
import torch

from otreweight import OTReweightError, estimate_prior
from otreweight.cli import main
from otreweight.compare import paired_stats, run_comparison, write_tables
from otreweight.experiment import load_config
from otreweight.methods import create_method
from otreweight.methods.ot_posthoc import sinkhorn_plan
from otreweight.prior import adjust_logits, check_prior, prior_accuracy

from test_bad_inputs import one_line_error
from test_compare import FAST, tiny_config


# ----------------------------------------------------------------------------- paired statistics
def _result(bal, acc=0.5):
    m = {"accuracy": acc, "balanced_accuracy": bal, "many": None, "medium": None, "few": None}
    return {"best": m, "last": m, "seconds": 1.0, "seconds_per_epoch": 1.0}


def test_paired_columns_hand_computed_on_two_seeds(tmp_path):
    cfg = load_config("configs/cifar10_lt_if100.yaml")
    plan = [{"name": "ce", "stage": "stage1"},
            {"name": "cb", "method": "cb", "start": "scratch", "trainable": "all", "epochs": 1, "batch_size": 8,
             "lr": 0.1, "options": {}},
            {"name": "crt", "method": "crt", "start": "stage1", "trainable": "classifier", "epochs": 1,
             "batch_size": 8, "lr": 0.1, "options": {}}]
    # balanced accuracies: seed 0: ce 50, cb 60, crt 63; seed 1: ce 40, cb 70, crt 74
    results = {0: {"stage1": _result(0.50), "stage2_cb": _result(0.60), "stage2_crt": _result(0.63)},
               1: {"stage1": _result(0.40), "stage2_cb": _result(0.70), "stage2_crt": _result(0.74)}}
    files = write_tables(tmp_path, plan, results, "best", cfg)  # reference: cb (compared)
    with open(files["csv"]) as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    # ce - cb: -10, -30 -> mean -20, sample std sqrt(200) = 14.142; t(0.975, 1) = 12.7062
    half = 12.706204736 * np.sqrt(200.0) / np.sqrt(2.0)
    ce = rows["ce"]
    assert ce["paired_reference"] == "cb" and ce["paired_seeds"] == "2"
    assert float(ce["paired_diff_mean"]) == pytest.approx(-20.0)
    assert float(ce["paired_diff_std"]) == pytest.approx(np.sqrt(200.0))
    assert float(ce["paired_ci_low"]) == pytest.approx(-20.0 - half, abs=1e-6)
    assert float(ce["paired_ci_high"]) == pytest.approx(-20.0 + half, abs=1e-6)
    assert ce["paired_verdict"] == "within noise"
    # crt - cb: +3, +4 -> mean 3.5, std 0.7071, half-width 12.7062 * 0.5 = 6.353 -> within noise
    assert float(rows["crt"]["paired_diff_mean"]) == pytest.approx(3.5)
    assert float(rows["crt"]["paired_ci_high"]) == pytest.approx(3.5 + 12.706204736 * 0.5, abs=1e-6)
    assert rows["cb"]["paired_verdict"] == "reference"
    md = files["md"].read_text()
    assert "## Paired differences to `cb`" in md
    assert "| ce | 2 | -20.00 ± 14.14 | [-147.06, +107.06] | within noise |" in md
    saved = json.loads(files["json"].read_text())
    assert saved["reference"] == "cb"
    assert saved["paired"][0]["diff_per_seed"] == {"0": pytest.approx(-10.0), "1": pytest.approx(-30.0)}
    assert files["png"].stat().st_size > 0
    # another reference, and one that is not compared
    files = write_tables(tmp_path, plan, results, "best", cfg, reference="ce")
    with open(files["csv"]) as fh:
        # crt - ce: +13, +34
        assert float({r["method"]: r["paired_diff_mean"] for r in csv.DictReader(fh)}["crt"]) == pytest.approx(23.5)
    with pytest.raises(OTReweightError, match="--reference ldam_drw is not among"):
        write_tables(tmp_path, plan, results, "best", cfg, reference="ldam_drw")


def test_paired_verdicts():
    assert paired_stats([1.0, 1.2, 0.9])["verdict"] == "better"
    assert paired_stats([-1.0, -1.2, -0.9])["verdict"] == "worse"
    assert paired_stats([1.0, -1.2, 0.9])["verdict"] == "within noise"
    one = paired_stats([2.0])
    assert one["verdict"] == "one seed" and one["diff_mean"] == 2.0 and one["ci_low"] is None


# ----------------------------------------------------------------------------- priors
def _label_shift(q, n=20000, k=5, seed=0):
    """Calibrated posteriors of a Gaussian mixture (equal-prior source) on data drawn with prior q."""
    rng = np.random.default_rng(seed)
    mus = rng.normal(size=(k, 2)) * 2.0

    def draw(prior, m):
        y = rng.choice(k, m, p=prior)
        x = mus[y] + rng.normal(size=(m, 2))
        ll = -((x[:, None, :] - mus[None]) ** 2).sum(-1) / 2
        p = np.exp(ll - ll.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True), y

    return draw(q, n), draw(np.full(k, 1 / k), 4000)


def test_em_recovers_a_known_prior_within_0_05_l1():
    q = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    (p, _), _ = _label_shift(q)
    est = estimate_prior(p, source_prior=np.full(5, 0.2), method="em")
    assert np.abs(est - q).sum() < 0.05, est
    assert np.abs(p.mean(0) - q).sum() > np.abs(est - q).sum()  # better than the mean of the scores


def test_bbse_recovers_a_known_prior():
    q = np.array([0.45, 0.25, 0.15, 0.1, 0.05])
    (p, _), (pv, yv) = _label_shift(q, seed=1)
    est = estimate_prior(p, method="bbse", val_probs=pv, val_labels=yv)
    assert est.sum() == pytest.approx(1.0) and np.abs(est - q).sum() < 0.1, est
    with pytest.raises(OTReweightError, match="needs val_probs"):
        estimate_prior(p, method="bbse")


def test_prior_accuracy_and_adjustment_by_hand():
    y = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 1, 0, 1, 0, 2])  # recalls 2/3, 1, 1/2
    assert prior_accuracy(y, pred, [0.5, 0.3, 0.2]) == pytest.approx(0.5 * 2 / 3 + 0.3 + 0.2 * 0.5)
    z = adjust_logits(np.zeros((1, 3)), [0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
    assert z[0] == pytest.approx(np.log([0.5, 1.0, 2.0]))
    t = adjust_logits(torch.zeros(2, 3), [1 / 3] * 3, [0.2, 0.3, 0.5])
    assert t.argmax(1).tolist() == [2, 2]


@pytest.mark.parametrize("prior, words", [
    ([0.5, 0.6], ["sums to 1.1", "not 1"]),
    ([0.5, 0.5, 0.0], ["3 entries", "2 classes"]),
    ([1.5, -0.5], ["negative entry", "-0.5"]),
])
def test_bad_priors_are_one_line(prior, words):
    with pytest.raises(OTReweightError) as err:
        check_prior(prior, 2)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- ot-posthoc
def test_ot_posthoc_plan_columns_match_the_marginal():
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(1000, 4)) + np.array([3.0, 1.0, 0.0, -1.0]))
    m = create_method("ot-posthoc", marginal=[0.4, 0.3, 0.2, 0.1], batch_size=300)
    plans = m.plans(logits)
    assert [t.shape for t in plans] == [(300, 4), (300, 4), (300, 4), (100, 4)]
    for t in plans:
        assert t.sum(0) == pytest.approx([0.4, 0.3, 0.2, 0.1], abs=1e-5)
        assert t.sum(1) == pytest.approx(np.full(t.shape[0], 1 / t.shape[0]), rel=1e-4)
    pred = m.transform_logits(logits.float()).argmax(1)
    counts = np.bincount(pred.numpy(), minlength=4) / 1000
    assert np.abs(counts - [0.4, 0.3, 0.2, 0.1]).sum() < 0.15  # hard predictions follow the marginal
    assert np.bincount(logits.argmax(1).numpy(), minlength=4)[0] > 700  # the raw ones do not
    plan = sinkhorn_plan(torch.log_softmax(logits[:50], 1).numpy(), np.full(4, 0.25), reg=1.0)
    assert plan.sum(0) == pytest.approx(np.full(4, 0.25), abs=1e-5)
    with pytest.raises(OTReweightError, match="marginal must be one of"):
        create_method("ot-posthoc", marginal="balanced")
    with pytest.raises(OTReweightError, match="negative entry"):
        create_method("ot-posthoc", marginal=[1.5, -0.5])


# ----------------------------------------------------------------------------- end to end
def test_compare_marks_ot_posthoc_transductive_and_evaluate_scores_under_a_prior(tiny_npz, tmp_path, capsys):
    cfg = tiny_config(tiny_npz, tmp_path / "run")
    out = tmp_path / "cmp"
    res = run_comparison(cfg, ["ce", "logit_adjust_posthoc", "ot-posthoc"], seeds=(0, 1), method_sets=FAST,
                         output=out, log=lambda *a: None, reference="logit_adjust_posthoc")
    md = (out / "compare.md").read_text()
    assert "| ot-posthoc (transductive) |" in md and "transductive: predicts from the whole test split" in md
    assert "## Paired differences to `logit_adjust_posthoc`" in md
    assert [p["method"] for p in res["paired"]] == ["ce", "logit_adjust_posthoc", "ot-posthoc"]
    best = out / "seed_0" / "stage1" / "model.json"
    # --prior FILE without adjustment: per-class accuracies of the saved predictions weighted by the prior
    prior_file = tmp_path / "prior.yaml"
    prior_file.write_text("[0.1, 0.2, 0.3, 0.4]\n")
    assert main(["evaluate", str(best), "--data", str(tiny_npz), "--prior", str(prior_file),
                 "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    saved = np.load(out / "seed_0" / "stage1" / "predictions.npz")
    y, pred = saved["y_true"], saved["pred_best"]
    recalls = [np.mean(pred[y == c] == c) for c in range(4)]
    assert m["prior_accuracy"] == pytest.approx(float(np.dot([0.1, 0.2, 0.3, 0.4], recalls)))
    assert "prior_accuracy" in capsys.readouterr().out
    # --prior uniform --adjust-to-prior on the CE model is post-hoc logit adjustment (tau 1)
    assert main(["evaluate", str(best), "--data", str(tiny_npz), "--prior", "uniform", "--adjust-to-prior",
                 "--json", str(tmp_path / "u.json")]) == 0
    u = json.loads((tmp_path / "u.json").read_text())
    la = json.loads((out / "seed_0" / "stage2_logit_adjust_posthoc" / "final.json").read_text())["best"]
    assert u["balanced_accuracy"] == pytest.approx(la["balanced_accuracy"])
    assert u["prior_accuracy"] == pytest.approx(u["balanced_accuracy"])
    assert main(["evaluate", str(best), "--data", str(tiny_npz), "--prior", "estimate"]) == 0
    # every bad prior: one line, exit 2
    for text, words in (("[0.5, 0.6, 0.1, 0.1]", ["sums to 1.3"]), ("[0.5, 0.5]", ["2 entries", "4 classes"]),
                        ("[0.6, 0.6, -0.2, 0.0]", ["negative entry"]), ("a b c", ["not a list of numbers"])):
        prior_file.write_text(text)
        one_line_error(capsys, main(["evaluate", str(best), "--data", str(tiny_npz), "--prior", str(prior_file)]),
                       *words)
    one_line_error(capsys, main(["evaluate", str(best), "--data", str(tiny_npz), "--prior", str(tmp_path / "no")]),
                   "does not exist")
    one_line_error(capsys, main(["evaluate", str(best), "--data", str(tiny_npz), "--adjust-to-prior"]),
                   "needs a target prior")
