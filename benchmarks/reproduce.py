"""Reproduce the seed papers' architecture claims on CIFAR-10 with harden itself.

    python benchmarks/reproduce.py                         # full: GPU, PGD-AT, AutoAttack on 1000 images
    python benchmarks/reproduce.py --quick --out /tmp/r.md # reduced CPU version (tested in the suite)
    python benchmarks/reproduce.py --rows 0,1 --epochs 10  # some rows now ...
    python benchmarks/reproduce.py --rows 2,3,4 --epochs 10 --merge   # ... the rest later, one table

``--merge`` keeps the rows of an earlier command that wrote the same table with the same settings
(model, data, budget, attack, n), so the table can be measured in pieces (one command per row under
a per-command time limit, say); rows run again replace their earlier figures.

Each row starts from the same randomly initialised `cifar:resnet18` (seed 0), applies one
architecture change, adversarially trains it with the same PGD-AT budget, and is evaluated on the
same fixed test images (a seeded random subset). The table gives clean and robust accuracy (with
the attack named), parameters, MACs at 32x32 and wall time, and the device.

Data: an ImageFolder tree of CIFAR-10; by default the JPEG copy in ../shared/data/cifar10-jpeg is
unpacked once into data/cifar10-jpeg (git-ignored). The JPEG re-encoding costs accuracy, so absolute
numbers sit below the papers'; the comparison between rows is what counts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tarfile
import time
from pathlib import Path

import torch

import harden
from harden.serialization import atomic_path
from harden.stats import paired_difference
from harden.summary import human, model_facts

ROWS = [
    ("baseline", []),
    ("upsample x2 (Xu et al., rcm)", ["upsample:factor=2"]),
    ("strides 1122 (Xu et al., rcm)", ["strides:pattern=1122"]),
    ("SiLU activations (Huang et al. 2023)", ["activation:name=silu"]),
    ("last stage width 0.5 (Huang et al. 2021)", ["last-stage-width:ratio=0.5"]),
]

FULL = {"epochs": 30, "train_n": None, "steps": 10, "n": 1000, "attack": "autoattack", "batch_size": 128,
        "lr": 0.1, "schedule": "multistep", "val_n": 512, "val_steps": 10}
QUICK = {"epochs": 1, "train_n": 32, "steps": 1, "n": 8, "attack": "pgd", "batch_size": 32,
         "lr": 0.05, "schedule": "cosine", "val_n": 16, "val_steps": 1}


def cifar_folder(shared: Path, cache: Path) -> str:
    """An ImageFolder spec for CIFAR-10, unpacking the shared JPEG tarballs once if needed."""
    if not (cache / "test").is_dir() or not (cache / "train").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            with tarfile.open(shared / f"{split}.tar.gz") as tar:
                tar.extractall(cache, filter="data")
    return f"imagefolder:{cache}"


def kind_of_run(settings: dict, quick: bool) -> str:
    """'full protocol', or what makes this run smaller than it."""
    if quick:
        return "reduced CPU check"
    smaller = [f"{k} {settings[k]} instead of {FULL[k] or 'all'}" for k in FULL if settings[k] != FULL[k]]
    return "full protocol" if not smaller else "reduced budget: " + ", ".join(smaller)


def ci(interval: list[float]) -> str:
    return f"{interval[0]:.1f}-{interval[1]:.1f}"


def versus(base: dict | None, row: dict) -> str:
    """Robust accuracy of ``row`` against the baseline's, paired on the same test images."""
    if base is None or row is base:
        return "-"
    d = paired_difference([o == "robust" for o in base["outcome"]], [o == "robust" for o in row["outcome"]])
    return f"{d['difference']:+.1f} (p={d['p_value']:.2g})"


def command_line() -> str:
    return "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])


