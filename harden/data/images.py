"""Images as a model takes them: :class:`Preprocess` (channels, size, resize, crop or the user's own
transform) and :class:`ImageDataset`, the dataset every data source, adapter and command uses.

Images come back as float (C, H, W) tensors in [0, 1]. Image files are read as PIL images and
converted to mode ``L`` (1 channel) or ``RGB`` (3 channels); tensor-backed sources (CIFAR, IDX, npz,
tensors) convert 1 -> 3 channels by repeating the channel and 3 -> 1 by ITU-R 601-2 luma
(``L = 0.299 R + 0.587 G + 0.114 B``, computed on uint8 exactly as PIL's ``convert("L")``). A different
shape is resized (the short side, or ``resize``) and centre-cropped to the model's H x W, or, with
``crop="none"``, resized straight to it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from harden.errors import HardenWarning, UsageError
from harden.schemas.finetune import CROPS, parse_resize

Transform = Callable[[Image.Image], Any]


class DataWarning(HardenWarning):
    """Something about the data a user should know (a flat tree, a class-sorted first n, a smaller held-out set)."""


_HELD: list[list[str]] = []  # the open held_warnings() blocks, innermost last


def data_warning(message: str) -> None:
    """Warn about the data in one line (the CLI prints ``warning: ...``); held inside :func:`held_warnings`."""
    if _HELD:
        _HELD[-1].append(message)
    else:
        warnings.warn(message, DataWarning, stacklevel=3)


@contextmanager
def held_warnings() -> Iterator[None]:
    """Give the data warnings of the block only if it ends without an error: a failing command says only what
    failed, in one line."""
    _HELD.append([])
    try:
        yield
    except BaseException:
        _HELD.pop()
        raise
    for message in dict.fromkeys(_HELD.pop()):
        data_warning(message)


class DamagedImage(UsageError):
    """An image file that cannot be decoded (truncated, corrupt or not an image)."""


_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def parse_image_size(size: int | Sequence[int] | None) -> tuple[int | None, tuple[int, int] | None]:
    """``N``, ``(H, W)`` or ``(C, H, W)`` as (channels or None, (H, W)); None gives (None, None)."""
    if size is None:
        return None, None
    if isinstance(size, int) and not isinstance(size, bool):
        dims = [size, size]
    elif isinstance(size, Sequence) and len(size) in (2, 3) and all(isinstance(v, int) for v in size):
        dims = [int(v) for v in size]
    else:
        raise UsageError(f"image size must be N, (H, W) or (C, H, W), got {size!r}")
    if min(dims) <= 0:
        raise UsageError(f"image size must be positive, got {size!r}")
    return (dims[0] if len(dims) == 3 else None), (dims[-2], dims[-1])


@dataclass(frozen=True)
class Preprocess:
    """How images become the model's input: channels, (H, W), an optional resize, the crop, or a transform."""

    channels: int | None = None              # None: RGB for image files, a tensor source's own channels
    size: tuple[int, int] | None = None      # (H, W); None: as read
    resize: int | tuple[int, int] | None = None
    crop: str = "center"
    transform: Transform | None = None       # the user's own PIL image -> tensor in [0, 1]

    @classmethod
    def make(cls, image_size: int | Sequence[int] | None = None, *, resize: Any = None, crop: str = "center",
             transform: Transform | None = None) -> Preprocess:
        """Check and build one; ``image_size`` is the model's input (N, (H, W) or (C, H, W))."""
        channels, size = parse_image_size(image_size)
        if crop not in CROPS:
            raise UsageError(f"--crop must be one of {', '.join(CROPS)}, got '{crop}'")
        r = parse_resize(resize)
        if r is not None and crop == "none":
            raise UsageError("--resize sets the size before the centre crop; with --crop none images are resized "
                             "straight to the model's input: drop --resize")
        if r is not None and size is not None:
            short = min(r) if isinstance(r, tuple) else r
            small = (r[0] < size[0] or r[1] < size[1]) if isinstance(r, tuple) else r < max(size)
            if small:
                need = f"{size[0]}x{size[1]}" if isinstance(r, tuple) else str(max(size))
                raise UsageError(f"--resize {short if isinstance(r, int) else f'{r[0]}x{r[1]}'} is smaller than the "
                                 f"model's input {size[0]}x{size[1]}; give at least {need} (or --crop none)")
        return cls(channels, size, r, crop, transform)

    def file_mode(self, spec: str) -> str:
        """The PIL mode image files are converted to: ``L`` for 1 channel, ``RGB`` for 3 (others refused)."""
        if self.channels in (None, 3):
            return "RGB"
        if self.channels == 1:
            return "L"
        raise UsageError(f"the model takes {self.channels}-channel images but '{spec}' holds image files, read as "
                         "1 (L) or 3 (RGB) channels; give the data as npz or tensors with that many channels")

    def check_channels(self, have: int, spec: str) -> None:
        """Refuse a tensor source whose ``have`` channels cannot become the model's (1 <-> 3 convert)."""
        if self.channels is not None and have != self.channels and {have, self.channels} != {1, 3}:
            raise UsageError(f"'{spec}' holds {have}-channel images but the model takes {self.channels}; harden "
                             "converts 1 <-> 3 channels only")

    def resized(self, w: int, h: int) -> tuple[int, int] | None:
        """The (width, height) an image of ``w`` x ``h`` is resized to before the crop (None: not resized)."""
        if self.crop == "none":
            return (self.size[1], self.size[0]) if self.size is not None and (h, w) != self.size else None
        if self.resize is None:
            if self.size is None or (h, w) == self.size:
                return None
            th, tw = self.size
            scale = max(tw / w, th / h)  # the short side to the target, as torchvision's Resize(int) then crop
            return max(tw, round(w * scale)), max(th, round(h * scale))
        if isinstance(self.resize, int):
            scale = self.resize / min(w, h)
            return max(self.resize, round(w * scale)), max(self.resize, round(h * scale))
        return self.resize[1], self.resize[0]

    def crop_box(self, w: int, h: int) -> tuple[int, int, int, int] | None:
        """The centre crop (left, top, right, bottom) of a ``w`` x ``h`` image to the target (None: none)."""
        if self.size is None or (h, w) == self.size:
            return None
        th, tw = self.size
        left, top = (w - tw) // 2, (h - th) // 2
        return left, top, left + tw, top + th


