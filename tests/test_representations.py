"""microforge.robust.ood.representations: the builders' shapes, that each kind of training does what it says
(loss goes down, frozen weights stay put, fine-tuned ones move), the variational loss terms, truncation's
saving in MACs after conversion, the shifted-data noise, and a converted classifier on the reference
interpreter agreeing byte for byte with TFLite Micro. Tiny random data and a few steps: no accuracy here
(benchmarks/representations.py measures that)."""

import contextlib
import io

import numpy as np
import pytest
from conftest import FSDD
from oracle import tflm_run

import microforge
from microforge.errors import InputError
from microforge.robust.ood import representations as rep

tf = pytest.importorskip("tensorflow")


def mfcc_like(n: int, seed: int = 0) -> np.ndarray:
    """Random (n, 49, 10) features in roughly the KWS MFCC range (the log-energy coefficient much larger)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rep.FRAMES, rep.COEFFICIENTS)).astype(np.float32)
    x[..., 0] = 10.0 * x[..., 0] - 30.0
    return x


def convert(model, x) -> bytes:
    from microforge.frontend.keras import keras_to_int8_tflite

    with contextlib.redirect_stdout(io.StringIO()):
        return keras_to_int8_tflite(model, x[..., None])


def weights_of(model) -> list[np.ndarray]:
    return [w.numpy() for w in model.weights]  # trainable and not (batch norm's moving statistics)


# ----------------------------------------------------------------------------------------------------
# shapes


def test_encoder_decoder_and_classifier_shapes():
    encoder = rep.build_encoder()
    assert encoder.input_shape == (None, 49, 10, 1) and encoder.output_shape == (None, 25, 5, 32)
    c = rep.CHANNELS
    # stem conv 10x4 + its norm (4 values a channel), then per block depthwise 3x3, pointwise, two norms
    expected = 10 * 4 * c + 4 * c + rep.BLOCKS * (9 * c + 4 * c + c * c + 4 * c)
    assert encoder.count_params() == expected
    assert rep.encoder_blocks(encoder) == rep.BLOCKS
    decoder = rep.build_decoder(encoder.output_shape[1:])
    assert decoder.output_shape == (None, 49, 10, 1)
    classifier = rep.build_classifier(encoder)
    assert classifier.output_shape == (None, 10)
    assert classifier.count_params() == expected + c * 10 + 10  # the head: one dense layer
    p = classifier(mfcc_like(3)[..., None], training=False).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert rep.classifier_encoder(classifier) is encoder


def test_autoencoder_parts_and_their_shapes():
    x = mfcc_like(4)
    mean, std = rep.feature_stats(x)
    assert mean.shape == std.shape == (10,) and np.all(std > 0)
    dae = rep.build_autoencoder("denoising", mean, std)
    assert dae.latent is None and dae.head is None
    assert dae.decoder(dae.encoder(x[..., None])).shape == (4, 49, 10, 1)
    dvae = rep.build_autoencoder("discriminative", mean, std)
    features = dvae.encoder(x[..., None])
    assert features.shape == (4, 25, 5, 32)
    z_mean, z_log_var = dvae.latent(features)
    assert z_mean.shape == z_log_var.shape == (4, 25, 5, rep.LATENT_CHANNELS)
    assert dvae.head(z_mean).shape == (4, 10)
    assert dvae.decoder(z_mean).shape == (4, 49, 10, 1)


# ----------------------------------------------------------------------------------------------------
# training


def test_denoising_autoencoder_loss_goes_down():
    x = mfcc_like(96)
    mean, std = rep.feature_stats(x)
    ae = rep.build_autoencoder("denoising", mean, std, seed=3)
    history = rep.train_autoencoder(ae, x, noise_std=0.3, epochs=8, batch_size=32, seed=3)
    assert len(history) == 8 and all(np.isfinite(history))
    assert history[-1] < 0.8 * history[0]


def test_denoising_autoencoder_learns_from_noisy_clean_pairs():
    rng = np.random.default_rng(1)
    clean = np.repeat(rng.normal(size=(4, 49, 10)).astype(np.float32), 16, axis=0)  # four patterns
    noisy = clean + rng.normal(0, 1.0, clean.shape).astype(np.float32)
    mean, std = rep.feature_stats(clean)
    ae = rep.build_autoencoder("denoising", mean, std, seed=4)
    target = rep.standardise(ae, clean)
    before = float(rep.autoencoder_losses(ae, noisy[..., None], target, training=True)["reconstruction"])
    rep.train_autoencoder(ae, noisy, targets=clean, epochs=10, batch_size=16, seed=4)
    after = float(rep.autoencoder_losses(ae, noisy[..., None], target, training=True)["reconstruction"])
    assert after < 0.8 * before


def test_variational_losses_are_finite_and_the_kl_of_the_prior_is_zero():
    x = mfcc_like(8)
    mean, std = rep.feature_stats(x)
    for kind in ("variational", "discriminative"):
        ae = rep.build_autoencoder(kind, mean, std, seed=5)
        labels = np.arange(8) % 10 if kind == "discriminative" else None
        seeds = tf.keras.random.SeedGenerator(0)
        terms = rep.autoencoder_losses(ae, x[..., None], rep.standardise(ae, x), labels, training=True,
                                       seed_generator=seeds)
        assert set(terms) >= {"reconstruction", "kl", "total"}
        assert all(np.isfinite(float(v)) for v in terms.values())
        assert float(terms["kl"]) >= 0.0
        if kind == "discriminative":
            assert float(terms["classification"]) > 0.0
            expected = terms["reconstruction"] + terms["kl"] + terms["classification"]
            np.testing.assert_allclose(float(terms["total"]), float(expected), rtol=1e-5)
    z = tf.zeros((2, 25, 5, 3))
    np.testing.assert_allclose(rep.kl_divergence(z, z).numpy(), 0.0, atol=1e-7)  # N(0, 1) against itself
    shifted = rep.kl_divergence(tf.ones((1, 25, 5, 3)), tf.zeros((1, 25, 5, 3))).numpy()
    np.testing.assert_allclose(shifted, 0.5 * 25 * 5 * 3, rtol=1e-6)  # mean 1, variance 1: 1/2 a Gaussian


def test_variational_autoencoder_trains():
    x = mfcc_like(64, seed=6)
    mean, std = rep.feature_stats(x)
    ae = rep.build_autoencoder("discriminative", mean, std, seed=6)
    history = rep.train_autoencoder(ae, x, labels=np.arange(64) % 10, epochs=6, batch_size=32, seed=6)
    assert all(np.isfinite(history)) and history[-1] < history[0]


def test_frozen_encoder_does_not_move_and_fine_tuned_one_does():
    x, y = mfcc_like(64, seed=7), np.arange(64) % 10
    frozen = rep.build_encoder(seed=7)
    rep.set_trainable(frozen, False)
    model = rep.build_classifier(frozen, seed=7)
    before, head_before = weights_of(frozen), model.get_layer("head_dense").get_weights()[0].copy()
    rep.train_classifier(model, x, y, epochs=1, batch_size=32, seed=7)
    for old, new in zip(before, weights_of(frozen)):
        np.testing.assert_array_equal(old, new)  # weights and moving statistics alike
    assert not np.array_equal(head_before, model.get_layer("head_dense").get_weights()[0])

    tuned = rep.build_encoder(seed=7)
    model = rep.build_classifier(tuned, seed=7)
    before = [w.numpy() for w in tuned.trainable_weights]
    rep.train_classifier(model, x, y, epochs=1, batch_size=32, seed=7)
    assert all(not np.array_equal(old, new.numpy()) for old, new in zip(before, tuned.trainable_weights))


def test_linear_probe_fits_the_head_alone_and_folds_the_standardisation():
    rng = np.random.default_rng(11)
    y = np.arange(120) % 4
    # each class adds its own pattern: a random encoder's averaged features can tell them apart linearly
    x = mfcc_like(120, seed=11) + 3.0 * rng.normal(size=(4, 49, 10)).astype(np.float32)[y]
    encoder = rep.build_encoder(seed=11)
    rep.set_trainable(encoder, False)
    model = rep.build_classifier(encoder, classes=4, seed=11)
    before = weights_of(encoder)
    chance = np.mean(np.argmax(model.predict(x[..., None], verbose=0), axis=1) == y)
    history = rep.train_head(model, x, y, epochs=60, batch_size=64, seed=11)
    assert history[-1] < history[0]
    for old, new in zip(before, weights_of(encoder)):
        np.testing.assert_array_equal(old, new)
    # the folded dense layer computes what the probe learned on standardised features: the model, as it
    # runs (pool, dense, softmax), now fits the training clips
    fitted = np.mean(np.argmax(model.predict(x[..., None], verbose=0), axis=1) == y)
    assert fitted >= 0.9 and fitted > chance
    features = rep.pooled_features(model, x)
    kernel, bias = model.get_layer("head_dense").get_weights()
    np.testing.assert_array_equal(np.argmax(features @ kernel + bias, axis=1),
                                  np.argmax(model.predict(x[..., None], verbose=0), axis=1))


def test_training_is_repeatable_with_the_same_seed():
    x, y = mfcc_like(32, seed=8), np.arange(32) % 10
    runs = []
    for _ in range(2):
        model = rep.build_classifier(rep.build_encoder(seed=8), seed=8)
        runs.append((rep.train_classifier(model, x, y, epochs=1, batch_size=16, seed=8), weights_of(model)))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------
# truncation and conversion


def test_truncating_blocks_keeps_weights_and_cuts_macs_after_conversion():
    x = mfcc_like(16, seed=9)
    encoder = rep.build_encoder(seed=9)
    macs, flash = [], []
    for k in (0, 1, 2):
        short = rep.truncate_encoder(encoder, k)
        assert rep.encoder_blocks(short) == rep.BLOCKS - k and short.output_shape == encoder.output_shape
        for layer in (layer for layer in short.layers if layer.weights):
            for a, b in zip(layer.get_weights(), encoder.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
        totals = microforge.analyze(microforge.load(convert(rep.build_classifier(short, seed=9), x)))["totals"]
        macs.append(totals["macs"])
        flash.append(totals["flash_bytes"])
    # each block: a 3x3 depthwise and a 32 x 32 pointwise conv on the 25 x 5 map
    per_block = 25 * 5 * (9 * rep.CHANNELS + rep.CHANNELS * rep.CHANNELS)
    assert macs[0] - macs[1] == per_block and macs[1] - macs[2] == per_block
    assert flash[0] > flash[1] > flash[2]
    with pytest.raises(InputError, match="cannot remove 5 blocks"):
        rep.truncate_encoder(encoder, 5)


def test_converted_classifier_runs_on_the_reference_interpreter_as_tflm():
    x = mfcc_like(12, seed=10)
    model = rep.build_classifier(rep.build_encoder(seed=10), seed=10)
    tflite = convert(model, x)
    graph = microforge.load(tflite)
    predictions = rep.int8_predictions(graph, x)
    assert predictions.shape == (12,) and predictions.dtype.kind == "i"
    assert predictions.min() >= 0 and predictions.max() < 10
    from microforge.bench.features import quantize_input

    t = graph.inputs[0]
    q = quantize_input(x, float(t.quant.scale[0]), int(t.quant.zero_point[0]))[:, None, ..., None]
    ours = np.asarray(microforge.run(graph, q)).reshape(12, -1)
    theirs = tflm_run(tflite, [q])[0].reshape(12, -1)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(predictions, np.argmax(theirs, axis=1))


# ----------------------------------------------------------------------------------------------------
# shifted data and errors


def test_noise_is_added_at_the_asked_snr_and_only_where_asked():
    rate = 8000
    t = np.arange(4000) / rate  # half a second: padded to 1 s at 16 kHz
    tone = np.sin(2 * np.pi * 440 * t)
    clean = rep.noisy_waveform(tone, rate, 200.0, np.random.default_rng(0))  # 200 dB: no noise to speak of
    for snr_db in (0.0, 5.0, 20.0):
        noisy = rep.noisy_waveform(tone, rate, snr_db, np.random.default_rng(1))
        spoken = slice(0, 8000)
        gain = np.dot(noisy[spoken], clean[spoken]) / np.dot(clean[spoken], clean[spoken])  # undo the renormalising
        noise = noisy[spoken] - gain * clean[spoken]
        measured = 10 * np.log10(np.mean((gain * clean[spoken]) ** 2) / np.mean(noise ** 2))
        assert abs(measured - snr_db) < 0.5
        assert np.all(noisy[8000:] == 0.0)  # span "clip": the padding stays silent
    window = rep.noisy_waveform(tone, rate, 5.0, np.random.default_rng(1), span="window")
    assert np.std(window[8000:]) > 0.05
    with pytest.raises(InputError, match="span"):
        rep.noisy_waveform(tone, rate, 5.0, np.random.default_rng(1), span="everywhere")


def test_fsdd_features_clean_and_shifted():
    x, y = rep.fsdd_features(FSDD, [0])
    assert x.shape == (len(y), 49, 10) and x.dtype == np.float32 and set(y.tolist()) == set(range(10))
    noisy, y2 = rep.fsdd_features(FSDD, [0], snr_db=5.0, seed=0)
    again, _ = rep.fsdd_features(FSDD, [0], snr_db=5.0, seed=0)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(noisy, again)  # seeded
    assert not np.allclose(noisy, x)


def test_errors_name_what_is_wrong():
    x = mfcc_like(4)
    mean, std = rep.feature_stats(x)
    with pytest.raises(InputError, match="unknown autoencoder kind 'sparse'"):
        rep.build_autoencoder("sparse", mean, std)
    with pytest.raises(InputError, match="needs corrupted inputs"):
        rep.train_autoencoder(rep.build_autoencoder("denoising", mean, std), x, epochs=1)
    with pytest.raises(InputError, match="needs labels"):
        rep.train_autoencoder(rep.build_autoencoder("discriminative", mean, std), x, epochs=1)
    with pytest.raises(InputError, match="one per coefficient"):
        rep.build_autoencoder("variational", mean[:5], std)
    with pytest.raises(InputError, match="labels must lie in 0..9"):
        rep.train_classifier(rep.build_classifier(rep.build_encoder()), x, np.array([0, 1, 2, 10]), epochs=1)
    encoder = rep.build_encoder()
    rep.set_trainable(encoder, False)
    frozen = rep.build_classifier(encoder)
    rep.set_trainable(frozen, False)
    with pytest.raises(InputError, match="nothing to train"):
        rep.train_classifier(frozen, x, np.arange(4), epochs=1)
    with pytest.raises(InputError, match="frames, coefficients, 1"):
        rep.build_encoder((49, 10))
