"""Audio input: PCM wav reading, rational-ratio resampling, padding/trimming to a fixed length.

numpy and the standard library only.

* `read_wav(path)` -> (float32 samples in [-1, 1), sample rate). Integer PCM is scaled by 2**(bits-1)
  (8-bit wav is unsigned and is re-centred first); multi-channel audio is averaged to mono.
* `resample(x, orig_rate, new_rate)`: polyphase FIR resampling by up/down = new/orig (reduced fraction),
  the same method as scipy.signal.resample_poly with its default filter: a linear-phase low-pass of
  2*10*max(up, down)+1 taps, cutoff 1/max(up, down) of the Nyquist rate, Kaiser window beta 5.0,
  normalised to unit DC gain and multiplied by `up`. The filter delay is compensated (zero phase); the
  signal is taken as zero outside its ends. Output length ceil(len(x) * up / down).
* `pad_or_trim(x, length, align)`: MLPerf Tiny's KWS reference pads short clips with zeros at the END
  (`tf.pad(wav, [[0, desired_samples - len]])`, then a time shift of 0 in evaluation), i.e. the clip is
  left-aligned; that is the default. `align="center"` centres instead. Long clips are trimmed at the end
  (left) or symmetrically (center); the reference itself only sees clips of at most 1 s.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np

from microforge.errors import InputError


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM wav file with the stdlib `wave` module. Returns (float32 mono samples in [-1, 1), rate)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: wav file not found")
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, count = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(count)
    except Exception as exc:  # wave raises wave.Error, EOFError, RuntimeError, struct.error... on bad bytes
        raise InputError(f"{path}: not a readable PCM wav file ({type(exc).__name__}: {exc})") from exc
    if channels < 1 or rate <= 0:
        raise InputError(f"{path}: bad wav header ({channels} channels, {rate} Hz)")
    if width not in (1, 2, 3, 4):
        raise InputError(f"{path}: unsupported sample width of {width} bytes")
    frame = channels * width
    if len(raw) % frame:
        raise InputError(f"{path}: truncated sample data ({len(raw)} bytes is not a whole number of "
                         f"{frame}-byte frames)")
    if width == 1:
        data = np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = np.where(data >= 1 << 23, data - (1 << 24), data)
    else:
        data = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    samples = data.astype(np.float64) / float(1 << (8 * width - 1))
    samples = samples.reshape(-1, channels).mean(axis=1)
    return samples.astype(np.float32), rate


def _lowpass(up: int, down: int) -> np.ndarray:
    """scipy.signal.resample_poly's default filter: firwin(2*10*m+1, 1/m, window=('kaiser', 5.0)) * up."""
    m = max(up, down)
    half = 10 * m
    n = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = 1.0 / m
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half + 1, 5.0)
    return h / h.sum() * up


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample the last axis of `x` by up/down with a polyphase windowed-sinc FIR (see module doc)."""
    if up < 1 or down < 1:
        raise InputError(f"resampling factors must be positive integers, got up={up}, down={down}")
    x = np.asarray(x, dtype=np.float64)
    g = math.gcd(up, down)
    up, down = up // g, down // g
    if up == down:
        return x.copy()
    h = _lowpass(up, down)
    half = (len(h) - 1) // 2
    n_in = x.shape[-1]
    n_out = -(-n_in * up // down)
    taps = -(-len(h) // up)  # taps per phase
    hp = np.zeros(taps * up)
    hp[: len(h)] = h
    t = np.arange(n_out) * down + half  # position in the up-sampled stream (delay compensated)
    phase, base = t % up, t // up
    i = np.arange(taps)
    coef = hp[phase[:, None] + up * i[None, :]]  # (n_out, taps)
    idx = base[:, None] - i[None, :]
    valid = (idx >= 0) & (idx < n_in)
    xs = np.where(valid, x[..., np.clip(idx, 0, n_in - 1)], 0.0)
    return (xs * coef).sum(axis=-1)


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample from orig_rate to new_rate (Hz, integers) along the last axis; float32 out."""
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate or orig_rate <= 0 or new_rate <= 0:
        raise InputError(f"sample rates must be positive integers, got {orig_rate} -> {new_rate}")
    return resample_poly(x, int(new_rate), int(orig_rate)).astype(np.float32)


def pad_or_trim(x: np.ndarray, length: int, align: str = "left") -> np.ndarray:
    """Zero-pad or trim the last axis of `x` to `length` samples; align 'left' (MLPerf KWS) or 'center'."""
    if align not in ("left", "center"):
        raise InputError(f"align must be 'left' or 'center', got {align!r}")
    x = np.asarray(x)
    n = x.shape[-1]
    if n >= length:
        start = 0 if align == "left" else (n - length) // 2
        return x[..., start:start + length].copy()
    before = 0 if align == "left" else (length - n) // 2
    pad = [(0, 0)] * (x.ndim - 1) + [(before, length - n - before)]
    return np.pad(x, pad)
