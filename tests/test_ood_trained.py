"""The trained OOD detectors (godin, ae, explicit) on a tiny Keras classifier of three Gaussian classes in 8-D:
they tell held-out ID from OOD clusters, keep 95% of their fitting data, reload from their files to the same
scores, compute what they say (the Keras head against the numpy h, the int8 autoencoder against a run of
it here), and refuse bad use with our errors."""

import json

import numpy as np
import pytest

import microforge  # noqa: F401  (before TensorFlow)
from microforge.errors import InputError, ModelError
from microforge.graph.builder import GraphBuilder
from microforge.reference.interpreter import run
from microforge.robust import ood
from microforge.robust.ood.detectors import activations, features_tensor

DIM, CLASSES = 8, 3
AXES = np.eye(DIM)


def gaussian(rng, mean, n):
    return (np.asarray(mean, np.float64) + rng.normal(size=(n, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def task():
    """A float classifier (8 -> Dense 16 ReLU -> Dense 3 softmax, via TFLite's converter) trained on classes
    at 4 e_c (unit noise), its fitting and held-out ID data, and two OOD sets it never saw."""
    import tensorflow as tf
    from microforge.frontend.keras import keras_to_float_tflite
    from microforge.frontend.reader import read_tflite

    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, 500)
    x = np.concatenate([gaussian(rng, 4.0 * AXES[c], 1) for c in labels])
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((DIM,)), tf.keras.layers.Dense(16, activation="relu"),
                                 tf.keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:300], labels[:300], epochs=30, batch_size=32, verbose=0)
    graph = read_tflite(keras_to_float_tflite(model))
    far = rng.normal(size=(100, DIM))
    return {"graph": graph, "x_fit": x[:300], "y_fit": labels[:300], "x_test": x[300:], "y_test": labels[300:],
            "cluster": gaussian(rng, 6.0 * AXES[7], 200),  # another class on an axis the classes do not use
            "far": (15.0 * far / np.linalg.norm(far, axis=1, keepdims=True)).astype(np.float32),
            "outliers": (4.0 * rng.normal(size=(300, DIM))).astype(np.float32)}  # OE's training OOD: wide noise


@pytest.fixture(scope="module")
def godin(task):
    return ood.detector("godin").fit(task["graph"], task["x_fit"], task["y_fit"])


@pytest.fixture(scope="module", params=["input", "features"])
def ae(task, request):
    return ood.detector("ae", on=request.param).fit(task["graph"], task["x_fit"])


@pytest.fixture(scope="module")
def explicit(task):
    return ood.detector("explicit").fit(task["graph"], task["x_fit"], outliers=task["outliers"])


def auroc(detector, task, ood_set):
    return ood.ood_metrics(detector.score(task["x_test"]), detector.score(task[ood_set])).auroc


def keeps_95_percent_and_reloads(detector, task, tmp_path):
    graph, x_fit = task["graph"], task["x_fit"]
    assert np.mean(detector.score(x_fit) <= detector.threshold) >= 0.95
    assert detector.chip_threshold is None  # a float classifier: no on-chip form
    detector.save(tmp_path / "detector.json")
    loaded = ood.load_detector(tmp_path / "detector.json", graph)
    assert type(loaded) is type(detector) and loaded.options() == detector.options()
    assert loaded.threshold == detector.threshold
    x = np.concatenate([task["x_test"][:50], task["cluster"][:20], task["far"][:20]])
    np.testing.assert_array_equal(loaded.score(x), detector.score(x))


def test_godin_tells_id_from_an_unseen_class_and_reloads(godin, task, tmp_path):
    assert auroc(godin, task, "cluster") > 0.9
    # a cosine does not see how far: points 15 away in random directions only partly leave the classes' cones
    assert auroc(godin, task, "far") > 0.7
    keeps_95_percent_and_reloads(godin, task, tmp_path)
    # the cosines lie in [-1, 1], so the score does too
    assert np.all(np.abs(godin.score(task["far"])) <= 1 + 1e-12)


