"""``--threat corruptions``: a loaded model's accuracy under the 15 common corruptions at severities 1-5.

The images come from one of two sources: the evaluation images (chosen as for an adversarial
evaluation: first n or a seeded random subset) corrupted on the fly (:mod:`~harden.evaluation.corruptions`),
or a CIFAR-10-C style folder of ``.npy`` files (:mod:`~harden.evaluation.corruption_folder`). Every
(type, severity) cell classifies the same n images; the report is built by
:mod:`~harden.evaluation.corruption_report`.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harden.errors import UsageError
from harden.evaluation.corruption_folder import CorruptionFolder, folder_root, read_folder
from harden.evaluation.corruption_report import Cells, build_corruption_report
from harden.evaluation.corruptions import SEVERITIES, corrupt_batch, generator_info, parse_corruptions, require_library
from harden.evaluation.examples import device_of, select_examples
from harden.runtime import events as ev
from harden.schemas.evaluate import EvaluateConfig
from harden.schemas.fields import parse_number, settings_of

# settings of the adversarial threat only: with --threat corruptions they must keep their defaults
_ADVERSARIAL_ONLY = ("eps", "norm", "attack", "fast", "steps", "step_size", "resume", "into", "eps_sweep")
FORWARD_BATCH = 256  # --batch-size auto: images per forward pass


def _value(cfg: EvaluateConfig, name: str, kind: str) -> Any:
    value = getattr(cfg, name)
    if kind == "number" and isinstance(value, str):
        return parse_number(value) if value.strip() else None
    return value


def check_corruption_settings(cfg: EvaluateConfig, data: Any) -> tuple[str, ...]:
    """Check a corruption evaluation before anything loads: its types; one :class:`UsageError` otherwise."""
    names = parse_corruptions(cfg.corruptions)
    defaults = EvaluateConfig()
    for name, (_, setting) in settings_of(EvaluateConfig).items():
        if name in _ADVERSARIAL_ONLY and _value(cfg, name, setting.kind) != getattr(defaults, name):
            raise UsageError(f"{setting.option_name(name)} applies to --threat adversarial, not to corruptions")
    if cfg.report is not None and Path(cfg.report).is_dir():
        raise UsageError(f"--report '{cfg.report}' is a directory; give a file name such as report.json")
    root = folder_root(data)
    if root is not None:
        read_folder(root, names, explicit=cfg.corruptions is not None)  # its shapes, before the model loads
        return names
    if isinstance(data, str):
        from harden.data import check_spec

        check_spec(data, cfg.split, download=cfg.download)
    require_library()
    return names


def _batch_size(cfg: EvaluateConfig) -> int:
    return cfg.batch_size if isinstance(cfg.batch_size, int) else FORWARD_BATCH


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> np.ndarray:
    """Which of the images ``x`` (N, C, H, W in [0, 1]) the model classifies as ``y``."""
    device = device_of(model)
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            logits = model(x[start:start + batch].to(device))
            out.append((logits.argmax(1).cpu() == y[start:start + batch]).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _u8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) uint8."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _f32(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) floats in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


class _Generated:
    """The evaluation images, corrupted on the fly."""

    def __init__(self, model: nn.Module, data: Any, cfg: EvaluateConfig, names: tuple[str, ...]) -> None:
        examples, self.selection = select_examples(data, model, cfg)
        x, self.labels = examples.get(torch.arange(examples.n))
        self.indices, self.seed, self.clean = list(examples.indices), cfg.seed, x
        self.images = _u8(x)
        self.info = generator_info(x.shape[2], x.shape[3], names)
        self.files = None

    def corrupted(self, name: str, severity: int) -> torch.Tensor:
        return _f32(corrupt_batch(self.images, name, severity, seed=self.seed, indices=self.indices))


def _model_input(model: nn.Module, images: np.ndarray) -> torch.Tensor:
    """Folder images (N, H, W, C) brought to a harden model's input (channels, size); as they are otherwise."""
    x = _f32(images)
    size = getattr(model, "input_size", None)
    if not (isinstance(size, (tuple, list)) and len(size) == 3) or tuple(x.shape[1:]) == tuple(size):
        return x
    from harden.data.images import Preprocess, tensor_to_target

    pre = Preprocess.make(tuple(size))
    return torch.stack([tensor_to_target(img, pre) for img in x])


