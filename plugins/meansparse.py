"""meansparse: before activations, replace small deviations from each channel's mean by the mean.

MeanSparse (Amini et al. 2024, "MeanSparse: Post-Training Robustness Enhancement Through Mean-Centered
Feature Sparsification") post-processes an adversarially trained network: before chosen activations,
per channel ``c``, ``x -> x if |x - mean_c| >= alpha * std_c else mean_c``, with the mean and standard
deviation of that channel over training images. No training; the threshold ``alpha`` is chosen per model
(the authors' code uses 0.15 to 0.35).

Sites come from :func:`harden.graph.activation_inputs.find_activation_inputs`: by default every BatchNorm
layer whose output only activations read; ``layers=GLOB|GLOB`` chooses layers by path instead. Each
chosen layer is wrapped (``bn1`` -> ``bn1.layer`` and the operator ``bn1.meansparse``, whose buffers
``mean``, ``std`` and ``alpha`` the model file stores); a normalization layer with its own activation
(timm's ``BatchNormAct2d``) gets the operator before its ``act``. Statistics: one pass in eval mode without
gradients over a seeded random subset of the training images, every operator the identity meanwhile
(the statistics are those of the network as it was); population mean and standard deviation over the
images and positions. ``harden.load`` rebuilds the sites from the recorded state and reads the statistics
from the file: no data needed.

Replay inserts whatever sites the state names, each a module and the operator on its output or (``first``)
its input, also ones this analysis would not pick: the ``robustbench:`` source records the transform with
RobustBench's sites for its MeanSparse entries (a block's output among them; see
:mod:`harden.sources.zoo.rb_meansparse`), the statistics and thresholds read from the entry's checkpoint.

The operator's gradient is zero where it replaces a value by the mean: it is a
:class:`harden.bpda.StraightThrough` module, and its robustness must be measured with straight-through
gradients (BPDA) as well.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from harden.bpda import StraightThrough
from harden.errors import HardenError, UsageError
from harden.graph.activation_inputs import ActivationInput, Selector, find_activation_inputs, is_batchnorm
from harden.model import HardenedModel
from harden.runtime.modes import eval_mode
from harden.transforms import Applied, Param, Shorthand, Transform, parse_number

#: the authors' thresholds (SPIN-UMass/MeanSparse): 0.15 WRN-94-16, 0.2 WRN-70-16, 0.25 RaWRN-70-16 (CIFAR-10),
#: 0.3 ConvNeXt-L (ImageNet); 0.25 is the threshold of the configuration their main.py runs by default
DEFAULT_ALPHA = 0.25
BATCH = 256


def mean_sparsify(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, alpha: torch.Tensor,
                  shape: tuple[int, ...]) -> torch.Tensor:
    """``x`` where ``|x - mean| >= alpha * std``, else ``mean`` (``mean``/``std`` viewed as ``shape``)."""
    mean = mean.view(shape).to(x.dtype)
    threshold = (alpha * std).view(shape).to(x.dtype)
    return torch.where((x - mean).abs() < threshold, mean, x)


fx.wrap("mean_sparsify")  # one call in traced graphs, its buffers read by get_attr


@dataclass
class _Moments:
    """Per-channel sums of values and of their squares (float64), and how many values per channel."""

    total: torch.Tensor
    squares: torch.Tensor
    count: int = 0

    def add(self, values: torch.Tensor) -> None:
        """Add ``values`` of shape (positions, channels)."""
        self.total += values.sum(0)
        self.squares += (values * values).sum(0)
        self.count += values.shape[0]


class MeanSparse(StraightThrough):
    """Per channel ``c`` (dimension ``dim``): ``x`` where ``|x - mean[c]| >= alpha * std[c]``, else ``mean[c]``.

    With ``std`` 0 (before calibration) it is the identity. ``ndim``: the dimensions of its input, batch included.
    """

    def __init__(self, channels: int, *, alpha: float, dim: int = 1, ndim: int = 4) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.zeros(channels))
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.dim = dim % ndim
        self.shape = tuple(-1 if i == self.dim else 1 for i in range(ndim))
        self._moments: _Moments | None = None  # while calibrating

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._moments is not None:
            self._moments.add(x.detach().double().movedim(self.dim, -1).reshape(-1, x.shape[self.dim]))
            return x
        return mean_sparsify(x, self.mean, self.std, self.alpha, self.shape)

    def start_calibration(self) -> None:
        """Collect the statistics of every input from now on (passing it through unchanged)."""
        zeros = torch.zeros(self.mean.numel(), dtype=torch.float64, device=self.mean.device)
        self._moments = _Moments(zeros, zeros.clone())

    def finish_calibration(self) -> int:
        """Set ``mean`` and ``std`` (population) from what was collected; the number of values per channel."""
        moments, self._moments = self._moments, None
        if moments is None or not moments.count:
            return 0
        mean = moments.total / moments.count
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_((moments.squares / moments.count - mean * mean).clamp_min(0).sqrt().to(self.std.dtype))
        return moments.count

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}, alpha={float(self.alpha):g}, dim={self.dim}"


class Sparsified(nn.Module):
    """A layer and a :class:`MeanSparse` on its output (``first``: on its input)."""

    def __init__(self, layer: nn.Module, meansparse: MeanSparse, *, first: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.meansparse = meansparse
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            return self.layer(self.meansparse(x))
        return self.meansparse(self.layer(x))


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be >= 0 (0: the identity)"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be at least 1"


def _selector(layers: str | None) -> Selector:
    if layers is None:
        return is_batchnorm
    globs = [g.strip() for g in layers.split("|") if g.strip()]
    return lambda path, module: any(fnmatch.fnmatchcase(path, g) for g in globs)


def _site(found: ActivationInput, *, first: bool) -> dict[str, Any]:
    """The replay state of one site: the module wrapped, and the operator's channels and input layout."""
    ndim = len(found.shape) + 1
    dim = ndim - 1 if found.kind in ("Linear", "LayerNorm") else 1
    return {"path": found.path, "kind": found.kind, "first": first, "channels": int(found.shape[dim - 1]),
            "dim": dim, "ndim": ndim}


