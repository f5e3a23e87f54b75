"""Image inputs for the MLPerf Tiny vision models, numpy only.

* `resize(image, height, width, method)`: 'bilinear' is tf.image.resize(method='bilinear',
  antialias=False), i.e. half-pixel centres (source coordinate (d + 0.5) * in / out - 0.5, clamped to the
  image) and linear interpolation between the two neighbours on each axis; 'nearest' uses half-pixel
  centres too: source index floor((d + 0.5) * in / out), clamped. No antialiasing when shrinking.
* `image_to_int8(image, size, scale, zero_point, pixel_scale)`: resize, then real = pixel * pixel_scale
  and quantize to the model input as TFLite (features.quantize_input).
* VWW (96x96x3, MobileNetV1): the reference trains on pixels / 255, int8 input scale 1/255, zero point
  -128, so q = pixel - 128. IC (32x32x3, ResNet-8 on CIFAR-10): the reference feeds raw 0..255 pixels,
  int8 input scale 1.0, zero point -128, again q = pixel - 128. Pass the model's own scale/zero point
  (Tensor.scale / zero point) when they differ.
"""

from __future__ import annotations

import numpy as np

from microforge.bench.features import quantize_input
from microforge.errors import InputError

VWW_SIZE = 96
IC_SIZE = 32


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1 or img.shape[2] < 1:
        raise InputError(f"an image must be (height, width) or (height, width, channels), got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number):
        raise InputError(f"image dtype {img.dtype} is not numeric")
    return img


def _axis_bilinear(n_in: int, n_out: int):
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize(image, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Resize an (H, W[, C]) image to (height, width, C) float32 (see module doc for the exact rules)."""
    img = _check_image(image).astype(np.float64)
    if height < 1 or width < 1:
        raise InputError(f"target size must be positive, got {height}x{width}")
    h, w = img.shape[:2]
    if method == "nearest":
        ys = np.minimum(np.floor((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
        xs = np.minimum(np.floor((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
        return img[ys][:, xs].astype(np.float32)
    if method != "bilinear":
        raise InputError(f"resize method must be 'bilinear' or 'nearest', got {method!r}")
    y0, y1, fy = _axis_bilinear(h, height)
    x0, x1, fx = _axis_bilinear(w, width)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def image_to_int8(image, size: int | tuple[int, int], scale: float, zero_point: int,
                  pixel_scale: float = 1.0, method: str = "bilinear", channels: int = 3) -> np.ndarray:
    """Resize an image and quantize it to an int8 model input of shape (h, w, channels)."""
    img = _check_image(image)
    if img.shape[2] == 1 and channels == 3:
        img = np.repeat(img, 3, axis=2)
    if img.shape[2] != channels:
        raise InputError(f"the model wants {channels} channels; the image has {img.shape[2]}")
    h, w = (size, size) if isinstance(size, int) else size
    if img.shape[:2] != (h, w):
        img = resize(img, h, w, method)
    real = img.astype(np.float32) * np.float32(pixel_scale)
    return quantize_input(real, scale, zero_point)


def vww_input(image, scale: float = 1.0 / 255.0, zero_point: int = -128, method: str = "bilinear") -> np.ndarray:
    """An RGB image (uint8 0..255) -> the VWW model's int8 (96, 96, 3) input (pixels / 255)."""
    return image_to_int8(image, VWW_SIZE, scale, zero_point, pixel_scale=1.0 / 255.0, method=method)


def ic_input(image, scale: float = 1.0, zero_point: int = -128, method: str = "bilinear") -> np.ndarray:
    """An RGB image (uint8 0..255) -> the IC ResNet-8's int8 (32, 32, 3) input (raw pixel values)."""
    return image_to_int8(image, IC_SIZE, scale, zero_point, pixel_scale=1.0, method=method)
