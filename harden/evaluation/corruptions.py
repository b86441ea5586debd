"""Common corruptions (Hendrycks & Dietterich, ICLR 2019) generated on the fly, deterministic under a seed.

The 15 standard types, in four families, each at severities 1-5. The generator is the
``imagecorruptions`` module of the ``imagecorruptions-imaug`` package (Apache-2.0; the maintained
fork of bethgelab's ``imagecorruptions``, itself built from Hendrycks' ImageNet-C code; why this one:
``docs/corruptions.md``). Its own functions carry ImageNet-C's settings, made for 224x224 images;
images whose sides are both at most :data:`SMALL_SIDE` pixels get CIFAR-10-C's settings instead
(:mod:`harden.evaluation.corruption_ops`), larger ones the library's functions as they are. Which
set was used is part of :func:`generator_info`, and so of the report.

Every image's corruption is drawn from its own seed, made of (seed, type, severity, the image's
index in the data): the same image gets the same corruption whichever other images or types run
with it. numpy's global generator is seeded for the call (the library draws from it) and restored
afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from harden.errors import UsageError, close_matches

#: The 15 types by family, named as CIFAR-10-C's and ImageNet-C's files are.
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS: tuple[str, ...] = tuple(name for names in FAMILIES.values() for name in names)
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}
#: Short names accepted for each type.
ALIASES = {"gaussian": "gaussian_noise", "shot": "shot_noise", "impulse": "impulse_noise",
           "defocus": "defocus_blur", "glass": "glass_blur", "motion": "motion_blur", "zoom": "zoom_blur",
           "elastic": "elastic_transform", "jpeg": "jpeg_compression"}
SEVERITIES = (1, 2, 3, 4, 5)
SMALL_SIDE = 64  # images up to this many pixels a side get CIFAR-10-C's settings
DISTRIBUTION = "imagecorruptions-imaug"
INSTALL = "pip install 'harden[corruptions]'"
GENERATED_NOTE = "generated on the fly, not the published CIFAR-10-C images"


def parse_corruptions(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """The types a ``--corruptions`` value names (comma-separated types, short names or families), in the
    standard order; all 15 for None. An unknown name is one :class:`UsageError`."""
    if value is None:
        return CORRUPTIONS
    words = value.split(",") if isinstance(value, str) else list(value)
    chosen: set[str] = set()
    for word in (str(w).strip() for w in words):
        if not word:
            continue
        name = ALIASES.get(word, word)
        if name in FAMILIES:
            chosen.update(FAMILIES[name])
        elif name in CORRUPTIONS:
            chosen.add(name)
        else:
            raise UsageError(f"unknown corruption type '{word}'{close_matches(word, [*CORRUPTIONS, *ALIASES])} "
                             f"(the 15: {', '.join(CORRUPTIONS)}; or a family: {', '.join(FAMILIES)})")
    if not chosen:
        raise UsageError("--corruptions names no type; give e.g. gaussian_noise,fog or noise,blur")
    return tuple(name for name in CORRUPTIONS if name in chosen)


def require_library() -> str:
    """The generator's version; one :class:`UsageError` when it is not installed (or is the unmaintained
    original, which the newer setuptools and scipy no longer import)."""
    from importlib import metadata

    try:
        import imagecorruptions.corruptions as lib
    except ImportError as exc:
        raise UsageError(f"generating corruptions needs the {DISTRIBUTION} package ({exc.name or exc} is missing): "
                         f"{INSTALL}") from None
    if not all(hasattr(lib, name) for name in ("_motion_blur", "_shuffle_pixels_njit_glass_blur", "plasma_fractal")):
        raise UsageError(f"the installed imagecorruptions is not {DISTRIBUTION}: {INSTALL}")
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def parameter_set(height: int, width: int) -> str:
    """``cifar10-c`` for images up to :data:`SMALL_SIDE` pixels a side, else ``imagenet-c`` (the library's)."""
    return "cifar10-c" if max(height, width) <= SMALL_SIDE else "imagenet-c"


def generator_info(height: int, width: int, names: Sequence[str]) -> dict[str, Any]:
    """What generated the images, as the report records it: library, version, which settings and their values."""
    from harden.evaluation.corruption_ops import CIFAR10C_PARAMS

    kind = parameter_set(height, width)
    info: dict[str, Any] = {"library": DISTRIBUTION, "module": "imagecorruptions", "version": require_library(),
                            "parameters": kind, "image_size": [height, width], "note": GENERATED_NOTE}
    if kind == "cifar10-c":
        info["parameters_text"] = (f"CIFAR-10-C's settings (Hendrycks' make_cifar_c.py), for images up to "
                                   f"{SMALL_SIDE}x{SMALL_SIDE}")
        info["values"] = {name: _plain(CIFAR10C_PARAMS[name]) for name in names}
    else:
        info["parameters_text"] = f"ImageNet-C's settings (the library's own), for images over {SMALL_SIDE} px a side"
    return info


def _plain(values: list[Any]) -> list[Any]:
    return [list(v) if isinstance(v, tuple) else v for v in values]


def image_seed(seed: int, name: str, severity: int, index: int) -> np.random.SeedSequence:
    """The seed of one image's corruption: (seed, type, severity, the image's index in the data)."""
    return np.random.SeedSequence([int(seed), CORRUPTIONS.index(name), int(severity), int(index)])


@contextlib.contextmanager
def _global_seed(value: int) -> Iterator[None]:
    """numpy's global generator seeded with ``value`` for the block, and put back as it was afterwards."""
    state = np.random.get_state()
    np.random.seed(value)
    try:
        yield
    finally:
        np.random.set_state(state)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> (H, W, 1) by ITU-R 601-2 luma, rounded as PIL's ``convert("L")``."""
    r, g, b = (rgb[..., k].astype(np.int64) for k in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def corrupt_image(image: np.ndarray, name: str, severity: int, *, seed: int = 0, index: int = 0) -> np.ndarray:
    """``image`` (uint8, (H, W), (H, W, 1) or (H, W, 3)) with corruption ``name`` at ``severity``, same shape.

    A grayscale image is corrupted as RGB (its channel repeated) and brought back by luma.
    """
    if name not in CORRUPTIONS:
        parse_corruptions(name)  # the one-line error
    if severity not in SEVERITIES:
        raise UsageError(f"severity must be 1 to 5, got {severity}")
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise UsageError(f"corruptions take uint8 (H, W), (H, W, 1) or (H, W, 3) images, got {image.dtype} "
                         f"{tuple(image.shape)}")
    rgb = np.repeat(image.reshape(*image.shape[:2], -1), 3, axis=2) if image.ndim == 2 or image.shape[2] == 1 \
        else image
    sequence = image_seed(seed, name, severity, index)
    rng = np.random.default_rng(sequence)
    with _global_seed(int(sequence.generate_state(1)[0])):
        out = _corrupt_rgb(np.ascontiguousarray(rgb), name, severity, rng)
    if image.ndim == 3 and image.shape[2] == 3:
        return out
    gray = _luma(out)
    return gray if image.ndim == 3 else gray[..., 0]


def _corrupt_rgb(rgb: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB image corrupted: CIFAR-10-C's settings for a small image, the library's for a large one."""
    if parameter_set(*rgb.shape[:2]) == "cifar10-c":
        from harden.evaluation.corruption_ops import CIFAR10C_PARAMS, OPS

        out = OPS[name](rgb.astype(np.float64), CIFAR10C_PARAMS[name][severity - 1], rng)
    else:
        import imagecorruptions

        extra = {"seed": int(rng.integers(2**31))} if name in ("impulse_noise", "glass_blur") else {}
        out = imagecorruptions.corrupt(rgb, severity=severity, corruption_name=name, **extra)
    return np.uint8(np.clip(out, 0, 255))  # truncated, as both published sets were saved


def corrupt_batch(images: np.ndarray, name: str, severity: int, *, seed: int, indices: Sequence[int]) -> np.ndarray:
    """uint8 images (N, H, W, C) corrupted one by one, image k seeded by its data index ``indices[k]``."""
    return np.stack([corrupt_image(img, name, severity, seed=seed, index=i) for img, i in zip(images, indices)])
