"""The OOD benchmark's data sets (microforge.robust.ood.tasks): HAR folds and sensor faults, the HarImage
layer through TFLite into the reference interpreter, the KWS ID / near / far / shifted sets, runner folders,
and the models shipped in models/ood."""

import json
import math
import re

import numpy as np
import pytest

from conftest import FSDD, ROOT
import microforge
from microforge.bench.audio import read_wav
from microforge.bench.dataset import fsdd_test_files, read_dataset
from microforge.bench.features import KWS_SAMPLE_RATE, KWS_SAMPLES, kws_waveform, quantize_input
from microforge.errors import InputError
from microforge.robust.ood import tasks
from microforge.robust.ood.evaluate import runner_set

FSDD_MODEL = ROOT / "models" / "fsdd" / "fsdd_dscnn_int8.tflite"
OOD_MODELS = ROOT / "models" / "ood"


@pytest.fixture(scope="module")
def fold():
    return tasks.har_fold("walking")


def snr_db(signal, noise, axis=None):
    return 10 * np.log10(np.mean(np.square(signal), axis=axis) / np.mean(np.square(noise), axis=axis))


# --- HAR folds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("held_out", tasks.HAR_CLASSES)
def test_har_fold_keeps_the_held_out_activity_out_of_the_id_data(held_out):
    f = tasks.har_fold(held_out)
    assert held_out not in f.classes and len(f.classes) == len(tasks.HAR_CLASSES) - 1
    for s in (f.train, f.test):
        assert s.x.shape[1:] == (100, 1, 6) and s.x.dtype == np.float32
        assert set(s.labels.tolist()) == set(range(len(f.classes)))
        assert len(s.names) == len(s.x) and not any(n.endswith("_" + held_out) for n in s.names)
        assert [n.rsplit("_", 1)[1] for n in s.names] == [f.classes[c] for c in s.labels]
    assert f.ood.labels is None and all(n.endswith("_" + held_out) for n in f.ood.names)
    # every recording of the data set is in exactly one of the three sets (the OOD one from both splits)
    from aeon.datasets import load_basic_motions

    total = sum(len(load_basic_motions(split=split)[1]) for split in ("train", "test"))
    assert len(set(f.train.names) | set(f.test.names) | set(f.ood.names)) == total
    ood_rows = {row.tobytes() for row in f.ood.x}
    assert not any(row.tobytes() in ood_rows for row in np.concatenate([f.train.x, f.test.x]))
    # standardised with the ID training statistics: the training set has mean 0 and deviation 1 per channel
    np.testing.assert_allclose(f.train.x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(f.train.x.std(axis=(0, 1, 2)), 1, atol=1e-5)
    np.testing.assert_allclose(f.prepare(f.raw_test), f.test.x)


def test_unknown_activity_is_refused():
    with pytest.raises(InputError, match="jumping.*standing"):
        tasks.har_fold("jumping")


# --- sensor faults -------------------------------------------------------------------------------------


def test_stuck_axis_freezes_one_channel_at_its_first_value(fold):
    x = fold.raw_test
    y = tasks.sensor_fault(x, "stuck", seed=3)
    for before, after in zip(x, y):
        changed = np.flatnonzero(np.any(before != after, axis=1))
        assert len(changed) <= 1
        frozen = [c for c in range(len(after)) if np.all(after[c] == before[c, 0])]
        assert frozen and set(changed) <= set(frozen)
    assert np.array_equal(tasks.sensor_fault(x, "stuck", seed=3), y)  # deterministic
    picks = lambda z: [int(np.argmax(np.ptp(r, axis=1) == 0)) for r in z]  # noqa: E731
    assert picks(tasks.sensor_fault(x, "stuck", seed=4)) != picks(y)


@pytest.mark.parametrize("level", [0.3, 0.8])
def test_saturation_clips_within_the_bound_and_nothing_else(fold, level):
    x = fold.raw_test
    y = tasks.sensor_fault(x, "saturation", level=level)
    bound = level * np.abs(x).max(axis=2, keepdims=True)
    assert np.all(np.abs(y) <= bound + 1e-12)
    inside = np.abs(x) <= bound
    assert np.array_equal(y[inside], x[inside])
    np.testing.assert_allclose(np.abs(y[~inside]), np.broadcast_to(bound, x.shape)[~inside])
    assert (~inside).any()


def test_drift_adds_a_monotone_ramp_from_zero(fold):
    x = fold.raw_test
    level = 1.5
    offset = tasks.sensor_fault(x, "drift", seed=2, level=level) - x
    np.testing.assert_allclose(offset[..., 0], 0, atol=1e-12)
    steps = np.diff(offset, axis=2)
    np.testing.assert_allclose(steps, steps[..., :1] * np.ones_like(steps), atol=1e-9)  # linear
    assert np.all((steps > 0).all(axis=2) | (steps < 0).all(axis=2))  # strictly monotone, up or down
    rms = np.sqrt(np.mean(x ** 2, axis=2))
    np.testing.assert_allclose(np.abs(offset[..., -1]), level * rms, rtol=1e-9)


@pytest.mark.parametrize("snr", [20.0, 5.0])
def test_sensor_noise_has_the_requested_snr(fold, snr):
    x = fold.raw_test
    y = tasks.sensor_fault(x, "noise", seed=1, level=snr)
    measured = snr_db(x, y - x, axis=2)  # per recording and channel: 100 steps each
    assert abs(float(np.mean(measured)) - snr) < 0.3
    assert not np.array_equal(y, tasks.sensor_fault(x, "noise", seed=2, level=snr))


def test_faulty_sets_keep_labels_and_layout(fold):
    for kind in tasks.FAULTS:
        s = fold.faulty(kind)
        assert s.x.shape == fold.test.x.shape and np.array_equal(s.labels, fold.test.labels)
        assert not np.array_equal(s.x, fold.test.x)


def test_unknown_fault_and_bad_recordings_are_refused(fold):
    with pytest.raises(InputError, match="melted.*stuck.*saturation.*drift.*noise"):
        tasks.sensor_fault(fold.raw_test, "melted")
    with pytest.raises(InputError, match="channels, steps"):
        tasks.sensor_fault(np.zeros(5), "noise")
    with pytest.raises(InputError, match="saturation"):
        tasks.sensor_fault(fold.raw_test, "saturation", level=0)


# --- HarImage ------------------------------------------------------------------------------------------


def test_synthetic_outliers_shuffle_and_splice_the_id_data(fold):
    made = tasks.synthetic_outliers(fold.train, seed=1, count=21)
    x, steps = fold.train.x, fold.train.x.shape[1]
    assert made.labels is None and made.x.shape == (21,) + x.shape[1:] and made.x.dtype == x.dtype
    shuffled, spliced = made.x[:10], made.x[10:]
    # a shuffled sample holds one recording's time steps, reordered
    for s in shuffled:
        source = [r for r in x if np.allclose(np.sort(r, axis=0), np.sort(s, axis=0))]
        assert source and not np.array_equal(source[0], s)
    # a spliced one is the first half of one class's recording and the second half of another class's
    half = steps // 2
    for s in spliced:
        first = [i for i, r in enumerate(x) if np.array_equal(r[:half], s[:half])]
        second = [i for i, r in enumerate(x) if np.array_equal(r[half:], s[half:])]
        assert first and second and fold.train.labels[first[0]] != fold.train.labels[second[0]]
    with pytest.raises(InputError, match="two classes or more"):
        tasks.synthetic_outliers(tasks.TaskSet("one", x[:4], np.zeros(4, np.int64), []))


def test_har_image_is_the_outer_product_of_the_axis_projections():
    import tensorflow as tf

    n = 5
    layer = tasks.HarImage(n, seed=7)
    x = np.random.default_rng(0).normal(size=(4, 100, 1, 6)).astype(np.float32)
    image = layer(tf.constant(x)).numpy()
    assert image.shape == (4, n, n, 3)
    projections = layer.projections.numpy()[:, 0]  # (steps, 6 channels, n)
    p = np.einsum("btc,tcn->bcn", x[:, :, 0, :].astype(np.float64), projections)  # (N, channel, n)
    want = np.einsum("bki,bkj->bijk", p[:, :3], p[:, 3:])  # accelerometer axis k times gyroscope axis k
    np.testing.assert_allclose(image, want, rtol=1e-4, atol=1e-5)
    assert len(layer.trainable_weights) == 1
    fixed = tasks.HarImage(n, learned=False)
    fixed.build((None, 100, 1, 6))
    assert not fixed.trainable_weights
    with pytest.raises(InputError, match="HarImage takes"):
        tasks.HarImage(n).build((None, 100, 6))


def test_a_model_with_har_image_converts_and_runs_in_the_reference():
    import tensorflow as tf
    from microforge.frontend.keras import keras_to_float_tflite
    from microforge.frontend.reader import read_tflite
    from microforge.reference.interpreter import run

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((100, 1, 6))
    y = tasks.HarImage(6)(inputs)
    y = tf.keras.layers.Conv2D(4, (3, 3), activation="relu")(y)
    y = tf.keras.layers.Flatten()(y)
    y = tf.keras.layers.Dense(3, activation="softmax")(y)
    model = tf.keras.Model(inputs, y)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(8, 100, 1, 6)).astype(np.float32)
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)  # a few steps: the projections are trained weights
    graph = read_tflite(keras_to_float_tflite(model))
    types = {op.type for op in graph.ops}
    assert {"DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL"} <= types
    assert types <= {"DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE", "MUL", "CONV_2D", "SOFTMAX"}
    np.testing.assert_allclose(np.asarray(run(graph, x)).reshape(8, 3), model.predict(x, verbose=0), atol=1e-5)


