"""The EEMBC / MLPerf Tiny runner dataset format, and FSDD clips through the KWS pipeline into it.

A dataset is a folder holding one `.bin` file per sample (the raw bytes of the model's input tensor) and
`y_labels.csv`, one row per sample and no header: `file,num_classes,label`, e.g.
`0_george_0.bin,10,0` (the runner reads it with csv.DictReader(fieldnames=["file", "classes", "class"]);
the reference scripts write '{name},{classes},{label}\\n'). Whitespace around fields is accepted when
reading. Every error is an InputError naming the file (and the csv line) and the problem.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from microforge.bench.features import kws_features_from_wav, quantize_input
from microforge.errors import InputError

LABELS_FILE = "y_labels.csv"
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


def _check_name(name: str, where: str) -> None:
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or name == LABELS_FILE):
        raise InputError(f"{where}: '{name}' is not a plain sample file name in the dataset folder")


def read_labels(directory) -> list[tuple[str, int, int]]:
    """Rows of `directory`/y_labels.csv as (file, num_classes, label)."""
    path = Path(directory) / LABELS_FILE
    if not path.is_file():
        raise InputError(f"{path}: labels file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot be read as text ({exc})") from exc
    rows, seen = [], set()
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not f.strip() for f in row):
            continue  # blank line
        where = f"{path} line {line_no}"
        if len(row) != 3:
            raise InputError(f"{where}: expected 3 fields 'file,num_classes,label', got {len(row)}: {row}")
        name, classes, label = (f.strip() for f in row)
        _check_name(name, where)
        try:
            classes_i, label_i = int(classes), int(label)
        except ValueError:
            raise InputError(f"{where}: num_classes and label must be integers, got '{classes}', '{label}'") from None
        if classes_i < 1:
            raise InputError(f"{where}: num_classes must be at least 1, got {classes_i}")
        if not 0 <= label_i < classes_i:
            raise InputError(f"{where}: label {label_i} is outside 0..{classes_i - 1}")
        if name in seen:
            raise InputError(f"{where}: sample '{name}' is listed twice")
        seen.add(name)
        rows.append((name, classes_i, label_i))
    if not rows:
        raise InputError(f"{path}: no samples listed")
    return rows


def read_dataset(directory, tensor_bytes: int) -> tuple[list[tuple[str, bytes]], list[int]]:
    """Read a runner dataset: ([(file name, raw bytes), ...], [label, ...]) in y_labels.csv order.

    Every sample file must exist and hold exactly `tensor_bytes` bytes.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: dataset folder not found")
    if tensor_bytes < 1:
        raise InputError(f"tensor_bytes must be positive, got {tensor_bytes}")
    samples, labels = [], []
    for name, _classes, label in read_labels(directory):
        path = directory / name
        if not path.is_file():
            raise InputError(f"{path}: sample file listed in {LABELS_FILE} is missing")
        data = path.read_bytes()
        if len(data) != tensor_bytes:
            raise InputError(f"{path}: {len(data)} bytes, the model input needs {tensor_bytes}")
        samples.append((name, data))
        labels.append(label)
    return samples, labels


def write_dataset(directory, samples, labels, num_classes: int) -> Path:
    """Write samples [(file name, bytes or array)] and their labels as a runner dataset; returns the folder.

    Arrays are written as their raw C-order bytes (e.g. an int8 (49, 10) MFCC -> 490 bytes).
    """
    directory = Path(directory)
    samples, labels = list(samples), list(labels)
    if len(samples) != len(labels):
        raise InputError(f"{len(samples)} samples but {len(labels)} labels")
    if not samples:
        raise InputError("no samples to write")
    if int(num_classes) != num_classes or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes}")
    names = set()
    rows = []
    for i, ((name, data), label) in enumerate(zip(samples, labels)):
        _check_name(str(name), f"sample {i}")
        if name in names:
            raise InputError(f"sample {i}: file name '{name}' is used twice")
        names.add(name)
        if isinstance(label, (bool, np.bool_)) or int(label) != label or not 0 <= int(label) < num_classes:
            raise InputError(f"sample {i} ('{name}'): label {label} is not an integer in 0..{num_classes - 1}")
        payload = np.ascontiguousarray(data).tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if not payload:
            raise InputError(f"sample {i} ('{name}'): no data")
        rows.append((str(name), payload, int(label)))
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload, _ in rows:
        (directory / name).write_bytes(payload)
    with open(directory / LABELS_FILE, "w", encoding="utf-8", newline="") as f:
        for name, _, label in rows:
            f.write(f"{name},{int(num_classes)},{label}\n")
    return directory


def fsdd_test_files(recordings_dir, indices=range(5)) -> list[tuple[Path, int]]:
    """FSDD recordings `{digit}_{speaker}_{index}.wav` whose index is in `indices` (0-4: the usual test
    split), sorted by (digit, speaker, index); as (path, digit)."""
    recordings_dir = Path(recordings_dir)
    if not recordings_dir.is_dir():
        raise InputError(f"{recordings_dir}: FSDD recordings folder not found")
    wanted = {int(i) for i in indices}
    found = []
    for path in recordings_dir.iterdir():
        m = _FSDD_NAME.match(path.name)
        if m and int(m.group(3)) in wanted:
            found.append(((int(m.group(1)), m.group(2), int(m.group(3))), path))
    if not found:
        raise InputError(f"{recordings_dir}: no '{{digit}}_{{speaker}}_{{index}}.wav' recordings with index in "
                         f"{sorted(wanted)}")
    return [(path, key[0]) for key, path in sorted(found)]


def fsdd_kws_dataset(recordings_dir, out_dir, indices=range(5), *, scale: float, zero_point: int) -> list[tuple[str, int]]:
    """FSDD clips -> KWS MFCC (MLPerf reference pipeline, 8 -> 16 kHz) -> int8 (49, 10) -> runner dataset.

    `scale`/`zero_point` are the KWS model's input quantization (the MLPerf int8 model: 0.5847, 83; read
    them from the model). Labels are the spoken digit, 10 classes. Returns [(file name, label)].
    """
    files = fsdd_test_files(recordings_dir, indices)
    samples, labels = [], []
    for path, digit in files:
        q = quantize_input(kws_features_from_wav(path), scale, zero_point)
        samples.append((path.stem + ".bin", q))
        labels.append(digit)
    write_dataset(out_dir, samples, labels, 10)
    return [(name, label) for (name, _), label in zip(samples, labels)]
