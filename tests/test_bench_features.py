"""microforge.bench audio/features/images against independent references (TensorFlow, direct loops)."""

import wave

import numpy as np
import pytest
from conftest import AD_SAMPLE, FSDD
from hypothesis import given, settings
from hypothesis import strategies as st

from microforge.bench import audio, features, images
from microforge.errors import InputError

tf = pytest.importorskip("tensorflow")


def tf_kws_mfcc(wav):
    """The MLPerf Tiny KWS reference's feature code (get_dataset.py, evaluation path), in TensorFlow."""
    stfts = tf.signal.stft(tf.constant(wav, tf.float32), frame_length=480, frame_step=320, fft_length=None,
                           window_fn=tf.signal.hann_window)
    spectrograms = tf.abs(stfts)
    mel = tf.signal.linear_to_mel_weight_matrix(40, stfts.shape[-1], 16000, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(spectrograms, mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()


def tf_waveform(samples_16k):
    wav = tf.constant(samples_16k, tf.float32)
    wav = wav / tf.reduce_max(wav)
    wav = tf.pad(wav, [[0, 16000 - tf.shape(wav)[-1]]])
    padded = tf.pad(wav, [[2, 2]])
    return tf.slice(padded, [2], [16000]).numpy()


def write_wav(path, data, rate, width=2, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)


# --- KWS MFCC ------------------------------------------------------------------------------------------

def test_mel_matrix_matches_tf():
    ours = features.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)
    ref = tf.signal.linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0).numpy()
    assert ours.shape == ref.shape == (257, 40)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.parametrize("name", ["0_george_0.wav", "3_jackson_1.wav", "7_yweweler_4.wav", "9_theo_2.wav"])
def test_kws_mfcc_matches_tf_on_fsdd(name):
    samples, rate = audio.read_wav(FSDD / name)
    assert rate == 8000
    x16 = audio.resample(samples, 8000, 16000)[:16000]
    ours_wav = features.kws_waveform(samples, rate)
    np.testing.assert_allclose(ours_wav, tf_waveform(x16), atol=1e-6)
    ours = features.kws_mfcc(ours_wav)
    ref = tf_kws_mfcc(ours_wav)
    assert ours.shape == ref.shape == (49, 10)
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()
    np.testing.assert_array_equal(features.kws_features_from_wav(FSDD / name), ours)


def test_kws_mfcc_matches_tf_on_noise_batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 16000)).astype(np.float32) * np.array([[1.0], [1e-3], [0.3]], np.float32)
    ours = features.kws_mfcc(x)
    ref = tf_kws_mfcc(x)
    assert ours.shape == (3, 49, 10)
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_kws_mfcc_silence_hits_log_offset():
    out = features.kws_mfcc(np.zeros(16000, np.float32))
    np.testing.assert_allclose(out[:, 0], np.log(1e-6) * 40 * 2 / np.sqrt(80), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1:], 0, atol=1e-4)


def test_kws_waveform_errors_and_padding():
    with pytest.raises(InputError, match="silent"):
        features.kws_waveform(np.zeros(100), 16000, source="quiet.wav")
    with pytest.raises(InputError, match="empty"):
        features.kws_waveform(np.zeros(0), 16000)
    with pytest.raises(InputError, match="shorter than one"):
        features.kws_mfcc(np.zeros(100))
    w = features.kws_waveform(np.r_[0.5, -1.0, 0.25], 16000)
    assert w.shape == (16000,) and w[0] == 1.0 and w[1] == -2.0 and not w[3:].any()  # signed max, left-aligned
    long = features.kws_waveform(np.arange(1, 20001, dtype=float), 16000)
    assert long.shape == (16000,) and long[0] == pytest.approx(1 / 20000)


# --- quantization --------------------------------------------------------------------------------------