def test_godin_numpy_head_is_the_keras_head_and_training_is_seeded(godin, task):
    x = np.concatenate([task["x_test"][:40], task["cluster"][:40]])
    features = activations(task["graph"], x, [features_tensor(task["graph"])])[0]
    logits, h, g = (np.asarray(t, np.float64) for t in godin.head(features.astype(np.float32), training=False))
    h_np, g_np = godin.decomposition(x)
    np.testing.assert_allclose(h_np, h, atol=1e-5)
    np.testing.assert_allclose(g_np, g[:, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(h_np / g_np[:, None], logits, rtol=1e-4, atol=1e-4)
    assert np.mean(logits[:40].argmax(axis=1) == task["y_test"][:40]) > 0.9  # the head learned the classes
    np.testing.assert_array_equal(-h_np.max(axis=1), godin.score(x))
    again = ood.detector("godin").fit(task["graph"], task["x_fit"], task["y_fit"])
    np.testing.assert_array_equal(again.score(x), godin.score(x))


def test_ae_tells_id_from_ood_and_reloads(ae, task, tmp_path):
    assert auroc(ae, task, "cluster") > 0.95
    assert auroc(ae, task, "far") > 0.95
    keeps_95_percent_and_reloads(ae, task, tmp_path)


def test_the_ae_is_int8_and_scores_as_its_reference_run(ae, task):
    graph = ae.ae
    assert {op.type for op in graph.ops} == {"FULLY_CONNECTED"}
    for t in graph.tensors:
        if t.is_constant:
            assert t.dtype in (np.int8, np.int32), t.name  # int8 weights, int32 biases
        else:
            assert t.dtype == np.int8 and t.quant is not None, t.name
    size = DIM if ae.on == "input" else features_tensor(task["graph"]).size
    parameters = sum(t.size for t in graph.tensors if t.is_constant)
    assert graph.inputs[0].size == graph.outputs[0].size == size and 100 < parameters < 5000
    x = np.concatenate([task["x_test"][:50], task["cluster"][:50]])
    if ae.on == "input":
        v = x.astype(np.float64)
    else:
        v = activations(task["graph"], x, [features_tensor(task["graph"])])[0]
    a_in, a_out = graph.inputs[0], graph.outputs[0]
    q = np.clip(np.round(v / a_in.scale) + a_in.zero_point, -128, 127).astype(np.int8)
    r = np.asarray(run(graph, q)).astype(np.float64)
    q = q.astype(np.float64)  # before the zero point: int8 arithmetic wraps
    want = (((r - a_out.zero_point) * a_out.scale - (q - a_in.zero_point) * a_in.scale) ** 2).mean(axis=1)
    np.testing.assert_allclose(ae.score(x), want, rtol=1e-12)


def test_explicit_tells_id_from_ood_it_was_not_trained_on_and_reloads(explicit, task, tmp_path):
    assert auroc(explicit, task, "cluster") > 0.95
    assert auroc(explicit, task, "far") > 0.95
    keeps_95_percent_and_reloads(explicit, task, tmp_path)


def test_bad_use_gets_our_errors(task, godin, explicit):
    graph, x_fit = task["graph"], task["x_fit"]
    with pytest.raises(InputError, match="godin: .*labels=..."):
        ood.detector("godin").fit(graph, x_fit)
    with pytest.raises(InputError, match="3 labels for 300 inputs"):
        ood.detector("godin").fit(graph, x_fit, [0, 1, 2])
    with pytest.raises(InputError, match="class indices 0..2"):
        ood.detector("godin").fit(graph, x_fit, np.full(300, 3))
    for outliers in (None, np.zeros((0, DIM), np.float32)):
        with pytest.raises(InputError, match=r"explicit: outlier exposure needs OOD training data \(outliers=...\)"):
            ood.detector("explicit").fit(graph, x_fit, outliers=outliers)
    with pytest.raises(InputError, match=r"explicit: outliers of shape \[4, 5\] do not fit .* shape \[1, 8\]"):
        ood.detector("explicit").fit(graph, x_fit, outliers=np.zeros((4, 5), np.float32))
    wrong = np.zeros((6, 7), np.float32)
    for name, fitted in (("godin", godin), ("explicit", explicit)):
        with pytest.raises(InputError, match=rf"{name}: inputs of shape \[6, 7\] do not fit .* shape \[1, 8\]"):
            fitted.score(wrong)
    with pytest.raises(InputError, match=r"ae: inputs of shape \[6, 7\] do not fit"):
        ood.detector("ae").fit(graph, wrong)
    with pytest.raises(InputError, match="on='pixels'"):
        ood.detector("ae", on="pixels")
    with pytest.raises(InputError, match="epochs must be an integer"):
        ood.detector("godin", epochs=0)
    b = GraphBuilder()  # logits straight from the input: no penultimate features
    x = b.input("x", (1, 4), np.float32)
    b.op("SOFTMAX", [x], [b.output(b.activation("y", (1, 4), np.float32))], beta=1.0)
    with pytest.raises(ModelError, match="no penultimate feature layer"):
        ood.detector("godin").fit(b.build(), np.zeros((5, 1, 4), np.float32), np.zeros(5, np.int64))
    with pytest.raises(ModelError, match="no penultimate feature layer"):
        ood.detector("explicit").fit(b.build(), np.zeros((5, 1, 4), np.float32),
                                     outliers=np.ones((5, 1, 4), np.float32))


def test_broken_saved_detectors_are_refused_by_name(task, godin, ae, tmp_path):
    graph = task["graph"]
    path, broken = tmp_path / "d.json", tmp_path / "broken.json"

    def refused(edit, match):
        saved = json.loads(path.read_text())
        edit(saved)
        broken.write_text(json.dumps(saved))
        with pytest.raises(InputError, match=match):
            ood.load_detector(broken, graph)

    ae.save(path)
    refused(lambda s: s["state"].update(tflite="not base64!"), "ae: the saved autoencoder is not base64")
    refused(lambda s: s["state"].update(tflite="AAAAAAAAAAAA"), "ae: the saved autoencoder is not a model")
    refused(lambda s: s["state"].clear(), "ae: the file has no autoencoder")
    other = "features" if ae.on == "input" else "input"  # the AE for the other vectors: another size
    size = DIM if ae.on == "input" else features_tensor(graph).size
    refused(lambda s: s["options"].update(on=other), f"ae: the saved autoencoder maps {size} values to {size}")
    godin.save(path)
    refused(lambda s: s["state"].update(class_weights=[[1.0, 2.0]]), "godin: the file's head .* does not fit")
    refused(lambda s: s["state"].update(g_norm="x"), "godin: the file's 'g_norm'")


def test_on_an_int8_classifier_the_detectors_read_its_dequantized_features(task):
    """Our int8 model of the classifier (float input, quantized inside): the input quantization clips
    what lies beyond the calibration range, so the OOD cluster reaches the features only up to its edge."""
    from microforge import robust

    int8 = robust.quantize(task["graph"], task["x_fit"], scheme="int8", io="float").graph
    assert features_tensor(int8).dtype == np.int8
    fitted = [ood.detector("godin").fit(int8, task["x_fit"], task["y_fit"]),
              ood.detector("ae", on="features").fit(int8, task["x_fit"]),
              ood.detector("explicit").fit(int8, task["x_fit"], outliers=task["outliers"])]
    for detector in fitted:
        assert auroc(detector, task, "cluster") > 0.9, detector.name
