"""Each baseline's loss against a value computed by hand on a tiny example, and the behaviour
of the bilevel re-weighters (L2RW, Meta-Weight-Net) on toy problems with a known answer."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from otreweight import OTReweightError, create_method, create_model, fit, FitConfig, make_long_tailed
from otreweight.methods import METHODS
from otreweight.methods.base import Batch, TrainInfo
from otreweight.methods.ldam_drw import CosineClassifier

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

BASELINES = ["ce", "focal", "cb", "cb_focal", "cb_resample", "ldam_drw", "balanced_softmax", "logit_adjust",
             "logit_adjust_posthoc", "crt", "mwnet", "l2rw"]


def head_model(weight, bias, in_features=2):
    """An MLP whose classifier is set by hand; only the classifier is trained (features are given)."""
    torch.manual_seed(0)
    m = create_model("mlp", in_features=in_features, num_classes=len(bias), hidden=(len(weight[0]),))
    with torch.no_grad():
        m.classifier.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        m.classifier.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return m


def bind(method, counts, model=None, epochs=10, lr=0.1):
    counts = np.asarray(counts)
    labels = torch.as_tensor(np.repeat(np.arange(len(counts)), counts))
    model = model if model is not None else head_model([[1.0, 0.0]] * len(counts), [0.0] * len(counts))
    method.prepare_model(model)
    opt = torch.optim.SGD(model.classifier.parameters(), lr=lr)
    method.bind(TrainInfo(len(counts), labels, counts, torch.device("cpu"), model, opt, epochs))
    return model


def batch(logits, y, features=None):
    logits = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    y = torch.tensor(y)
    feats = torch.zeros(len(y), 2) if features is None else features
    return Batch(torch.arange(len(y)), y, logits, feats, None)


def cb_weights(counts, beta):
    w = np.array([(1 - beta) / (1 - beta**n) for n in counts])
    return w / w.sum() * len(counts)


def test_every_baseline_is_registered():
    assert set(BASELINES) <= set(METHODS.names())


def test_focal_loss_by_hand():
    z, y = [[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], [0, 2]
    probs = [math.exp(z[i][y[i]]) / sum(math.exp(v) for v in z[i]) for i in range(2)]
    m = create_method("focal", gamma=2.0)
    bind(m, [5, 3, 1])
    expected = np.mean([(1 - p) ** 2 * -math.log(p) for p in probs])
    assert float(m.loss(batch(z, y), None)) == pytest.approx(expected, rel=1e-5)
    assert create_method("focal").gamma == 1.0  # the LDAM-DRW code's gamma
    m0 = create_method("focal", gamma=0)
    bind(m0, [5, 3, 1])
    assert float(m0.loss(batch(z, y), None)) == pytest.approx(np.mean([-math.log(p) for p in probs]), rel=1e-5)


def test_class_balanced_focal_by_hand():
    z, y = [[1.0, 0.0], [0.0, 0.3], [2.0, 1.0]], [0, 1, 1]
    counts, beta, gamma = [3, 1], 0.5, 1.0
    w = cb_weights(counts, beta)  # (0.5/0.875, 0.5/0.5) normalised to sum 2
    assert w == pytest.approx([0.72727, 1.27273], abs=1e-5)
    m = create_method("cb_focal", gamma=gamma, beta=beta)
    bind(m, counts)
    per = []
    for zi, yi in zip(z, y):
        p = math.exp(zi[yi]) / sum(math.exp(v) for v in zi)
        per.append(w[yi] * (1 - p) ** gamma * -math.log(p))
    assert float(m.loss(batch(z, y), None)) == pytest.approx(np.mean(per), rel=1e-5)


def test_class_balanced_ce_by_hand():
    z, y = [[1.0, 0.0], [0.0, 0.3]], [0, 1]
    m = create_method("cb", beta=0.5)
    bind(m, [3, 1])
    w = cb_weights([3, 1], 0.5)
    ce = [-math.log(math.exp(z[i][y[i]]) / sum(math.exp(v) for v in z[i])) for i in range(2)]
    assert float(m.loss(batch(z, y), None)) == pytest.approx(np.mean([w[0] * ce[0], w[1] * ce[1]]), rel=1e-5)


def test_ldam_margins_loss_and_drw_switch():
    counts = [16, 1]  # n^(-1/4) = 1/2 and 1: margins 0.25 and 0.5 after scaling the largest to 0.5
    m = create_method("ldam_drw", head="linear")
    bind(m, counts, epochs=10)
    assert m.margins.tolist() == pytest.approx([0.25, 0.5])
    z, y = [[0.5, 0.2], [0.1, 0.3]], [0, 1]
    # example 0: s * (0.5 - 0.25, 0.2) = (7.5, 6); example 1: s * (0.1, 0.3 - 0.5) = (3, -6)
    l0, l1 = math.log(1 + math.exp(6 - 7.5)), math.log(1 + math.exp(3 + 6))
    assert m.switch_epoch() == 8  # 80% of the stage's epochs: 160 of 200
    m.start_epoch(7, None)
    assert float(m.loss(batch(z, y), None)) == pytest.approx((l0 + l1) / 2, rel=1e-5)
    m.start_epoch(8, None)
    w = cb_weights(counts, 0.9999)
    assert float(m.loss(batch(z, y), None)) == pytest.approx((w[0] * l0 + w[1] * l1) / w.sum(), rel=1e-5)
    m_abs = create_method("ldam_drw", drw_epoch=3)
    bind(m_abs, counts, epochs=200)
    assert m_abs.switch_epoch() == 3
    m_abs.start_epoch(2, None)
    assert m_abs.class_weights is None
    m_abs.start_epoch(3, None)
    assert m_abs.class_weights is not None
    bind(m, counts, epochs=200)
    assert m.switch_epoch() == 160


def test_ldam_cosine_head_saves_as_a_linear_head_with_the_same_predictions():
    torch.manual_seed(0)
    model = create_model("mlp", in_features=5, num_classes=4, hidden=(8,))
    with torch.no_grad():
        model.classifier.weight.mul_(torch.tensor([[1.0], [3.0], [0.2], [7.0]]))  # rows of unequal norm
    m = create_method("ldam_drw")
    m.prepare_model(model)
    assert isinstance(model.classifier, CosineClassifier)
    x = torch.randn(50, 5)
    model.eval()
    logits = model(x)
    f = model.features(x)
    assert torch.allclose(logits, F.normalize(f, dim=1) @ F.normalize(model.classifier.weight, dim=1).T, atol=1e-6)
    plain = create_model("mlp", in_features=5, num_classes=4, hidden=(8,))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.equal(plain(x).argmax(1), logits.argmax(1))


def test_balanced_softmax_and_logit_adjusted_loss_by_hand():
    counts = [3, 1]  # prior (0.75, 0.25)
    bs = create_method("balanced_softmax")
    bind(bs, counts)
    # logits 0: adjusted logits are log prior, so the loss of class 1 is -log 0.25
    assert float(bs.loss(batch([[0.0, 0.0]], [1]), None)) == pytest.approx(-math.log(0.25), rel=1e-5)
    la = create_method("logit_adjust", tau=2.0)
    bind(la, counts)
    # tau = 2: exp(2 log p) = p^2 -> 0.0625 / (0.5625 + 0.0625) = 0.1
    assert float(la.loss(batch([[0.0, 0.0]], [1]), None)) == pytest.approx(-math.log(0.1), rel=1e-5)
    z = [[1.0, -0.5], [0.2, 0.4]]
    shift = np.log([0.75, 0.25])
    by_hand = np.mean([-(z[i][c] + shift[c]) + math.log(sum(math.exp(z[i][k] + shift[k]) for k in range(2)))
                       for i, c in enumerate([0, 1])])
    la1 = create_method("logit_adjust")
    bind(la1, counts)
    assert float(la1.loss(batch(z, [0, 1]), None)) == pytest.approx(by_hand, rel=1e-5)
    assert float(bs.loss(batch(z, [0, 1]), None)) == pytest.approx(by_hand, rel=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_post_hoc_logit_adjustment_shifts_by_tau_log_prior(tau):
    counts = [6, 3, 1]
    model = head_model([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.1, 0.2, 0.3])
    before = model.classifier.bias.detach().clone()
    m = create_method("logit_adjust_posthoc", tau=tau)
    assert m.trains is False
    bind(m, counts, model=model)
    shift = -tau * torch.log(torch.tensor([0.6, 0.3, 0.1]))
    assert torch.allclose(model.classifier.bias - before, shift, atol=1e-6)
    f = torch.randn(7, 2)
    assert torch.allclose(model.classifier(f), f @ model.classifier.weight.T + before + shift, atol=1e-5)


def test_post_hoc_adjustment_runs_through_fit_without_training():
    x, y = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32), np.repeat([0, 1, 2], 20)
    model = head_model([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, 0.0])
    res = fit(model, create_method("logit_adjust_posthoc"), (x[:45], y[:45]), (x[45:], y[45:]),
              config=FitConfig(epochs=5, trainable="classifier", progress=False), device="cpu")
    assert [r["epoch"] for r in res.history] == [0]  # evaluated once, never trained


def test_crt_reinitialises_the_classifier_and_samples_classes_uniformly():
    model = head_model([[5.0, 5.0], [5.0, 5.0]], [3.0, 3.0])
    m = create_method("crt")
    assert m.sampling == "class_balanced" and create_method("cb_resample").sampling == "class_balanced"
    m.prepare_model(model)
    assert model.classifier.weight.abs().max() < 5.0 and not torch.equal(model.classifier.bias, torch.tensor([3.0, 3.0]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(OTReweightError, match="trainable: classifier"):
        m.bind(TrainInfo(2, torch.tensor([0, 0, 1]), np.array([2, 1]), torch.device("cpu"), model, opt, 3))


@pytest.mark.parametrize("name, options, match", [
    ("focal", {"gamma": -1}, "gamma"),
    ("cb_focal", {"beta": 1.0}, "beta"),
    ("ldam_drw", {"s": 0}, "logit scale"),
    ("ldam_drw", {"drw_fraction": 1.5}, "drw_fraction"),
    ("ldam_drw", {"head": "arc"}, "unknown ldam_drw head"),
    ("logit_adjust", {"tau": float("nan")}, "tau"),
    ("mwnet", {"meta_lr": 0}, "meta_lr"),
    ("mwnet", {"meta_batch_size": 0}, "meta_batch_size"),
    ("l2rw", {"meta_batch_size": 2.5}, "meta_batch_size"),
    ("l2rw", {"lr": 1}, "has no option 'lr'"),
])
def test_bad_options_are_one_clear_line(name, options, match):
    with pytest.raises(OTReweightError, match=match) as err:
        create_method(name, **options)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- bilevel re-weighters
class ToyMeta:
    """A meta set given by its features (classifier-only look-ahead)."""

    def __init__(self, feats, y):
        self.f, self.y, self.x = torch.tensor(feats, dtype=torch.float32), torch.tensor(y), None

    def features(self):
        return self.f


def toy_batch(model, feats, y):
    f = torch.tensor(feats, dtype=torch.float32)
    return Batch(torch.arange(len(y)), torch.tensor(y), model.classifier(f), f, None)


# A classifier that separates x0 > 0 (class 0) from x0 < 0 (class 1), and a clean meta set.
CLEAN_META = ToyMeta([[2.0, 0.0], [2.0, 0.5], [-2.0, 0.0], [-2.0, -0.5]], [0, 0, 1, 1])
NOISY_FEATS = [[1.0, 0.0], [1.5, 0.2], [1.2, -0.3], [-1.0, 0.0], [-1.4, 0.1], [-1.1, 0.4], [1.3, 0.1]]
NOISY_Y = [0, 0, 0, 1, 1, 1, 1]  # the last example is class 0 labelled as class 1


def test_l2rw_drops_a_mislabelled_example():
    model = head_model([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    m = create_method("l2rw")
    bind(m, [3, 4], model=model)
    b = toy_batch(model, NOISY_FEATS, NOISY_Y)
    loss = m.loss(b, CLEAN_META)
    w = m.last_weights
    assert w[-1] == 0 and (w[:-1] > 0).all() and float(w.sum()) == pytest.approx(1.0)
    ce = F.cross_entropy(b.logits, b.y, reduction="none")
    assert float(loss) == pytest.approx(float((w * ce).sum()), rel=1e-6)
    loss.backward()  # the loop's real step still works after the look-ahead
    assert model.classifier.weight.grad is not None
    s = m.stats()
    assert (s["steps"], s["forward_per_step"], s["backward_per_step"]) == (1, 2.0, 3.0)


def test_l2rw_up_weights_the_rare_class_under_a_biased_classifier():
    # The classifier is biased towards class 0, so the balanced meta set misclassifies class 1:
    # the single class-1 example in the batch must get more weight than any class-0 example.
    model = head_model([[1.0, 0.0], [-1.0, 0.0]], [2.0, -2.0])
    m = create_method("l2rw")
    bind(m, [6, 1], model=model)
    feats = [[1.0, 0.1], [1.5, 0.0], [0.8, -0.2], [1.1, 0.3], [2.0, 0.0], [0.9, 0.0], [-1.0, 0.0]]
    m.loss(toy_batch(model, feats, [0, 0, 0, 0, 0, 0, 1]), CLEAN_META)
    w = m.last_weights
    assert w[-1] > w[:-1].max() and w[-1] > 0.5


def _weight_of_last(m, model, feats, y, meta, steps):
    for _ in range(steps):
        m.loss(toy_batch(model, feats, y), meta)  # the classifier is not stepped: a fixed problem
    return float(m.last_weights[-1])


def test_mwnet_learns_to_down_weight_a_mislabelled_example():
    model = head_model([[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0])
    m = create_method("mwnet", meta_lr=0.5, meta_momentum=0.0, meta_weight_decay=0.0)
    bind(m, [3, 4], model=model, lr=1.0)
    start = _weight_of_last(m, model, NOISY_FEATS, NOISY_Y, CLEAN_META, 1)
    end = _weight_of_last(m, model, NOISY_FEATS, NOISY_Y, CLEAN_META, 30)
    assert end < start < 1.0 / len(NOISY_Y) + 0.05  # the high-loss (noisy) example loses weight
    assert float(m.last_weights.sum()) == pytest.approx(1.0, rel=1e-5)


def test_mwnet_learns_to_up_weight_the_rare_class():
    model = head_model([[1.0, 0.0], [-1.0, 0.0]], [2.0, -2.0])
    m = create_method("mwnet", meta_lr=0.5, meta_momentum=0.0, meta_weight_decay=0.0)
    bind(m, [6, 1], model=model, lr=1.0)
    feats = [[1.0, 0.1], [1.5, 0.0], [0.8, -0.2], [1.1, 0.3], [2.0, 0.0], [0.9, 0.0], [-1.0, 0.0]]
    y = [0, 0, 0, 0, 0, 0, 1]
    start = _weight_of_last(m, model, feats, y, CLEAN_META, 1)
    end = _weight_of_last(m, model, feats, y, CLEAN_META, 30)
    assert end > start  # the high-loss (rare-class) example gains weight
    state = m.state_dict()
    m2 = create_method("mwnet", meta_lr=0.5, meta_momentum=0.0, meta_weight_decay=0.0)
    bind(m2, [6, 1], model=model, lr=1.0)
    m2.load_state_dict(state)
    losses = torch.tensor([0.1, 2.0])
    assert torch.equal(m2.weight_net(losses), m.weight_net(losses))


@pytest.mark.parametrize("name", ["l2rw", "mwnet"])
def test_whole_network_look_ahead_leaves_the_model_untouched(name):
    torch.manual_seed(0)
    model = create_model("mlp", in_features=3, num_classes=2, hidden=(6,))
    model.train()
    m = create_method(name, meta_batch_size=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m.bind(TrainInfo(2, torch.tensor([0, 0, 1]), np.array([2, 1]), torch.device("cpu"), model, opt, 3))
    x, y = torch.randn(8, 3), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])

    class Meta:
        def __init__(self):
            self.x, self.y = torch.randn(6, 3), torch.tensor([0, 0, 0, 1, 1, 1])

    f = model.features(x)
    logits = model.classifier(f)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss = m.loss(Batch(torch.arange(8), y, logits, f.detach(), x), Meta())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # parameters and batch-norm statistics
    loss.backward()
    assert all(p.grad is not None for p in model.backbone_parameters())
    assert not m.lookahead.head_only


@pytest.mark.parametrize("trainable", ["all", "classifier"])
def test_every_baseline_trains_through_fit(trainable):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (3, 4))
    y = np.repeat(np.arange(3), 40)
    x = (centers[y] + rng.normal(0, 1, (y.size, 4))).astype(np.float32)
    sp = make_long_tailed(y, 5, n_meta_per_class=4, n_val_per_class=5, seed=0)
    data = [(x[s], y[s]) for s in (sp.train, sp.val, sp.meta)]
    for name in BASELINES:
        if name == "crt" and trainable == "all":
            continue
        torch.manual_seed(0)
        model = create_model("mlp", in_features=4, num_classes=3, hidden=(8,))
        cfg = FitConfig(epochs=2, batch_size=16, lr=0.05, trainable=trainable, progress=False)
        res = fit(model, create_method(name), *data, config=cfg, device="cpu")
        assert np.isfinite(res.history[-1]["train_loss"]) or name == "logit_adjust_posthoc", name