def test_quantize_rounds_half_away_and_clamps():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, -0.49, 1000.0, -1000.0, 0.0], np.float32)
    q = features.quantize_input(x, 1.0, 0)
    np.testing.assert_array_equal(q, [1, 2, 3, -1, -2, -3, 0, 0, 127, -128, 0])
    assert q.dtype == np.int8
    np.testing.assert_array_equal(features.quantize_input(np.float32([0.25, -0.25]), 0.5, 10), [11, 9])
    with pytest.raises(InputError):
        features.quantize_input(x, 0.0, 0)
    with pytest.raises(InputError):
        features.quantize_input(x, 1.0, 200)
    with pytest.raises(InputError):
        features.quantize_input(np.float32([np.nan]), 1.0, 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-200, 200, width=32), min_size=1, max_size=20),
       st.floats(0.125, 3.0, width=32), st.integers(-128, 127))
def test_quantize_matches_scalar_reference(values, scale, zp):
    x = np.array(values, np.float32)
    q = features.quantize_input(x, scale, zp)
    for v, got in zip(x, q):
        r = float(np.float32(v) / np.float32(scale))  # TFLite: float32 division, then std::round
        rounded = int(np.floor(abs(r) + 0.5)) * (1 if r >= 0 else -1) if abs(r) < 2**22 else int(r)
        assert got == max(-128, min(127, rounded + zp))


# --- anomaly detection -----------------------------------------------------------------------------------

def test_ad_windows_match_direct_loop_on_shipped_sample():
    hist = features.read_ad_hist(AD_SAMPLE)
    assert hist.shape == (200, 128) and np.isfinite(hist).all()
    vectors = features.ad_windows(hist)
    assert vectors.shape == (196, 640)
    loop = np.zeros((196, 640), np.float32)
    for t in range(5):  # the reference's file_to_vector_array loop
        loop[:, 128 * t:128 * (t + 1)] = hist.T[:, t:t + 196].T
    np.testing.assert_array_equal(vectors, loop)
    with pytest.raises(InputError, match="shorter than one"):
        features.ad_windows(hist[:4])
    with pytest.raises(InputError, match="bytes"):
        features.read_ad_hist(AD_SAMPLE, frames=199)


def test_ad_log_mel_definitions():
    fb = features.slaney_mel_filterbank()
    assert fb.shape == (128, 513) and (fb >= 0).all()
    assert (fb.sum(axis=1) > 0).all()  # every band covers a bin
    # Slaney mel: linear to 1 kHz, 15 mel at 1 kHz, round trip exact
    np.testing.assert_allclose(features.hz_to_mel_slaney([0, 1000, 8000]),
                               [0, 15, 15 + np.log(8) / (np.log(6.4) / 27)])
    np.testing.assert_allclose(features.mel_to_hz_slaney(features.hz_to_mel_slaney([123.0, 4567.0])), [123, 4567])
    sr = 16000
    t = np.arange(10 * sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1500 * t)
    lm = features.ad_log_mel(tone)
    assert lm.shape == (1 + len(tone) // 512, 128)  # 313 frames for a 10 s clip
    band = int(np.argmax(fb[:, round(1500 * 1024 / sr)]))
    assert abs(int(np.argmax(lm[100])) - band) <= 1
    # power 2 -> 10 log10 of the mel energy
    spec = np.abs(np.fft.rfft(tone[100 * 512 - 512:100 * 512 + 512] * features.hann_window(1024))) ** 2
    np.testing.assert_allclose(lm[100], 10 * np.log10(fb @ spec + np.finfo(float).eps), rtol=1e-4, atol=1e-3)


def test_ad_hist_from_wav(tmp_path):
    t = np.arange(10 * 16000) / 16000
    pcm = (0.3 * np.sin(2 * np.pi * 700 * t) * 32767).astype("<i2")
    write_wav(tmp_path / "clip.wav", pcm.tobytes(), 16000)
    hist = features.ad_hist_from_wav(tmp_path / "clip.wav")
    full = features.ad_log_mel(pcm / 32768.0)
    assert hist.shape == (200, 128)
    np.testing.assert_allclose(hist, full[50:250], atol=1e-3)
    assert features.ad_windows(hist).shape == (196, 640)
    write_wav(tmp_path / "short.wav", pcm[:16000].tobytes(), 16000)
    with pytest.raises(InputError, match="short.wav"):
        features.ad_hist_from_wav(tmp_path / "short.wav")


# --- audio ------------------------------------------------------------------------------------------------

def test_resample_keeps_sine_frequency():
    t8 = np.arange(8000) / 8000
    x = np.sin(2 * np.pi * 440 * t8)
    y = audio.resample(x, 8000, 16000)
    assert y.shape == (16000,) and y.dtype == np.float32
    assert np.argmax(np.abs(np.fft.rfft(y))) == 440  # 1 s -> 1 Hz bins
    ideal = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y - ideal)[200:-200].max() < 2e-3  # away from the zero-padded ends
    down = audio.resample(ideal, 16000, 8000)
    assert down.shape == (8000,) and np.abs(down - x)[200:-200].max() < 2e-3
    odd = audio.resample(ideal, 16000, 11025)
    assert odd.shape == (11025,) and np.argmax(np.abs(np.fft.rfft(odd))) == 440
    np.testing.assert_array_equal(audio.resample(x, 8000, 8000), x.astype(np.float32))
    with pytest.raises(InputError):
        audio.resample(x, 0, 16000)


