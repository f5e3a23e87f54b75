"""The logit- and feature-based OOD detectors against the formulas computed here on a small float classifier
(and scikit-learn's covariance for Mahalanobis), the deployed threshold, an int8 model, and bad input."""

import numpy as np
import pytest
from sklearn.covariance import EmpiricalCovariance

from microforge import robust
from microforge.errors import InputError, ModelError
from microforge.graph.builder import GraphBuilder
from microforge.robust import ood


def classifier(seed: int = 0, softmax: bool = True):
    """x (1, 6) -> FULLY_CONNECTED 10 + RELU -> FULLY_CONNECTED 4 [-> SOFTMAX], float32; and its weights."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(10, 6)).astype(np.float32), rng.normal(size=10).astype(np.float32)
    w2, b2 = rng.normal(size=(4, 10)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    b = GraphBuilder()
    x = b.input("x", (1, 6), np.float32)
    h = b.activation("features", (1, 10), np.float32)
    b.op("FULLY_CONNECTED", [x, b.constant("w1", w1), b.constant("b1", b1)], [h], fused_activation_function="RELU")
    z = b.activation("logits", (1, 4), np.float32)
    b.op("FULLY_CONNECTED", [h, b.constant("w2", w2), b.constant("b2", b2)], [z])
    if softmax:
        y = b.activation("probabilities", (1, 4), np.float32)
        b.op("SOFTMAX", [z], [y], beta=1.0)
        b.output(y)
    else:
        b.output(z)
    return b.build(), (w1, b1, w2, b2)


def by_hand(weights, x):
    w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in weights)
    h = np.maximum(x.reshape(len(x), -1) @ w1.T + b1, 0)
    return h, h @ w2.T + b2


def logsumexp(z):
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


def test_logit_detectors_follow_their_formulas():
    graph, weights = classifier()
    rng = np.random.default_rng(1)
    x_id = rng.normal(size=(60, 1, 6)).astype(np.float32)
    x = rng.normal(scale=3.0, size=(20, 1, 6)).astype(np.float32)
    _, z = by_hand(weights, x)
    expected = {"msp": -np.exp(z.max(axis=1) - logsumexp(z)), "maxlogit": -z.max(axis=1),
                "energy": -1.0 * logsumexp(z)}
    for name, want in expected.items():
        got = ood.detector(name).fit(graph, x_id).score(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    warm = ood.detector("energy", temperature=2.5).fit(graph, x_id).score(x)
    np.testing.assert_allclose(warm, -2.5 * logsumexp(z / 2.5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", ["full", "diagonal", "low-rank"])
def test_mahalanobis_uses_class_means_and_a_tied_covariance(form):
    graph, weights = classifier(softmax=False)
    rng = np.random.default_rng(2)
    x_id = rng.normal(size=(200, 1, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 200)
    x = rng.normal(size=(15, 1, 6)).astype(np.float32)
    h_id, _ = by_hand(weights, x_id)
    h, _ = by_hand(weights, x)
    means = np.stack([h_id[labels == c].mean(axis=0) for c in range(3)])
    cov = EmpiricalCovariance(assume_centered=True).fit(h_id - means[labels]).covariance_
    cov = cov + 1e-6 * np.trace(cov) / len(cov) * np.eye(len(cov))
    if form == "full":
        precision = np.linalg.inv(cov)
    elif form == "diagonal":
        precision = np.diag(1 / np.diag(cov))
    else:
        values, vectors = np.linalg.eigh(cov)
        top, rest = vectors[:, -4:], (np.trace(cov) - values[-4:].sum()) / (len(values) - 4)
        precision = (top / values[-4:]) @ top.T + (np.eye(len(cov)) - top @ top.T) / rest
    d = h[:, None] - means[None]
    want = np.einsum("ncf,fg,ncg->nc", d, precision, d).min(axis=1)
    got = ood.detector("mahalanobis", form=form, rank=4).fit(graph, x_id, labels).score(x)
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_the_threshold_keeps_95_percent_of_the_fitting_data_and_far_inputs_are_told_apart():
    """Far from the data a ReLU network is overconfident, so the logit scores call far inputs *more*
    in-distribution (the known failure); the distance of the features to the class means does not."""
    graph, _ = classifier()
    rng = np.random.default_rng(3)
    x_id = rng.normal(size=(200, 1, 6)).astype(np.float32)
    near, far = rng.normal(size=(100, 1, 6)).astype(np.float32), 40.0 * rng.normal(size=(50, 1, 6)).astype(np.float32)
    energy = ood.detector("energy").fit(graph, x_id)
    assert np.mean(energy.flags(x_id)) <= 0.05
    assert ood.ood_metrics(energy.score(near), energy.score(far)).auroc < 0.5
    mahalanobis = ood.detector("mahalanobis").fit(graph, x_id)
    assert np.mean(mahalanobis.flags(x_id)) <= 0.05
    m = ood.ood_metrics(mahalanobis.score(near), mahalanobis.score(far))
    assert m.auroc > 0.95 and m.tnr_at_tpr95 > 0.9


def test_an_int8_model_scores_close_to_its_float_original():
    graph, _ = classifier(4)
    rng = np.random.default_rng(4)
    x_id = rng.normal(size=(300, 1, 6)).astype(np.float32)
    int8 = robust.quantize(graph, x_id[:100], scheme="int8", io="float").graph
    # OOD inside the calibration range (beyond it the int8 input clips and the comparison means nothing)
    far = (0.5 * rng.normal(size=(100, 1, 6)) + np.array([2.0, -2.0, 0, 0, 1.5, 0])).astype(np.float32)
    test = x_id[100:]
    for name in ("msp", "energy", "mahalanobis"):
        a = ood.detector(name).fit(graph, x_id[:100])
        b = ood.detector(name).fit(int8, x_id[:100])
        auroc_float = ood.ood_metrics(a.score(test), a.score(far)).auroc
        auroc_int8 = ood.ood_metrics(b.score(test), b.score(far)).auroc
        assert abs(auroc_float - auroc_int8) < 0.02, (name, auroc_float, auroc_int8)


def test_bad_use_gets_our_errors():
    graph, _ = classifier()
    with pytest.raises(InputError, match="not one of"):
        ood.detector("odin")
    with pytest.raises(InputError, match="no in-distribution inputs"):
        ood.detector("msp").fit(graph, np.zeros((0, 1, 6), np.float32))
    with pytest.raises(InputError, match="fit the detector"):
        ood.detector("energy").score(np.zeros((1, 1, 6), np.float32))
    with pytest.raises(InputError, match="temperature"):
        ood.detector("energy", temperature=0)
    b = GraphBuilder()
    x = b.input("x", (1, 4), np.float32)
    y = b.output(b.activation("y", (1, 4), np.float32))
    b.op("SOFTMAX", [x], [y], beta=1.0)
    with pytest.raises(ModelError, match="no penultimate feature layer"):
        ood.detector("mahalanobis").fit(b.build(), np.zeros((3, 1, 4), np.float32))
    with pytest.raises(InputError, match="3 labels for 5 inputs"):
        ood.detector("mahalanobis").fit(graph, np.zeros((5, 1, 6), np.float32), labels=[0, 1, 2])


@pytest.mark.parametrize("name,options", [("msp", {}), ("energy", {"temperature": 3.0}),
                                          ("mahalanobis", {"form": "low-rank", "rank": 3})])
def test_a_saved_detector_scores_the_same_and_only_for_its_model(tmp_path, name, options):
    graph, _ = classifier(5)
    other, _ = classifier(6)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(80, 1, 6)).astype(np.float32)
    fitted = ood.detector(name, **options).fit(graph, x)
    path = tmp_path / "detector.json"
    fitted.save(path)
    loaded = ood.load_detector(path, graph)
    assert type(loaded) is type(fitted) and loaded.threshold == fitted.threshold
    np.testing.assert_array_equal(loaded.score(x[:10]), fitted.score(x[:10]))
    with pytest.raises(InputError, match="fitted on another model"):
        ood.load_detector(path, other)


def test_broken_detector_files_are_refused_by_name(tmp_path):
    graph, _ = classifier()
    path = tmp_path / "d.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable detector file"):
        ood.load_detector(path, graph)
    path.write_text('{"detector": "msp"}')
    with pytest.raises(InputError, match="not a microforge OOD detector file"):
        ood.load_detector(path, graph)
    good = tmp_path / "good.json"
    ood.detector("mahalanobis").fit(graph, np.random.default_rng(0).normal(size=(40, 1, 6)).astype(np.float32)).save(good)
    import json
    saved = json.loads(good.read_text())
    saved["state"]["means"] = [[0.0, 1.0]]
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match="do not fit the model's 10 features"):
        ood.load_detector(path, graph)
    saved = json.loads(good.read_text())
    saved["options"] = {"colour": "blue"}
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match="do not fit detector 'mahalanobis'"):
        ood.load_detector(path, graph)
    saved["options"], saved["threshold"] = {}, float("nan")
    path.write_text(json.dumps(saved))
    with pytest.raises(InputError, match="threshold"):
        ood.load_detector(path, graph)
