"""The data sets of the OOD benchmark: in-distribution, near-, far- and covariate-shift OOD inputs for a
human-activity model (BasicMotions) and a spoken-digit model (FSDD), already pre-processed as each task's
model takes them, and a writer to EEMBC runner folders for `microforge ood evaluate`.

Every set is a `TaskSet`: float32 inputs `x` (N, *model input without its batch 1), the ID class of each
sample (`labels`, None for OOD sets) and a name per sample (the runner file names).

Human activity recognition (BasicMotions from the `aeon` package: smart-watch accelerometer xyz and
gyroscope xyz at 10 Hz, 100 steps, four activities, 40 train + 40 test recordings, (N, 6, 100)):
- `har_fold(held_out)`: leave one activity out. ID = the other three (train split to fit, test split to
  measure, labels 0..2 in HAR_CLASSES order), OOD = the held-out activity's 20 recordings of both splits.
  Inputs are standardised per channel with the ID training statistics and laid out (N, 100, 1, 6) as
  scripts/train_har.py does.
- `sensor_fault(x, kind, seed)`: covariate OOD in sensor units (before standardisation): a stuck axis, a
  saturated sensor, a drifting bias, Gaussian noise. `HarFold.faulty` applies one to the ID test set.
- `HarImage(n)`: the optional "image" pre-processing (Keras layer), 6 x 100 -> n x n x 3 (see there).

Keyword spotting on FSDD (the MLPerf Tiny KWS MFCCs of microforge.bench.features, 49 x 10, as
models/fsdd takes them; recording indices 0-4 are the test clips, 5-49 the training ones):
- `kws_fold(held_out)`: ID = test clips of the kept digits, near-OOD = test clips of the held-out ones;
- `espeak_clips`, `alsa_clips`, `noise_clips`, gathered by `kws_far_ood`: synthetic speech (espeak-ng,
  Debian package espeak-ng), the ALSA test sounds (Debian package alsa-utils), white and pink noise;
- `kws_shift(snr_db)`: the ID test clips under white noise at a given SNR.

`write_runner_folder` writes a set with a model's input quantization (int8 bytes per sample).
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microforge.bench.audio import read_wav
from microforge.bench.dataset import fsdd_test_files, write_dataset
from microforge.bench.features import KWS_SAMPLE_RATE, KWS_SAMPLES, kws_features_from_wav, kws_mfcc, kws_waveform, \
    quantize_input
from microforge.errors import InputError, ModelError
from microforge.graph.ir import Graph, Tensor

ROOT = Path(__file__).resolve().parents[4]  # the project root (src/microforge/robust/ood/tasks.py)

# ----------------------------------------------------------------------------------------------------
# human activity recognition

HAR_CLASSES = ("standing", "walking", "running", "badminton")  # scripts/train_har.py's order
HAR_CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")  # BasicMotions' dimensions 0..5
FAULTS = ("stuck", "saturation", "drift", "noise")
# level of each fault when none is given: saturation at half of each channel's peak |value|, a drift that
# ends at the channel's RMS, noise at 10 dB SNR (stuck has no level)
DEFAULT_FAULT_LEVEL = {"stuck": None, "saturation": 0.5, "drift": 1.0, "noise": 10.0}


@dataclass
class TaskSet:
    """One data set of a task: x float32 (N, *model input), labels (N,) int64 ID classes or None (OOD),
    names one per sample, classes the names of the label indices (ID sets)."""

    name: str
    x: np.ndarray
    labels: np.ndarray | None
    names: list[str]
    classes: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.x)


@functools.lru_cache(maxsize=1)
def _basic_motions() -> tuple[np.ndarray, tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """(x_train (40, 6, 100), activities, x_test, activities) in sensor units, read once per process."""
    try:
        from aeon.datasets import load_basic_motions
    except ImportError:
        raise InputError("BasicMotions is read from the aeon package: pip install aeon") from None
    x_train, y_train = load_basic_motions(split="train")
    x_test, y_test = load_basic_motions(split="test")
    return (np.asarray(x_train, np.float64), tuple(str(v).lower() for v in y_train),
            np.asarray(x_test, np.float64), tuple(str(v).lower() for v in y_test))


def har_prepare(raw: np.ndarray, normalisation: dict) -> np.ndarray:
    """Recordings (N, 6, 100) in sensor units -> the HAR model's input (N, 100, 1, 6) float32: each
    channel minus normalisation["mean"][c], over normalisation["std"][c] (scripts/train_har.py's layout)."""
    x = np.asarray(raw, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != len(HAR_CHANNELS):
        raise InputError(f"HAR recordings must be (N, {len(HAR_CHANNELS)}, steps), got shape {x.shape}")
    mean = np.asarray(normalisation["mean"], np.float64).reshape(1, -1, 1)
    std = np.asarray(normalisation["std"], np.float64).reshape(1, -1, 1)
    return ((x - mean) / std).transpose(0, 2, 1)[:, :, None, :].astype(np.float32)


@dataclass
class HarFold:
    """One leave-one-activity-out fold. train/test: ID sets (labels index `classes`), ood: the held-out
    activity (labels None); raw_test: the ID test recordings in sensor units (N, 6, 100), for faults;
    normalisation: the per-channel mean and std of the ID training recordings (sensor units)."""

    held_out: str
    classes: tuple[str, ...]
    normalisation: dict
    train: TaskSet
    test: TaskSet
    ood: TaskSet
    raw_test: np.ndarray

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        return har_prepare(raw, self.normalisation)

    def faulty(self, kind: str, seed: int = 0, level: float | None = None) -> TaskSet:
        """The ID test set with a sensor fault (sensor_fault) applied before standardisation; the labels
        stay those of the clean recordings."""
        x = self.prepare(sensor_fault(self.raw_test, kind, seed, level))
        return TaskSet(f"fault_{kind}", x, self.test.labels.copy(), [f"{kind}_{n}" for n in self.test.names],
                       self.classes)


def har_fold(held_out: str) -> HarFold:
    """Leave-one-activity-out fold of BasicMotions, `held_out` one of HAR_CLASSES.

    ID: the three other activities, 30 train and 30 test recordings, labels 0..2 in HAR_CLASSES order;
    OOD: the held-out activity's 10 train + 10 test recordings, never used for fitting anything (not even
    the standardisation, which takes the ID training recordings' per-channel mean and std).
    """
    if held_out not in HAR_CLASSES:
        raise InputError(f"activity '{held_out}' is not one of {', '.join(HAR_CLASSES)}")
    x_train, y_train, x_test, y_test = _basic_motions()
    classes = tuple(c for c in HAR_CLASSES if c != held_out)
    kept_train = [i for i, y in enumerate(y_train) if y != held_out]
    kept_test = [i for i, y in enumerate(y_test) if y != held_out]
    fit = x_train[kept_train]
    normalisation = {"mean": fit.mean(axis=(0, 2)).tolist(), "std": fit.std(axis=(0, 2)).tolist()}

    def id_set(name, x, y, split, kept):
        labels = np.array([classes.index(y[i]) for i in kept], np.int64)
        return TaskSet(name, har_prepare(x[kept], normalisation), labels, [f"{split}_{i:02d}_{y[i]}" for i in kept],
                       classes)

    train = id_set("id_train", x_train, y_train, "train", kept_train)
    test = id_set("id_test", x_test, y_test, "test", kept_test)
    out_train = [i for i, y in enumerate(y_train) if y == held_out]
    out_test = [i for i, y in enumerate(y_test) if y == held_out]
    ood_raw = np.concatenate([x_train[out_train], x_test[out_test]])
    ood_names = [f"train_{i:02d}_{held_out}" for i in out_train] + [f"test_{i:02d}_{held_out}" for i in out_test]
    ood = TaskSet(f"ood_{held_out}", har_prepare(ood_raw, normalisation), None, ood_names)
    return HarFold(held_out, classes, normalisation, train, test, ood, x_test[kept_test])


def sensor_fault(x: np.ndarray, kind: str, seed: int = 0, level: float | None = None) -> np.ndarray:
    """A sensor fault on recordings x (N, channels, steps) or (channels, steps), in sensor units; returns
    a float64 copy of the same shape. Deterministic for a given seed. Per recording and channel:

    - "stuck": one channel per recording (drawn with the seed) frozen at its first value;
    - "saturation": every channel clipped to +-level * its peak |value| (level in (0, 1], default 0.5);
    - "drift": a linear ramp added, 0 at the first step to +-level * the channel's RMS (its root mean
      square, DC included) at the last, the sign drawn per channel (default level 1);
    - "noise": white Gaussian noise at level dB SNR against the channel's mean square (default 10 dB;
      the SNR of each draw scatters around it, by about 0.6 dB over 100 steps).
    """
    if kind not in FAULTS:
        raise InputError(f"sensor fault '{kind}' is not one of {', '.join(FAULTS)}")
    data = np.array(x, dtype=np.float64)
    single = data.ndim == 2
    batch = data[None] if single else data
    if batch.ndim != 3 or min(batch.shape) < 1:
        raise InputError(f"sensor_fault takes recordings (N, channels, steps) or (channels, steps), got {data.shape}")
    if not np.all(np.isfinite(batch)):
        raise InputError("sensor_fault: the recordings contain NaN or infinity")
    level = DEFAULT_FAULT_LEVEL[kind] if level is None else float(level)
    rng = np.random.default_rng(seed)
    n, channels, steps = batch.shape
    if kind == "stuck":
        which = rng.integers(0, channels, size=n)
        batch[np.arange(n), which, :] = batch[np.arange(n), which, :1]
    elif kind == "saturation":
        if not 0 < level <= 1:
            raise InputError(f"saturation: the level is a fraction of the peak in (0, 1], not {level}")
        bound = level * np.abs(batch).max(axis=2, keepdims=True)
        batch = np.clip(batch, -bound, bound)
    elif kind == "drift":
        if not np.isfinite(level):
            raise InputError(f"drift: the level must be a finite number, not {level}")
        rms = np.sqrt(np.mean(batch ** 2, axis=2, keepdims=True))
        sign = rng.choice([-1.0, 1.0], size=(n, channels, 1))
        batch = batch + sign * level * rms * np.linspace(0.0, 1.0, steps)
    else:
        if not np.isfinite(level):
            raise InputError(f"noise: the SNR must be a finite number of dB, not {level}")
        power = np.mean(batch ** 2, axis=2, keepdims=True)
        batch = batch + rng.normal(size=batch.shape) * np.sqrt(power / 10.0 ** (level / 10.0))
    return batch[0] if single else batch


# ----------------------------------------------------------------------------------------------------
# the "image" pre-processing of the HAR recordings


def synthetic_outliers(task_set: TaskSet, seed: int = 0, count: int | None = None) -> TaskSet:
    """Outliers made from ID training data alone, for outlier exposure where no real OOD data is at hand:
    half the samples with their time steps shuffled (the marginal statistics kept, the motion or the word
    destroyed), half spliced, the first half of one sample's time steps joined to the second half of a
    sample of another class. x (N, steps, ...) with time on axis 1, as both tasks' inputs are."""
    x = np.asarray(task_set.x)
    if x.ndim < 2 or len(x) < 2 or task_set.labels is None or len(np.unique(task_set.labels)) < 2:
        raise InputError(f"{task_set.name}: synthetic outliers need labelled samples of two classes or more, "
                         f"(N, steps, ...), got shape {list(x.shape)}")
    rng = np.random.default_rng(seed)
    count = len(x) if count is None else count
    shuffled = np.stack([x[i][rng.permutation(x.shape[1])] for i in rng.integers(0, len(x), count // 2)])
    half, spliced = x.shape[1] // 2, []
    while len(spliced) < count - count // 2:
        a, b = rng.integers(0, len(x), 2)
        if task_set.labels[a] != task_set.labels[b]:
            spliced.append(np.concatenate([x[a][:half], x[b][half:]]))
    names = [f"shuffled_{i}" for i in range(len(shuffled))] + [f"spliced_{i}" for i in range(len(spliced))]
    return TaskSet("synthetic_outliers", np.concatenate([shuffled, np.stack(spliced)]).astype(x.dtype), None, names)


def image_permutations(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed 0/1 matrices (6n, 3n) that reorder the depthwise projections p[c * n + i] (channel c's
    projection i, TFLite's depthwise output order) into u[i * 3 + k] = accelerometer axis k and
    v[j * 3 + k] = gyroscope axis k, i.e. the layouts (n, 1, 3) and (1, n, 3) whose product is the image."""
    half = len(HAR_CHANNELS) // 2
    to_u = np.zeros((2 * half * n, half * n), np.float32)
    to_v = np.zeros_like(to_u)
    for k in range(half):
        for i in range(n):
            to_u[k * n + i, i * half + k] = 1.0
            to_v[(half + k) * n + i, i * half + k] = 1.0
    return to_u, to_v


@functools.lru_cache(maxsize=1)
def har_image_class():
    """The Keras layer class behind HarImage (built on first use, so this module does not need TensorFlow)."""
    import microforge  # noqa: F401  (OR-Tools before TensorFlow)
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable(package="microforge")
    class HarImageLayer(tf.keras.layers.Layer):
        """(N, steps, 1, 6) standardised recordings -> (N, n, n, 3) image, see HarImage."""

        def __init__(self, n: int, learned: bool = True, seed: int = 0, **kwargs):
            super().__init__(**kwargs)
            if int(n) != n or n < 1:
                raise InputError(f"HarImage: the image side n must be a positive integer, not {n}")
            self.n, self.learned, self.seed = int(n), bool(learned), int(seed)
            self.to_u, self.to_v = image_permutations(self.n)

        def build(self, input_shape):
            shape = tuple(input_shape)
            if len(shape) != 4 or shape[2] != 1 or shape[3] != len(HAR_CHANNELS) or shape[1] is None:
                raise InputError(f"HarImage takes (N, steps, 1, {len(HAR_CHANNELS)}) recordings, got {shape}")
            steps = int(shape[1])
            # unit-variance projections of standardised channels, so the image's values are about 1
            self.projections = self.add_weight(
                name="projections", shape=(steps, 1, len(HAR_CHANNELS), self.n), trainable=self.learned,
                initializer=tf.keras.initializers.RandomNormal(stddev=1.0 / math.sqrt(steps), seed=self.seed))

        def call(self, x):
            n, half = self.n, len(HAR_CHANNELS) // 2
            p = tf.nn.depthwise_conv2d(x, self.projections, [1, 1, 1, 1], "VALID")  # (N, 1, 1, 6n)
            p = tf.reshape(p, [-1, 2 * half * n])
            u = tf.reshape(tf.matmul(p, tf.constant(self.to_u)), [-1, n, 1, half])  # P_k a_k as a column
            v = tf.reshape(tf.matmul(p, tf.constant(self.to_v)), [-1, 1, n, half])  # Q_k b_k as a row
            return u * v  # broadcast: the outer product per axis

        def compute_output_shape(self, input_shape):
            return (input_shape[0], self.n, self.n, len(HAR_CHANNELS) // 2)

        def get_config(self):
            return {**super().get_config(), "n": self.n, "learned": self.learned, "seed": self.seed}

    return HarImageLayer


def HarImage(n: int, learned: bool = True, seed: int = 0, name: str | None = None):  # noqa: N802 (a layer)
    """Keras layer: standardised recordings (N, steps, 1, 6) -> an image (N, n, n, 3), one plane per axis.

    With a_k, b_k the accelerometer and gyroscope series of axis k (x, y, z; `steps` values each):
        image[:, :, k] = (P_k a_k) (Q_k b_k)^T,   P_k, Q_k: (n, steps) projections,
    so pixel (i, j, k) is the product of projection i of the acceleration and projection j of the rotation
    about axis k. The 6 projections are one weight (steps, 1, 6, n), initialised N(0, 1/steps) from `seed`:
    trained with the model (learned=True) or kept fixed random (learned=False).

    It converts to DEPTHWISE_CONV_2D (kernel steps x 1, depth multiplier n: each channel's n projections,
    no weights wasted on the other channels), RESHAPE, two FULLY_CONNECTED with fixed 0/1 weights
    (image_permutations: TFLite has no TRANSPOSE here, so the reordering is a matrix product), two
    RESHAPE and one broadcasting MUL (n, 1, 3) x (1, n, 3): ops microforge runs.
    Weights: 6 * steps * n projections + 2 * 18 n^2 fixed ones (n = 16: 9,600 + 9,216).
    """
    kwargs = {} if name is None else {"name": name}
    return har_image_class()(n=n, learned=learned, seed=seed, **kwargs)


# ----------------------------------------------------------------------------------------------------
# keyword spotting on FSDD

FSDD_RECORDINGS = ROOT / "../shared/data/fsdd/recordings"  # as scripts/train_fsdd_kws.py's default
KWS_TEST_INDICES = range(5)
KWS_TRAIN_INDICES = range(5, 50)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
OTHER_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "hello", "house")
VOICES = ("en", "en-us", "de", "fr")  # espeak-ng voices: British and American English, German, French
SPEEDS = (130, 175, 220)  # words per minute (espeak-ng's default is 175)
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")  # where Debian's alsa-utils installs its test wavs
NOISE_COLOURS = ("white", "pink")


def _kws_input(mfcc: np.ndarray) -> np.ndarray:
    """(N, 49, 10) MFCCs -> the KWS models' input layout (N, 49, 10, 1) float32."""
    return np.asarray(mfcc, np.float32)[..., None]


def _fsdd_files(digits, indices, recordings) -> list[tuple[Path, int]]:
    wanted = set(int(d) for d in digits)
    return [(p, d) for p, d in fsdd_test_files(FSDD_RECORDINGS if recordings is None else recordings, indices)
            if d in wanted]


def _check_digits(held_out) -> tuple[tuple[int, ...], tuple[int, ...]]:
    out = tuple(sorted({int(d) for d in held_out}))
    if not out or any(not 0 <= d <= 9 for d in out) or len(out) == 10:
        raise InputError(f"held-out digits must be some (not all) of 0..9, got {list(held_out)}")
    return tuple(d for d in range(10) if d not in out), out


def kws_fold(held_out=(8, 9), indices=KWS_TEST_INDICES, recordings=None) -> tuple[TaskSet, TaskSet]:
    """(ID, near-OOD) FSDD clips for a model trained on the digits not in `held_out`: the clips of
    recording `indices` (0-4: the test split) of the kept digits, labels their index among the kept digits
    (the digit itself when the held-out ones are the highest), and those of the held-out digits (labels
    None). x: (N, 49, 10, 1) float32 MFCCs of bench.features.kws_features_from_wav."""
    kept, out = _check_digits(held_out)
    id_files, near_files = _fsdd_files(kept, indices, recordings), _fsdd_files(out, indices, recordings)
    id_set = TaskSet("id_test", _kws_input([kws_features_from_wav(p) for p, _ in id_files]),
                     np.array([kept.index(d) for _, d in id_files], np.int64), [p.stem for p, _ in id_files],
                     tuple(str(d) for d in kept))
    near = TaskSet("near_" + "".join(map(str, out)), _kws_input([kws_features_from_wav(p) for p, _ in near_files]),
                   None, [p.stem for p, _ in near_files])
    return id_set, near


def mix_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator, signal_samples: int | None = None,
              colour: str = "white") -> np.ndarray:
    """wave plus Gaussian noise over its whole length, at `snr_db` dB below the power (mean square) of
    wave[:signal_samples] (the spoken part, without the zero padding after it; all of it by default).
    The SNR is that of the noise's expected power; a 1 s draw at 16 kHz lands within about 0.05 dB."""
    x = np.asarray(wave, np.float64)
    speech = x[:signal_samples] if signal_samples else x
    power = float(np.mean(speech ** 2))
    if not np.isfinite(snr_db) or power <= 0:
        raise InputError(f"mix_noise: need a finite SNR and a signal with power, got {snr_db} dB, power {power}")
    return x + coloured_noise(len(x), rng, colour) * math.sqrt(power / 10.0 ** (snr_db / 10.0))


def coloured_noise(samples: int, rng: np.random.Generator, colour: str = "white") -> np.ndarray:
    """Gaussian noise of unit expected power: white (flat spectrum) or pink (power ~ 1/f, shaped in the
    frequency domain, DC removed). (samples,) float64."""
    if colour not in NOISE_COLOURS:
        raise InputError(f"noise colour '{colour}' is not one of {', '.join(NOISE_COLOURS)}")
    white = rng.normal(size=samples)
    if colour == "white":
        return white
    spectrum = np.fft.rfft(white)
    f = np.arange(len(spectrum), dtype=np.float64)
    spectrum *= np.where(f > 0, 1.0 / np.sqrt(np.maximum(f, 1.0)), 0.0)  # amplitude 1/sqrt(f): power 1/f
    pink = np.fft.irfft(spectrum, n=samples)
    return pink / np.sqrt(np.mean(pink ** 2))


def kws_shift(snr_db: float, held_out=(8, 9), seed: int = 0, indices=KWS_TEST_INDICES,
              recordings=None) -> TaskSet:
    """The ID test clips (kws_fold's ID set, same order and labels) under white noise at `snr_db` dB.

    Each clip is prepared as the device does (resampled to 16 kHz, divided by its maximum, padded to 1 s),
    noise is added over the whole second at the SNR against the spoken part (mix_noise), and the mixture
    goes through kws_waveform again (re-normalised, as the device would see it) and kws_mfcc. The seed
    fixes the noise; the same seed at another SNR gives the same noise at another level.
    """
    kept, _ = _check_digits(held_out)
    rng = np.random.default_rng(seed)
    files = _fsdd_files(kept, indices, recordings)
    features = []
    for path, _ in files:
        samples, rate = read_wav(path)
        prepared = kws_waveform(samples, rate, source=str(path))
        spoken = min(KWS_SAMPLES, math.ceil(len(samples) * KWS_SAMPLE_RATE / rate))
        noisy = mix_noise(prepared, snr_db, rng, spoken)
        features.append(kws_mfcc(kws_waveform(noisy, KWS_SAMPLE_RATE, source=str(path))))
    return TaskSet(f"noise_{snr_db:g}dB", _kws_input(features), np.array([kept.index(d) for _, d in files], np.int64),
                   [f"{p.stem}_snr{snr_db:g}" for p, _ in files], tuple(str(d) for d in kept))


def _espeak() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise InputError("espeak-ng is not installed: install the Debian package espeak-ng "
                         "(apt-get install --no-install-recommends espeak-ng)")
    return found


def espeak_clips(words=OTHER_WORDS, voices=VOICES, speeds=SPEEDS, name: str = "espeak_words") -> TaskSet:
    """Every word spoken by espeak-ng in every voice at every speed (words per minute), written as wav
    (espeak-ng -w, 22,050 Hz) and taken through kws_features_from_wav: x (N, 49, 10, 1) float32, N =
    words x voices x speeds, labels None. Non-English voices read the English spelling with their own
    rules (an accent, or another word)."""
    program = _espeak()
    names, features = [], []
    with tempfile.TemporaryDirectory(prefix="microforge_espeak_") as tmp:
        for voice in voices:
            for speed in speeds:
                for word in words:
                    path = Path(tmp) / "clip.wav"
                    command = [program, "-v", str(voice), "-s", str(int(speed)), "-w", str(path), str(word)]
                    done = subprocess.run(command, capture_output=True, text=True)
                    if done.returncode != 0 or not path.is_file():
                        raise InputError(f"espeak-ng failed for voice '{voice}', speed {speed}, word '{word}': "
                                         f"{done.stderr.strip() or f'exit code {done.returncode}'}")
                    features.append(kws_features_from_wav(path))
                    names.append(f"espeak_{voice}_{int(speed)}_{word}".replace(" ", "-"))
    if not features:
        raise InputError("espeak_clips: no words, voices or speeds given")
    return TaskSet(name, _kws_input(features), None, names)


def alsa_clips(folder=ALSA_SOUNDS) -> TaskSet:
    """The wav test sounds of alsa-utils (a voice naming each speaker position, "Front Left" ..., and a
    noise burst; 48 kHz), resampled and cut to 1 s by kws_features_from_wav: (N, 49, 10, 1) float32."""
    files = sorted(Path(folder).glob("*.wav")) if Path(folder).is_dir() else []
    if not files:
        raise InputError(f"{folder}: no ALSA test sounds; install the Debian package alsa-utils "
                         f"(apt-get install --no-install-recommends alsa-utils)")
    return TaskSet("alsa_sounds", _kws_input([kws_features_from_wav(p) for p in files]), None,
                   [f"alsa_{p.stem}" for p in files])


def noise_clips(count: int = 20, seed: int = 0, colours=NOISE_COLOURS) -> TaskSet:
    """`count` 1 s clips of each noise colour at 16 kHz through kws_waveform and kws_mfcc:
    (count * colours, 49, 10, 1) float32 (the level does not matter: the pipeline divides by the maximum)."""
    if int(count) != count or count < 1:
        raise InputError(f"noise_clips: count must be a positive integer, not {count}")
    rng = np.random.default_rng(seed)
    names, waves = [], []
    for colour in colours:
        for i in range(int(count)):
            waves.append(kws_waveform(coloured_noise(KWS_SAMPLES, rng, colour), KWS_SAMPLE_RATE))
            names.append(f"noise_{colour}_{i:02d}")
    return TaskSet("noise", _kws_input(kws_mfcc(np.stack(waves))), None, names)


def kws_far_ood(seed: int = 0) -> list[TaskSet]:
    """The far-OOD sets of the KWS task: espeak-ng words that are not digits (OTHER_WORDS), espeak-ng
    English digit words (DIGIT_WORDS: another 'speaker' than FSDD's six, labels None), the ALSA sounds and
    noise (white and pink). Raises InputError naming the Debian package when espeak-ng or the sounds are
    missing."""
    return [espeak_clips(OTHER_WORDS, name="espeak_words"), espeak_clips(DIGIT_WORDS, name="espeak_digits"),
            alsa_clips(), noise_clips(seed=seed)]


# ----------------------------------------------------------------------------------------------------
# runner folders


def _input_tensor(model) -> tuple[Tensor | None, float | None, int | None, int | None]:
    """(input tensor or None, scale, zero point, output classes) of a model, a tensor or (scale, zero point)."""
    if isinstance(model, tuple) and len(model) == 2:
        return None, float(model[0]), int(model[1]), None
    classes = None
    if not isinstance(model, Tensor):
        from microforge.robust.data import load_model

        graph = model if isinstance(model, Graph) else load_model(model)
        if len(graph.inputs) != 1:
            raise ModelError(f"runner folders hold one input per sample; the model has {len(graph.inputs)}")
        classes = int(graph.outputs[0].shape[-1])
        model = graph.inputs[0]
    if model.dtype == np.float32:
        return model, None, None, classes
    if model.quant is None or model.quant.per_channel:
        raise ModelError(f"input '{model.name}' ({model.dtype}) has no per-tensor quantization to write with")
    return model, model.scale, model.zero_point, classes


def write_runner_folder(directory, x: np.ndarray, labels, model, num_classes: int | None = None,
                        names=None) -> Path:
    """Write float inputs x (N, ...) as an EEMBC runner folder for `model`: one .bin per sample holding the
    model's input bytes (quantized with its input scale and zero point as TFLite's QUANTIZE does, or float32
    for a float input) and y_labels.csv. `model`: a Graph, a model file or bytes, its input Tensor, or
    (scale, zero_point) for int8. labels: (N,) classes, or None (an OOD set: written as 0). num_classes:
    the model's output size by default (else max label + 1). names: sample names (default 00000, 00001...).
    Returns the folder."""
    tensor, scale, zero_point, classes = _input_tensor(model)
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise InputError("write_runner_folder: no samples")
    per_sample = int(np.prod(x.shape[1:], dtype=np.int64))
    if tensor is not None and per_sample != tensor.size:
        raise InputError(f"samples of {per_sample} values (shape {list(x.shape[1:])}) do not fit input "
                         f"'{tensor.name}' of shape {list(tensor.shape)}")
    dtype = np.int8 if tensor is None else tensor.dtype
    data = x if scale is None else quantize_input(x, scale, zero_point, dtype)
    labels = np.zeros(len(x), np.int64) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != len(x):
        raise InputError(f"{len(x)} samples but {len(labels)} labels")
    num_classes = num_classes or classes or int(labels.max()) + 1
    names = [f"{i:05d}" for i in range(len(x))] if names is None else [str(n) for n in names]
    if len(names) != len(x):
        raise InputError(f"{len(x)} samples but {len(names)} names")
    return write_dataset(directory, [(f"{n}.bin", data[i]) for i, n in enumerate(names)], labels.tolist(),
                         int(num_classes))
