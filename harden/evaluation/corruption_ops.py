"""The 15 common corruptions at the settings of Hendrycks & Dietterich's CIFAR-10-C, for small images.

The corruption library (``imagecorruptions``, see :mod:`harden.evaluation.corruptions`) fixes
ImageNet-C's settings inside each of its corruption functions; those are made for 224x224 images and
wipe out a 32x32 one. CIFAR-10-C used other numbers (its ``make_cifar_c.py``), listed in
:data:`CIFAR10C_PARAMS`. The functions here apply them, using the library's building blocks where
it has them (the defocus disk, the plasma fractal of fog, its motion blur, the glass-blur pixel
shuffle, the frost pictures) and numpy, scipy, scikit-image, OpenCV and Pillow for the rest.

Each function takes an RGB image as a float array (H, W, 3) with values in [0, 255], the severity's
parameters and a seeded :class:`numpy.random.Generator`, and returns the corrupted image in the same
form. The caller seeds numpy's global generator too (the library's plasma fractal draws from it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from io import BytesIO
from typing import Any

import numpy as np

Image = np.ndarray
Op = Callable[[Image, Any, np.random.Generator], Image]

#: The settings of each corruption at severities 1-5, as CIFAR-10-C's generator has them.
CIFAR10C_PARAMS: dict[str, list[Any]] = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],               # noise std (images in [0, 1])
    "shot_noise": [500, 250, 100, 75, 50],                          # Poisson photons at full intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],                # fraction of salt-and-pepper pixels
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # disk radius, alias blur
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, shift, rounds
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],     # radius, sigma (angle uniform in +-45)
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],                    # zoom factors np.arange(1, this, 0.01)
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    # snow: flake mean, std, zoom, threshold, blur radius, blur sigma, weight of the image
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # weight of the image, of the frost
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],   # fog strength, fractal decay
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],                       # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],                         # factor about the mean
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)],  # alpha, sigma, affine shift, each x the image side
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],                       # downscale factor (box filter both ways)
    "jpeg_compression": [80, 65, 58, 50, 40],                        # JPEG quality
}


def _library() -> Any:
    import imagecorruptions.corruptions as lib

    return lib


def _gaussian(x: Image, sigma: float) -> Image:
    """scikit-image's Gaussian filter of an (H, W, 3) image in [0, 1]."""
    from skimage.filters import gaussian

    return gaussian(x, sigma=sigma, channel_axis=-1)


def _clipped_zoom(img: Image, factor: float) -> Image:
    """The centre of ``img`` zoomed by ``factor`` (bilinear) and trimmed back to its size."""
    from scipy.ndimage import zoom

    h, w = img.shape[:2]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    out = zoom(img[top:top + ch, left:left + cw], (factor, factor) + (1,) * (img.ndim - 2), order=1)
    trim_top, trim_left = (out.shape[0] - h) // 2, (out.shape[1] - w) // 2
    return out[trim_top:trim_top + h, trim_left:trim_left + w]


def gaussian_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x: Image, c: float, rng: np.random.Generator) -> Image:
    from skimage.util import random_noise

    return np.clip(random_noise(x / 255.0, "s&p", rng, amount=c), 0, 1) * 255


def defocus_blur(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    import cv2

    kernel = _library().disk(radius=c[0], alias_blur=c[1])
    x = (x / 255.0).astype(np.float32)
    out = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=2)
    return np.clip(out, 0, 1) * 255


def glass_blur(x: Image, c: tuple[float, int, int], rng: np.random.Generator) -> Image:
    shuffle = _library()._shuffle_pixels_njit_glass_blur  # numba, seeded by its last argument
    x = np.uint8(_gaussian(x / 255.0, c[0]) * 255)
    x = shuffle(x.shape[0], x.shape[1], x, (float(c[0]), int(c[1]), int(c[2])), int(rng.integers(2**31)))
    return np.clip(_gaussian(x / 255.0, c[0]), 0, 1) * 255


def motion_blur(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    angle = rng.uniform(-45, 45)
    return np.clip(_library()._motion_blur(np.uint8(x), radius=c[0], sigma=c[1], angle=angle), 0, 255)


def zoom_blur(x: Image, c: float, rng: np.random.Generator) -> Image:
    x = (x / 255.0).astype(np.float32)
    factors = np.arange(1, c, 0.01)
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(factors) + 1), 0, 1) * 255