def _insert(net: nn.Module, site: dict[str, Any], alpha: float) -> MeanSparse:
    """Wrap the module at ``site['path']`` (at every path it is registered under) with a new operator."""
    try:
        old = net.get_submodule(site["path"])
    except AttributeError:
        raise HardenError(f"meansparse: the model has no layer '{site['path']}' where the file recorded one; "
                          "the model's code differs from the version the file was made with") from None
    op = MeanSparse(site["channels"], alpha=alpha, dim=site["dim"], ndim=site["ndim"])
    wrapped = Sparsified(old, op, first=site["first"])
    device = next((t.device for t in old.state_dict().values()), None)
    if device is not None:
        op.to(device)
    for path, module in list(net.named_modules(remove_duplicate=False)):
        if module is old:
            parent, _, attr = path.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, attr, wrapped)
    return op


def _listing(paths: list[str], limit: int = 4) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f", ... (+{len(paths) - limit} more)" if len(paths) > limit else "")


class MeanSparseTransform(Transform):
    """Insert MeanSparse operators before activations and compute their statistics from training images."""

    name = "meansparse"
    summary = "before activations, replace small deviations from each channel's training mean by the mean"
    params = (
        Param("alpha", parse_number, default=DEFAULT_ALPHA, check=_non_negative,
              help="threshold in channel standard deviations (0: the identity)"),
        Param("data", str, default=None, help="training images for the statistics (sample, cifar10:ROOT, ...)"),
        Param("n", int, default=1024, check=_at_least_one, help="how many images (a seeded random subset)"),
        Param("seed", int, default=0, help="seed of the subset"),
        Param("split", str, default="train", help="the split of the data the images come from"),
        Param("layers", str, default=None,
              help="layers by path, globs joined by '|' (default: every BatchNorm feeding an activation)"),
    )
    shorthands = (
        Shorthand("--meansparse", "alpha", "ALPHA", "MeanSparse before activations, threshold ALPHA channel "
                  f"standard deviations (the authors use 0.15-0.35; default {DEFAULT_ALPHA}); needs --calibrate.",
                  order=90),
        Shorthand("--calibrate", "data", "DATA", "Training images for the statistics of --meansparse.",
                  modifies="--meansparse"),
        Shorthand("--calibrate-n", "n", "N", "How many images --calibrate reads (a seeded random subset; "
                  "default 1024).", modifies="--meansparse"),
    )
    inserts_straight_through = True

    def apply(self, model: HardenedModel) -> Applied:
        cfg = self.config
        if cfg["data"] is None:
            raise UsageError("meansparse needs training images for its statistics: --calibrate DATA "
                             "(or meansparse:data=DATA, e.g. data=sample)")
        if any(isinstance(m, MeanSparse) for m in model.modules()):
            raise UsageError(f"{model.spec} already has MeanSparse operators; apply meansparse to the model "
                             "without them")
        found = find_activation_inputs(model.net, model.net_input_size(), _selector(cfg["layers"]))
        sites = [_site(f, first=False) for f in found.inputs] + [_site(f, first=True) for f in found.fused]
        if not sites:
            which = f"layer matching '{cfg['layers']}'" if cfg["layers"] else "BatchNorm layer"
            raise UsageError(f"meansparse: no {which} of {model.spec} feeds an activation"
                             + (f" alone ({_listing(found.shared)})" if found.shared else "")
                             + "; choose layers by path with meansparse:layers=GLOB (e.g. 'features.*')")
        batches, calibration = _calibration_images(model, cfg)
        ops = [_insert(model.net, site, cfg["alpha"]) for site in sites]
        counts = _calibrate(model, ops, batches)
        missing = [site["path"] for site, count in zip(sites, counts) if not count]
        if missing:
            raise HardenError(f"meansparse: {_listing(missing)} did not run on the calibration images; "
                              "choose other layers with meansparse:layers=GLOB")
        changes = _change_lines(sites, found.shared, calibration, cfg["alpha"])
        return Applied(changes, {"sites": sites, "calibration": calibration})

    def replay(self, model: HardenedModel, state: dict[str, Any]) -> None:
        """Insert the recorded operators in order (a site inside another one first); their statistics and
        thresholds are buffers, read from the model file (or an entry's checkpoint)."""
        sites = state.get("sites")
        if not isinstance(sites, list) or not sites:
            raise HardenError("meansparse: the recorded state names no sites; write the file again with harden")
        for site in sites:
            _insert(model.net, site, self.config["alpha"])


