"""What a result was made with: harden's and the libraries' versions, and the device."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from importlib import metadata

import torch

from harden._version import __version__

# the libraries a model file's recipe depends on, and those an evaluation's numbers depend on
MODEL_LIBRARIES = ("timm", "torchvision", "torch-pruning")
REPORT_LIBRARIES = ("pyautoattack", "torchvision", "timm", "torch-pruning", "numpy")


def versions(libraries: Sequence[str] = MODEL_LIBRARIES, *, python: bool = False) -> dict[str, str]:
    """harden's and torch's versions and those of the installed ``libraries`` (read from package
    metadata, so nothing is imported), keyed by import name; ``python`` adds the interpreter's."""
    out = {"harden": __version__, "torch": torch.__version__}
    for name in libraries:
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if python:
        out["python"] = platform.python_version()
    return out


def device_text(device: torch.device, *, detail: bool = True) -> str:
    """The device in words: ``cuda:0 (NVIDIA H200)`` or ``cpu (x86_64, 8 threads)``; without ``detail``
    only the GPU's name or ``cpu``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return f"{device} ({name})" if detail else name
    if not detail:
        return "cpu"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
