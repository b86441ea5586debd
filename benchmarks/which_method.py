"""The README's "which method" table, from harden's own measured tables (no figure typed by hand).

    cd benchmarks/results && python ../which_method.py methods-cpu-eps8-255.json methods-cpu-eps16-255.json \\
        evidence-cpu.json methods-fmnist-eps0.1.json evidence-fmnist.json --out which-method.md \\
        --readme ../../README.md

Every row of the given tables that trains a network from scratch with no transform is one method
measurement (the evidence tables' baseline and method rows, the methods tables' rows). Each line gives the
table's protocol, the seeds, clean and robust accuracy (mean ± sd over seeds, the table's attack and
images), the paired difference to FGSM-RS of the same seed (from the same table, or from another of the
given tables measured on the same test images: protocol, data, eps, attack, n and their seed), the
forward-backward passes per training image (the load-free cost) and the measured training minutes per
epoch (wall-clock on the machine the table names, shared with other work: an indication, not a result).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from harden.evaluation.eps import parse_eps
from harden.runtime.atomic import atomic_path
from harden.stats import paired_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_table import attack_text, mean_sd  # noqa: E402
from protocols import method_passes  # noqa: E402
from readme_block import markers, readme_parts, replace_block  # noqa: E402

NAMES = {"fgsm-rs": "FGSM-RS", "n-fgsm": "N-FGSM", "pgd": "PGD", "trades": "TRADES", "mart": "MART", "clean": "clean"}


def method_of(row: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The row's training method with the protocol's defaults filled in (the protocol's own attack step
    belongs to the protocol's method, as benchmarks/reproduce.py trains it)."""
    training = row.get("training", {})
    own_step = {"step_size": settings["step_size"]} if settings.get("step_size") and "method" not in training else {}
    return {"method": settings["method"], "steps": settings["steps"], **own_step, **training}


def method_name(t: dict[str, Any], eps: str | None = None) -> str:
    """A method's name as the table prints it: PGD-2, TRADES (PGD-2 inside), with the step where it is not the
    default and AWP where it is used."""
    name = NAMES.get(t["method"], t["method"])
    if t["method"] in ("pgd", "trades", "mart"):
        name += f"-{t['steps']}" if t["method"] == "pgd" else f" (PGD-{t['steps']} inside)"
    if t.get("step_size") and eps:
        name += f", step {float(t['step_size']) / parse_eps(eps)[0]:.2g} eps"
    return name + (f" + AWP {t['awp']}" if t.get("awp") else "")


def _reference(table: dict[str, Any]) -> dict[int, list[bool]] | None:
    """Per seed, which test images FGSM-RS of this table withstands (None: the table has no FGSM-RS row)."""
    for row in table["rows"]:
        if method_of(row, table["settings"])["method"] == "fgsm-rs" and _is_method_row(row):
            return {e["seed"]: [o == "robust" for o in e["outcome"]] for e in row["seeds"]}
    return None


def _is_method_row(row: dict[str, Any]) -> bool:
    return not row.get("transforms") and row.get("start", "scratch") == "scratch"


def _vs_fgsm_rs(seeds: list[dict[str, Any]], reference: dict[int, list[bool]] | None) -> str:
    if reference is None:
        return "-"
    cells = []
    for e in seeds:
        if e["seed"] in reference:
            d = paired_difference(reference[e["seed"]], [o == "robust" for o in e["outcome"]])
            cells.append(f"s{e['seed']}: {d['difference']:+.1f} (p={d['p_value']:.2g})")
    return "; ".join(cells) or "-"


def load_table(path: Path) -> dict[str, Any]:
    """A measured table's JSON; one ``error:`` line if it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: cannot read '{path}' as a table ({type(exc).__name__}); give the .json that "
                         "benchmarks/reproduce.py wrote") from None


def test_images(table: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two tables' robust accuracies comparable image by image: the same protocol, data, eps,
    attack and fixed test images (n and the seed that draws them)."""
    s = table["settings"]
    return (table.get("protocol"), table.get("data"), s["eps"], s["attack"], s["n"], s["eval_seed"])


def references(tables: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[int, list[bool]]]:
    """FGSM-RS's robust images per seed for each set of test images, from the first table that has it."""
    out: dict[tuple[Any, ...], dict[int, list[bool]]] = {}
    for table in tables:
        reference = _reference(table)
        if reference is not None:
            out.setdefault(test_images(table), reference)
    return out


