"""robustbench: entries: RobustBench's own architecture code (its PyPI wheel, loaded file by file) is the reference.

Each family: a randomly initialised network in RobustBench's layout, with random batch-norm statistics,
is saved the way RobustBench's files are (containers, ``module.`` prefixes, normalization buffers, the
unused ``sub_block1``), loaded through ``harden.load_model('robustbench:...', weights=...)`` and must give
the same logits on [0, 1] inputs. Small variants keep it fast; full sizes are compared on the meta device.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import harden
from harden.errors import HardenError, UsageError
from harden.provenance import ModelEntry, Provenance, TransformEntry
from harden.sources.zoo import robustbench as rbz
from harden.sources.zoo.robustbench_entries import C10, C10_ENGSTROM
from tests.helpers import randomise_batchnorm, robustbench_architectures

_ARCH_FILES = ("wide_resnet", "resnet", "dm_wide_resnet", "robust_wide_resnet", "robust_resnet",
               "utils_architectures")


@pytest.fixture(scope="module")
def rb() -> types.SimpleNamespace:
    """RobustBench's architecture modules, imported by path (the package's own __init__ needs more deps)."""
    mods = robustbench_architectures(_ARCH_FILES)
    if mods is None:
        pytest.skip("robustbench is not installed (make test installs it: pip install --no-deps robustbench)")
    return mods


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    randomise_batchnorm(net, torch.Generator().manual_seed(seed))
    return net.eval()


class _Normalized(nn.Module):
    """How RobustBench wraps an entry with its own mean/std buffers (``mu``/``sigma``) around a network."""

    def __init__(self, net: nn.Module, mean: tuple, std: tuple, shape: tuple = (1, 3, 1, 1)) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mu", torch.tensor(mean).view(*shape))
        self.register_buffer("sigma", torch.tensor(std).view(*shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mu) / self.sigma)

    def checkpoint(self) -> dict[str, torch.Tensor]:  # keys as the entry's subclass has them
        return {"mu": self.mu, "sigma": self.sigma, **self.net.state_dict()}


def _case(rb, family: str):  # noqa: ANN202 - (entry to copy, small kwargs, reference, checkpoint)
    """A small network of ``family`` in RobustBench's layout and the checkpoint its file would hold."""
    if family == "wrn-sub_block1":  # Carmon2019Unlabeled: {'state_dict': {'module.' + key}}
        ref = rb.wide_resnet.WideResNet(depth=16, widen_factor=2, sub_block1=True)
        return "Carmon2019Unlabeled", {"depth": 16, "width": 2, "sub_block1": True}, ref, \
            lambda r: {"state_dict": {f"module.{k}": v for k, v in r.state_dict().items()}}
    if family == "wrn-normalized":  # Rice2020Overfitting (WRN-34-20 with mu/sigma)
        ref = _Normalized(rb.wide_resnet.WideResNet(depth=10, widen_factor=2), *C10)
        return "Rice2020Overfitting", {"depth": 10, "width": 2}, ref, lambda r: r.checkpoint()
    if family == "preact-wong":  # PreActBlock (shortcut from the raw input), wrapped with mu/sigma
        ref = _Normalized(rb.resnet.PreActResNet(rb.resnet.PreActBlock, [1, 1, 1, 1]), *C10)
        return "Wong2020Fast", {"activated_shortcut": False, "bn_before_fc": False, "layers": (1, 1, 1, 1)}, ref, \
            lambda r: r.checkpoint()
    if family == "preact-v2-bn":  # PreActBlockV2 with bn before the classifier, a 'last'/'best' container
        return "cifar100/Linf/Addepalli2021Towards_PARN18", {
            "activated_shortcut": True, "bn_before_fc": True, "layers": (1, 1, 1, 1)}, \
            rb.resnet.PreActResNet(rb.resnet.PreActBlockV2, [1, 1, 1, 1], num_classes=100, bn_before_fc=True), \
            lambda r: {"last": r.state_dict(), "best": {}}
    if family == "resnet18":
        ref = rb.resnet.ResNet(rb.resnet.BasicBlock, [1, 1, 1, 1])
        return "Sehwag2021Proxy_R18", {"layers": (1, 1, 1, 1), "bottleneck": False}, ref, \
            lambda r: {"model": {f"model.{k}": v for k, v in r.state_dict().items()}}
    if family == "resnet50":  # Engstrom2019Robustness: bottlenecks and its own std
        ref = _Normalized(rb.resnet.ResNet(rb.resnet.Bottleneck, [1, 1, 1, 1]), *C10_ENGSTROM)
        return "cifar10/L2/Engstrom2019Robustness", {"layers": (1, 1, 1, 1), "bottleneck": True}, ref, \
            lambda r: r.checkpoint()
    if family == "robust-wrn":  # Huang2021Exploring's WRN-34-R layout, narrowed
        ref = rb.robust_wide_resnet.RobustWideResNet(channel_configs=[16, 32, 64, 48], depth_configs=[2, 1, 2])
        return "Huang2021Exploring", {"channels": (16, 32, 64, 48), "depths": (2, 1, 2)}, ref, lambda r: r.state_dict()
    if family == "wrn-a":  # Huang2022Revisiting's RobustBench class with its own (3, 1, 1) mu/sigma buffers
        ref = rb.robust_resnet.PreActResNet(
            channel_configs=[16, 32, 64, 64], depth_configs=[2, 1, 1], activations=("SiLU",) * 3, pre_process=True)
        return "Huang2022Revisiting_WRN-A4", {"depths": (2, 1, 1), "widths": (2, 2, 1), "activation": "silu"}, ref, \
            lambda r: r.state_dict()
    if family == "dm-wrn":  # Gowal2020Uncovering: swish, normalization inside, SAME padding
        ref = rb.dm_wide_resnet.DMWideResNet(depth=16, width=2, activation_fn=rb.dm_wide_resnet.Swish)
        return "Gowal2020Uncovering_70_16", {"depth": 16, "width": 2}, ref, lambda r: r.state_dict()
    if family == "dm-wrn-cifar100":
        ref = rb.dm_wide_resnet.DMWideResNet(
            num_classes=100, depth=10, width=2, activation_fn=nn.SiLU, mean=rb.dm_wide_resnet.CIFAR100_MEAN,
            std=rb.dm_wide_resnet.CIFAR100_STD)
        return "cifar100/Linf/Wang2023Better_WRN-28-10", {"depth": 10, "width": 2}, ref, lambda r: r.state_dict()
    if family == "dm-preact":  # only depth 18 exists; full size is cheap enough at 32x32
        ref = rb.dm_wide_resnet.DMPreActResNet(activation_fn=rb.dm_wide_resnet.Swish)
        return "Rebuffi2021Fixing_R18_ddpm", {"depth": 18}, ref, lambda r: r.state_dict()
    raise AssertionError(family)