class _Folder:
    """The images of a CIFAR-10-C style folder."""

    def __init__(self, model: nn.Module, root: Path, cfg: EvaluateConfig, names: tuple[str, ...]) -> None:
        self.folder: CorruptionFolder = read_folder(root, names, explicit=cfg.corruptions is not None)
        self.model, total = model, self.folder.n
        k = total if cfg.n is None else min(cfg.n, total)
        if cfg.random_subset:
            self.indices = torch.randperm(total, generator=torch.Generator().manual_seed(cfg.seed))[:k].tolist()
        else:
            self.indices = list(range(k))
        self.labels = torch.from_numpy(self.folder.labels[self.indices])
        self.selection = {"data": f"npyc:{root}", "split": None, "n": k,
                          "selection": "random" if cfg.random_subset else "first", "indices_head": self.indices[:10],
                          **({"selection_seed": cfg.seed} if cfg.random_subset else {})}
        clean = self.folder.clean
        self.clean = _model_input(model, np.asarray(clean[self.indices])) if clean is not None else None
        self.info = None
        self.files = {name: f"{name}.npy" for name in self.folder.arrays}
        self._check_classes()

    def _check_classes(self) -> None:
        probe = self.corrupted(next(iter(self.folder.arrays)), 1)[:2]
        with torch.no_grad():
            classes = int(self.model(probe.to(device_of(self.model))).shape[-1])
        top = int(self.folder.labels.max())
        if top >= classes:
            raise UsageError(f"labels.npy of '{self.folder.root}' goes up to {top} but the model has {classes} classes")

    def corrupted(self, name: str, severity: int) -> torch.Tensor:
        return _model_input(self.model, self.folder.images(name, severity, self.indices))


def evaluate_corruptions(model: nn.Module, data: Any, cfg: EvaluateConfig, *, events: ev.Events,
                         started: _dt.datetime) -> dict[str, Any]:
    """Accuracy of ``model`` (loaded, on its device, in eval mode) under each corruption type and severity."""
    t0 = time.perf_counter()
    names = parse_corruptions(cfg.corruptions)
    root = folder_root(data)
    source = _Folder(model, root, cfg, names) if root is not None else _Generated(model, data, cfg, names)
    if root is not None:
        names = tuple(n for n in names if n in source.folder.arrays)
    n, batch = len(source.labels), _batch_size(cfg)
    events.emit(ev.ProgressStarted(n * len(names) * len(SEVERITIES) + n, unit="img", label="clean"))
    try:
        clean = _correct(model, source.clean, source.labels, batch) if source.clean is not None else None
        events.emit(ev.ProgressMade(n))
        cells: Cells = {}
        for name in names:
            rows = []
            for severity in SEVERITIES:
                rows.append(_correct(model, source.corrupted(name, severity), source.labels, batch))
                events.emit(ev.ProgressMade(n, label=f"{name} {severity}"))
            cells[name] = np.stack(rows)
    finally:
        events.emit(ev.ProgressEnded())
    return build_corruption_report(model, cells, clean, cfg=cfg, selection=source.selection, indices=source.indices,
                                   labels=source.labels.tolist(), generator=source.info, folder=_folder_of(source),
                                   batch_size=batch, seconds=time.perf_counter() - t0, started=started)


def _folder_of(source: _Generated | _Folder) -> dict[str, Any] | None:
    if not isinstance(source, _Folder):
        return None
    f = source.folder
    return {"root": str(f.root), "files": source.files, "images_per_severity": f.n, "has_clean": f.clean is not None,
            "ignored_files": [f"{name}.npy" for name in f.ignored]}
