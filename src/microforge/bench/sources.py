"""`microforge dataset`: audio or image folders -> a runner dataset, through the task's pre-processing.

Source layouts
- kws, vww, ic: one sub-folder per class holding .wav clips (kws) or images (vww, ic: .png, .jpg,
  .jpeg, .bmp). Class indices follow `labels` (the model's class order) or, without it, the sorted
  sub-folder names. For kws, `fsdd=True` reads a Free Spoken Digit Dataset `recordings` folder instead
  (`{digit}_{speaker}_{index}.wav`, label = digit, only the given `indices`).
- ad: .wav clips named as in DCASE / ToyADMOS, `normal_*` (label 0) or `anomaly_*` (label 1); each
  becomes the runner's 200 x 128 float32 log-mel slice `{stem}_hist_librosa.bin` (model-independent).

kws/vww/ic samples are quantised with the model's input scale and zero point, so the files are exactly
the bytes the model's input tensor takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microforge.bench.dataset import fsdd_kws_dataset, write_dataset
from microforge.bench.features import ad_hist_from_wav, kws_features_from_wav, quantize_input
from microforge.bench.images import image_to_int8
from microforge.bench.tasks import Task, check_model, get_task, num_classes
from microforge.errors import InputError
from microforge.graph.ir import Graph

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _class_folders(source: Path, labels: list[str] | None) -> list[tuple[str, Path]]:
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    names = [p.name for p in folders]
    if labels is None:
        labels = names
    missing = [name for name in labels if name not in names]
    if missing:
        raise InputError(f"{source}: no sub-folder for the class(es) {', '.join(missing)}")
    if not labels:
        raise InputError(f"{source}: no class sub-folders")
    return [(name, source / name) for name in labels]


def _read_image(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    try:
        img = mpimg.imread(path)
    except Exception as exc:  # Pillow/matplotlib raise many types on bad bytes
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if img.dtype.kind == "f":  # PNGs come back as floats in [0, 1]
        img = np.round(img * 255.0)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]  # drop alpha
    return img.astype(np.float32)


def write_task_dataset(task: str | Task, source, out_dir, graph: Graph, *, labels: list[str] | None = None,
                       fsdd: bool = False, indices=range(5), pixel_scale: float | None = None) -> int:
    """Pre-process `source` for `task` into a runner dataset in `out_dir`; returns the sample count.

    pixel_scale: real value of one pixel step for vww/ic (default: vww 1/255, ic 1.0, as the
    reference models were trained)."""
    task = get_task(task) if isinstance(task, str) else task
    source = Path(source)
    if not source.is_dir():
        raise InputError(f"{source}: source folder not found")
    check_model(task, graph)
    x = graph.inputs[0]
    if task.name == "ad":
        samples, out_labels = [], []
        for path in sorted(source.glob("*.wav")):
            kind = path.name.split("_", 1)[0]
            if kind not in ("normal", "anomaly"):
                raise InputError(f"{path}: an anomaly-detection clip name must start with 'normal_' or 'anomaly_'")
            samples.append((f"{path.stem}_hist_librosa.bin", ad_hist_from_wav(path).astype("<f4")))
            out_labels.append(int(kind == "anomaly"))
        if not samples:
            raise InputError(f"{source}: no .wav clips")
        write_dataset(out_dir, samples, out_labels, 2)
        return len(samples)
    scale, zero_point = x.quant.single_scale, x.quant.single_zero_point
    if task.name == "kws" and fsdd:
        if num_classes(task, graph) != 10:
            raise InputError(f"FSDD has 10 classes (digits); the model has {num_classes(task, graph)}")
        return len(fsdd_kws_dataset(source, out_dir, indices, scale=scale, zero_point=zero_point))
    classes = _class_folders(source, labels)
    samples, out_labels = [], []
    for label, (name, folder) in enumerate(classes):
        for path in sorted(folder.iterdir()):
            if task.name == "kws" and path.suffix.lower() == ".wav":
                data = quantize_input(kws_features_from_wav(path), scale, zero_point)
            elif task.name != "kws" and path.suffix.lower() in IMAGE_SUFFIXES:
                step = pixel_scale if pixel_scale is not None else (1.0 / 255.0 if task.name == "vww" else 1.0)
                data = image_to_int8(_read_image(path), x.shape[1:3], scale, zero_point, pixel_scale=step)
            else:
                continue
            samples.append((f"{name}_{path.stem}.bin", data))
            out_labels.append(label)
    if not samples:
        raise InputError(f"{source}: no {'.wav' if task.name == 'kws' else 'image'} files in the class folders")
    write_dataset(out_dir, samples, out_labels, num_classes(task, graph))
    return len(samples)