def luma_u8(x: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> (1, H, W) by ITU-R 601-2 luma, rounded exactly as PIL's ``convert("L")``."""
    r, g, b = x.to(torch.int32).unbind(0)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)[None]


def convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """``x`` (C, H, W) with ``channels`` channels: 1 -> 3 repeats, 3 -> 1 is luma; unchanged otherwise."""
    have = x.shape[0]
    if channels is None or have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(3, -1, -1).clone()
    if have == 3 and channels == 1:
        if x.dtype == torch.uint8:
            return luma_u8(x)
        return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    raise UsageError(f"an image has {have} channels but the model takes {channels}; harden converts 1 <-> 3 only")


def pil_to_tensor(img: Image.Image, pre: Preprocess, mode: str) -> torch.Tensor:
    """A PIL image converted to ``mode``, resized and cropped as ``pre`` says, as floats in [0, 1]."""
    img = img.convert(mode)
    new = pre.resized(*img.size)
    if new is not None:
        img = img.resize(new, Image.BILINEAR)
    box = pre.crop_box(*img.size)
    if box is not None:
        img = img.crop(box)
    arr = np.asarray(img, dtype=np.uint8).copy()
    x = torch.from_numpy(arr)
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
    return x.float().div_(255.0)


def tensor_to_target(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """A (C, H, W) tensor (uint8 or float in [0, 1]) with the model's channels, resized and cropped (bilinear)."""
    x = convert_channels(x, pre.channels)
    if x.dtype == torch.uint8:
        x = x.float().div(255.0)
    h, w = x.shape[-2:]
    new = pre.resized(w, h)
    if new is not None:
        x = F.interpolate(x[None], size=(new[1], new[0]), mode="bilinear", align_corners=False)[0]
    box = pre.crop_box(new[0], new[1]) if new is not None else pre.crop_box(w, h)
    if box is not None:
        x = x[:, box[1]:box[3], box[0]:box[2]]
    return x


def to_pil(x: torch.Tensor) -> Image.Image:
    """A (1 or 3, H, W) tensor (uint8, or float in [0, 1]) as a PIL image, for a user's transform."""
    if x.dtype != torch.uint8:
        x = x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    if x.shape[0] not in (1, 3):
        raise UsageError(f"a transform takes PIL images; an image with {x.shape[0]} channels has no PIL mode")
    arr = x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()
    return Image.fromarray(arr, mode="L" if x.shape[0] == 1 else "RGB")


def checked_output(out: Any, source: str) -> torch.Tensor:
    """A transform's (or a dataset's) image as a float (C, H, W) tensor in [0, 1], else one clear error."""
    if not isinstance(out, torch.Tensor) or out.dim() != 3:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"{source} must give (C, H, W) image tensors, got {got}")
    if out.dtype == torch.uint8:
        return out.float().div(255.0)
    out = out.float()
    lo, hi = float(out.min()), float(out.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(f"{source} gives values in [{lo:.3g}, {hi:.3g}]; harden takes images in [0, 1] (the model "
                         "normalizes them itself): leave Normalize out")
    return out


class ImageDataset(Dataset):
    """Images in [0, 1] (C, H, W float tensors) with integer labels and class names.

    ``loader`` turns an item into a PIL image or a (C, H, W) tensor (uint8, or float in [0, 1]);
    ``preprocess`` (or ``image_size``) makes it the model's input. ``root``: the items are files under
    this folder, and reports name them relative to it.
    """

    def __init__(self, spec: str, split: str, classes: Sequence[str], items: Sequence[Any],
                 loader: Callable[[Any], Image.Image | torch.Tensor], labels: Sequence[int],
                 image_size: int | Sequence[int] | None = None, *, preprocess: Preprocess | None = None,
                 root: Path | None = None) -> None:
        self.spec = spec
        self.split = split
        self.classes = list(classes)
        self._items = list(items)
        self._loader = loader
        self.labels = [int(v) for v in labels]
        self.preprocess = preprocess if preprocess is not None else Preprocess.make(image_size)
        self.root = root
        self._mode = "RGB" if self.preprocess.channels in (None, 3) else "L"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) the images are brought to (None: as read)."""
        return self.preprocess.size

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._items)

    def item_name(self, index: int) -> str:
        """The file (or entry) behind example ``index``, for messages."""
        return str(self._items[index])

    def file_names(self, indices: Sequence[int]) -> list[str] | None:
        """The files of ``indices`` relative to the data root (POSIX form); None for data that is not files."""
        if self.root is None:
            return None
        return [Path(self._items[i]).relative_to(self.root).as_posix() for i in indices]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            x = self._as_tensor(self._loader(self._items[index]))
        except _DECODE_ERRORS as exc:
            reason = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
            raise DamagedImage(f"cannot read image '{self.item_name(index)}' ({reason}); repair or remove it, "
                               "or pass --skip-bad-images to go on without it") from exc
        return x, self.labels[index]

    def _as_tensor(self, item: Image.Image | torch.Tensor) -> torch.Tensor:
        pre = self.preprocess
        if isinstance(item, torch.Tensor) and pre.transform is not None:
            item = to_pil(convert_channels(item, pre.channels))
        if isinstance(item, Image.Image):
            with item:
                if pre.transform is not None:
                    return checked_output(pre.transform(item.convert(self._mode)), "the transform")
                return pil_to_tensor(item, pre, self._mode)
        return tensor_to_target(item, pre)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "split": self.split, "size": len(self), "num_classes": self.num_classes}

    def readable(self, indices: Sequence[int]) -> tuple[list[int], list[str]]:
        """Split ``indices`` into those that decode and the names of the files that do not."""
        good, bad = [], []
        for i in indices:
            try:
                self[i]
            except DamagedImage:
                bad.append(self.item_name(i))
            else:
                good.append(i)
        return good, bad
