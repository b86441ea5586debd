"""The hardened model container: normalization, input transforms and the network, plus its provenance."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from harden.errors import HardenWarning
from harden.provenance import Provenance

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

#: well-known input statistics, by name: what ``normalization_text`` calls them and the check compares with
KNOWN_STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "ImageNet": (IMAGENET_MEAN, IMAGENET_STD),
    "CIFAR-10": (CIFAR10_MEAN, CIFAR10_STD),
}


def known_statistics(channels: int) -> list[tuple[str, tuple[float, ...], tuple[float, ...]]]:
    """The well-known statistics for ``channels`` channels, named (for 1 channel: their channel averages)."""
    out = []
    for name, (mean, std) in KNOWN_STATISTICS.items():
        if channels == len(mean):
            out.append((name, tuple(mean), tuple(std)))
        elif channels == 1:
            label = name if name == "none" else f"{name} (channel average)"
            out.append((label, (sum(mean) / len(mean),), (sum(std) / len(std),)))
        elif name == "none":
            out.append((name, (0.0,) * channels, (1.0,) * channels))
    return out


def statistics_name(mean: Sequence[float], std: Sequence[float]) -> str | None:
    """The name of the well-known statistics ``mean``/``std`` are, or None."""
    for name, m, s in known_statistics(len(mean)):
        if all(abs(a - b) < 1e-4 for a, b in zip((*m, *s), (*mean, *std))):
            return name
    return None


def statistics_text(mean: Sequence[float], std: Sequence[float]) -> str:
    """``mean 0.4914,0.4822,0.4465 std 0.2471,0.2435,0.2616``."""
    return f"mean {','.join(f'{v:.4g}' for v in mean)} std {','.join(f'{v:.4g}' for v in std)}"


def normalization_text(mean: Sequence[float], std: Sequence[float]) -> str:
    """``mean`` and ``std`` as a user reads them, e.g. ``CIFAR-10 (mean 0.4914,0.4822,0.4465 std ...)``."""
    name = statistics_name(mean, std)
    return f"{name} ({statistics_text(mean, std)})" if name else statistics_text(mean, std)


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
        self._untrained_digest: str | None = None  # the state's digest while harden knows it is random

    def remember_untrained(self) -> None:
        """Note the current weights as the random ones, so that training them outside harden can be told later."""
        from harden.runtime.store import state_digest

        state = self.state_dict().values()
        real = not any(t.is_meta for t in state)  # a model built on the meta device holds no weights yet
        self._untrained_digest = state_digest(self) if self.provenance.untrained and real else None

    def record_outside_training(self) -> Provenance:
        """Set ``provenance.trained_outside`` if the remembered random weights have changed; the provenance.

        A model built with random weights (:func:`harden.load_model`), trained in the user's own loop and
        evaluated or saved is no longer random; its provenance says so from then on.
        """
        if self._untrained_digest is not None and self.provenance.untrained:
            from harden.runtime.store import state_digest

            if state_digest(self) != self._untrained_digest:
                self.provenance.trained_outside = True
                self._untrained_digest = None
        return self.provenance

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


def warn_if_random(model: nn.Module, doing: str) -> None:
    """One :class:`HardenWarning` when ``model`` is a harden model whose weights were never trained or loaded."""
    if isinstance(model, HardenedModel):
        model.record_outside_training()
    prov = getattr(model, "provenance", None)
    if isinstance(prov, Provenance) and prov.untrained:
        warnings.warn(f"{doing} {prov.model.spec or prov.model.name} with random weights (no --weights FILE, "
                      "--pretrained or fine-tuning)" + (": expect chance-level accuracy" if doing == "evaluating"
                                                        else ": this trains it from scratch"),
                      HardenWarning, stacklevel=3)