FAMILIES = ("wrn-sub_block1", "wrn-normalized", "preact-wong", "preact-v2-bn", "resnet18", "resnet50", "robust-wrn",
            "wrn-a", "dm-wrn", "dm-wrn-cifar100", pytest.param("dm-preact", marks=pytest.mark.slow))


def _tiny_entry(monkeypatch: pytest.MonkeyPatch, base_key: str, kwargs: dict) -> str:
    base = rbz.find_entry(base_key)
    entry = dataclasses.replace(base, name=f"Tiny{base.name}", kwargs=kwargs)
    monkeypatch.setitem(rbz._BY_KEY, entry.key.lower(), entry)
    return entry.key


@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_strictly_with_identical_logits(rb, family: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    base_key, kwargs, ref, checkpoint = _case(rb, family)
    ref = _randomise(ref, seed=1)
    path = tmp_path / "ckpt.pt"
    torch.save(checkpoint(ref), path)
    key = _tiny_entry(monkeypatch, base_key, kwargs)
    model = harden.load_model(f"robustbench:{key}", weights=path).eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = ref(x), model(x)
    assert want.std() > 0.05  # the logits are not trivial (random BN statistics, random weights)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # the input really goes through the entry's normalization: without it, the logits differ
    if model.provenance.model.mean != [0.0, 0.0, 0.0]:
        with torch.no_grad():
            raw = model.net(x)
        assert (raw - want).abs().max() > 1e-2 * float(want.abs().max())


# full size: harden's network against RobustBench's class, keys and shapes, on the meta device
_FULL = {
    "Carmon2019Unlabeled": lambda rb: rb.wide_resnet.WideResNet(depth=28, widen_factor=10, sub_block1=True),
    "cifar100/Linf/Rice2020Overfitting": lambda rb: rb.resnet.PreActResNet(
        rb.resnet.PreActBlock, [2, 2, 2, 2], num_classes=100, bn_before_fc=True, out_shortcut=True),
    "Wong2020Fast": lambda rb: rb.resnet.PreActResNet(rb.resnet.PreActBlock, [2, 2, 2, 2]),
    "Sehwag2021Proxy_R18": lambda rb: rb.resnet.ResNet18(),
    "cifar10/L2/Augustin2020Adversarial": lambda rb: rb.resnet.ResNet(rb.resnet.Bottleneck, [3, 4, 6, 3]),
    "Huang2021Exploring": lambda rb: rb.robust_wide_resnet.RobustWideResNet(
        channel_configs=[16, 320, 640, 512], depth_configs=[5, 5, 5]),
    "Huang2022Revisiting_WRN-A4": lambda rb: rb.robust_resnet.get_model("WRN-A4"),
    "Gowal2020Uncovering_70_16": lambda rb: rb.dm_wide_resnet.DMWideResNet(depth=70, width=16),
    "Rebuffi2021Fixing_R18_ddpm": lambda rb: rb.dm_wide_resnet.DMPreActResNet(),
}


@pytest.mark.parametrize("key", list(_FULL))
def test_full_size_keys_and_parameter_counts(rb, key: str) -> None:
    entry = rbz.find_entry(key)
    with torch.device("meta"):
        ref = _FULL[key](rb)
        ours = rbz.build_entry(entry).net
    # (meta tensors hold no values: the normalization buffers' check is tested on real files above)
    ref_state = rbz.adapt_state(entry, {k: v for k, v in ref.state_dict().items() if k not in ("mu", "sigma")})
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref_state.items()}
    dead = sum(p.numel() for n, p in ref.named_parameters() if n.startswith("sub_block1."))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) - dead