def test_pad_or_trim():
    x = np.arange(1, 6)
    np.testing.assert_array_equal(audio.pad_or_trim(x, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(audio.pad_or_trim(x, 8, "center"), [0, 1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(audio.pad_or_trim(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(audio.pad_or_trim(x, 3, "center"), [2, 3, 4])
    with pytest.raises(InputError):
        audio.pad_or_trim(x, 3, "right")


def test_read_wav_formats_and_errors(tmp_path):
    pcm = np.array([0, 16384, -32768, 32767], "<i2")
    write_wav(tmp_path / "a.wav", pcm.tobytes(), 8000)
    x, rate = audio.read_wav(tmp_path / "a.wav")
    assert rate == 8000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, pcm / 32768.0)
    stereo = np.array([[100, 300], [-200, -400]], "<i2")
    write_wav(tmp_path / "s.wav", stereo.tobytes(), 16000, channels=2)
    np.testing.assert_allclose(audio.read_wav(tmp_path / "s.wav")[0], [200 / 32768, -300 / 32768])
    write_wav(tmp_path / "u8.wav", bytes([128, 255, 0]), 8000, width=1)
    np.testing.assert_array_equal(audio.read_wav(tmp_path / "u8.wav")[0], [0, 127 / 128, -1])
    tf_ref = tf.audio.decode_wav(tf.io.read_file(str(FSDD / "0_george_0.wav")))[0].numpy()[:, 0]
    np.testing.assert_array_equal(audio.read_wav(FSDD / "0_george_0.wav")[0], tf_ref)
    with pytest.raises(InputError, match="not found"):
        audio.read_wav(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF1234WAVEjunkjunk")
    with pytest.raises(InputError, match="junk.wav"):
        audio.read_wav(tmp_path / "junk.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty.wav"):
        audio.read_wav(tmp_path / "empty.wav")


# --- images ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,size", [((120, 160, 3), (96, 96)), ((20, 30, 3), (32, 32)), ((64, 64, 3), (32, 32))])
def test_bilinear_resize_matches_tf(shape, size):
    img = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    ours = images.resize(img, *size)
    ref = tf.image.resize(img[None].astype(np.float32), size, method="bilinear", antialias=False).numpy()[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)  # TF computes in float32


def test_nearest_resize_matches_tf():
    img = np.random.default_rng(2).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    ours = images.resize(img, 32, 32, method="nearest")
    ref = tf.image.resize(img[None], (32, 32), method="nearest").numpy()[0]
    np.testing.assert_array_equal(ours, ref)


def test_model_inputs():
    img = np.random.default_rng(3).integers(0, 256, (96, 96, 3)).astype(np.uint8)
    np.testing.assert_array_equal(images.vww_input(img), img.astype(np.int16) - 128)
    np.testing.assert_array_equal(images.ic_input(img[:32, :32]), img[:32, :32].astype(np.int16) - 128)
    assert images.vww_input(img[:50]).shape == (96, 96, 3)
    assert images.ic_input(img[:, :, 0]).shape == (32, 32, 3)  # grey replicated
    with pytest.raises(InputError):
        images.ic_input(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(InputError):
        images.resize(np.zeros((4,)), 2, 2)
