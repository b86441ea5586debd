"""Transform time of `harden apply` on every model the core supports (CPU).

    python benchmarks/apply_time.py [--input-size 224] [--repeat 3] [--out benchmarks/results/apply_time.md]

Measures the wall time of ``harden.apply`` alone (analysis, edits and the shape check), not model
construction or the before/after table, taking the best of ``--repeat`` runs per model and transform.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings

import torch

import harden
from harden.errors import HardenError

MODELS = [f"tv:{n}" for n in ("resnet18", "resnet50", "wide_resnet50_2", "vgg16_bn", "alexnet", "convnext_tiny",
                               "efficientnet_b0", "mobilenet_v3_small", "densenet121", "regnet_y_400mf")] + [
    f"timm:{n}" for n in ("resnet18", "resnet50d", "convnext_tiny", "efficientnet_b0", "tf_efficientnet_b0",
                          "regnety_008", "mobilenetv3_large_100", "resnext50_32x4d", "vit_tiny_patch16_224")]
TRANSFORMS = ["upsample:factor=2", "stride-mod", "activation:name=silu", "last-stage-width:ratio=0.5"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--out", default=None, help="also write the table as markdown here")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    available = harden.list_transforms()
    transforms = [t for t in TRANSFORMS if t.split(":")[0] in available]
    rows = []
    for spec in args.models:
        model = harden.load_model(spec, num_classes=1000, input_size=args.input_size)
        cells = []
        for t in transforms:
            best = None
            for _ in range(args.repeat):
                start = time.perf_counter()
                try:
                    harden.apply(model, [t])
                except HardenError:
                    best = "n/a"
                    break
                took = time.perf_counter() - start
                best = took if best is None else min(best, took)
            cells.append(best if best == "n/a" else f"{best:.2f}s")
        rows.append((spec, cells))
        print(f"{spec:30s} " + "  ".join(f"{c:>8s}" for c in cells), flush=True)
    head = (f"Transform time of harden.apply at {args.input_size}x{args.input_size} "
            f"(best of {args.repeat}; n/a = transform does not apply)\n\n"
            f"device: CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, {datetime.date.today().isoformat()}\n\n")
    table = "| model | " + " | ".join(transforms) + " |\n|---|" + "---|" * len(transforms) + "\n"
    table += "".join(f"| {spec} | " + " | ".join(cells) + " |\n" for spec, cells in rows)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(head + table)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
