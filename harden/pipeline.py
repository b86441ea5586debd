"""Applying transforms to a model and replaying a recorded provenance."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError
from harden.graph.tracing import preserve_state, shape_run
from harden.model import HardenedModel
from harden.provenance import ModelEntry, Provenance, TransformEntry
from harden.runtime.modes import eval_mode
from harden.shapes import first_conv_channels, fit_statistics, parse_input_size
from harden.sources import build_net
from harden.transforms import Transform, parse_transform, replay_entry


def wrap(net: nn.Module, *, input_size: int | str | Sequence[int], num_classes: int | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         name: str | None = None) -> HardenedModel:
    """Wrap a plain ``nn.Module`` (images in [0, 1] after ``mean``/``std``) as a HardenedModel.

    ``input_size`` is ``N``, ``(H, W)``, ``(C, H, W)`` or text like ``"1x28x28"``; without C the channels are
    those of the network's first convolution. ``mean``/``std`` default to none (0 and 1 per channel).
    Its provenance cannot rebuild the base network from a file; ``harden.load(path, base=...)`` takes it.

    >>> model = wrap(my_net, input_size="1x28x28", mean=[0.286], std=[0.353])  # doctest: +SKIP
    """
    asked = parse_input_size(input_size)
    assert asked is not None
    size = asked.shape(first_conv_channels(net))
    mean = fit_statistics(mean if mean is not None else (0.0,), size[0])
    std = fit_statistics(std if std is not None else (1.0,), size[0])
    if num_classes is None:
        with torch.no_grad():
            was = net.training
            net.eval()
            num_classes = int(net((torch.zeros(1, *size) - torch.tensor(mean).view(1, -1, 1, 1))
                                  / torch.tensor(std).view(1, -1, 1, 1)).shape[-1])
            net.train(was)
    entry = ModelEntry(spec=name or type(net).__name__, source="object", name=name or type(net).__qualname__,
                       num_classes=num_classes, input_size=list(size), mean=list(mean), std=list(std))
    return HardenedModel(net, mean=mean, std=std, provenance=Provenance(model=entry))


def _check_runs(model: HardenedModel, what: str) -> None:
    try:
        with eval_mode(model), torch.no_grad(), preserve_state(model), shape_run(model.net_input_size(), model):
            dev = next((p.device for p in model.parameters()), torch.device("cpu"))
            out = model(torch.zeros(1, *model.input_size, device=dev))
    except Exception as exc:
        raise HardenError(f"{what} left a model that does not run: "
                          f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from exc
    if tuple(out.shape) != (1, model.num_classes):
        raise HardenError(f"{what} changed the output shape to {tuple(out.shape)[1:]}; "
                          f"expected ({model.num_classes},)")


def apply(model: nn.Module, transforms: Sequence[str | Transform] | str | Transform, *,
          input_size: int | str | Sequence[int] | None = None, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None) -> HardenedModel:
    """Return a copy of ``model`` with ``transforms`` applied in order, each recorded in its provenance.

    ``transforms`` are strings like ``"upsample:factor=2"`` or :class:`Transform` objects. A plain
    ``nn.Module`` is wrapped first (see :func:`wrap`: ``input_size`` is then required, ``mean``/``std`` are
    its input normalization, none by default).

    >>> hardened = apply(my_net, ["stride-mod", "activation:name=silu"], input_size="1x28x28",
    ...                  mean=[0.286], std=[0.353])  # doctest: +SKIP
    """
    if isinstance(transforms, (str, Transform)):
        transforms = [transforms]
    parsed = [parse_transform(t) for t in transforms]
    if isinstance(model, HardenedModel):
        model.record_outside_training()
        if mean is not None or std is not None:
            raise UsageError("mean/std are set when a model is built (harden.load_model or harden.wrap), "
                             "not by apply() on a harden model")
        out = copy.deepcopy(model)
        if input_size is not None:
            asked = parse_input_size(input_size)
            assert asked is not None
            out.provenance.model.input_size = list(asked.shape(model.input_size[0]))
    else:
        if input_size is None:
            raise UsageError("apply() on a plain nn.Module needs input_size= (N, (H, W) or (C, H, W))")
        out = wrap(copy.deepcopy(model), input_size=input_size, mean=mean, std=std)
    for t in parsed:
        applied = t.apply(out)
        _check_runs(out, f"transform '{t.spec()}'")
        out.provenance.transforms.append(TransformEntry(name=t.name, provider=t.provider, config=dict(t.config),
                                                        state=applied.state, changes=list(applied.changes)))
    out.remember_untrained()  # a transform's new layers are random too; only a random model is remembered
    return out


def provenance_of(model: HardenedModel) -> Provenance:
    """A copy of the provenance that describes how ``model`` was built."""
    if not isinstance(model, HardenedModel):
        raise UsageError("provenance_of() takes a model made by harden.load_model / harden.apply / harden.load")
    return copy.deepcopy(model.provenance)


def recipe(model: HardenedModel) -> dict[str, Any]:
    """Deprecated: ``provenance_of(model).to_dict()``, the provenance as plain JSON values.

    Kept because harden 0.1.0 published it; "recipe" now names only the YAML files of ``harden run``.
    """
    warnings.warn("harden.recipe(model) is deprecated; use harden.provenance_of(model) (a typed Provenance, "
                  ".to_dict() for plain values)", DeprecationWarning, stacklevel=2)
    if not isinstance(model, HardenedModel):
        raise UsageError("recipe() takes a model made by harden.load_model / harden.apply / harden.load")
    return model.provenance.to_dict()


def rebuild(provenance: Provenance | dict[str, Any], *, trust_code: bool = False,
            base: nn.Module | None = None) -> HardenedModel:
    """Build the model a provenance describes, with fresh weights: base network, then each transform replayed.

    A mapping is read with :meth:`Provenance.from_dict` first (a ProvenanceError if it is not one).
    """
    if not isinstance(provenance, Provenance):
        provenance = Provenance.from_dict(provenance)
    spec = provenance.model
    if base is not None:
        net = copy.deepcopy(base)
    elif spec.source == "object":
        raise HardenError(
            f"this file's base model was a Python object ({spec.name}); pass it as harden.load(path, base=model)")
    else:
        net = build_net(spec.source, spec.name, num_classes=spec.num_classes, pretrained=False,
                        kwargs=spec.kwargs, trust_code=trust_code).net
    model = HardenedModel(net, mean=spec.mean, std=spec.std,
                          provenance=dataclasses.replace(copy.deepcopy(provenance), transforms=[]))
    for entry in provenance.transforms:
        replay_entry(model, entry)
    return model