@pytest.mark.slow
def test_imagenet_entry_unwraps_normalize_model(rb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    ref = rb.utils_architectures.normalize_model(torchvision.models.resnet18(num_classes=1000),
                                                 (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ref = _randomise(ref, seed=3)
    torch.save({"model": ref.state_dict()}, tmp_path / "r18.pt")
    base = rbz.find_entry("imagenet/Linf/Salman2020Do_R18")
    assert base.input_size == 224 and base.num_classes == 1000
    entry = dataclasses.replace(base, name="TinySalman", input_size=64)
    monkeypatch.setitem(rbz._BY_KEY, entry.key.lower(), entry)
    model = harden.load_model(f"robustbench:{entry.key}", weights=tmp_path / "r18.pt").eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ errors


def _tiny_wrn_file(rb, tmp_path: Path, **extra: torch.Tensor) -> Path:
    ref = rb.wide_resnet.WideResNet(depth=10, widen_factor=1)
    torch.save({**ref.state_dict(), **extra}, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_wrong_normalization_buffers_are_refused(rb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _tiny_entry(monkeypatch, "Rice2020Overfitting", {"depth": 10, "width": 1})
    path = _tiny_wrn_file(rb, tmp_path, mu=torch.full((1, 3, 1, 1), 0.5), sigma=torch.full((1, 3, 1, 1), 0.5))
    with pytest.raises(HardenError, match="input mean .* is not the"):
        harden.load_model(f"robustbench:{key}", weights=path)


def test_mismatched_checkpoint_is_one_line(rb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _tiny_entry(monkeypatch, "Standard", {"depth": 16, "width": 1})  # the file is a WRN-10-1
    with pytest.raises(HardenError) as err:
        harden.load_model(f"robustbench:{key}", weights=_tiny_wrn_file(rb, tmp_path))
    text = str(err.value)
    assert "\n" not in text and "missing" in text and "block1.layer.1.bn1.weight" in text


def test_pretrained_missing_arch_and_unknown_names() -> None:
    with pytest.raises(UsageError, match="model zoo .* --weights"):
        harden.load_model("robustbench:Carmon2019Unlabeled", pretrained=True)
    with pytest.raises(UsageError, match="architecture harden does not have .*BoostingWideResNet"):
        harden.load_model("robustbench:Pang2020Boosting")
    with pytest.raises(UsageError, match="did you mean.*Carmon2019Unlabeled"):
        harden.load_model("robustbench:Carmon2019Unlabelled")
    with pytest.raises(UsageError, match="100 classes"):
        harden.load_model("robustbench:cifar100/Linf/Rebuffi2021Fixing_R18_ddpm", num_classes=10)


def test_published_figures_come_from_the_registry() -> None:
    e = rbz.find_entry("carmon2019unlabeled")  # case-insensitive
    assert (e.clean_acc, e.autoattack_acc, e.eps, e.citation) == (89.69, 59.53, "8/255", "Carmon et al., NeurIPS 2019")
    assert rbz.find_entry("imagenet/Linf/Salman2020Do_R50").autoattack_acc == 34.96
    entry = ModelEntry(spec="robustbench:Carmon2019Unlabeled", source="robustbench", name="Carmon2019Unlabeled",
                       num_classes=10, input_size=[3, 32, 32], mean=[0.0] * 3, std=[1.0] * 3, weights="c.pt")
    prov = Provenance(model=entry)
    random_weights = Provenance(model=dataclasses.replace(entry, weights=None))
    assert rbz.published(random_weights) is None  # random weights
    pub = rbz.published(prov)
    assert pub is not None and pub["clean_acc"] == 89.69 and pub["n_examples"] == 10000
    stride_mod = TransformEntry(name="stride-mod", provider="harden")
    assert rbz.published(dataclasses.replace(prov, transforms=[stride_mod])) is None
    line = rbz.published_line(pub, "L2", "0.5")
    assert "59.53%" in line and "this run used L2" in line


# ------------------------------------------------------------------------ transforms, files, CLI


def _run(*args: str):
    from click.testing import CliRunner

    from harden.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("base_key,kwargs,activation", [
    ("Gowal2020Uncovering_70_16", {"depth": 10, "width": 1}, "activation:name=relu,source=silu"),
    ("Carmon2019Unlabeled", {"depth": 10, "width": 1, "sub_block1": True}, "activation:name=silu"),
])
def test_transforms_apply_and_files_round_trip(base_key: str, kwargs: dict, activation: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = _tiny_entry(monkeypatch, base_key, kwargs)
    model = harden.load_model(f"robustbench:{key}")
    _randomise(model, seed=5)
    hardened = harden.apply(model, ["stride-mod", activation]).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        feats = hardened.net.block3(hardened.net.block2(hardened.net.block1(hardened.net.conv1(x)))) \
            if hasattr(hardened.net, "block1") else hardened.net.layer(hardened.net.init_conv(x))
    assert tuple(feats.shape[-2:]) == (16, 16)  # one downsampling step fewer: 8x8 -> 16x16 before pooling
    harden.save(hardened, tmp_path / "h.safetensors")
    again = harden.load(tmp_path / "h.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(again(x), hardened(x))
    assert harden.provenance_of(again).model.source == "robustbench"


@pytest.mark.slow
def test_width_transforms_on_the_shortcut_layout_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _tiny_entry(monkeypatch, "Sehwag2021Proxy_R18", {"layers": (1, 1, 1, 1), "bottleneck": False})
    model = _randomise(harden.load_model(f"robustbench:{key}"), seed=8)
    hardened = harden.apply(model, ["last-stage-width:ratio=0.5", "stage-widths:widths=1/1/1.5/1", "upsample:factor=2"])
    assert hardened.net.linear.in_features == 256  # the last stage kept half of its 512 channels
    harden.save(hardened, tmp_path / "w.safetensors")
    again = harden.load(tmp_path / "w.safetensors").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(again(x), hardened.eval()(x))


@pytest.mark.slow
def test_cli_list_and_evaluate_show_published_figures(rb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = _run("list")
    assert listing.exit_code == 0
    assert "cifar10/Linf/Carmon2019Unlabeled" in listing.output and "89.69 / 59.53" in listing.output
    key = _tiny_entry(monkeypatch, "Carmon2019Unlabeled", {"depth": 10, "width": 1, "sub_block1": True})
    ref = _randomise(rb.wide_resnet.WideResNet(depth=10, widen_factor=1, sub_block1=True), seed=7)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "c.pt")
    res = _run("evaluate", f"robustbench:{key}", "--weights", str(tmp_path / "c.pt"), "--data", "sample", "-n", "8",
               "--random-subset", "--attack", "fgsm", "--device", "cpu", "--quiet",
               "--report", str(tmp_path / "r.json"))
    assert res.exit_code == 0, res.output
    assert "published: clean 89.69%, AutoAttack 59.53% at Linf eps=8/255 on 10000 test images" in res.output
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert report["published"]["autoattack_acc"] == 59.53 and report["published"]["entry"] == key
    assert report["n"] == 8 and "clean_acc" in report


def test_cli_pretrained_and_missing_architecture_are_one_line(tmp_path: Path) -> None:
    res = _run("evaluate", "robustbench:Carmon2019Unlabeled", "--pretrained", "--data", "sample")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--weights" in res.output
    res = _run("apply", "robustbench:Ding2020MMA", "--stride-mod", "-o", str(tmp_path / "x.safetensors"))
    assert res.exit_code == 2 and "per-image standardisation" in res.output and res.output.count("\n") == 1


# ------------------------------------------------------------- best-known figures (RobustBench's `external`)

# (clean, AutoAttack, external, unreliable) as RobustBench's model_info files have them (commit 78fcc9e)
_RB_FIGURES = {
    "cifar10/Linf/Kang2021Stable": (93.73, 71.28, 64.20, True),
    "cifar10/Linf/Amini2024MeanSparse_S-WRN-94-16": (93.60, 75.28, 73.10, False),
    "cifar10/L2/Amini2024MeanSparse_S-WRN-70-16": (95.51, 87.28, 84.33, False),
    "cifar10/Linf/Gowal2020Uncovering_70_16": (85.29, 57.20, 57.14, False),
    "cifar100/Linf/Wang2023Better_WRN-70-16": (75.22, 42.67, 42.66, False),
    "imagenet/Linf/Amini2024MeanSparse_Swin-L": (78.80, 62.12, 58.92, False),
    "cifar10/Linf/Bartoldson2024Adversarial_WRN-94-16": (93.68, 73.71, None, False),
    "cifar10/Linf/Carmon2019Unlabeled": (89.69, 59.53, None, False),
}


def test_best_known_figures_are_robustbench_s() -> None:
    for key, want in _RB_FIGURES.items():
        e = rbz.find_entry(key)
        assert (e.clean_acc, e.autoattack_acc, e.external, e.unreliable) == want, key
    ms = rbz.find_entry("Amini2024MeanSparse_S-WRN-94-16")
    assert ms.kwargs["meansparse"] == "dm-wrn" and ms.external_by == "BPDA"
    assert sum(e.external is not None for e in rbz.ENTRIES) == 21 and sum(e.unreliable for e in rbz.ENTRIES) == 1


def test_best_known_is_never_above_autoattack() -> None:
    from harden.sources.zoo.robustbench_entries import _BEST_KNOWN

    assert set(_BEST_KNOWN) <= {e.key for e in rbz.ENTRIES}  # no figure for an entry harden does not list
    for e in rbz.ENTRIES:
        if e.external is not None:  # RobustBench has no exception: every external is below AutoAttack's
            assert e.autoattack_acc is not None and e.external < e.autoattack_acc and e.external_by, e.key
            assert e.best_known_acc == e.external
        else:
            assert e.best_known_acc == e.autoattack_acc and not e.external_by


def _published(name: str) -> dict:
    entry = ModelEntry(spec=f"robustbench:{name}", source="robustbench", name=name, num_classes=10,
                       input_size=[3, 32, 32], mean=[0.0] * 3, std=[1.0] * 3, weights="w.pt")
    pub = rbz.published(Provenance(model=entry))
    assert pub is not None
    return pub


def test_list_and_summary_line_show_best_known_and_unreliable() -> None:
    lines = {line.split()[0]: line for line in rbz.entry_lines()}
    kang = lines["cifar10/Linf/Kang2021Stable"]
    assert "93.73 / 71.28 / 64.20" in kang and kang.endswith("[UNRELIABLE]") and "transfer APGD" in kang
    assert "89.69 / 59.53 /     -" in lines["cifar10/Linf/Carmon2019Unlabeled"]
    assert "93.60 / 75.28 / 73.10" in lines["cifar10/Linf/Amini2024MeanSparse_S-WRN-94-16"]
    assert sum("[UNRELIABLE]" in line for line in lines.values()) == 1
    pub = _published("Kang2021Stable")
    kept = {"entry", "clean_acc", "autoattack_acc", "threat_model", "eps", "n_examples", "citation", "source"}
    assert kept < set(pub)  # the report's keys so far are all there, the new ones added
    assert (pub["external"], pub["unreliable"], pub["best_known"], pub["best_known_acc"]) == \
        (64.20, True, "external", 64.20)
    line = rbz.published_line(pub)
    assert "AutoAttack 71.28%, best known 64.20% (AutoAttack + transfer APGD) at Linf" in line and "UNRELIABLE" in line
    line = rbz.published_line(_published("Amini2024MeanSparse_S-WRN-94-16"))
    assert "AutoAttack 75.28%, best known 73.10% (BPDA) at Linf eps=8/255" in line and "UNRELIABLE" not in line
    carmon = _published("Carmon2019Unlabeled")
    assert (carmon["external"], carmon["unreliable"], carmon["best_known"], carmon["best_known_acc"]) == \
        (None, False, "autoattack_acc", 59.53)
    old = {k: carmon[k] for k in kept}
    for pub in (carmon, old):  # a report written before these keys existed reads the same
        assert rbz.published_line(pub).startswith("published: clean 89.69%, AutoAttack 59.53% at Linf eps=8/255 on")
        assert "best known" not in rbz.published_line(pub)


def test_cli_list_shows_best_known_and_unreliable() -> None:
    res = _run("list")
    assert res.exit_code == 0 and "best-known" in res.output
    kang = next(line for line in res.output.splitlines() if "cifar10/Linf/Kang2021Stable" in line)
    assert "71.28 / 64.20" in kang and "[UNRELIABLE]" in kang


def _script():  # noqa: ANN202 - scripts/robustbench_figures.py as a module
    path = Path(__file__).resolve().parents[1] / "scripts" / "robustbench_figures.py"
    spec = importlib.util.spec_from_file_location("robustbench_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refresh_script_reproduces_a_synthetic_model_info(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json
    import subprocess

    script, root = _script(), tmp_path / "rb"
    files = {"cifar10/Linf/A": {"clean_acc": "93.73", "autoattack_acc": "71.28", "external": "64.20",
                                "unreliable": True, "footnote": "64.20% ... AutoAttack + transfer APGD from X"},
             "cifar10/Linf/B": {"clean_acc": "90.00", "autoattack_acc": "52.84", "external": "52.84"},
             "cifar10/L2/C": {"clean_acc": "80.5", "autoattack_acc": "60.25", "unreliable": False},
             "cifar100/Linf/D": {"clean_acc": "75.13", "autoattack_acc": "44.78", "external": "42.25",
                                 "footnote": "42.25% robust accuracy is due to APGD (both versions) with BPDA."}}
    for key, info in files.items():
        (root / "model_info" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "model_info" / f"{key}.json").write_text(json.dumps(info))
    rows = {"cifar10/Linf/A": (93.73, 71.28), "cifar10/Linf/B": (90.0, 52.84), "cifar10/L2/C": (80.5, 60.0),
            "cifar100/Linf/D": (75.13, 44.78), "cifar10/Linf/Gone": (1.0, 0.5)}
    want = {"cifar10/Linf/A": (64.20, True, "AutoAttack + transfer APGD"), "cifar100/Linf/D": (42.25, False, "BPDA")}
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "figures"]):
        subprocess.run([*git, *cmd], check=True, capture_output=True)
    for source in (root, root / ".git"):  # a checkout, and the bare git directory a mirror is
        entries = tmp_path / "entries.py"
        entries.write_text(f"X = 1\n{script.BEGIN}\n_BEST_KNOWN = {{'stale': (1.0, True, '')}}\n{script.END}\nY = 2\n")
        assert script.main([str(source), "--write", "--entries", str(entries)], rows=rows) == 0
        out = capsys.readouterr().out
        assert "cifar10/Linf/Gone: not in RobustBench's model_info" in out and "4 of 5 entries read" in out
        assert "cifar10/L2/C: harden has 80.5 / 60.0, RobustBench 80.5 / 60.25" in out
        namespace: dict = {}
        exec(entries.read_text(), namespace)  # noqa: S102 - the file the script wrote
        assert namespace["_BEST_KNOWN"] == want and (namespace["X"], namespace["Y"]) == (1, 2)
        assert "(64.20, True, " in entries.read_text()  # the figure as RobustBench writes it
