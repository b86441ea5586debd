"""MeanSparse on the evidence protocols' robust baselines: no training, evaluated as it is and with BPDA.

    python benchmarks/meansparse.py --protocol fmnist --models runs/reproduce/fmnist/row0-*-seed*.safetensors
    python benchmarks/meansparse.py --protocol cpu --models runs/reproduce/cpu/row0-*-seed1.safetensors --merge

For each adversarially trained model that ``reproduce.py`` kept (one per training seed), the script applies
``meansparse`` with the threshold fixed in advance (``ALPHA``, the authors' default configuration) and
statistics from ``--calibrate-n`` training images, then attacks the base and the MeanSparse model on the
protocol's fixed test images: APGD-CE on the protocol's ``n`` images and AutoAttack ``--fast`` on its
``check_n``. harden attacks a model with straight-through operators twice, as it is and with BPDA, and
counts an image as robust only when it withstands both; the table shows all three figures and pairs each
with the base on the same images (exact McNemar p).

The rule, fixed before any result: MeanSparse improves a protocol's robustness only if the lower-per-image
figure (as it is and BPDA) is above the base's with p < 0.05 in every seed; a higher figure as it is alone
is counted as gradient masking, not robustness.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path
from typing import Any

import harden
from harden.runtime.atomic import atomic_path
from harden.stats import paired_difference

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocols import PROTOCOLS  # noqa: E402
from reproduce import device_name, protocol_data  # noqa: E402

ALPHA = 0.25  # fixed before any result: the threshold of the authors' default configuration
CALIBRATE_N = 4096
P_MAX = 0.05


def _robust(outcome: list[str], *, as_is: bool = False) -> list[bool]:
    """Robust per image; ``as_is``: also the images only BPDA broke (``bpda:...``)."""
    return [o == "robust" or (as_is and o.startswith("bpda:")) for o in outcome]


def _paired(base: list[bool], other: list[bool]) -> dict[str, Any]:
    d = paired_difference(base, other)
    return {"difference": round(d["difference"], 2), "p_value": d["p_value"], "only_base": d["only_a"],
            "only_meansparse": d["only_b"]}


def attack(model: harden.HardenedModel, data: str, name: str, n: int, s: dict[str, Any]) -> dict[str, Any]:
    """One attack on the protocol's fixed test images; for MeanSparse as it is, with BPDA and per image."""
    fast = name == "autoattack-fast"
    report = harden.evaluate(model, data, attack="autoattack" if fast else name, fast=fast, eps=s["eps"], n=n,
                             random_subset=True, seed=s["eval_seed"])
    record = {"attack": name, "n": report.n, "clean_acc": report.clean_acc, "robust_acc": report.robust_acc,
              "outcome": report.outcome, "warnings": [w.name for w in report.warnings],
              "seconds": round(report.seconds, 1)}
    through = report.extras.get("straight_through")
    if through:
        record["as_is_acc"] = through["as_is"]["robust_acc"]
        record["bpda_acc"] = through["bpda"]["robust_acc"]
        record["operators"] = through["modules"]
    return record


