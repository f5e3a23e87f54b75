"""Feature extraction of the MLPerf Tiny reference pipelines, in numpy, plus TFLite input quantization.

Keyword spotting (mlcommons/tiny benchmark/training/keyword_spotting, get_dataset.py, evaluation path):

    wav  = wav / max(wav)                      # tf.reduce_max: the signed maximum, not max |x|
    wav  = pad with zeros at the end to 16000  # 1 s at 16 kHz; the +-2 sample time shift is 0 at eval
    X    = tf.signal.stft(wav, 480, 320, fft_length=None -> 512, window_fn=hann_window)  # periodic Hann
    S    = |X|                                 # magnitude, 49 frames x 257 bins (no end padding)
    M    = S @ linear_to_mel_weight_matrix(40, 257, 16000, 20.0, 4000.0)     # HTK mel, no DC bin
    L    = log(M + 1e-6)
    mfcc = mfccs_from_log_mel_spectrograms(L)[..., :10]   # DCT-II (unnormalised) * 1/sqrt(2*40)
                                                          # -> 49 x 10 float

`kws_mfcc` computes the last four steps in float64 (the TF reference works in float32; they agree to
float32 rounding) and returns float32. `kws_waveform` does the first two (plus resampling for clips that
are not 16 kHz). `quantize_input` turns features into the int8 model input exactly as TFLite's QUANTIZE
(reference_ops::AffineQuantize): q = clamp(round_half_away(x / scale) + zero_point, -128, 127), the
division done in float32.

Anomaly detection (mlcommons/tiny benchmark/training/anomaly_detection, common.py, after the DCASE 2020
baseline): librosa.feature.melspectrogram(y, sr=16000, n_fft=1024, hop_length=512, n_mels=128, power=2.0)
(centred STFT, reflect padding of n_fft/2, periodic Hann, Slaney mel scale with Slaney area
normalisation, 0 Hz .. sr/2), then 20/power * log10(mel + float64 eps), frames 50:250 kept for the
runner's `*_hist_librosa.bin` (float32, 200 frames x 128 bins), then five consecutive frames -> one
640-vector, hop 1 frame: 196 vectors per clip. `ad_windows` does the framing; `ad_log_mel` the
waveform part (re-implemented from the librosa definitions, so that microforge does not need librosa at
run time; tests/test_bench_librosa.py checks it against librosa itself).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from microforge.bench.audio import pad_or_trim, read_wav, resample
from microforge.errors import InputError

# KWS reference constants (get_dataset.py / kws_util.py defaults)
KWS_SAMPLE_RATE = 16000
KWS_SAMPLES = 16000
KWS_WINDOW = 480  # 30 ms
KWS_STRIDE = 320  # 20 ms
KWS_FFT = 512  # tf.signal.stft fft_length=None: the next power of two >= 480
KWS_MEL_BINS = 40
KWS_LOWER_HZ = 20.0
KWS_UPPER_HZ = 4000.0
KWS_LOG_OFFSET = 1e-6
KWS_DCT_COEFFS = 10
KWS_FRAMES = 1 + (KWS_SAMPLES - KWS_WINDOW) // KWS_STRIDE  # 49

# AD reference constants (baseline.yaml of the MLPerf Tiny AD benchmark)
AD_SAMPLE_RATE = 16000
AD_N_FFT = 1024
AD_HOP = 512
AD_MEL_BINS = 128
AD_POWER = 2.0
AD_FRAMES = 5
AD_HIST_START, AD_HIST_STOP = 50, 250  # the 200 frames stored in *_hist_librosa.bin


# ----------------------------------------------------------------------------------------------------
# keyword spotting


def hann_window(length: int) -> np.ndarray:
    """tf.signal.hann_window(length, periodic=True): 0.5 - 0.5 cos(2 pi n / length)."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def stft_magnitude(x: np.ndarray, frame_length: int, frame_step: int, fft_length: int) -> np.ndarray:
    """|tf.signal.stft(x, frame_length, frame_step, fft_length, hann_window)| (pad_end=False), last axis."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    if n < frame_length:
        raise InputError(f"signal of {n} samples is shorter than one {frame_length}-sample frame")
    frames = 1 + (n - frame_length) // frame_step
    idx = np.arange(frames)[:, None] * frame_step + np.arange(frame_length)[None, :]
    framed = x[..., idx] * hann_window(frame_length)
    return np.abs(np.fft.rfft(framed, n=fft_length, axis=-1))


def hertz_to_mel_htk(f):
    """TF's mel scale (HTK): 1127 * ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def linear_to_mel_weight_matrix(num_mel_bins: int = KWS_MEL_BINS, num_spectrogram_bins: int = KWS_FFT // 2 + 1,
                                sample_rate: float = KWS_SAMPLE_RATE, lower_edge_hertz: float = KWS_LOWER_HZ,
                                upper_edge_hertz: float = KWS_UPPER_HZ) -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix: triangles on the HTK mel scale, DC bin zeroed.

    Returns (num_spectrogram_bins, num_mel_bins) float64.
    """
    if not 0.0 <= lower_edge_hertz < upper_edge_hertz <= sample_rate / 2.0:
        raise InputError(f"mel band edges {lower_edge_hertz}..{upper_edge_hertz} Hz do not fit "
                         f"0..{sample_rate / 2.0} Hz")
    freqs = np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins)[1:]  # HTK excludes the DC bin
    bins_mel = hertz_to_mel_htk(freqs)[:, None]
    edges = np.linspace(hertz_to_mel_htk(lower_edge_hertz), hertz_to_mel_htk(upper_edge_hertz), num_mel_bins + 2)
    lower, center, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    lower_slopes = (bins_mel - lower) / (center - lower)
    upper_slopes = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.pad(weights, [(1, 0), (0, 0)])


def mfcc_dct_matrix(num_mel_bins: int, num_coefficients: int) -> np.ndarray:
    """tf.signal.mfccs_from_log_mel_spectrograms as a matrix: DCT-II (norm=None) times rsqrt(2 N).

    D[n, k] = 2 cos(pi k (2n + 1) / (2N)) / sqrt(2N); shape (N, num_coefficients).
    """
    n = np.arange(num_mel_bins, dtype=np.float64)[:, None]
    k = np.arange(num_coefficients, dtype=np.float64)[None, :]
    return 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * num_mel_bins)) / np.sqrt(2.0 * num_mel_bins)


_MEL = None
_DCT = None


def kws_mfcc(waveform: np.ndarray) -> np.ndarray:
    """MFCCs of 16 kHz audio as the MLPerf Tiny KWS reference: (..., samples) -> (..., frames, 10) float32.

    For a 16000-sample (1 s) clip: (49, 10). The waveform is used as given (see `kws_waveform` for the
    reference's normalisation and padding).
    """
    global _MEL, _DCT
    if _MEL is None:
        _MEL = linear_to_mel_weight_matrix()
        _DCT = mfcc_dct_matrix(KWS_MEL_BINS, KWS_DCT_COEFFS)
    x = np.asarray(waveform)
    if x.ndim == 0 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"kws_mfcc needs a numeric waveform array, got dtype {x.dtype} shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("kws_mfcc: the waveform contains NaN or infinity")
    spectrogram = stft_magnitude(x, KWS_WINDOW, KWS_STRIDE, KWS_FFT)
    log_mel = np.log(spectrogram @ _MEL + KWS_LOG_OFFSET)
    return (log_mel @ _DCT).astype(np.float32)


def kws_waveform(samples: np.ndarray, sample_rate: int, source: str = "waveform") -> np.ndarray:
    """The reference's waveform preparation: resample to 16 kHz if needed, divide by the (signed) maximum,
    zero-pad at the end (or trim the end) to 16000 samples. `source` names the clip in errors."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InputError(f"{source}: the clip is empty")
    if sample_rate != KWS_SAMPLE_RATE:
        x = resample(x, sample_rate, KWS_SAMPLE_RATE).astype(np.float64)
    peak = x.max()
    if not np.isfinite(peak) or peak <= 0.0:
        raise InputError(f"{source}: cannot normalise by the maximum sample ({peak}): silent or all-negative clip")
    x = x / peak
    return pad_or_trim(x, KWS_SAMPLES, align="left").astype(np.float32)


def kws_features_from_wav(path) -> np.ndarray:
    """A wav file through the whole KWS reference pipeline: (49, 10) float32 MFCCs."""
    samples, rate = read_wav(path)
    return kws_mfcc(kws_waveform(samples, rate, source=str(path)))


def quantize_input(features: np.ndarray, scale: float, zero_point: int, dtype=np.int8) -> np.ndarray:
    """Quantize float features as TFLite QUANTIZE does: round-half-away-from-zero of x/scale (float32),
    plus zero_point, clamped to the integer type's range."""
    scale32 = np.float32(scale)
    if not np.isfinite(scale32) or scale32 <= 0:
        raise InputError(f"quantization scale must be a positive finite number, got {scale}")
    info = np.iinfo(dtype)
    if not info.min <= int(zero_point) <= info.max:
        raise InputError(f"zero point {zero_point} is outside the {np.dtype(dtype).name} range")
    x = np.asarray(features, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise InputError("quantize_input: the features contain NaN or infinity")
    v = x / scale32  # float32 division, as TFLite
    t = np.trunc(v)
    r = t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)  # exact: v - trunc(v) is exact in float
    q = np.clip(r.astype(np.float64) + int(zero_point), info.min, info.max)
    return q.astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """real = scale * (q - zero_point), float32."""
    return (np.float32(scale) * (np.asarray(q, dtype=np.int32) - int(zero_point))).astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# anomaly detection


def ad_windows(log_mel: np.ndarray, frames: int = AD_FRAMES) -> np.ndarray:
    """Frame a (T, n_mels) log-mel clip into (T - frames + 1, frames * n_mels) vectors, hop one frame.

    Vector i is frames i .. i+frames-1 concatenated (the reference's file_to_vector_array layout).
    A 200 x 128 runner clip gives 196 x 640.
    """
    m = np.asarray(log_mel)
    if m.ndim != 2:
        raise InputError(f"ad_windows needs a (frames, mel bins) array, got shape {m.shape}")
    count = m.shape[0] - frames + 1
    if count < 1:
        raise InputError(f"a clip of {m.shape[0]} frames is shorter than one {frames}-frame window")
    idx = np.arange(count)[:, None] + np.arange(frames)[None, :]
    return m[idx].reshape(count, frames * m.shape[1])


def read_ad_hist(path, frames: int = AD_HIST_STOP - AD_HIST_START, n_mels: int = AD_MEL_BINS) -> np.ndarray:
    """Read a runner `*_hist_librosa.bin`: float32 little-endian, (frames, n_mels)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    raw = path.read_bytes()
    expected = frames * n_mels * 4
    if len(raw) != expected:
        raise InputError(f"{path}: {len(raw)} bytes, expected {expected} ({frames} x {n_mels} float32)")
    return np.frombuffer(raw, dtype="<f4").reshape(frames, n_mels).astype(np.float32)


def hz_to_mel_slaney(f):
    """librosa.hz_to_mel(htk=False): linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, f / f_sp)


