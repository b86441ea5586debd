"""RobustBench entries harden can build: architecture, normalization and published figures.

Each row is ``(name, architecture, normalization, clean %, AutoAttack %, citation)``; the figures and
citations are those of RobustBench's ``model_info/DATASET/THREAT/NAME.json`` (the leaderboard's
AutoAttack evaluation on the full test set). Adding an entry is one row. ``MISSING("what")`` marks an
entry whose architecture harden does not have, so that ``robustbench:NAME`` says so in one line.

``_BEST_KNOWN`` (generated: ``python scripts/robustbench_figures.py ROBUSTBENCH --write``) holds the
same files' ``external`` figure, the best-known robust accuracy where another attack found less than
AutoAttack, the attack that found it, and the ``unreliable`` flag; AutoAttack's figure is an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Norm = tuple[tuple[float, float, float], tuple[float, float, float]]

NONE: Norm = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # the network takes images in [0, 1] as they are
HALF: Norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # 2x - 1
C10: Norm = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
C10_ENGSTROM: Norm = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
C10_AUGUSTIN: Norm = ((0.4913997551666284, 0.48215855929893703, 0.4465309133731618),
                      (0.24703225141799082, 0.24348516474564, 0.26158783926049628))
C10_RONY: Norm = ((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))
C100: Norm = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
C100_CHEN: Norm = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
C100_PRECISE: Norm = ((0.5070751592371323, 0.48654887331495095, 0.4409178433670343),
                      (0.2673342858792401, 0.2564384629170883, 0.27615047132568404))
IMAGENET: Norm = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

Arch = tuple[str | None, dict[str, Any]]


def WRN(depth: int, width: int, sub_block1: bool = False) -> Arch:  # noqa: N802 - reads like the table
    """RobustBench's (TRADES') WideResNet; ``sub_block1``: the checkpoint carries an unused extra first stage."""
    return "wrn", {"depth": depth, "width": width, "sub_block1": sub_block1}


def DM_WRN(depth: int, width: int) -> Arch:  # noqa: N802
    """DeepMind's WideResNet with SiLU (swish) activations."""
    return "dm-wrn", {"depth": depth, "width": width}


def TV(name: str) -> Arch:  # noqa: N802
    """A torchvision ImageNet architecture."""
    return "tv", {"name": name}


def TIMM(name: str) -> Arch:  # noqa: N802
    """A timm ImageNet architecture."""
    return "timm", {"name": name}


def MISSING(what: str) -> Arch:  # noqa: N802
    """An architecture harden does not have (the entry is listed, building it is refused)."""
    return None, {"missing": what}


AMINI = "Amini et al., arXiv, Jun 2024"  # MeanSparse
MS_RAWRN = "RaWideResNet-70-16, Peng2023Robust's network, the base of its MeanSparse operators"
MS_SWIN = ("RobustBench's own Swin-L, with MeanSparse on each block's residual stream between attention and MLP: "
           "no layer's input or output, so no meansparse site")


def MEANSPARSE(arch: Arch, base: str) -> Arch:  # noqa: N802
    """A MeanSparse entry: the network ``arch`` of RobustBench entry ``base`` with MeanSparse operators at
    RobustBench's sites (for DM WRNs and timm ConvNeXts), inserted by harden's ``meansparse`` transform and
    read from the checkpoint (:mod:`harden.sources.zoo.rb_meansparse`)."""
    name, kwargs = arch
    if name == "dm-wrn":
        family = "dm-wrn"
    elif name == "timm" and kwargs["name"].startswith("convnext"):
        family = "convnext"
    else:
        raise ValueError(f"no MeanSparse sites known for {name} {kwargs}")
    return name, {**kwargs, "meansparse": family, "base": base}