def snow(x: Image, c: tuple[float, ...], rng: np.random.Generator) -> Image:
    import cv2

    x = np.asarray(x, dtype=np.float32) / 255.0
    layer = _clipped_zoom(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = np.round(np.clip(layer[..., 0], 0, 1) * 255)  # the flakes as an 8-bit picture, as CIFAR-10-C blurs them
    layer = _library()._motion_blur(layer, radius=c[4], sigma=c[5], angle=rng.uniform(-135, -45))
    layer = np.round(np.clip(layer, 0, 255))[..., None] / 255.0
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


@functools.lru_cache(maxsize=8)
def _frost_picture(index: int) -> Image:
    """The library's ``index``-th frost picture (RGB, uint8), read once."""
    import cv2

    name = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")[index]
    with resources.as_file(resources.files("imagecorruptions") / "frost" / name) as path:
        picture = cv2.imread(str(path))
    return picture[..., ::-1].copy()


def frost(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    import cv2

    picture = _frost_picture(int(rng.integers(5)))  # CIFAR-10-C draws from the first five
    h, w = x.shape[:2]
    scale = max(0.2, (h + 1) / picture.shape[0], (w + 1) / picture.shape[1])  # 0.2: CIFAR-10-C's, for 32x32
    picture = cv2.resize(picture, (0, 0), fx=scale, fy=scale)
    top, left = int(rng.integers(picture.shape[0] - h)), int(rng.integers(picture.shape[1] - w))
    return np.clip(c[0] * x + c[1] * picture[top:top + h, left:left + w], 0, 255)


def fog(x: Image, c: tuple[float, float], rng: np.random.Generator) -> Image:
    h, w = x.shape[:2]
    size = 1 << (max(h, w) - 1).bit_length()  # the power of two that covers the image
    x = x / 255.0
    top = x.max()
    x = x + c[0] * _library().plasma_fractal(mapsize=size, wibbledecay=c[1])[:h, :w][..., None]
    return np.clip(x * top / (top + c[0]), 0, 1) * 255


def brightness(x: Image, c: float, rng: np.random.Generator) -> Image:
    from skimage.color import hsv2rgb, rgb2hsv

    x = rgb2hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def contrast(x: Image, c: float, rng: np.random.Generator) -> Image:
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x: Image, c: tuple[float, float, float], rng: np.random.Generator) -> Image:
    import cv2
    from scipy.ndimage import map_coordinates
    from skimage.filters import gaussian

    image = np.asarray(x, dtype=np.float32) / 255.0
    h, w = image.shape[:2]
    side = min(h, w)
    alpha, sigma, shift = (v * side for v in c)
    centre, half = np.float32([h, w]) // 2, side // 3
    pts1 = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
    pts2 = pts1 + rng.uniform(-shift, shift, size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), (w, h), borderMode=cv2.BORDER_REFLECT_101)
    dx, dy = ((gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha)
              .astype(np.float32)[..., None] for _ in range(2))
    gx, gy, gz = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
    indices = np.reshape(gy + dy, (-1, 1)), np.reshape(gx + dx, (-1, 1)), np.reshape(gz, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(image.shape), 0, 1) * 255


def pixelate(x: Image, c: float, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    h, w = x.shape[:2]
    img = PILImage.fromarray(np.uint8(x)).resize((int(w * c), int(h * c)), PILImage.BOX)
    return np.asarray(img.resize((w, h), PILImage.BOX), dtype=np.float64)


def jpeg_compression(x: Image, c: int, rng: np.random.Generator) -> Image:
    from PIL import Image as PILImage

    buffer = BytesIO()
    PILImage.fromarray(np.uint8(x)).save(buffer, "JPEG", quality=c)
    return np.asarray(PILImage.open(buffer).convert("RGB"), dtype=np.float64)


#: The 15 corruptions at CIFAR-10-C's settings, by the name CIFAR-10-C's files have.
OPS: dict[str, Op] = {op.__name__: op for op in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog,
    brightness, contrast, elastic_transform, pixelate, jpeg_compression)}