def mel_to_hz_slaney(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_filterbank(sr: int = AD_SAMPLE_RATE, n_fft: int = AD_N_FFT, n_mels: int = AD_MEL_BINS,
                          fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm='slaney'): (n_mels, 1 + n_fft/2)."""
    fmax = sr / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_f = mel_to_hz_slaney(np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]


def ad_log_mel(y: np.ndarray, sr: int = AD_SAMPLE_RATE, n_fft: int = AD_N_FFT, hop_length: int = AD_HOP,
               n_mels: int = AD_MEL_BINS, power: float = AD_POWER, pad_mode: str = "reflect") -> np.ndarray:
    """The AD reference's log-mel spectrogram of a mono waveform: (frames, n_mels) float32.

    librosa-style centred STFT (pad n_fft/2 each side, `pad_mode` 'reflect' as librosa < 0.10; newer
    librosa pads with zeros: 'constant'), periodic Hann, |X|**power, Slaney mel, then
    20/power * log10(mel + sys.float_info.epsilon). frames = 1 + len(y) // hop_length.
    """
    x = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size <= n_fft // 2 and pad_mode == "reflect":
        raise InputError(f"a clip of {x.size} samples is too short for reflect padding of {n_fft // 2}")
    if not np.all(np.isfinite(x)):
        raise InputError("ad_log_mel: the waveform contains NaN or infinity")
    x = np.pad(x, n_fft // 2, mode=pad_mode)
    frames = 1 + (x.size - n_fft) // hop_length
    idx = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]
    spec = np.abs(np.fft.rfft(x[idx] * hann_window(n_fft), axis=-1)) ** power  # (frames, bins)
    mel = spec @ slaney_mel_filterbank(sr, n_fft, n_mels).T
    return (20.0 / power * np.log10(mel + sys.float_info.epsilon)).astype(np.float32)


def ad_hist_from_wav(path) -> np.ndarray:
    """A 16 kHz AD clip (e.g. ToyCar, 10 s) -> the runner's 200 x 128 log-mel slice (frames 50:250)."""
    samples, rate = read_wav(path)
    if rate != AD_SAMPLE_RATE:
        samples = resample(samples, rate, AD_SAMPLE_RATE)
    log_mel = ad_log_mel(samples)
    if log_mel.shape[0] < AD_HIST_STOP:
        raise InputError(f"{path}: {log_mel.shape[0]} frames; the AD runner slice needs {AD_HIST_STOP} "
                         f"(clips of at least {(AD_HIST_STOP - 1) * AD_HOP} samples)")
    return log_mel[AD_HIST_START:AD_HIST_STOP]
