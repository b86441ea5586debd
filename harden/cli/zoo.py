"""``harden scale``: RobustScaling for a FLOP budget, and building the scaled network."""

from __future__ import annotations

import json
from typing import Any

import click

import harden
from harden.cli import main
from harden.cli._options import schema_options
from harden.schemas.scale import ScaleConfig, make_scale_config


@main.command("scale")
@schema_options(ScaleConfig)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def scale_command(as_json: bool, **options: Any) -> None:
    """Depth and width per stage that RobustScaling (Huang et al., 2023) gives for a FLOP budget.

    Rule: depths 2:2:1, widening factors 2:2.5:1, total depth : total width = 7:3.
    """
    cfg = make_scale_config(**options)
    flops, block, num_classes, input_size, build, output = (cfg.flops, cfg.block, cfg.num_classes, cfg.input_size,
                                                             cfg.build, cfg.output)
    from harden.sources.zoo.robustresnet import CONFIGS
    from harden.sources.zoo.scaling import count_cost, nearest_published, parse_flops, robust_scaling
    from harden.summary import human

    budget = parse_flops(flops)
    result = robust_scaling(budget, block=block, input_size=input_size, num_classes=num_classes)
    ref = nearest_published(result.depths, result.widths)
    ref_d, ref_w = CONFIGS[ref]
    ref_macs, ref_params = count_cost(ref_d, ref_w, block=block, input_size=input_size, num_classes=num_classes)
    ref_name = f"{'robustresnet' if block == 'robust' else 'wrn'}-{ref}"
    spec = "cifar:robustresnet-custom"
    kwargs = {"depths": list(result.depths), "widths": list(result.widths), "block": block}
    if as_json:
        if build:
            _build(spec, kwargs, num_classes, output)
        click.echo(json.dumps({
            "budget_macs": budget, "block": block, "depths": list(result.depths), "widths": list(result.widths),
            "channels": list(result.channels), "macs": result.macs, "params": result.params, "scale": result.scale,
            "spec": spec, "kwargs": kwargs, "nearest_published": ref_name, "output": output,
        }, indent=2))
        return
    click.echo(f"RobustScaling for {human(budget)} MACs at {input_size}x{input_size} ({block} blocks):")
    click.echo(f"  {'stage':<8}{'depth':>6}{'width':>7}{'channels':>10}")
    for i, (d, w, c) in enumerate(zip(result.depths, result.widths, result.channels), 1):
        click.echo(f"  {i:<8}{d:>6}{w:>7}{c:>10}")
    click.echo(f"  total depth {sum(result.depths)}, total width {sum(result.widths)} (scale t={result.scale})")
    click.echo(f"  cost {human(result.macs)} MACs, {human(result.params)} parameters "
               f"({100 * (result.macs / budget - 1):+.1f}% of the budget)")
    click.echo(f"  nearest paper configuration: cifar:{ref_name} (depths {list(ref_d)}, widths {list(ref_w)}, "
               f"{human(ref_macs)} MACs, {human(ref_params)} parameters)")
    click.echo(f"  model spec: {spec} with depths={kwargs['depths']} widths={kwargs['widths']} block={block}")
    if build:
        params = _build(spec, kwargs, num_classes, output)
        click.echo(f"wrote {output} ({human(params)} parameters)")


def _build(spec: str, kwargs: dict, num_classes: int, output: str | None) -> int:
    model = harden.load_model(spec, num_classes=num_classes, model_kwargs=kwargs)
    harden.save(model, str(output), overwrite=True)
    return sum(p.numel() for p in model.parameters())