# --- KWS sets ------------------------------------------------------------------------------------------


def model_input_shape(path=FSDD_MODEL):
    return microforge.load(path).inputs[0].shape[1:]


def test_kws_fold_splits_the_digits():
    id_set, near = tasks.kws_fold((3, 9), indices=[0])
    kept = [d for d in range(10) if d not in (3, 9)]
    assert id_set.x.shape[1:] == model_input_shape() and near.x.shape[1:] == model_input_shape()
    assert id_set.classes == tuple(map(str, kept)) and near.labels is None
    digits = [int(n.split("_")[0]) for n in id_set.names]
    assert [kept[c] for c in id_set.labels] == digits and not {3, 9} & set(digits)
    assert {int(n.split("_")[0]) for n in near.names} == {3, 9}
    assert len(id_set) + len(near) == len(fsdd_test_files(FSDD, [0]))
    with pytest.raises(InputError, match="held-out digits"):
        tasks.kws_fold(range(10))


def test_espeak_clips_have_the_model_input_shape():
    clips = tasks.espeak_clips(("yes", "seven"), voices=("en", "de"), speeds=(175,))
    assert clips.x.shape == (4, *model_input_shape()) and clips.x.dtype == np.float32
    assert np.all(np.isfinite(clips.x)) and clips.labels is None
    assert len({row.tobytes() for row in clips.x}) == 4  # each voice and word is another clip
    assert all(re.fullmatch(r"espeak_(en|de)_175_(yes|seven)", n) for n in clips.names)


