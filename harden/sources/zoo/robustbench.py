"""The ``robustbench:`` model source: RobustBench leaderboard entries by name.

``robustbench:NAME`` is a CIFAR-10 Linf entry, ``robustbench:DATASET/THREAT/NAME`` any entry
(``robustbench:cifar100/Linf/Gowal2020Uncovering``, ``robustbench:imagenet/Linf/Salman2020Do_R50``).
The source builds the entry's architecture with fresh weights and gives its input size and
normalization; the checkpoint is the user's (``--weights FILE``, the ``.pt`` file RobustBench's
downloader leaves). Loading it drops what the checkpoint carries besides the network: the
normalization buffers some entries keep (``mu``/``sigma``, ``normalize.mean``/``std``; checked against
the entry's values) and the unused ``sub_block1`` stage of some WideResNets (checked key by key).

A MeanSparse entry is its base network with the ``meansparse`` transform at RobustBench's sites, recorded
in the provenance as part of the entry (:mod:`harden.sources.zoo.rb_meansparse`); the checkpoint's
operators load into the transform's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harden.errors import HardenError, UsageError, close_matches
from harden.provenance import Provenance
from harden.sources.library import build_timm, build_tv
from harden.sources.registry import BuiltNet, ModelSource, register_model_source
from harden.sources.zoo import cifar, rb_archs, rb_meansparse
from harden.sources.zoo.robustbench_entries import ENTRIES, Entry
from harden.sources.zoo.robustresnet import CONFIGS, RobustResNet

_BY_KEY: dict[str, Entry] = {e.key.lower(): e for e in ENTRIES}
_NORM_KEYS = (("mu", "sigma"), ("normalize.mean", "normalize.std"), ("mean", "std"))
#: test images RobustBench's leaderboard evaluates on
LEADERBOARD_N = {"cifar10": 10000, "cifar100": 10000, "imagenet": 5000}
ZOO_HINT = ("get the checkpoint from RobustBench's model zoo (github.com/RobustBench/robustbench; "
            "robustbench.utils.load_model downloads it to models/DATASET/THREAT/NAME.pt) and pass --weights FILE")


def names() -> list[str]:
    """Every entry as ``DATASET/THREAT/NAME``, and the CIFAR-10 Linf ones by their bare name too."""
    out = [e.name for e in ENTRIES if (e.dataset, e.threat) == ("cifar10", "Linf")]
    return out + [e.key for e in ENTRIES]


def find_entry(name: str) -> Entry:
    """The entry of ``NAME`` (CIFAR-10 Linf) or ``DATASET/THREAT/NAME``."""
    key = name.strip() if "/" in name else f"cifar10/Linf/{name.strip()}"
    entry = _BY_KEY.get(key.lower())
    if entry is None:
        raise UsageError(f"unknown RobustBench entry '{name}'{close_matches(name, names())} "
                         "(write NAME for CIFAR-10 Linf or DATASET/THREAT/NAME; `harden list` shows them)")
    return entry


def _wrn(e: Entry, n: int) -> nn.Module:
    return cifar.WideResNet(e.kwargs["depth"], e.kwargs["width"], n)


def _wrn_a(e: Entry, n: int) -> nn.Module:
    depths, widths = CONFIGS[e.kwargs["config"]] if "config" in e.kwargs else (e.kwargs["depths"], e.kwargs["widths"])
    return RobustResNet(depths, widths, n, block="basic", activation=e.kwargs["activation"])


_BUILDERS: dict[str, Callable[[Entry, int], nn.Module]] = {
    "wrn": _wrn,
    "dm-wrn": lambda e, n: rb_archs.DMWideResNet(e.kwargs["depth"], e.kwargs["width"], n),
    "dm-preact": lambda e, n: rb_archs.DMPreActResNet(e.kwargs["depth"], n),
    "preact": lambda e, n: rb_archs.PreActResNetRB(e.kwargs.get("layers", (2, 2, 2, 2)), n,
                                                   activated_shortcut=e.kwargs["activated_shortcut"],
                                                   bn_before_fc=e.kwargs["bn_before_fc"]),
    "resnet": lambda e, n: rb_archs.ShortcutResNet(e.kwargs["layers"], n, bottleneck=e.kwargs["bottleneck"]),
    "robust-wrn": lambda e, n: rb_archs.RobustWideResNet(e.kwargs["channels"], e.kwargs["depths"], n),
    "wrn-a": _wrn_a,
    "tv": lambda e, n: build_tv(e.kwargs["name"], n, False, {}).net,
    "timm": lambda e, n: build_timm(e.kwargs["name"], n, False, {}).net,
}


def build(name: str, num_classes: int | None, pretrained: bool, kwargs: dict[str, Any]) -> BuiltNet:
    """Build the network of a RobustBench entry (fresh weights; ``pretrained`` is refused)."""
    entry = find_entry(name)
    if pretrained:
        raise UsageError(f"robustbench:{name} has no weights in harden; {ZOO_HINT}")
    if entry.architecture is None:
        raise UsageError(f"robustbench:{entry.key} needs an architecture harden does not have "
                         f"({entry.kwargs['missing']}); harden lists this entry for its published figures only")
    if kwargs:
        raise UsageError(f"robustbench:{name} takes no constructor arguments; got {', '.join(sorted(kwargs))}")
    if num_classes not in (None, entry.num_classes):
        raise UsageError(f"robustbench:{entry.key} has {entry.num_classes} classes; drop --num-classes")
    return build_entry(entry)


def build_entry(entry: Entry) -> BuiltNet:
    """The network of ``entry`` with fresh weights, its input size, normalization and checkpoint hook."""
    if entry.architecture is None:
        raise UsageError(f"robustbench:{entry.key} needs an architecture harden does not have "
                         f"({entry.kwargs['missing']}); harden lists this entry for its published figures only")
    net = _BUILDERS[entry.architecture](entry, entry.num_classes)
    size = (3, entry.input_size, entry.input_size)
    family = entry.kwargs.get("meansparse")
    ops = rb_meansparse.operators(family, net) if family else []
    return BuiltNet(net, input_size=size, mean=entry.mean, std=entry.std, kwargs={},
                    adapt_state=lambda state: adapt_state(entry, state, ops),
                    transforms=(rb_meansparse.transform_entry(entry.name, family, ops),) if family else ())


# ------------------------------------------------------------------------------------ checkpoints


def adapt_state(entry: Entry, state: dict[str, torch.Tensor],
                meansparse: list[rb_meansparse.Operator] | None = None) -> dict[str, torch.Tensor]:
    """Drop what an entry's checkpoint holds besides harden's network, checking that it is what it should be;
    a MeanSparse entry's operators (``meansparse``: where harden inserted them) move to harden's keys."""
    state = dict(state)
    _drop_normalization(entry, state)
    if entry.kwargs.get("sub_block1"):
        _drop_sub_block1(entry, state)
    if meansparse:
        state = rb_meansparse.checkpoint_state(state, meansparse, entry.kwargs["base"])
    return state


def _drop_normalization(entry: Entry, state: dict[str, torch.Tensor]) -> None:
    for mean_key, std_key in _NORM_KEYS:
        if mean_key not in state and std_key not in state:
            continue
        mean, std = state.pop(mean_key, None), state.pop(std_key, None)
        if mean is None or std is None:
            raise HardenError(f"the checkpoint holds only one of '{mean_key}' and '{std_key}'; is it damaged?")
        for what, tensor, expected in (("mean", mean, entry.mean), ("std", std, entry.std)):
            values = tensor.detach().float().flatten()
            if values.numel() != len(expected) or not torch.allclose(values, torch.tensor(expected), atol=1e-5):
                raise HardenError(
                    f"the checkpoint's input {what} {[round(v, 4) for v in values.tolist()]} is not the "
                    f"{list(expected)} of robustbench:{entry.key}; is it the checkpoint of another entry?")


def _drop_sub_block1(entry: Entry, state: dict[str, torch.Tensor]) -> None:
    dead = {k: v for k, v in state.items() if k.startswith("sub_block1.")}
    if not dead:
        return
    n = (entry.kwargs["depth"] - 4) // 6
    with torch.device("meta"):
        ref = cifar.NetworkBlock(n, 16, 16 * entry.kwargs["width"], 1).state_dict()
    expected = {f"sub_block1.{k}": tuple(v.shape) for k, v in ref.items()}
    got = {k: tuple(v.shape) for k, v in dead.items()}
    if got != expected:
        raise HardenError(f"the checkpoint's unused sub_block1 ({len(got)} tensors) is not that of "
                          f"robustbench:{entry.key} ({len(expected)} tensors); is it the checkpoint of another entry?")
    for k in dead:
        del state[k]


# -------------------------------------------------------------------------------- published figures


def published(provenance: Provenance | None) -> dict[str, Any] | None:
    """The leaderboard's figures for a model that is a RobustBench entry as published, else None.

    A model without a checkpoint (random weights), with transforms (besides those the entry itself
    consists of: ``from_source``) or with fine-tuning is not the published one, so it gets none.
    Besides the AutoAttack figure: RobustBench's best-known one
    (``external``, ``external_attack``), its ``unreliable`` flag, and the lower of the two
    (``best_known``: which one, ``best_known_acc``: its value).
    """
    if provenance is None or provenance.model.source != "robustbench" or not provenance.model.has_weights_file:
        return None
    if any(not t.from_source for t in provenance.transforms) or provenance.finetune:
        return None
    try:
        entry = find_entry(provenance.model.name)
    except UsageError:
        return None
    return {"entry": entry.key, "clean_acc": entry.clean_acc, "autoattack_acc": entry.autoattack_acc,
            "threat_model": entry.threat, "eps": entry.eps, "n_examples": LEADERBOARD_N[entry.dataset],
            "citation": entry.citation, "source": "RobustBench leaderboard (model_info JSON)", **_best_known(entry)}


def _best_known(entry: Entry) -> dict[str, Any]:
    """The report's keys for RobustBench's best-known figure and its unreliable flag."""
    lower = entry.external is not None and (entry.autoattack_acc is None or entry.external < entry.autoattack_acc)
    return {"external": entry.external, "external_attack": entry.external_by or None, "unreliable": entry.unreliable,
            "best_known": "external" if lower else "autoattack_acc",
            "best_known_acc": entry.external if lower else entry.autoattack_acc}


UNRELIABLE_NOTE = "RobustBench marks this entry's evaluation UNRELIABLE: its robust figures are upper bounds at most"


def published_line(pub: dict[str, Any], norm: str | None = None, eps_text: str | None = None) -> str:
    """One line for the evaluation summary: the leaderboard's figures beside this run's."""
    aa = f"{pub['autoattack_acc']:.2f}%" if pub.get("autoattack_acc") is not None else "n/a"
    if pub.get("external") is not None:
        by = f" ({pub['external_attack']})" if pub.get("external_attack") else ""
        aa += f", best known {pub['external']:.2f}%{by}"
    line = (f"published: clean {pub['clean_acc']:.2f}%, AutoAttack {aa} at {pub['threat_model']} eps={pub['eps']} "
            f"on {pub['n_examples']} test images ({pub['citation']}; RobustBench)")
    if pub.get("unreliable"):
        line += f"; {UNRELIABLE_NOTE}"
    if norm is not None and (norm != pub["threat_model"] or (eps_text is not None and eps_text != pub["eps"])):
        line += f"; this run used {norm} eps={eps_text}, so the robust figures differ in kind"
    return line


def entry_lines() -> list[str]:
    """One line per entry for ``harden list``: key, architecture, published clean / AutoAttack / best-known %,
    eps, citation, and the best-known figure's attack and the unreliable mark where there are."""
    width = max(len(e.key) for e in ENTRIES)
    out = []
    for e in ENTRIES:
        aa = f"{e.autoattack_acc:.2f}" if e.autoattack_acc is not None else "n/a"
        best = f"{e.external:.2f}" if e.external is not None else "-"
        line = f"{e.key:<{width}}  {e.label:<30} {e.clean_acc:>6.2f} / {aa:>5} / {best:>5}  {e.eps:<5}  {e.citation}"
        if e.external_by:
            line += f"; best known by {e.external_by}"
        out.append(line + ("  [UNRELIABLE]" if e.unreliable else ""))
    return out


SOURCE = register_model_source(ModelSource(
    "robustbench", "RobustBench entries by name (NAME for CIFAR-10 Linf, DATASET/THREAT/NAME); weights via --weights",
    build, names))
