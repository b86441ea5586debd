"""robustbench: MeanSparse entries: RobustBench's own MeanSparse networks (its wheel's files) are the reference.

A small network of RobustBench's MeanSparse class, with random weights, random batch-norm statistics and
MeanSparse statistics from one pass of RobustBench's own update (thresholds 0.15-0.35, so a real fraction
of values is replaced), saved as its checkpoint, loads through ``harden.load_model('robustbench:...')``
into the base network plus the ``meansparse`` transform and gives the same logits; a harden file of it
replays the transform without data. Full sizes are compared key by key on the meta device.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from harden_plugins.meansparse import MeanSparse
from torch import nn

import harden
from harden.cli import main
from harden.errors import HardenError, UsageError
from harden.searching.driver import _earlier_transforms
from harden.sources.zoo import robustbench as rbz
from harden.sources.zoo.rb_meansparse import wrapped
from harden.sources.zoo.robustbench_entries import C10, C100, IMAGENET
from tests.helpers import randomise_batchnorm, robustbench_architectures, shapes

_SIBLINGS = ("Meansparse_wrn_70_16", "Meansparse_swin_L", "Meansparse_wrn_94_16", "Meansparse_ra_wrn_70_16")


@pytest.fixture(scope="module")
def rb() -> types.SimpleNamespace:
    """RobustBench's MeanSparse files; ``sparsified_model`` with its siblings stubbed (it imports them all)."""
    mods = robustbench_architectures(("Meansparse_wrn_94_16", "Meansparse_wrn_70_16", "utils_architectures"))
    if mods is None:
        pytest.skip("robustbench is not installed (make test installs it: pip install --no-deps robustbench)")
    mods.sparsified_model = robustbench_architectures(("sparsified_model",), stubbed=_SIBLINGS).sparsified_model
    return mods


def _operators(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if type(m).__name__.startswith("MeanSparse") and hasattr(m, "threshold")]


@torch.no_grad()
def _randomise(net: nn.Module, x: torch.Tensor, seed: int) -> nn.Module:
    """Random batch-norm statistics and affine weights, layer scales near 1, then MeanSparse statistics from one
    pass of RobustBench's own update over ``x`` and random thresholds in [0.15, 0.35]."""
    g = torch.Generator().manual_seed(seed)
    randomise_batchnorm(net, g)
    for m in net.modules():
        if isinstance(getattr(m, "gamma", None), nn.Parameter):  # ConvNeXt's layer scale (1e-6 at init)
            m.gamma.copy_(0.5 + torch.rand(m.gamma.shape, generator=g))
    ops = _operators(net.eval())
    for op in ops:
        op.flag_update_statistics.fill_(1)
        op.batch_num.fill_(1)
    net(x)
    for op in ops:
        op.flag_update_statistics.fill_(0)
        op.threshold.fill_(0.15 + 0.2 * float(torch.rand(1, generator=g)))
    return net


