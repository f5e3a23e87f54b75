"""Continual-learning scenarios: a stream of experiences, each a training and a test set of the model's
own input (int8 as the model takes it), labels the class indices of the model's head. Experience 0 is
what the scenario's model (MODELS, shipped in models/learn) was trained on; the learner only observes
it and learns the later ones.

Class-incremental (every later experience brings a class the model has never seen):

- fsdd-class-incremental: FSDD spoken digits. Experience 0 holds digits 0-4 (what the shipped model
  models/learn/fsdd_digits0-4_int8.tflite was trained on), experiences 1-5 one new digit each, 5 to 9.
  Training clips are recording indices 5-49 of every speaker, test clips 0-4 (as the FSDD models here
  are split); label = the digit.
- digits-class-incremental: scikit-learn's 8 x 8 handwritten digits the same way (0-4, then 5, ..., 9),
  a fixed split: every fifth image a test image.

New instances (all ten classes from the start; every later experience brings new inputs of the same
classes from another domain):

- fsdd-new-instances: FSDD's six speakers. Experience 0 holds all ten digits of jackson, nicolas and
  theo (models/learn/fsdd_speakers_jackson-nicolas-theo_int8.tflite was trained on them), experiences
  1-3 one new speaker each, all ten digits: yweweler, george, lucas. The split within every speaker is
  the class-incremental one's (indices 5-49 train, 0-4 test). Why these three first: they are the
  first three speakers as the dataset's README lists them (a choice made before measuring, not picked
  for difficulty), and three of six gives the model enough voices to learn the digits rather than one
  voice while leaving three new voices to learn one at a time. The new voices are hard for the shipped
  model (int8, test clips): 0.99 on its own speakers, 0.80 on yweweler, 0.28 on george, 0.64 on lucas.
- digits-new-instances: scikit-learn's digits, all ten, the fixed split above. Experience 0 holds the
  clean images (models/learn/digits0-9_clean_cnn_int8.tflite was trained on its training images),
  experience k = 1..4 the same split's images rotated by 15 k degrees (15, 30, 45, 60) counter-clockwise
  about the image centre, bilinear, ink outside the 8 x 8 frame lost and new corners blank. A rotation
  is the shift because the shipped clean model degrades steadily with the angle (int8 test accuracy
  0.99 clean, 0.75 at 15 degrees, 0.49 at 30, 0.21 at 45 and 60) while the digits stay legible, so the
  back relearns them (latent replay about 0.9 on every rotation by the end). Nothing is drawn at random:
  the stream is the same on every run and machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microforge.errors import InputError
from microforge.graph.ir import Tensor

SCENARIOS = ("fsdd-class-incremental", "digits-class-incremental", "fsdd-new-instances", "digits-new-instances")
MODELS_DIR = Path(__file__).resolve().parents[3] / "models" / "learn"  # parents[3]: the project root
# the shipped model each scenario starts from: trained on its experience 0 (scripts/train_learn_models.py)
MODELS = {
    "fsdd-class-incremental": "fsdd_digits0-4_int8.tflite",
    "digits-class-incremental": "digits0-4_cnn_int8.tflite",
    "fsdd-new-instances": "fsdd_speakers_jackson-nicolas-theo_int8.tflite",
    "digits-new-instances": "digits0-9_clean_cnn_int8.tflite",
}
FIRST_CLASSES = (0, 1, 2, 3, 4)
LATER_CLASSES = (5, 6, 7, 8, 9)
FSDD_TRAIN_INDICES = range(5, 50)
FSDD_TEST_INDICES = range(5)
FSDD_SPEAKERS = ("jackson", "nicolas", "theo", "yweweler", "george", "lucas")  # as its README lists them
FIRST_SPEAKERS = FSDD_SPEAKERS[:3]
LATER_SPEAKERS = FSDD_SPEAKERS[3:]
DIGITS_ROTATIONS = (0, 15, 30, 45, 60)  # degrees, one experience each


@dataclass
class Experience:
    """One step of a scenario: the classes it brings and its training and test samples (model inputs).
    `domain` says what sets a new-instances experience's inputs apart (its speakers, its rotation);
    empty in class-incremental scenarios, where the classes do."""

    name: str
    classes: tuple[int, ...]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    domain: str = ""


def default_model(name: str) -> Path:
    """The shipped model (models/learn) that scenario `name` starts from."""
    check(name)
    return MODELS_DIR / MODELS[name]


def check(name: str) -> str:
    """`name` if it is a scenario, else our error naming it and the choices."""
    if name not in SCENARIOS:
        raise InputError(f"scenario '{name}' is not one of {', '.join(SCENARIOS)}")
    return name


def _as_input(features: np.ndarray, t: Tensor) -> np.ndarray:
    """Real-valued features as the model input tensor t takes them (quantized when it is integer)."""
    from microforge.bench.features import quantize_input

    x = np.asarray(features, np.float32)
    if x[0].size != t.size:
        raise InputError(f"the scenario's samples have {x[0].size} values; the model input '{t.name}' "
                         f"{list(t.shape)} takes {t.size}")
    x = x.reshape((len(x),) + tuple(t.shape))  # (N, *input shape), as the interpreter takes a batch
    return x if t.dtype == np.float32 else quantize_input(x, float(t.scale), t.zero_point, t.dtype)


def class_incremental(name: str, x_train, y_train, x_test, y_test, first=FIRST_CLASSES,
                      later=LATER_CLASSES) -> list[Experience]:
    """Experience 0 with the classes `first`, then one experience per class of `later`."""
    groups = [tuple(first)] + [(c,) for c in later]
    stream = []
    for k, classes in enumerate(groups):
        train, test = np.isin(y_train, classes), np.isin(y_test, classes)
        if not train.any() or not test.any():
            raise InputError(f"{name}: experience {k} (classes {list(classes)}) has no training or no test samples")
        stream.append(Experience(f"{name}/{k}", classes, x_train[train], y_train[train], x_test[test], y_test[test]))
    return stream


def fsdd_class_incremental(input_tensor: Tensor, recordings=None, train_indices=FSDD_TRAIN_INDICES,
                           test_indices=FSDD_TEST_INDICES) -> list[Experience]:
    """FSDD digits 0-4, then 5, ..., 9, as MFCC inputs of the KWS models (bench.features)."""
    from microforge.bench.dataset import fsdd_test_files
    from microforge.bench.features import kws_features_from_wav
    from microforge.robust.ood.tasks import FSDD_RECORDINGS

    folder = FSDD_RECORDINGS if recordings is None else recordings

    def load(indices):
        files = fsdd_test_files(folder, indices)
        if not files:
            raise InputError(f"fsdd: no FSDD recordings of indices {list(indices)} in {folder}")
        x = np.stack([kws_features_from_wav(path) for path, _ in files])
        return _as_input(x, input_tensor), np.array([d for _, d in files], np.int64)

    return class_incremental("fsdd", *load(train_indices), *load(test_indices))


def speaker_of(path) -> str:
    """The speaker of an FSDD file `<digit>_<speaker>_<index>.wav`."""
    return Path(path).stem.split("_")[1]


def fsdd_speaker_files(folder, indices, speakers) -> list[tuple[Path, int]]:
    """FSDD recordings of `speakers` whose index is in `indices`, as (path, digit), sorted as
    bench.dataset.fsdd_test_files sorts them; our error naming the folder and the speakers that have
    none there (a missing speaker would otherwise leave its experience silently smaller)."""
    from microforge.bench.dataset import fsdd_test_files

    wanted = set(speakers)
    try:
        files = [f for f in fsdd_test_files(folder, indices) if speaker_of(f[0]) in wanted]
    except InputError:
        if not Path(folder).is_dir():
            raise  # its own message: the folder is not there
        files = []  # no FSDD file at all: reported below with the speakers asked for
    found = {speaker_of(path) for path, _ in files}
    missing = [s for s in speakers if s not in found]
    if missing:
        raise InputError(f"fsdd: no recordings of speaker(s) {', '.join(missing)} with indices "
                         f"{_ranges(indices)} in {folder}")
    return files


def _ranges(indices) -> str:
    """Recording indices for a message: '5-49' for a range, else the list."""
    if isinstance(indices, range) and indices.step == 1 and len(indices) > 1:
        return f"{indices.start}-{indices.stop - 1}"
    return str(list(indices))


def fsdd_new_instances(input_tensor: Tensor, recordings=None, train_indices=FSDD_TRAIN_INDICES,
                       test_indices=FSDD_TEST_INDICES, first=FIRST_SPEAKERS,
                       later=LATER_SPEAKERS) -> list[Experience]:
    """FSDD all ten digits of the speakers `first`, then of each speaker of `later` in turn, as MFCC inputs
    of the KWS models (bench.features); label = the digit."""
    from microforge.bench.features import kws_features_from_wav
    from microforge.robust.ood.tasks import FSDD_RECORDINGS

    folder = FSDD_RECORDINGS if recordings is None else recordings
    groups = [tuple(first)] + [(s,) for s in later]
    flat = [s for g in groups for s in g]
    if not first or not later or len(set(flat)) != len(flat):
        raise InputError(f"fsdd: the first speakers {list(first)} and the later ones {list(later)} must be "
                         "non-empty and share no speaker")
    if set(train_indices) & set(test_indices):
        raise InputError(f"fsdd: recording indices {sorted(set(train_indices) & set(test_indices))} are both "
                         "training and test indices")

    def load(speakers, indices):
        files = fsdd_speaker_files(folder, indices, speakers)
        x = np.stack([kws_features_from_wav(path) for path, _ in files])
        return _as_input(x, input_tensor), np.array([d for _, d in files], np.int64)

    stream = []
    for k, speakers in enumerate(groups):
        train_x, train_y = load(speakers, train_indices)
        test_x, test_y = load(speakers, test_indices)
        stream.append(Experience(f"fsdd-speakers/{'+'.join(speakers)}", tuple(int(c) for c in np.unique(train_y)),
                                 train_x, train_y, test_x, test_y, domain="+".join(speakers)))
    return stream


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images (1797, 8, 8) in [0, 1], labels, test mask: every fifth image)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
    return x, y, np.arange(len(y)) % 5 == 0


def digits_class_incremental(input_tensor: Tensor) -> list[Experience]:
    """scikit-learn's digits (1,797 images 8 x 8, values 0-16 scaled to [0, 1]); every fifth image is a
    test image."""
    x, y, test = _digits()
    x = _as_input(x, input_tensor)
    return class_incremental("digits", x[~test], y[~test], x[test], y[test])


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """8 x 8 images (N, 8, 8) rotated by `degrees` counter-clockwise about their centre: bilinear
    (order 1: the values stay within the image's range, no overshoot), the frame kept, blank outside."""
    from scipy import ndimage

    images = np.asarray(images, np.float32)
    if degrees == 0:
        return images.copy()
    # axes (2, 1): the plane of each image's columns and rows, so a positive angle turns it
    # counter-clockwise as shown with row 0 at the top
    return ndimage.rotate(images, degrees, axes=(2, 1), reshape=False, order=1, mode="constant",
                          cval=0.0).astype(np.float32)


def digits_new_instances(input_tensor: Tensor, rotations=DIGITS_ROTATIONS) -> list[Experience]:
    """scikit-learn's digits, all ten, the class-incremental split; experience k the images rotated by
    `rotations[k]` degrees (0 first: the clean images the model was trained on)."""
    rotations = tuple(rotations)
    if len(rotations) < 2 or rotations[0] != 0 or len(set(rotations)) != len(rotations):
        raise InputError(f"digits: rotations {list(rotations)} must start at 0 (the clean images the model "
                         "knows), have at least one more and repeat none")
    x, y, test = _digits()
    classes = tuple(range(10))
    stream = []
    for degrees in rotations:
        turned = _as_input(rotate(x, degrees), input_tensor)
        stream.append(Experience(f"digits-rotated/{degrees:g}deg", classes, turned[~test], y[~test], turned[test],
                                 y[test], domain=f"rotated {degrees:g} degrees"))
    return stream


def scenario(name: str, input_tensor: Tensor, recordings=None) -> list[Experience]:
    """The stream of scenario `name` as inputs of `input_tensor` (recordings: the FSDD folder, default
    ../shared/data/fsdd/recordings)."""
    check(name)
    if name == "fsdd-class-incremental":
        return fsdd_class_incremental(input_tensor, recordings)
    if name == "digits-class-incremental":
        return digits_class_incremental(input_tensor)
    if name == "fsdd-new-instances":
        return fsdd_new_instances(input_tensor, recordings)
    return digits_new_instances(input_tensor)