def lines_of(path: Path, shared: dict[tuple[Any, ...], dict[int, list[bool]]] | None = None
             ) -> list[dict[str, Any]]:
    """One record per method row of the table at ``path``; a table without FGSM-RS is paired with the FGSM-RS
    of another table on the same test images (``shared``, from :func:`references`), if any."""
    table = load_table(path)
    s = table["settings"]
    reference = _reference(table) or (shared or {}).get(test_images(table))
    out = []
    for row in table["rows"]:
        seeds = sorted(row["seeds"], key=lambda e: e["seed"])
        if not _is_method_row(row) or not seeds:
            continue
        t = method_of(row, s)
        minutes = [e["train_seconds"] / 60 / e.get("epochs_run", s["epochs"]) for e in seeds if e.get("train_seconds")]
        is_reference = t["method"] == "fgsm-rs"
        out.append({
            "method": method_name(t, s["eps"]), "protocol": table.get("protocol", "?"), "model": s["model"],
            "eps": s["eps"],
            "budget": f"{s['epochs']} epochs x {s['train_n'] or 'all'} images", "seeds": [e["seed"] for e in seeds],
            "clean": mean_sd([e["clean_acc"] for e in seeds]), "robust": mean_sd([e["robust_acc"] for e in seeds]),
            "attack": f"{attack_text(s['attack'])}, n={s['n']}",
            "vs_fgsm_rs": "(reference)" if is_reference else _vs_fgsm_rs(seeds, reference),
            "passes": method_passes(t), "minutes_per_epoch": statistics.median(minutes) if minutes else None,
            "device": table.get("device", "?"), "source": path.name,
            "collapsed": sum(1 for e in seeds if e.get("collapse"))})
    return out


def markdown(records: list[dict[str, Any]]) -> str:
    lines = ["# Which training method: harden's own measurements", "",
             "Generated by `benchmarks/which_method.py` from the tables named in the last column; every figure is "
             "a mean ± sd over the seeds listed, on the table's fixed test images. `vs FGSM-RS`: robust accuracy "
             "minus FGSM-RS's of the same seed on the same images (points, exact McNemar p; FGSM-RS of the same "
             "table, or of another table here on the same protocol and test images). Passes: "
             "forward-backward passes per training image (the cost without the machine's load). Minutes per "
             "epoch: median wall-clock over the seeds on a 2-core machine shared with other work (an indication).",
             "", "| method | protocol | eps | budget | seeds | clean % | robust % | attack | vs FGSM-RS | passes "
             "| min / epoch | collapses | table |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        minutes = f"{r['minutes_per_epoch']:.1f}" if r["minutes_per_epoch"] is not None else "-"
        lines.append(f"| {r['method']} | `{r['protocol']}` ({r['model']}) | {r['eps']} | {r['budget']} "
                     f"| {', '.join(map(str, r['seeds']))} | {r['clean']} | {r['robust']} | {r['attack']} "
                     f"| {r['vs_fgsm_rs']} | {r['passes']} | {minutes} | {r['collapsed']} | {r['source']} |")
    return "\n".join(lines) + "\n"


BLOCK, GENERATOR = "which-method", "benchmarks/which_method.py --readme"
BEGIN, END = markers(BLOCK, GENERATOR)


def short_table(records: list[dict[str, Any]]) -> str:
    """The README's short form: method, protocol, eps, seeds, clean and robust accuracy, passes, min / epoch."""
    lines = ["| method | protocol (eps) | seeds | clean % | robust % | passes / image | min / epoch | table |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        minutes = f"{r['minutes_per_epoch']:.1f}" if r["minutes_per_epoch"] is not None else "-"
        lines.append(f"| {r['method']} | `{r['protocol']}` ({r['eps']}) | {len(r['seeds'])} | {r['clean']} "
                     f"| {r['robust']} | {r['passes']} | {minutes} | {r['source'].removesuffix('.json')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("tables", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/which-method.md"))
    ap.add_argument("--readme", type=Path, default=None, help="also rewrite the short table in this README")
    args = ap.parse_args(argv)
    if args.readme is not None:
        readme_parts(args.readme, BLOCK, GENERATOR)  # an unusable README: nothing is written
    shared = references([load_table(path) for path in args.tables])
    records = [r for path in args.tables for r in lines_of(path, shared)]
    with atomic_path(args.out) as tmp:
        tmp.write_text(markdown(records))
    print(f"wrote {args.out}")
    if args.readme is not None:
        replace_block(args.readme, BLOCK, GENERATOR, short_table(records))
        print(f"updated the which-method table in {args.readme}")
    return args.out


if __name__ == "__main__":
    main()