def measure_seed(path: Path, data: str, s: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Base and MeanSparse under the protocol's attack and its check attack, paired per image."""
    seed = _seed_of(path)
    base = harden.load(path)
    spec = f"meansparse:alpha={args.alpha},data={data},n={args.calibrate_n},seed=0"
    sparse = harden.apply(harden.load(path), [spec])
    entry: dict[str, Any] = {"seed": seed, "model": path.name, "changes": sparse.provenance.transforms[-1].changes}
    attacks = [(s["attack"], s["n"])] + ([] if args.no_check else [(s["check_attack"], s["check_n"])])
    for name, n in attacks:
        b, m = attack(base, data, name, n, s), attack(sparse, data, name, n, s)
        rb = _robust(b["outcome"])
        entry[name] = {"base": b, "meansparse": m,
                       "vs_base": _paired(rb, _robust(m["outcome"])),
                       "as_is_vs_base": _paired(rb, _robust(m["outcome"], as_is=True))}
        print(f"seed {seed} {name}: base {b['robust_acc']:.1f}% | MeanSparse as is {m.get('as_is_acc')}%, "
              f"BPDA {m.get('bpda_acc')}%, both {m['robust_acc']:.1f}%", flush=True)
    return entry


def _seed_of(path: Path) -> int:
    found = re.search(r"seed(\d+)", path.name)
    if not found:
        raise SystemExit(f"error: {path.name} does not say its training seed (reproduce.py names it ...-seedN)")
    return int(found.group(1))


def verdict(seeds: list[dict[str, Any]], attack_name: str) -> str:
    """The rule fixed in advance, applied to the seeds measured so far."""
    if not seeds:
        return "no seed measured"
    cells = [e[attack_name]["vs_base"] for e in seeds]
    if all(c["difference"] > 0 and c["p_value"] < P_MAX for c in cells):
        return f"MeanSparse is more robust than its base in every seed ({len(seeds)}; p < {P_MAX})"
    if all(c["difference"] < 0 and c["p_value"] < P_MAX for c in cells):
        return f"MeanSparse is less robust than its base in every seed ({len(seeds)}; p < {P_MAX})"
    return (f"no difference shown ({len(seeds)} seed{'s' if len(seeds) != 1 else ''}): not p < {P_MAX} with the "
            "same sign in every seed; a null, not evidence that MeanSparse does nothing")


def _row(entry: dict[str, Any], name: str) -> str:
    r = entry[name]
    b, m, d, a = r["base"], r["meansparse"], r["vs_base"], r["as_is_vs_base"]
    return (f"| {entry['seed']} | {b['clean_acc']:.1f} / {m['clean_acc']:.1f} | {b['robust_acc']:.1f} "
            f"| {m.get('as_is_acc', float('nan')):.1f} ({a['difference']:+.1f}, p={a['p_value']:.2g}) "
            f"| {m.get('bpda_acc', float('nan')):.1f} | **{m['robust_acc']:.1f}** ({d['difference']:+.1f}, "
            f"p={d['p_value']:.2g}) | {', '.join(m['warnings']) or '-'} |")


def markdown(doc: dict[str, Any]) -> str:
    s, seeds = doc["settings"], sorted(doc["seeds"], key=lambda e: e["seed"])
    lines = [f"# MeanSparse without training on the `{doc['protocol']}` protocol's robust baseline", "",
             f"base: the protocol's row 0 (adversarially trained, {s['model']}), one model per training seed; "
             f"MeanSparse alpha={doc['alpha']} (fixed in advance), statistics from {doc['calibrate_n']} training "
             f"images (random subset, seed 0). Linf eps {s['eps']}; the protocol's fixed test images (seed "
             f"{s['eval_seed']}). Updated {doc['updated']}.", "", f"Rule, fixed before any result: {doc['rule']}", ""]
    for name, n in ((s["attack"], s["n"]), (s["check_attack"], s["check_n"])):
        measured = [e for e in seeds if name in e]
        lines += [f"## {name}, n={n}", "", f"verdict: {verdict(measured, name)}", "",
                  "| seed | clean % base / MeanSparse | robust % base | MeanSparse as it is (vs base, McNemar p) "
                  "| MeanSparse with BPDA | MeanSparse, lower per image (vs base, McNemar p) | warnings |",
                  "|---|---|---|---|---|---|---|", *(_row(e, name) for e in measured), ""]
    lines += ["as it is: gradients through the operators as they are (zero where a value is replaced by the mean); "
              "BPDA: the operators' forward pass with the identity's backward pass; lower per image: an image "
              "counts as robust only if it withstands both (harden's figure). Differences in points, paired on "
              "the same images; p: two-sided exact McNemar.", "", "## Pieces", "",
              "| date (UTC) | device | seeds | command |", "|---|---|---|---|"]
    lines += [f"| {p['date']} | {p['device']} | {', '.join(map(str, p['seeds']))} | `{p['command']}` |"
              for p in doc["pieces"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    ap.add_argument("--models", nargs="+", type=Path, help="reproduce.py's row-0 model files")
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--calibrate-n", type=int, default=CALIBRATE_N)
    ap.add_argument("--data", help="data spec (default: the protocol's)")
    ap.add_argument("--shared", help="the shared data folder (default ../shared/data/...)")
    ap.add_argument("--cache", default="data/cifar10-jpeg")
    ap.add_argument("--merge", action="store_true", help="add these seeds to the existing table")
    ap.add_argument("--no-check", action="store_true", help="the protocol's attack only, not its check attack")
    ap.add_argument("--join", nargs="+", type=Path, default=[], metavar="TABLE.json", dest="tables",
                    help="add the seeds and pieces of tables measured elsewhere (same settings) to --out")
    ap.add_argument("--out", type=Path, help="default benchmarks/results/meansparse-PROTOCOL.md")
    return ap


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    args.join = False
    s = {**PROTOCOLS[args.protocol]}
    out = args.out or Path(f"benchmarks/results/meansparse-{args.protocol}.md")
    data = protocol_data(args.protocol, args)
    if not args.models and not args.tables:
        raise SystemExit("error: give --models (files to measure) or --join (tables to add)")
    merging = args.merge or bool(args.tables)
    old = json.loads(out.with_suffix(".json").read_text()) if merging and out.with_suffix(".json").exists() else None
    settings = {k: s[k] for k in ("model", "eps", "n", "attack", "check_attack", "check_n", "eval_seed")}
    if old and (old["settings"], old["alpha"], old["calibrate_n"]) != (settings, args.alpha, args.calibrate_n):
        raise SystemExit(f"error: {out.with_suffix('.json')} was measured with other settings; write another --out")
    identity = (settings, args.alpha, args.calibrate_n)
    try:
        joined = [json.loads(p.read_text()) for p in args.tables]
    except (OSError, ValueError) as exc:
        message = f"error: --join: cannot read a table ({type(exc).__name__}: {exc}); give a .json it wrote"
        raise SystemExit(message) from None
    if any((j["settings"], j["alpha"], j["calibrate_n"]) != identity for j in joined):
        raise SystemExit("error: --join: a table was measured with other settings")
    fresh = [measure_seed(p, data, s, args) for p in args.models or []]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = "python benchmarks/meansparse.py " + " ".join(sys.argv[1:] if argv is None else argv)
    pieces = [*(old or {}).get("pieces", []), *(p for j in joined for p in j["pieces"])]
    if fresh:
        pieces.append({"date": now, "device": device_name(), "command": command, "seeds": [e["seed"] for e in fresh]})
    seeds: dict[int, dict[str, Any]] = {}
    for e in [*(old or {}).get("seeds", []), *(e for j in joined for e in j["seeds"]), *fresh]:
        seeds[e["seed"]] = e  # a seed measured again replaces the older entry
    doc = {"protocol": args.protocol, "settings": settings, "alpha": args.alpha, "calibrate_n": args.calibrate_n,
           "data": data, "rule": __doc__.split("The rule, fixed before any result: ")[1].split("\n\n")[0].replace(
               "\n", " "), "updated": now, "seeds": [seeds[k] for k in sorted(seeds)], "pieces": pieces}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    with atomic_path(out) as tmp:
        tmp.write_text(markdown(doc))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
