"""What the per-epoch validation attack says about trained models, and what it costs: PGD (step eps/4, as
harden validates by default) beside APGD-CE (``finetune --val-attack apgd-ce``) on the same held-out images.

    python benchmarks/val_attack.py --data idx:../shared/data/fashion-mnist --eps 0.1 --val-n 1000 \\
        MODEL.safetensors [...] --out benchmarks/results/val-attack-fmnist.md

The held-out images are those fine-tuning holds out with ``--val-n`` and ``--seed`` (the training split's
seeded permutation), so a model trained with those settings never saw them. Each model is validated with
each attack by the trainer's own ``validate``; the seconds are wall-clock on this machine, side by side.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch

import harden
from harden.data import load_dataset
from harden.runtime.atomic import atomic_path
from harden.runtime.session import DistSession
from harden.training import Trainer, make_config
from harden.training.train_data import split_indices
from harden.training.uint8_images import decode_uint8

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import device_name  # noqa: E402

ATTACKS = (("pgd", 10), ("apgd-ce", 25))


def held_out(data: str, size: tuple[int, ...], val_n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out training images as uint8 (x, y), as fine-tuning validates on them."""
    dataset = load_dataset(data, split="train", image_size=size)
    val, _ = split_indices(len(dataset), make_config(val_n=val_n, seed=seed))
    return decode_uint8(dataset, val, workers=0)


def measure(path: Path, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> dict:
    """Clean and robust accuracy (%) and seconds of each validation attack on one model."""
    model = harden.load(path, trust_code=False)
    row: dict = {"model": path.name}
    for attack, steps in ATTACKS:
        cfg = make_config(method="pgd", eps=eps, val_attack=attack, val_steps=steps, seed=seed, batch_size=250)
        trainer = Trainer(model, cfg, device=torch.device("cpu"), dist=DistSession())
        t0 = time.perf_counter()
        clean, robust = trainer.validate(x, y)
        row.update({"clean": clean, f"{attack}-{steps}": robust, f"{attack}-{steps} s": time.perf_counter() - t0})
    return row


def table(rows: list[dict], meta: dict) -> str:
    names = [f"{a}-{s}" for a, s in ATTACKS]
    out = [f"# The validation attack: {' vs '.join(names)}", "",
           f"{meta['date']}, {meta['device']}, `{meta['command']}`; {meta['n']} held-out training images of "
           f"`{meta['data']}` (val-n {meta['n']}, seed {meta['seed']}), eps {meta['eps']:g} (Linf).", "",
           "| model | clean % | " + " | ".join(f"{n} robust %" for n in names) + " | overstated by (points) | "
           + " | ".join(f"{n} s" for n in names) + " | cost ratio |", "|---" * (4 + 2 * len(names)) + "|"]
    for r in rows:
        over = r[names[0]] - r[names[1]]
        out.append(f"| {r['model']} | {r['clean']:.1f} | " + " | ".join(f"{r[n]:.1f}" for n in names)
                   + f" | {over:+.1f} | " + " | ".join(f"{r[n + ' s']:.0f}" for n in names)
                   + f" | {r[names[1] + ' s'] / r[names[0] + ' s']:.2f}x |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--val-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="markdown table; a .json beside it")
    args = ap.parse_args()
    size = tuple(harden.serialization.read_provenance(args.models[0]).model.input_size)
    x, y = held_out(args.data, size, args.val_n, args.seed)
    rows = [measure(p, x, y, args.eps, args.seed) for p in args.models]
    meta = {"date": datetime.date.today().isoformat(), "device": device_name(), "data": args.data, "n": len(y),
            "seed": args.seed, "eps": args.eps, "command": "python benchmarks/val_attack.py " + " ".join(sys.argv[1:])}
    text = table(rows, meta)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