def _calibration_images(model: HardenedModel, cfg: dict[str, Any]) -> tuple[Iterator[torch.Tensor], dict[str, Any]]:
    """Batches of the images the statistics come from (read as they are used), and how they were chosen."""
    from harden.data import image_dataset, select

    dataset = image_dataset(cfg["data"], cfg["split"], input_size=model.input_size)
    selection = select(dataset, cfg["n"], random_subset=True, seed=cfg["seed"])
    described = {"data": cfg["data"], "split": cfg["split"], "n": selection.n, "selection": "random",
                 "seed": cfg["seed"], "indices_head": selection.indices[:10]}

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, selection.n, BATCH):
            yield torch.stack([dataset[i][0] for i in selection.indices[start:start + BATCH]])

    return batches(), described


@torch.no_grad()
def _calibrate(model: HardenedModel, ops: list[MeanSparse], batches: Iterable[torch.Tensor]) -> list[int]:
    """One pass over ``batches`` in eval mode with every operator collecting (and passing values through)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for op in ops:
        op.start_calibration()
    try:
        with eval_mode(model):
            for x in batches:
                model(x.to(device))
    finally:
        counts = [op.finish_calibration() for op in ops]
    return counts


def _group_line(sites: list[dict[str, Any]], alpha: float, where: str) -> str:
    kinds = "/".join(sorted({s["kind"] for s in sites}))
    n = len(sites)
    return (f"{n} MeanSparse operator{'s' if n > 1 else ''} (alpha={alpha:g}) {where.format(kinds=kinds)}: "
            f"{_listing([s['path'] for s in sites])}")


def _change_lines(sites: list[dict[str, Any]], shared: list[str], calibration: dict[str, Any],
                  alpha: float) -> list[str]:
    """What ``harden apply`` prints: the operators, the layers left alone, the statistics, the BPDA note."""
    after = [s for s in sites if not s["first"]]
    before = [s for s in sites if s["first"]]
    lines = []
    if after:
        lines.append(_group_line(after, alpha, "on the output of {kinds} layers feeding activations"))
    if before:
        lines.append(_group_line(before, alpha, "before the own activation of {kinds} layers"))
    if shared:
        lines.append(f"left alone, their output also read elsewhere: {_listing(shared)}")
    lines.append(f"per-channel mean and std from {calibration['n']} {calibration['split']} images of "
                 f"{calibration['data']} (random subset, seed {calibration['seed']}), eval mode")
    lines.append("note: its gradient is zero where it replaces a value by the mean; evaluate it with "
                 "straight-through gradients (BPDA) as well")
    return lines


def sweep_alpha(model: HardenedModel, data: str, alphas: Iterable[float] = (0.0, 0.1, 0.15, 0.2, 0.25, 0.35), *,
                eps: str | float, n: int = 500, attack: str = "apgd-ce", split: str = "train", seed: int = 1,
                calibrate_n: int = 1024) -> list[dict[str, Any]]:
    """Choose ``alpha`` with BPDA: calibrate once on ``calibrate_n`` images of ``data``'s training split, then
    attack the model at each ``alpha`` (as it is and with straight-through gradients, the lower per image
    counting) on ``n`` images of ``split`` drawn with ``seed``: never the test images a figure is quoted on.

    >>> rows = sweep_alpha(model, "sample", (0.0, 0.25), eps="8/255", n=64)
    >>> [(r["alpha"], r["robust_acc"]) for r in rows]   # alpha 0 is the model as it was
    """
    import harden

    alphas = [float(a) for a in alphas]
    sparse = harden.apply(model, [f"meansparse:alpha={alphas[0]},data={data},n={calibrate_n}"])
    rows = []
    for alpha in alphas:
        for op in (m for m in sparse.modules() if isinstance(m, MeanSparse)):
            op.alpha.fill_(alpha)
        report = harden.evaluate(sparse, data, attack=attack, eps=eps, n=n, split=split, random_subset=True,
                                 seed=seed)
        through = report.extras.get("straight_through") or {}
        rows.append({"alpha": alpha, "clean_acc": report.clean_acc, "robust_acc": report.robust_acc,
                     "as_is_acc": through.get("as_is", {}).get("robust_acc"),
                     "bpda_acc": through.get("bpda", {}).get("robust_acc"), "n": report.n, "split": split})
    return rows