def earlier_rows(path: Path, identity: dict) -> dict[str, dict]:
    """Rows of an earlier run written to ``path`` with the same model, data, settings and device."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    differ = [k for k in identity if saved.get(k) != identity[k]]
    if differ:
        sys.exit(f"error: --merge: '{path}' was measured with other {', '.join(differ)}; "
                 "use the same settings or another --out")
    return {r["row"]: r for r in saved["rows"]}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny epochs and n, PGD instead of AutoAttack (CPU)")
    ap.add_argument("--data", default=None, help="data spec (default: the shared CIFAR-10 JPEG copy)")
    ap.add_argument("--shared", default="../shared/data/cifar10-jpeg")
    ap.add_argument("--cache", default="data/cifar10-jpeg")
    ap.add_argument("--model", default="cifar:resnet18")
    ap.add_argument("--rows", default=None, help="comma-separated row numbers to run (default: all)")
    ap.add_argument("--epochs", type=int, default=None, help="PGD-AT epochs of every row (full: 30)")
    ap.add_argument("--train-n", type=int, default=None, help="training images (full: all 50,000)")
    ap.add_argument("--steps", type=int, default=None, help="PGD steps in training (full: 10)")
    ap.add_argument("--n", type=int, default=None, help="test images attacked (full: 1000)")
    ap.add_argument("--merge", action="store_true", help="keep the rows of an earlier run with the same settings")
    ap.add_argument("--work", default="runs/reproduce", help="folder for the trained models")
    ap.add_argument("--out", default=None, help="markdown table (default: benchmarks/results/reproduce-DATE.md)")
    args = ap.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    for key in ("epochs", "train_n", "steps", "n"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    try:
        rows = ROWS if args.rows is None else [ROWS[int(i)] for i in args.rows.split(",")]
    except (ValueError, IndexError):
        sys.exit(f"error: --rows takes numbers from 0 to {len(ROWS) - 1} separated by commas, got '{args.rows}'")
    out = Path(args.out or f"benchmarks/results/reproduce-{datetime.date.today().isoformat()}.md")
    data = args.data or cifar_folder(Path(args.shared), Path(args.cache))
    device = device_name()
    identity = {"model": args.model, "data": data, "settings": settings, "device": device}
    earlier = earlier_rows(out.with_suffix(".json"), identity) if args.merge else {}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for label, transforms in rows:
        torch.manual_seed(0)
        base = harden.load_model(args.model, num_classes=10, input_size=32)
        model = harden.apply(base, transforms) if transforms else base
        facts = model_facts(model)
        start = time.perf_counter()
        slug = "-".join(t.replace(":", "_").replace("=", "") for t in transforms) or "baseline"
        trained = harden.finetune(
            model, data, output=work / f"{slug}.safetensors", force=True, progress=not args.quick,
            method="pgd", eps=8 / 255, steps=settings["steps"], epochs=settings["epochs"], lr=settings["lr"],
            schedule=settings["schedule"], batch_size=settings["batch_size"], train_n=settings["train_n"],
            val_n=settings["val_n"], val_steps=settings["val_steps"], bn_recalib=False, seed=0)
        train_seconds = time.perf_counter() - start
        report = harden.evaluate(trained, data, attack=settings["attack"], eps=8 / 255, n=settings["n"],
                                 random_subset=True, seed=0, steps=None if settings["attack"] == "autoattack"
                                 else settings["steps"])
        results.append({"row": label, "command": command_line(), "transforms": transforms, "params": facts.params,
                        "macs": facts.macs,
                        "feature_map": facts.feature_map_text(), "clean_acc": report["clean_acc"],
                        "robust_acc": report["robust_acc"], "clean_ci95": report["clean_ci95"],
                        "robust_ci95": report["robust_ci95"], "attack": report["attack"],
                        "outcome": report["examples"]["outcome"],
                        "warnings": report.get("warnings", []), "train_seconds": round(train_seconds, 1),
                        "eval_seconds": round(report["seconds"], 1)})
        print(json.dumps({k: v for k, v in results[-1].items() if k != "outcome"}), flush=True)
    fresh = {r["row"]: r for r in results}
    results = [fresh.get(label) or earlier[label] for label, _ in ROWS if label in fresh or label in earlier]
    attack = results[0]["attack"] if results else settings["attack"]
    attack_text = "AutoAttack (standard)" if attack == "autoattack" else f"{attack.upper()}-{settings['steps']}"
    lines = [
        f"# Architecture changes on CIFAR-10 ({kind_of_run(settings, args.quick)})",
        "",
        f"device: {device}; date: {datetime.date.today().isoformat()}; harden {harden.__version__}, "
        f"torch {torch.__version__}",
        "command: " + ", ".join(sorted({f"`{r['command']}`" for r in results})),
        f"model: {args.model} at 32x32, trained from the same random init with PGD-AT (eps 8/255, "
        f"{settings['steps']} steps, {settings['epochs']} epochs, train_n {settings['train_n'] or 'all'}); "
        f"data: {data}",
        f"robust accuracy: {attack_text}, Linf eps 8/255, n={settings['n']} (seeded random test subset, seed 0)",
        "",
        f"| change | clean % (95% CI) | robust % ({attack_text}; 95% CI) | robust vs baseline (exact McNemar p) | "
        "params | MACs | feature map | train s | eval s | warnings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = next((r for r in results if r["row"] == "baseline"), None)
    for r in results:
        lines.append(f"| {r['row']} | {r['clean_acc']:.1f} ({ci(r['clean_ci95'])}) | {r['robust_acc']:.1f} "
                     f"({ci(r['robust_ci95'])}) | {versus(base, r)} | {human(r['params'])} | {human(r['macs'])} | "
                     f"{r['feature_map']} | {r['train_seconds']} | {r['eval_seconds']} | {len(r['warnings'])} |")
    lines += ["", "CI: Wilson interval over the test images; p: exact McNemar test on the images that only one of "
              "the two models withstands. Both cover the choice of test images, not training noise (one seed per "
              "row)."]
    warned = [(r["row"], w) for r in results for w in r["warnings"]]
    if warned:
        lines += ["", "Warnings of the evaluation (harden's checks and AutoAttack's own):", ""]
        lines += [f"- {row}: {w.get('message', w) if isinstance(w, dict) else w}" for row, w in warned]
    text = "\n".join(lines) + "\n"
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({**identity, "rows": results}, indent=2))
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