def test_missing_espeak_or_alsa_names_the_debian_package(monkeypatch, tmp_path):
    with pytest.raises(InputError, match="alsa-utils"):
        tasks.alsa_clips(tmp_path)
    monkeypatch.setattr(tasks.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="Debian package espeak-ng"):
        tasks.espeak_clips(("yes",))


def test_alsa_and_noise_clips():
    alsa = tasks.alsa_clips()
    assert len(alsa) == len(list(tasks.ALSA_SOUNDS.glob("*.wav"))) and alsa.x.shape[1:] == model_input_shape()
    noise = tasks.noise_clips(count=3, seed=5)
    assert noise.x.shape == (6, *model_input_shape()) and np.all(np.isfinite(noise.x))
    assert np.array_equal(noise.x, tasks.noise_clips(count=3, seed=5).x)
    rng = np.random.default_rng(0)
    power = lambda z: np.abs(np.fft.rfft(z)) ** 2  # noqa: E731
    pink, white = power(tasks.coloured_noise(16000, rng, "pink")), power(tasks.coloured_noise(16000, rng, "white"))
    assert pink[10:100].mean() > 10 * pink[1000:8000].mean()  # power falls with frequency
    assert 0.5 < white[10:100].mean() / white[1000:8000].mean() < 2
    with pytest.raises(InputError, match="colour"):
        tasks.coloured_noise(10, rng, "brown")


