"""The hardened model container: normalization, input transforms and the network, plus its provenance."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harden.provenance import Provenance

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` so that the model takes images in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std must have the same length")
        # Non-persistent: mean/std are part of the provenance, not of the weights.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class HardenedModel(nn.Module):
    """An image classifier taking images in [0, 1]: ``net(input_transforms(normalize(x)))``.

    ``provenance`` (a :class:`harden.provenance.Provenance`) records how to rebuild the model from
    scratch: the base model source and the ordered transforms with their parameters and replay state,
    and any fine-tuning. :func:`harden.save` writes it into the safetensors metadata and
    :func:`harden.load` replays it.
    """

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 provenance: Provenance) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.input_transforms = nn.Sequential()
        self.net = net
        self.provenance = provenance

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the model takes."""
        return tuple(self.provenance.model.input_size)  # type: ignore[return-value]

    @property
    def spec(self) -> str:
        """The model spec it was built from (``timm:resnet18``, ``cifar:wrn-34-10``, ...)."""
        model = self.provenance.model
        return model.spec or model.name

    @property
    def num_classes(self) -> int:
        return self.provenance.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_transforms(self.normalize(x)))

    def net_input_size(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of the tensor that reaches ``net`` for one image of ``input_size``."""
        dev = next((p.device for p in self.parameters()), torch.device("cpu"))
        with torch.no_grad():
            x = torch.zeros(1, *self.input_size, device=dev)
            return tuple(self.input_transforms(self.normalize(x)).shape[1:])  # type: ignore[return-value]
