"""The pictures and the page of a report card (:mod:`~harden.evaluation.report_card`): for each adversarial
threat its robust-accuracy-vs-eps curve and a few examples (clean, adversarial, perturbation), for corruptions
each type at severity 3 on one image; ``card.md`` shows them with the card's figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harden.evaluation.plot import plot_sweep
from harden.runtime.atomic import save_figure

EXAMPLES = 4  # images in an example grid
EXAMPLE_STEPS = 10  # steps of harden.attacks.pgd for the pictures
SEVERITY = 3  # of the corruption pictures
Picture = dict[str, str]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, C), or (H, W) for one channel."""
    a = x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def _selected(model: nn.Module, data: Any, cfg: Any, k: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    from harden.evaluation.examples import select_examples

    examples, _ = select_examples(data, model, cfg)
    k = min(k, examples.n)
    x, y = examples.get(torch.arange(k))
    return x, y, list(examples.indices[:k])


def example_grid(model: nn.Module, data: Any, threat: Any, cfg: Any, path: Path) -> Picture | None:
    """Clean, adversarial (``harden.attacks.pgd`` at the threat's eps) and the perturbation x(0.5/eps) around grey."""
    from harden.attacks import pgd
    from harden.evaluation.examples import device_of

    if threat.norm not in ("Linf", "L2"):
        return None  # harden's pgd steps in Linf and L2 only
    x, y, _ = _selected(model, data, cfg, EXAMPLES)
    device = device_of(model)
    x, y = x.to(device), y.to(device)
    adv = pgd(model, x, y, eps=threat.eps, steps=EXAMPLE_STEPS, norm=threat.norm,
              generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        clean_pred, adv_pred = model(x).argmax(1), model(adv).argmax(1)
    scale = 0.5 / threat.eps
    plt = _pyplot()
    fig, axes = plt.subplots(len(x), 3, figsize=(3.3, 1.15 * len(x)), dpi=100, squeeze=False)
    for i in range(len(x)):
        _show(axes[i][0], _hwc(x[i]), f"clean: {int(clean_pred[i])} (label {int(y[i])})")
        _show(axes[i][1], _hwc(adv[i]), f"adversarial: {int(adv_pred[i])}")
        _show(axes[i][2], _hwc(0.5 + (adv[i] - x[i]) * scale), f"perturbation x{scale:.3g}")
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return {"file": path.name, "caption": f"{len(x)} of the images: clean, adversarial and the perturbation "
                                          f"magnified x{scale:.3g} around grey; the adversarial images come from "
                                          f"harden.attacks.pgd ({EXAMPLE_STEPS} steps, {threat.norm} eps "
                                          f"{threat.eps_text}) run on these images for the picture, not from the "
                                          "evaluation's attack"}


def corruption_grid(model: nn.Module, data: Any, cfg: Any, names: Sequence[str], path: Path) -> Picture | None:
    """Each corruption type at severity 3 on the first image (generated corruptions only)."""
    from harden.evaluation.corruption_folder import folder_root
    from harden.evaluation.corruptions import corrupt_image

    if folder_root(data) is not None:
        return None  # the folder's own images; no generated picture
    x, _, indices = _selected(model, data, cfg, 1)
    image = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = image[..., 0] if image.shape[-1] == 1 else image
    cols = min(5, len(names) + 1)
    rows = -(-(len(names) + 1) // cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.3 * rows), dpi=100, squeeze=False)
    cells = [("clean", image), *((n, corrupt_image(image, n, SEVERITY, seed=cfg.seed, index=indices[0]))
                                 for n in names)]
    for ax, (name, img) in zip(axes.flat, cells):
        _show(ax, np.asarray(img, dtype=np.float32) / 255.0, name)
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return {"file": path.name, "caption": f"one image under each corruption type at severity {SEVERITY}"}


def draw_pictures(model: nn.Module, data: Any, threats: Sequence[Any], configs: dict[str, Any],
                  reports: dict[str, dict[str, Any]], out: Path) -> dict[str, list[Picture]]:
    """Every threat's pictures (``configs``: each threat's evaluation settings), written into ``out``:
    name -> [{file, caption}]."""
    from harden.runtime.modes import eval_mode

    pictures: dict[str, list[Picture]] = {}
    with eval_mode(model):
        for t in threats:
            cfg = configs[t.name]
            drawn: list[Picture | None] = []
            if t.adversarial:
                plot_sweep(reports[t.name], out / f"{t.name}-sweep.png")
                drawn.append({"file": f"{t.name}-sweep.png", "caption": "robust accuracy against eps (same attack, "
                                                                        "same images; 95% intervals)"})
                drawn.append(example_grid(model, data, t, cfg, out / f"{t.name}-examples.png"))
            else:
                drawn.append(corruption_grid(model, data, cfg, reports[t.name]["corruptions"],
                                             out / "corruptions-examples.png"))
            pictures[t.name] = [p for p in drawn if p is not None]
    return pictures


def _interval(ci: Sequence[float] | None) -> str:
    return f"{ci[0]:.1f}-{ci[1]:.1f}%" if ci else "-"


def _how(entry: dict[str, Any]) -> str:
    if entry["kind"] == "corruptions":
        return f"{len(entry['corruptions'])} types x severities 1-5 ({entry['source']})"
    attack = entry["attack"] + (f" ({entry['version']})" if entry.get("version") else "")
    return f"{attack}: {', '.join(entry['attacks'])}; {entry['norm']} eps {entry['eps_text']}"


def card_markdown(card: dict[str, Any]) -> str:
    """``card.md``: the model, a table of the threats, then each threat's pictures and warnings."""
    model = card["model"]
    lines = [f"# Robustness report card: {model.get('label') or model.get('spec')}", "",
             f"- model: `{model.get('spec')}`" + (f", weights {model['weights']}" if model.get("weights") else ""),
             f"- data: `{card['data']}`, n = {card['n']}, seed {card['seed']}",
             f"- clean accuracy: {card['clean_acc']:.2f}% (95% interval {_interval(card['clean_ci95'])})"
             if card.get("clean_acc") is not None else "- clean accuracy: not measured", "",
             "| threat | accuracy | 95% interval | measured with | n |", "|---|---|---|---|---|"]
    for e in card["threats"]:
        lines.append(f"| {e['threat']} | {e['accuracy']:.2f}% | {_interval(e['ci95'])} | {_how(e)} | {e['n']} |")
    for e in card["threats"]:
        lines += ["", f"## {e['threat']}", "", f"Report: [{e['file']}]({e['file']})"]
        for pic in e.get("pictures", []):
            lines += ["", f"![{e['threat']}]({pic['file']})", "", f"*{pic['caption']}*"]
        for w in e.get("warnings", []):
            lines += ["", f"> warning: {w}"]
    return "\n".join(lines) + "\n"