@pytest.mark.parametrize("snr", [10.0, 5.0, 0.0])
def test_kws_shift_mixes_noise_at_the_requested_snr(snr):
    path = fsdd_test_files(FSDD, [0])[0][0]
    samples, rate = read_wav(path)
    wave = kws_waveform(samples, rate).astype(np.float64)
    spoken = min(KWS_SAMPLES, math.ceil(len(samples) * KWS_SAMPLE_RATE / rate))
    noisy = tasks.mix_noise(wave, snr, np.random.default_rng(0), spoken)
    assert abs(snr_db(wave[:spoken], noisy - wave) - snr) < 0.2  # noise over the whole second
    shifted = tasks.kws_shift(snr, indices=[0])
    clean, _ = tasks.kws_fold(indices=[0])
    assert shifted.x.shape == clean.x.shape and np.array_equal(shifted.labels, clean.labels)
    assert not np.allclose(shifted.x, clean.x)
    assert np.array_equal(shifted.x, tasks.kws_shift(snr, indices=[0]).x)  # seeded


# --- runner folders ------------------------------------------------------------------------------------


def test_runner_folder_round_trip_gives_the_quantized_bytes(tmp_path):
    id_set, near = tasks.kws_fold(indices=[0])
    graph = microforge.load(FSDD_MODEL)
    t = graph.inputs[0]
    folder = tasks.write_runner_folder(tmp_path / "id", id_set.x, id_set.labels, FSDD_MODEL, names=id_set.names)
    samples, labels = read_dataset(folder, t.nbytes)
    want = quantize_input(id_set.x, t.scale, t.zero_point)
    assert [name for name, _ in samples] == [n + ".bin" for n in id_set.names]
    assert [data for _, data in samples] == [q.tobytes() for q in want]
    assert labels == id_set.labels.tolist()
    tasks.write_runner_folder(tmp_path / "near", near.x, None, (t.scale, t.zero_point))
    read_back = runner_set(tmp_path / "near", graph)  # as `microforge ood evaluate --ood` reads it
    want = quantize_input(near.x, t.scale, t.zero_point)
    assert np.array_equal(read_back.x.reshape(want.shape), want)
    assert not read_back.labels.any()
    with pytest.raises(InputError, match="do not fit input"):
        tasks.write_runner_folder(tmp_path / "bad", id_set.x[:, :20], None, graph)


def test_runner_folder_of_a_float_model_holds_float32(tmp_path, fold):
    path = OOD_MODELS / "har_fold_walking_cnn_float.tflite"
    folder = tasks.write_runner_folder(tmp_path, fold.test.x, fold.test.labels, path)
    samples, labels = read_dataset(folder, fold.test.x[0].nbytes)
    assert [d for _, d in samples] == [row.tobytes() for row in fold.test.x] and labels == fold.test.labels.tolist()


# --- the shipped models --------------------------------------------------------------------------------


def test_shipped_models_take_the_task_sets_and_score_as_recorded():
    record = json.loads((OOD_MODELS / "training.json").read_text())
    for held_out, entry in record["har"].items():
        f = tasks.har_fold(held_out)
        for kind in ("cnn", "image"):
            graph = microforge.load(OOD_MODELS / entry[kind]["file"])
            accuracy = np.mean(np.asarray(microforge.run(graph, f.test.x)).argmax(1) == f.test.labels)
            assert accuracy == pytest.approx(entry[kind]["float_tflite_test_accuracy"])
    kws = record["kws"]
    graph = microforge.load(OOD_MODELS / kws["file"])
    assert graph.outputs[0].shape[-1] == len(kws["digits"])
    id_set, _ = tasks.kws_fold(kws["held_out_digits"], indices=[0])
    assert id_set.x.shape[1:] == graph.inputs[0].shape[1:]