@torch.no_grad()
def _replaced(net: nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """RobustBench's network's logits for ``x``, and the fraction of its operators' inputs replaced by the mean."""
    counts = []
    hooks = [op.register_forward_hook(lambda m, i, o: counts.append(((o != i[0]).sum().item(), o.numel())))
             for op in _operators(net)]
    logits = net(x)
    for hook in hooks:
        hook.remove()
    return sum(c for c, _ in counts) / sum(n for _, n in counts), logits


def _tiny(monkeypatch: pytest.MonkeyPatch, key: str, kwargs: dict, input_size: int | None = None) -> str:
    base = rbz.find_entry(key)
    entry = dataclasses.replace(base, name=f"Tiny{base.name}", kwargs={**base.kwargs, **kwargs},
                                input_size=input_size or base.input_size)
    monkeypatch.setitem(rbz._BY_KEY, entry.key.lower(), entry)
    return entry.key


def _dm_wrn(rb, key: str):  # noqa: ANN202 - (entry, RobustBench's network)
    if key.startswith("cifar100"):
        return rb.Meansparse_wrn_70_16.DMWideResNet(num_classes=100, depth=10, width=2, activation_fn=nn.SiLU,
                                                    mean=C100[0], std=C100[1])
    cls = rb.Meansparse_wrn_94_16.MeanSparse_DMWideResNet if "94-16" in key else rb.Meansparse_wrn_70_16.DMWideResNet
    return cls(num_classes=10, depth=10, width=2, activation_fn=nn.SiLU, mean=C10[0], std=C10[1])


DM_WRN = ("Amini2024MeanSparse_S-WRN-94-16", "cifar10/L2/Amini2024MeanSparse_S-WRN-70-16",
          "cifar100/Linf/Amini2024MeanSparse_S-WRN-70-16")


@pytest.mark.parametrize("key", DM_WRN)
def test_dm_wrn_entries_load_robustbench_s_checkpoint_with_identical_logits(
        rb, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref = _randomise(_dm_wrn(rb, key), x, seed=2)
    replaced, want = _replaced(ref, x)
    assert 0.05 < replaced < 0.5  # the operators really replace values
    torch.save({"model_state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "ms.pt")
    model = harden.load_model(f"robustbench:{_tiny(monkeypatch, key, {'depth': 10, 'width': 2})}",
                              weights=tmp_path / "ms.pt").eval()
    with torch.no_grad():
        got = model(x)
    assert want.std() > 0.05
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    entry = model.provenance.transforms[0]
    ours = [m for m in model.modules() if isinstance(m, MeanSparse)]
    assert (entry.name, entry.from_source, len(ours)) == ("meansparse", True, len(_operators(ref)))
    _check_replay_and_thresholds(model, x, tmp_path)


def _check_replay_and_thresholds(model: harden.HardenedModel, x: torch.Tensor, tmp_path: Path) -> None:
    """A harden file replays the operators without data (same logits); with thresholds 0 the logits change."""
    harden.save(model, tmp_path / "ms.safetensors")
    again = harden.load(tmp_path / "ms.safetensors")
    with torch.no_grad():
        want = model(x)
        assert torch.equal(again(x), want)
        for op in [m for m in again.modules() if isinstance(m, MeanSparse)]:
            op.alpha.zero_()
        assert (again(x) - want).abs().max() > 1e-3 * float(want.abs().max())  # 100x the tolerance above
    assert again.provenance.transforms[0].from_source and rbz.published(again.provenance) is not None
    assert _earlier_transforms(again) == []  # a search's best.yaml builds the entry again: not applied twice
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "ms.safetensors")]).output
    assert "meansparse  [harden]  (part of the model its source builds)" in shown


def test_convnext_entry_loads_robustbench_s_checkpoint_with_identical_logits(
        rb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    from harden.sources.library import build_timm

    depths = {"depths": (1, 1, 1, 1)}  # convnext_large's widths, which RobustBench's insertion has built in
    torch.manual_seed(0)
    ref = rb.utils_architectures.normalize_model(timm.create_model("convnext_large", **depths), *IMAGENET)
    rb.sparsified_model.add_custom_layer_imagenet(ref, rb.sparsified_model.MeanSparse_imagenet)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ref = _randomise(ref, x, seed=4)
    replaced, want = _replaced(ref, x)
    assert len(_operators(ref)) == 8 and 0.05 < replaced < 0.5
    torch.save(ref.state_dict(), tmp_path / "convnext.pt")
    monkeypatch.setitem(rbz._BUILDERS, "timm", lambda e, n: build_timm(e.kwargs["name"], n, False, depths).net)
    key = _tiny(monkeypatch, "imagenet/Linf/Amini2024MeanSparse_ConvNeXt-L", {}, input_size=32)
    model = harden.load_model(f"robustbench:{key}", weights=tmp_path / "convnext.pt").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        for op in [m for m in model.modules() if isinstance(m, MeanSparse)]:
            op.alpha.zero_()
        assert (model(x) - want).abs().max() > 1e-3 * float(want.abs().max())


@pytest.mark.parametrize("layout", ["channels first", "channels last"])
def test_the_operator_equals_robustbench_s_bit_for_bit(rb, layout: str) -> None:
    g = torch.Generator().manual_seed(5)
    ref = rb.sparsified_model.MeanSparse_imagenet(6) if layout == "channels last" \
        else rb.Meansparse_wrn_94_16.MeanSparse(6)
    ref.running_mean.copy_(torch.randn(6, generator=g))
    ref.running_var.copy_(torch.rand(6, generator=g) + 0.1)
    ref.threshold.fill_(0.3)
    x = torch.randn(4, 5, 5, 6, generator=g) if layout == "channels last" else torch.randn(4, 6, 5, 5, generator=g)
    op = MeanSparse(6, alpha=0.0, dim=3 if layout == "channels last" else 1)
    op.load_state_dict({"mean": ref.running_mean, "std": ref.running_var.sqrt(), "alpha": ref.threshold})
    with torch.no_grad():
        want = ref(x)
        assert torch.equal(op(x), want) and 0.05 < (want != x).float().mean() < 0.5


# ------------------------------------------------------------------------------------- refusals


def test_a_checkpoint_still_collecting_statistics_is_refused(rb, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ref = rb.Meansparse_wrn_94_16.MeanSparse_DMWideResNet(depth=10, width=1, activation_fn=nn.SiLU)
    ref.meansparse_end.flag_update_statistics.fill_(1)
    torch.save(ref.state_dict(), tmp_path / "ms.pt")
    key = _tiny(monkeypatch, "Amini2024MeanSparse_S-WRN-94-16", {"depth": 10, "width": 1})
    with pytest.raises(HardenError, match="'meansparse_end' is still collecting statistics") as err:
        harden.load_model(f"robustbench:{key}", weights=tmp_path / "ms.pt")
    assert "\n" not in str(err.value)


def test_the_base_entry_s_checkpoint_is_refused_with_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _tiny(monkeypatch, "Bartoldson2024Adversarial_WRN-94-16", {"depth": 10, "width": 1})
    torch.save(harden.load_model(f"robustbench:{base}").net.state_dict(), tmp_path / "base.pt")
    key = _tiny(monkeypatch, "Amini2024MeanSparse_S-WRN-94-16", {"depth": 10, "width": 1})
    with pytest.raises(HardenError, match="no MeanSparse operators .* robustbench:Bartoldson2024Adversarial_WRN-94-16"):
        harden.load_model(f"robustbench:{key}", weights=tmp_path / "base.pt")


def test_entries_without_a_faithful_build_say_why_in_one_line() -> None:
    for key, why in (("Amini2024MeanSparse_Ra_WRN_70_16", "RaWideResNet-70-16"),
                     ("imagenet/Linf/Amini2024MeanSparse_Swin-L", "residual stream")):
        with pytest.raises(UsageError, match=why) as err:
            harden.load_model(f"robustbench:{key}")
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------- full size

_FULL = {
    "Amini2024MeanSparse_S-WRN-94-16": lambda rb: rb.Meansparse_wrn_94_16.MeanSparse_DMWideResNet(depth=94, width=16),
    "cifar100/Linf/Amini2024MeanSparse_S-WRN-70-16": lambda rb: rb.Meansparse_wrn_70_16.DMWideResNet(
        num_classes=100, depth=70, width=16),
}


def _convnext_large(rb) -> nn.Module:  # noqa: ANN001
    import timm

    net = rb.utils_architectures.normalize_model(timm.create_model("convnext_large"), *IMAGENET)
    rb.sparsified_model.add_custom_layer_imagenet(net, rb.sparsified_model.MeanSparse_imagenet)
    return net


@pytest.mark.parametrize("key", [*_FULL, "imagenet/Linf/Amini2024MeanSparse_ConvNeXt-L"])
def test_full_size_keys_and_shapes(rb, key: str) -> None:
    entry = rbz.find_entry(key)
    with torch.device("meta"):
        ref = _FULL.get(key, _convnext_large)(rb)
        model = harden.load_model(f"robustbench:{key}")
        built = rbz.build_entry(entry)
    # (meta tensors hold no values: the flags' check is tested on real files above)
    skip = ("flag_update_statistics", "normalize.mean", "normalize.std")
    ours = built.adapt_state({k: v for k, v in ref.state_dict().items() if not k.endswith(skip)})
    assert shapes(model.net) == {k: tuple(v.shape) for k, v in ours.items()}
    assert len(_operators(ref)) == len(built.transforms[0].state["sites"])


def test_wrapped_keys() -> None:
    sites = ["layer.0.block.0.batchnorm_0", "layer.0.block.0", "batchnorm"]
    assert wrapped("layer.0.block.0.batchnorm_0.weight", sites) == "layer.0.block.0.layer.batchnorm_0.layer.weight"
    assert wrapped("layer.0.block.0.conv_0.weight", sites) == "layer.0.block.0.layer.conv_0.weight"
    assert wrapped("batchnorm.bias", sites) == "batchnorm.layer.bias" and wrapped("logits.bias", sites) == "logits.bias"
