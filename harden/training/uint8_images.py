"""Examples of an :class:`~harden.data.ImageDataset` decoded into uint8 tensors, the format training keeps.

Fine-tuning (:mod:`harden.training`) and its extra data (:mod:`~harden.training.extra_data`) both decode
their images once into a uint8 tensor and keep it on the GPU when it fits, in pinned host memory otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harden.data import ImageDataset


class AsUint8(torch.utils.data.Dataset):
    """Examples of an ImageDataset as uint8 (C, H, W) tensors."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[self.indices[i]]
        return x.mul(255).round_().clamp_(0, 255).to(torch.uint8), y


def decode_uint8(dataset: ImageDataset, indices: Sequence[int], workers: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the examples at ``indices`` once into a uint8 image tensor and a label tensor."""
    src = AsUint8(dataset, indices)
    if workers > 0 and len(src) >= 4096:
        try:
            loader = torch.utils.data.DataLoader(src, batch_size=256, num_workers=workers)
            xs, ys = zip(*loader)
            return torch.cat(xs), torch.cat(ys).long()
        except Exception:  # a dataset that cannot go to worker processes: decode here
            pass
    xs, ys = [], []
    for i in range(len(src)):
        x, y = src[i]
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def place_images(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images ``x`` on a CUDA ``device`` when they take under a quarter of its free memory, else pinned."""
    if device.type != "cuda":
        return x
    free, _ = torch.cuda.mem_get_info(device)
    return x.to(device) if x.numel() < 0.25 * free else x.pin_memory()