DM_PREACT18: Arch = ("dm-preact", {"depth": 18})
PREACT18: Arch = ("preact", {"activated_shortcut": False, "bn_before_fc": False})
PREACT18_BN: Arch = ("preact", {"activated_shortcut": True, "bn_before_fc": True})
RESNET18: Arch = ("resnet", {"layers": (2, 2, 2, 2), "bottleneck": False})
RESNET50: Arch = ("resnet", {"layers": (3, 4, 6, 3), "bottleneck": True})
WRN_34_R: Arch = ("robust-wrn", {"channels": (16, 320, 640, 512), "depths": (5, 5, 5)})
WRN_A4: Arch = ("wrn-a", {"config": "a4", "activation": "silu"})


@dataclass(frozen=True)
class Entry:
    """One RobustBench leaderboard entry."""

    dataset: str                      # cifar10, cifar100, imagenet
    threat: str                       # Linf, L2
    name: str                         # RobustBench's model name
    architecture: str | None          # harden's builder for it, None: not available
    kwargs: dict[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    clean_acc: float | None = None    # published, in %
    autoattack_acc: float | None = None
    eps: str = "8/255"
    citation: str = ""
    input_size: int = 32
    external: float | None = None     # RobustBench's best-known robust accuracy, %, when below AutoAttack's
    unreliable: bool = False          # RobustBench flags the entry's evaluation as unreliable
    external_by: str = ""             # the attack that found ``external``

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.threat}/{self.name}"

    @property
    def num_classes(self) -> int:
        return {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[self.dataset]

    @property
    def best_known_acc(self) -> float | None:
        """The lowest published robust accuracy: ``external`` where there is one, else AutoAttack's."""
        return self.external if self.external is not None else self.autoattack_acc

    @property
    def label(self) -> str:
        """The architecture in words (for ``harden list``)."""
        if self.architecture is None:
            return f"not built by harden: {self.kwargs['missing']}"
        k = self.kwargs
        sparse = ", MeanSparse" if k.get("meansparse") else ""
        if self.architecture in ("wrn", "dm-wrn"):
            extra = ", sub_block1" if k.get("sub_block1") else (", SiLU" if self.architecture == "dm-wrn" else "")
            return f"{'DM ' if self.architecture == 'dm-wrn' else ''}WRN-{k['depth']}-{k['width']}{extra}{sparse}"
        return {"dm-preact": "DM PreActResNet-18, SiLU", "preact": "PreActResNet-18", "robust-wrn": "WRN-34-R",
                "wrn-a": "WRN-A4, SiLU", "tv": f"torchvision {k.get('name')}", "timm": f"timm {k.get('name')}",
                "resnet": "ResNet-50" if k.get("bottleneck") else "ResNet-18"}[self.architecture] + sparse


_Row = tuple[str, Arch, Norm, float, float | None, str]


def _section(dataset: str, threat: str, eps: str, rows: list[_Row], input_size: int = 32,
             sizes: dict[str, int] | None = None) -> list[Entry]:
    out = []
    for name, (arch, kwargs), (mean, std), clean, aa, citation in rows:
        external, unreliable, by = _BEST_KNOWN.get(f"{dataset}/{threat}/{name}", (None, False, ""))
        out.append(Entry(dataset, threat, name, arch, dict(kwargs), tuple(mean), tuple(std), clean, aa, eps,
                         citation, (sizes or {}).get(name, input_size), external, unreliable, by))
    return out


# fmt: off
_CIFAR10_LINF: list[_Row] = [
    ("Carmon2019Unlabeled", WRN(28, 10, sub_block1=True), NONE, 89.69, 59.53, "Carmon et al., NeurIPS 2019"),
    ("Sehwag2020Hydra", WRN(28, 10, sub_block1=True), NONE, 88.98, 57.14, "Sehwag et al., NeurIPS 2020"),
    ("Wang2020Improving", WRN(28, 10, sub_block1=True), NONE, 87.50, 56.29, "Wang et al., ICLR 2020"),
    ("Hendrycks2019Using", WRN(28, 10), HALF, 87.11, 54.92, "Hendrycks et al., ICML 2019"),
    ("Rice2020Overfitting", WRN(34, 20), C10, 85.34, 53.42, "Rice et al., ICML 2020"),
    ("Zhang2019Theoretically", WRN(34, 10, sub_block1=True), NONE, 84.92, 53.08, "Zhang et al., ICML 2019"),
    ("Engstrom2019Robustness", RESNET50, C10_ENGSTROM, 87.03, 49.25, "Engstrom et al., GitHub, Oct 2019"),
    ("Huang2020Self", WRN(34, 10, sub_block1=True), NONE, 83.48, 53.34, "Huang et al., NeurIPS 2020"),
    ("Wong2020Fast", PREACT18, C10, 83.34, 43.21, "Wong et al., ICLR 2020"),
    ("Andriushchenko2020Understanding", PREACT18, NONE, 79.84, 43.93, "Andriushchenko et al., NeurIPS 2020"),
    ("Zhang2019You", WRN(34, 10, sub_block1=True), NONE, 87.20, 44.83, "Zhang et al., NeurIPS 2019"),
    ("Zhang2020Attacks", WRN(34, 10, sub_block1=True), NONE, 84.52, 53.51, "Zhang et al., ICML 2020"),
    ("Wu2020Adversarial_extra", WRN(28, 10, sub_block1=True), NONE, 88.25, 60.04, "Wu et al., NeurIPS 2020"),
    ("Wu2020Adversarial", WRN(34, 10), NONE, 85.36, 56.17, "Wu et al., NeurIPS 2020"),
    ("Gowal2020Uncovering_70_16", DM_WRN(70, 16), C10, 85.29, 57.20, "Gowal et al., arXiv, Oct 2020"),
    ("Gowal2020Uncovering_70_16_extra", DM_WRN(70, 16), C10, 91.10, 65.88, "Gowal et al., arXiv, Oct 2020"),
    ("Gowal2020Uncovering_34_20", DM_WRN(34, 20), C10, 85.64, 56.86, "Gowal et al., arXiv, Oct 2020"),
    ("Gowal2020Uncovering_28_10_extra", DM_WRN(28, 10), C10, 89.48, 62.80, "Gowal et al., arXiv, Oct 2020"),
    ("Sehwag2021Proxy", WRN(34, 10), NONE, 86.68, 60.27, "Sehwag et al., ICLR 2022"),
    ("Sehwag2021Proxy_R18", RESNET18, NONE, 84.59, 55.54, "Sehwag et al., ICLR 2022"),
    ("Sitawarin2020Improving", WRN(34, 10, sub_block1=True), NONE, 86.84, 50.72, "Wagner et al., arXiv, Mar 2020"),
    ("Chen2020Efficient", WRN(34, 10, sub_block1=True), C10, 85.32, 51.12, "Liu et al., arXiv, Oct 2020"),
    ("Cui2020Learnable_34_20", WRN(34, 20, sub_block1=True), NONE, 88.70, 53.57, "Jia et al., ICCV 2021"),
    ("Cui2020Learnable_34_10", WRN(34, 10, sub_block1=True), NONE, 88.22, 52.86, "Jia et al., ICCV 2021"),
    ("Zhang2020Geometry", WRN(28, 10, sub_block1=True), NONE, 89.36, 59.64, "Zhang et al., ICLR 2021"),
    ("Rebuffi2021Fixing_28_10_cutmix_ddpm", DM_WRN(28, 10), C10, 87.33, 60.75, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_106_16_cutmix_ddpm", DM_WRN(106, 16), C10, 88.50, 64.64, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_70_16_cutmix_ddpm", DM_WRN(70, 16), C10, 88.54, 64.25, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_70_16_cutmix_extra", DM_WRN(70, 16), C10, 92.23, 66.58, "Rebuffi et al., arXiv, Mar 2021"),
    ("Sridhar2021Robust", WRN(28, 10, sub_block1=True), NONE, 89.46, 59.66, "Weimer et al., ACC 2022"),
    ("Sridhar2021Robust_34_15", WRN(34, 15, sub_block1=True), NONE, 86.53, 60.41, "Weimer et al., ACC 2022"),
    ("Rebuffi2021Fixing_R18_ddpm", DM_PREACT18, C10, 83.53, 56.66, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rade2021Helper_R18_extra", DM_PREACT18, C10, 89.02, 57.67, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Rade2021Helper_R18_ddpm", DM_PREACT18, C10, 86.86, 57.09, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Rade2021Helper_extra", DM_WRN(34, 10), C10, 91.47, 62.83, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Rade2021Helper_ddpm", DM_WRN(28, 10), C10, 88.16, 60.97, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Huang2021Exploring", WRN_34_R, NONE, 90.56, 61.56, "Huang et al., NeurIPS 2021"),
    ("Huang2021Exploring_ema", WRN_34_R, NONE, 91.23, 62.54, "Huang et al., NeurIPS 2021"),
    ("Addepalli2021Towards_RN18", RESNET18, NONE, 80.24, 51.06, "Addepalli et al., ECCV 2022"),
    ("Addepalli2021Towards_WRN34", WRN(34, 10, sub_block1=True), NONE, 85.32, 58.04, "Addepalli et al., ECCV 2022"),
    ("Gowal2021Improving_70_16_ddpm_100m", DM_WRN(70, 16), C10, 88.74, 66.11, "Gowal et al., NeurIPS 2021"),
    ("Gowal2021Improving_28_10_ddpm_100m", DM_WRN(28, 10), C10, 87.50, 63.44, "Gowal et al., NeurIPS 2021"),
    ("Gowal2021Improving_R18_ddpm_100m", DM_PREACT18, C10, 87.35, 58.63, "Gowal et al., NeurIPS 2021"),
    ("Chen2021LTD_WRN34_10", WRN(34, 10), NONE, 85.21, 56.94, "Chen et al., arXiv, Nov 2021"),
    ("Chen2021LTD_WRN34_20", WRN(34, 20), NONE, 86.03, 57.71, "Chen et al., arXiv, Nov 2021"),
    ("Standard", WRN(28, 10), NONE, 94.78, 0.0, "standard training, no defence"),
    ("Jia2022LAS-AT_34_10", WRN(34, 10), NONE, 84.98, 56.26, "Jia et al., arXiv, Mar 2022"),
    ("Jia2022LAS-AT_70_16", WRN(70, 16), NONE, 85.66, 57.61, "Jia et al., arXiv, Mar 2022"),
    ("Pang2022Robustness_WRN28_10", DM_WRN(28, 10), C10, 88.61, 61.04, "Pang et al., ICML 2022"),
    ("Pang2022Robustness_WRN70_16", DM_WRN(70, 16), C10, 89.01, 63.35, "Pang et al., ICML 2022"),
    ("Addepalli2022Efficient_RN18", RESNET18, NONE, 85.71, 52.48, "Addepalli et al., NeurIPS 2022"),
    ("Addepalli2022Efficient_WRN_34_10", WRN(34, 10), NONE, 88.71, 57.81, "Addepalli et al., NeurIPS 2022"),
    ("Huang2022Revisiting_WRN-A4", WRN_A4, C10, 91.58, 65.79, "Huang et al., arXiv, Dec. 2022"),
    ("Wang2023Better_WRN-28-10", DM_WRN(28, 10), C10, 92.44, 67.31, "Wang et al., ICML 2023"),
    ("Wang2023Better_WRN-70-16", DM_WRN(70, 16), C10, 93.25, 70.69, "Wang et al., ICML 2023"),
    ("Xu2023Exploring_WRN-28-10", DM_WRN(28, 10), C10, 93.69, 63.89, "Xu et al., ICLR 2023"),
    ("Cui2023Decoupled_WRN-28-10", DM_WRN(28, 10), C10, 92.16, 67.73, "Cui et al., NeurIPS 2024"),
    ("Cui2023Decoupled_WRN-34-10", WRN(34, 10), NONE, 85.31, 57.09, "Cui et al., NeurIPS 2024"),
    ("Chen2024Data_WRN_34_10", WRN(34, 10), NONE, 86.54, 57.30, "Chen et al., Pattern Recognition 2024"),
    ("Chen2024Data_WRN_34_20", WRN(34, 20), NONE, 86.10, 58.09, "Chen et al., Pattern Recognition 2024"),
    ("Bartoldson2024Adversarial_WRN-94-16", DM_WRN(94, 16), C10, 93.68, 73.71, "Bartoldson et al., ICML 2024"),
    ("Bartoldson2024Adversarial_WRN-82-8", DM_WRN(82, 8), C10, 93.11, 71.59, "Bartoldson et al., ICML 2024"),
    ("Ding2020MMA", MISSING("per-image standardisation"), NONE, 84.36, 41.44, "Ding et al., ICLR 2020"),
    ("Pang2020Boosting", MISSING("BoostingWideResNet"), NONE, 85.14, 53.74, "Pang et al., NeurIPS 2020"),
    ("Chen2020Adversarial", MISSING("3-ResNet-50 ensemble"), NONE, 86.04, 51.56, "Chen et al., CVPR 2020"),
    ("Kang2021Stable", MISSING("SODEF ODE layers"), NONE, 93.73, 71.28, "Kang et al., NeurIPS 2021"),
    ("Dai2021Parameterizing", MISSING("PSSiLU WideResNet"), NONE, 87.02, 61.55, "Dai et al., arXiv, Oct 2021"),
    ("Peng2023Robust", MISSING("RaWideResNet"), NONE, 93.27, 71.07, "Peng et al., BMVC 2023"),
    ("Bai2024MixedNUTS", MISSING("MixedNUTS mixture"), NONE, 95.19, 70.08, "Bai et al., TMLR, Aug 2024"),
    ("Debenedetti2022Light_XCiT-S12", MISSING("XCiT-S12"), NONE, 90.06, 56.14, "Debenedetti et al., arXiv, Sep 2022"),
    ("Amini2024MeanSparse_S-WRN-94-16", MEANSPARSE(DM_WRN(94, 16), "Bartoldson2024Adversarial_WRN-94-16"), C10,
     93.60, 75.28, AMINI),
    ("Amini2024MeanSparse_Ra_WRN_70_16", MISSING(MS_RAWRN), NONE, 93.24, 72.08, AMINI),
]
_CIFAR10_L2: list[_Row] = [
    ("Augustin2020Adversarial", RESNET50, C10_AUGUSTIN, 91.08, 72.91, "Augustin et al., ECCV 2020"),
    ("Engstrom2019Robustness", RESNET50, C10_ENGSTROM, 90.83, 69.24, "Engstrom et al., GitHub, Sep 2019"),
    ("Rice2020Overfitting", PREACT18_BN, C10, 88.67, 67.68, "Rice et al., ICML 2020"),
    ("Rony2019Decoupling", WRN(28, 10), C10_RONY, 89.05, 66.44, "Rony et al., CVPR 2019"),
    ("Standard", WRN(28, 10), NONE, 94.78, 0.0, "standard training, no defence"),
    ("Wu2020Adversarial", WRN(34, 10), NONE, 88.51, 73.66, "Wu et al., NeurIPS 2020"),
    ("Gowal2020Uncovering", DM_WRN(70, 16), C10, 90.90, 74.50, "Gowal et al., arXiv, Oct 2020"),
    ("Gowal2020Uncovering_extra", DM_WRN(70, 16), C10, 94.74, 80.53, "Gowal et al., arXiv, Oct 2020"),
    ("Sehwag2021Proxy", WRN(34, 10), NONE, 90.93, 77.24, "Sehwag et al., ICLR 2022"),
    ("Sehwag2021Proxy_R18", RESNET18, NONE, 89.76, 74.41, "Sehwag et al., ICLR 2022"),
    ("Rebuffi2021Fixing_70_16_cutmix_ddpm", DM_WRN(70, 16), C10, 92.41, 80.42, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_28_10_cutmix_ddpm", DM_WRN(28, 10), C10, 91.79, 78.80, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_70_16_cutmix_extra", DM_WRN(70, 16), C10, 95.74, 82.32, "Rebuffi et al., arXiv, Mar 2021"),
    ("Augustin2020Adversarial_34_10", WRN(34, 10), C10_AUGUSTIN, 92.23, 76.25, "Augustin et al., ECCV 2020"),
    ("Augustin2020Adversarial_34_10_extra", WRN(34, 10), C10_AUGUSTIN, 93.96, 78.79, "Augustin et al., ECCV 2020"),
    ("Rebuffi2021Fixing_R18_cutmix_ddpm", DM_PREACT18, C10, 90.33, 75.86, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rade2021Helper_R18_ddpm", DM_PREACT18, C10, 90.57, 76.15, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Wang2023Better_WRN-28-10", DM_WRN(28, 10), C10, 95.16, 83.68, "Wang et al., ICML 2023"),
    ("Wang2023Better_WRN-70-16", DM_WRN(70, 16), C10, 95.54, 84.97, "Wang et al., ICML 2023"),
    ("Ding2020MMA", MISSING("per-image standardisation"), NONE, 88.02, 66.09, "Ding et al., ICLR 2020"),
    ("Amini2024MeanSparse_S-WRN-70-16", MEANSPARSE(DM_WRN(70, 16), "cifar10/L2/Wang2023Better_WRN-70-16"), C10,
     95.51, 87.28, AMINI),
]
_CIFAR100_LINF: list[_Row] = [
    ("Gowal2020Uncovering", DM_WRN(70, 16), C100, 60.86, 30.03, "Gowal et al., arXiv, Oct 2020"),
    ("Gowal2020Uncovering_extra", DM_WRN(70, 16), C100, 69.15, 36.88, "Gowal et al., arXiv, Oct 2020"),
    ("Cui2020Learnable_34_20_LBGAT6", WRN(34, 20, sub_block1=True), NONE, 62.55, 30.20, "Cui et al., ICCV 2021"),
    ("Cui2020Learnable_34_10_LBGAT0", WRN(34, 10, sub_block1=True), NONE, 70.25, 27.16, "Cui et al., ICCV 2021"),
    ("Cui2020Learnable_34_10_LBGAT6", WRN(34, 10, sub_block1=True), NONE, 60.64, 29.33, "Cui et al., ICCV 2021"),
    ("Chen2020Efficient", WRN(34, 10, sub_block1=True), C100_CHEN, 62.15, 26.94, "Chen et al., arXiv, Oct 2020"),
    ("Wu2020Adversarial", WRN(34, 10), C100_PRECISE, 60.38, 28.86, "Wu et al., NeurIPS 2020"),
    ("Sehwag2021Proxy", WRN(34, 10), NONE, 65.93, 31.15, "Sehwag et al., ICLR 2022"),
    ("Sitawarin2020Improving", WRN(34, 10, sub_block1=True), NONE, 62.82, 24.57, "Sitawarin et al., arXiv, Mar 2020"),
    ("Hendrycks2019Using", WRN(28, 10), HALF, 59.23, 28.42, "Hendrycks et al., ICML 2019"),
    ("Rice2020Overfitting", PREACT18_BN, C100_PRECISE, 53.83, 18.95, "Rice et al., ICML 2020"),
    ("Rebuffi2021Fixing_70_16_cutmix_ddpm", DM_WRN(70, 16), C100, 63.56, 34.64, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_28_10_cutmix_ddpm", DM_WRN(28, 10), C100, 62.41, 32.06, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rebuffi2021Fixing_R18_ddpm", DM_PREACT18, C100, 56.87, 28.50, "Rebuffi et al., arXiv, Mar 2021"),
    ("Rade2021Helper_R18_ddpm", DM_PREACT18, C100, 61.50, 28.88, "Moosavi-Dezfooli et al., OpenReview, Jun 2021"),
    ("Addepalli2021Towards_PARN18", PREACT18_BN, NONE, 62.02, 27.14, "Addepalli et al., ECCV 2022"),
    ("Addepalli2021Towards_WRN34", WRN(34, 10, sub_block1=True), NONE, 65.73, 30.35, "Addepalli et al., ECCV 2022"),
    ("Chen2021LTD_WRN34_10", WRN(34, 10, sub_block1=True), NONE, 64.07, 30.59, "Chen et al., arXiv, Nov 2021"),
    ("Pang2022Robustness_WRN28_10", DM_WRN(28, 10), C100, 63.66, 31.08, "Pang et al., ICML 2022"),
    ("Pang2022Robustness_WRN70_16", DM_WRN(70, 16), C100, 65.56, 33.05, "Pang et al., ICML 2022"),
    ("Jia2022LAS-AT_34_10", WRN(34, 10, sub_block1=True), NONE, 64.89, 30.77, "Jia et al., arXiv, Mar 2022"),
    ("Jia2022LAS-AT_34_20", WRN(34, 20), NONE, 67.31, 31.91, "Jia et al., arXiv, Mar 2022"),
    ("Addepalli2022Efficient_RN18", RESNET18, NONE, 65.45, 27.67, "Addepalli et al., NeurIPS 2022"),
    ("Addepalli2022Efficient_WRN_34_10", WRN(34, 10), NONE, 68.75, 31.85, "Addepalli et al., NeurIPS 2022"),
    ("Cui2020Learnable_34_10_LBGAT9_eps_8_255", WRN(34, 10), NONE, 62.99, 31.20, "Cui et al., ICCV 2021"),
    ("Wang2023Better_WRN-28-10", DM_WRN(28, 10), C100, 72.58, 38.83, "Wang et al., ICML 2023"),
    ("Wang2023Better_WRN-70-16", DM_WRN(70, 16), C100, 75.22, 42.67, "Wang et al., ICML 2023"),
    ("Cui2023Decoupled_WRN-28-10", DM_WRN(28, 10), C100, 73.85, 39.18, "Cui et al., NeurIPS 2024"),
    ("Cui2023Decoupled_WRN-34-10", WRN(34, 10), NONE, 65.76, 31.91, "Cui et al., NeurIPS 2024"),
    ("Cui2023Decoupled_WRN-34-10_autoaug", WRN(34, 10), NONE, 65.93, 32.52, "Cui et al., NeurIPS 2024"),
    ("Chen2024Data_WRN_34_10", WRN(34, 10), NONE, 64.32, 31.13, "Chen et al., Pattern Recognition 2024"),
    ("Bai2023Improving_edm", MISSING("composite + policy net"), NONE, 85.21, 38.72, "Bai et al., SIMODS 2024"),
    ("Amini2024MeanSparse_S-WRN-70-16", MEANSPARSE(DM_WRN(70, 16), "cifar100/Linf/Wang2023Better_WRN-70-16"), C100,
     75.13, 44.78, AMINI),
]
_IMAGENET_LINF: list[_Row] = [
    ("Wong2020Fast", TV("resnet50"), IMAGENET, 55.62, 26.24, "Wong et al., ICLR 2020"),
    ("Engstrom2019Robustness", TV("resnet50"), IMAGENET, 62.56, 29.22, "Engstrom et al., GitHub, Oct 2019"),
    ("Salman2020Do_R50", TV("resnet50"), IMAGENET, 64.02, 34.96, "Salman et al., NeurIPS 2020"),
    ("Salman2020Do_R18", TV("resnet18"), IMAGENET, 52.92, 25.32, "Salman et al., NeurIPS 2020"),
    ("Salman2020Do_50_2", TV("wide_resnet50_2"), IMAGENET, 68.46, 38.14, "Salman et al., NeurIPS 2020"),
    ("Standard_R50", TV("resnet50"), IMAGENET, 76.52, 0.0, "standard training, no defence"),
    ("Chen2024Data_WRN_50_2", TV("wide_resnet50_2"), NONE, 68.76, 40.60, "Chen et al., Pattern Recognition 2024"),
    ("Liu2023Comprehensive_ConvNeXt-B", TIMM("convnext_base"), IMAGENET, 76.02, 55.82, "Liu et al., arXiv, Feb 2023"),
    ("Liu2023Comprehensive_ConvNeXt-L", TIMM("convnext_large"), IMAGENET, 78.02, 58.48, "Liu et al., arXiv, Feb 2023"),
    ("Singh2023Revisiting_ConvNeXt-T-ConvStem", MISSING("ConvStem"), NONE, 72.72, 49.46, "Singh et al., NeurIPS 2023"),
    ("Liu2023Comprehensive_Swin-B", MISSING("converted Swin-B"), NONE, 76.16, 56.16, "Liu et al., arXiv, Feb 2023"),
    ("Amini2024MeanSparse_ConvNeXt-L",
     MEANSPARSE(TIMM("convnext_large"), "imagenet/Linf/Liu2023Comprehensive_ConvNeXt-L"), IMAGENET,
     77.92, 59.64, AMINI),
    ("Amini2024MeanSparse_Swin-L", MISSING(MS_SWIN), NONE, 78.80, 62.12, AMINI),
]
# fmt: on

# BEGIN best-known figures (generated by scripts/robustbench_figures.py --write; do not edit)
#: read from RobustBench 78fcc9e 2025-03-31 (139 entries); an entry not listed has neither
_BEST_KNOWN: dict[str, tuple[float | None, bool, str]] = {
    "cifar10/Linf/Gowal2020Uncovering_70_16": (57.14, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2020Uncovering_70_16_extra": (65.87, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2020Uncovering_34_20": (56.82, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2020Uncovering_28_10_extra": (62.76, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Rebuffi2021Fixing_28_10_cutmix_ddpm": (60.73, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Rebuffi2021Fixing_106_16_cutmix_ddpm": (64.58, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Rebuffi2021Fixing_70_16_cutmix_ddpm": (64.20, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Rebuffi2021Fixing_70_16_cutmix_extra": (66.56, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2021Improving_70_16_ddpm_100m": (66.10, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2021Improving_28_10_ddpm_100m": (63.38, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Gowal2021Improving_R18_ddpm_100m": (58.50, False, "AutoAttack + MultiTargeted"),
    "cifar10/Linf/Kang2021Stable": (64.20, True, "AutoAttack + transfer APGD"),
    "cifar10/Linf/Bai2024MixedNUTS": (69.71, False, "Adaptive AutoAttack"),
    "cifar10/Linf/Amini2024MeanSparse_S-WRN-94-16": (73.10, False, "BPDA"),
    "cifar10/Linf/Amini2024MeanSparse_Ra_WRN_70_16": (68.94, False, "BPDA"),
    "cifar10/L2/Amini2024MeanSparse_S-WRN-70-16": (84.33, False, "BPDA"),
    "cifar100/Linf/Wang2023Better_WRN-28-10": (38.77, False, "MALT"),
    "cifar100/Linf/Wang2023Better_WRN-70-16": (42.66, False, "MALT"),
    "cifar100/Linf/Amini2024MeanSparse_S-WRN-70-16": (42.25, False, "BPDA"),
    "imagenet/Linf/Amini2024MeanSparse_ConvNeXt-L": (58.22, False, "BPDA"),
    "imagenet/Linf/Amini2024MeanSparse_Swin-L": (58.92, False, "BPDA"),
}
# END best-known figures

#: RobustBench evaluates Wong2020Fast's ImageNet model on 288x288 centre crops, the others at 224x224.
ENTRIES: tuple[Entry, ...] = (
    *_section("cifar10", "Linf", "8/255", _CIFAR10_LINF),
    *_section("cifar10", "L2", "0.5", _CIFAR10_L2),
    *_section("cifar100", "Linf", "8/255", _CIFAR100_LINF),
    *_section("imagenet", "Linf", "4/255", _IMAGENET_LINF, input_size=224, sizes={"Wong2020Fast": 288}),
)
