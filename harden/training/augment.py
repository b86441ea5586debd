"""Training-time augmentation on the device: ``crop-flip`` (random crop after zero padding and random
horizontal flip, batched) and ``strong`` (torchvision's TrivialAugmentWide per image, then crop-flip)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, batched on x's device.

    Works on uint8 or float batches (N, C, H, W); the flip is folded into the crop's column index.
    """
    n, c, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    xp = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = oy[:, None] + torch.arange(h, device=dev)
    cols = ox[:, None] + torch.arange(w, device=dev)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    ni = torch.arange(n, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[ni, ci, rows[:, None, :, None], cols[:, None, None, :]]


def strong_policy() -> Any:
    """The ``strong`` policy: torchvision's TrivialAugmentWide (one random op of random strength per image)."""
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide()


def strong_augment(x_u8: torch.Tensor, policy: Any) -> torch.Tensor:
    """``policy`` applied to each uint8 image (N, C, H, W) of the batch on its device (draws from torch's RNG)."""
    return torch.stack([policy(img) for img in x_u8])
