"""Attack the evidence table's trained models again: a stronger attack on more of the same test images.

    python benchmarks/attack_check.py --protocol cpu --attack autoattack-fast --n 500 --seed 0
    python benchmarks/attack_check.py --protocol cpu --rows 1 --merge     # one more row into the same file

``reproduce.py`` measures every (row, seed) with its protocol's attack (APGD-CE on the CPU) on n fixed
test images, and its stronger check attack on a small subset only. This script loads the models that
``reproduce.py`` kept in ``--work`` for one training seed, attacks the first ``--n`` of the same fixed
test images with the stronger attack and sets the result beside the table's own attack on exactly
those images: per row, how many images only the stronger attack breaks (the gap), the difference to
the baseline under each attack with its exact McNemar p, and whether the rows keep their order.

The rule is fixed before any result: a row whose gap exceeds the baseline's by more than
``GAP_FLAG`` points is flagged, because a change that only hides the gradient (masking) looks robust
to APGD-CE and shows up as a larger gap under AutoAttack's targeted APGD-T (and, in the standard
version, its gradient-free Square attack).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import harden
from harden.runtime.atomic import atomic_path
from harden.searching.proxies import spearman, spearman_interval
from harden.stats import mcnemar_exact_p

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocols import PROTOCOLS, rows_of  # noqa: E402
from reproduce import device_name, evaluate, model_path, parse_list  # noqa: E402

GAP_FLAG = 2.0  # points of robust accuracy broken only by the stronger attack, above the baseline's gap
ALPHA = 0.05
ATTACKS = ("autoattack-fast", "autoattack", "apgd-ce", "pgd")  # the stronger attack: AutoAttack is the point
PGD_STEP = ", step eps/4 from a random start, as harden's training validates each epoch"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cpu", help="the table's protocol")
    ap.add_argument("--attack", choices=ATTACKS, default="autoattack-fast", help="the stronger attack")
    ap.add_argument("--n", type=int, default=500, help="the first N of the table's fixed test images")
    ap.add_argument("--seed", type=int, default=0, help="the training seed whose models are attacked")
    ap.add_argument("--rows", default=None, help="comma-separated row numbers (default: every row of the table)")
    ap.add_argument("--merge", action="store_true", help="keep the rows of an earlier run with the same settings")
    ap.add_argument("--work", default="runs/reproduce", help="the folder reproduce.py kept its models in")
    ap.add_argument("--table", default=None,
                    help="the table's JSON (default: benchmarks/results/evidence-PROTOCOL.json)")
    ap.add_argument("--out", default=None, help="markdown (default: benchmarks/results/evidence-PROTOCOL-ATTACK.md)")
    return ap


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        fail(f"cannot read {what} '{path}' ({type(exc).__name__}); run benchmarks/reproduce.py first", 2)


def table_settings(table: dict[str, Any], protocol: str) -> dict[str, Any]:
    """The table's settings, which must be the protocol's: the models' file names carry their digest."""
    s = {**PROTOCOLS[protocol], "steps_eval": 10, "model": table.get("model")}
    if table.get("settings") != s:
        fail(f"the table was measured with other settings than protocol '{protocol}'; give its --protocol")
    return s


def robust(outcome: list[str]) -> list[bool]:
    return [o == "robust" for o in outcome]


def versus(row: list[bool], base: list[bool]) -> dict[str, Any]:
    """Row minus baseline on the same images: points of robust accuracy and the exact McNemar p."""
    only_base = sum(b and not r for r, b in zip(row, base))
    only_row = sum(r and not b for r, b in zip(row, base))
    return {"difference": round(100 * (only_row - only_base) / len(row), 2),
            "p_value": mcnemar_exact_p(only_base, only_row), "only_baseline": only_base, "only_row": only_row}


def check_row(entry: dict[str, Any], training: dict[str, Any], args: argparse.Namespace, table: dict[str, Any],
              s: dict[str, Any]) -> dict[str, Any]:
    """The stronger attack on one row's model, beside the table's attack on the same images."""
    index = entry["index"]
    kept = next((r for r in entry["seeds"] if r["seed"] == args.seed), None)
    if kept is None:
        fail(f"row {index} has no seed {args.seed} in the table; measure it with reproduce.py first")
    if args.n > kept["n"]:
        fail(f"--n {args.n} is more than the table's {kept['n']} images; give at most {kept['n']}", 2)
    path = model_path(Path(args.work) / args.protocol, index, args.seed, table["data"], s, training)
    if not path.exists():
        fail(f"row {index} seed {args.seed}: no model at '{path}'; run this where reproduce.py measured it "
             "(--work) or measure it again")
    stronger = evaluate(harden.load(path), table["data"], args.attack, args.n, s)
    weaker = kept["outcome"][:args.n]
    broke = sum(w == "robust" and o != "robust" for w, o in zip(weaker, stronger["outcome"]))
    held = sum(w != "robust" and o == "robust" for w, o in zip(weaker, stronger["outcome"]))
    return {"index": index, "row": entry["row"], "weaker": kept["attack"],
            "weaker_robust": round(100 * sum(robust(weaker)) / args.n, 2), **stronger,
            "gap": round(100 * broke / args.n, 2), "broken_only_by_stronger": broke,
            "robust_only_under_stronger": held, "weaker_outcome": weaker}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Differences to the baseline under both attacks, the gap rule, and how well the order holds."""
    rows.sort(key=lambda r: r["index"])
    base = next((r for r in rows if r["index"] == 0), None)
    for r in rows:
        if base is not None and r is not base:
            r["vs_baseline"] = {"stronger": versus(robust(r["outcome"]), robust(base["outcome"])),
                                "weaker": versus(robust(r["weaker_outcome"]), robust(base["weaker_outcome"]))}
            r["flagged"] = r["gap"] - base["gap"] > GAP_FLAG
    rho = spearman([r["weaker_robust"] for r in rows], [r["robust_acc"] for r in rows])
    interval = spearman_interval(rho, len(rows)) if rho is not None else None
    changed = [r["index"] for r in rows if "vs_baseline" in r and _verdict(r, "weaker") != _verdict(r, "stronger")]
    return {"spearman": rho, "spearman_ci95": interval, "verdict_changed": changed,
            "flagged": [r["index"] for r in rows if r.get("flagged")]}


def _verdict(r: dict[str, Any], attack: str) -> str:
    v = r["vs_baseline"][attack]
    if v["p_value"] >= ALPHA:
        return "no difference"
    return "higher" if v["difference"] > 0 else "lower"


def markdown(doc: dict[str, Any]) -> str:
    """The check as a markdown table with its attack, eps, n, seeds and the rule stated above it."""
    first = doc["rows"][0]
    weaker, stronger, n = first["weaker"], doc["attack"], doc["n"]
    head = f"{stronger} vs {weaker}, Linf {doc['eps']}, n={n}"
    lines = [f"# Evidence table, attack check: {head}", "",
             f"The models of training seed {doc['seed']} of `{doc['table']}` ({doc['model']}, protocol "
             f"{doc['protocol']}), attacked with {stronger} ({', '.join(first.get('attacks') or [stronger])}"
             f"{PGD_STEP if stronger == 'pgd' else ''}) on the first {n} of the table's fixed test images "
             f"(evaluation seed {doc['eval_seed']}), beside the table's {weaker} on exactly those images. Device: "
             f"{doc['device']}. Gap: robust under {weaker}, broken by {stronger}. Rule, set before any result: "
             f"a gap more than {GAP_FLAG:g} points above the baseline's is flagged as possible gradient masking. "
             f"Overstated: robust under {stronger}, broken by {weaker} (what {stronger} misses; large when it is the "
             f"weaker attack). p: exact McNemar against the baseline on the same images.", "",
             f"| row | clean % | {weaker} robust % (n={n}) | {stronger} robust % (n={n}) | gap (points) | "
             f"overstated (points) | vs baseline, {weaker} (p) | vs baseline, {stronger} (p) | warnings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        vs = r.get("vs_baseline")
        cells = [f"{v['difference']:+.1f} ({v['p_value']:.3g})" for v in (vs["weaker"], vs["stronger"])] if vs \
            else ["—", "—"]
        flag = " **flagged**" if r.get("flagged") else ""
        lines.append(f"| {r['index']}. {r['row']} | {r['clean_acc']:.1f} | {r['weaker_robust']:.1f} | "
                     f"{r['robust_acc']:.1f} | {r['gap']:.1f}{flag} | {overstated(r, n):.1f} | {cells[0]} | "
                     f"{cells[1]} | {', '.join(r['warnings']) or 'none'} |")
    lines += ["", *findings(doc), "", "Pieces:", *[f"- {p['date']}: `{p['command']}`" for p in doc["pieces"]]]
    return "\n".join(lines) + "\n"


def overstated(r: dict[str, Any], n: int) -> float:
    """Points of robust accuracy the check attack leaves that the table's attack breaks."""
    return 100 * r["robust_only_under_stronger"] / n


def findings(doc: dict[str, Any]) -> list[str]:
    s, rows, n = doc["summary"], doc["rows"], doc["n"]
    gaps = [r["gap"] for r in rows]
    over = sorted(rows, key=lambda r: overstated(r, n))
    out = [f"- Gap over the {len(rows)} rows: {min(gaps):.1f} to {max(gaps):.1f} points; "
           f"{'flagged: rows ' + ', '.join(map(str, s['flagged'])) if s['flagged'] else 'no row flagged'}.",
           f"- {doc['attack']} overstates robust accuracy by {overstated(over[0], n):.1f} (row {over[0]['index']}) "
           f"to {overstated(over[-1], n):.1f} points (row {over[-1]['index']}) against {rows[0]['weaker']}."]
    if s["spearman"] is not None:
        ci = s["spearman_ci95"]
        out.append(f"- Order of the rows' robust accuracy under both attacks: Spearman {s['spearman']:.2f}"
                   + (f" (95% interval {ci[0]:.2f} to {ci[1]:.2f})" if ci else "") + ".")
    changed = s["verdict_changed"]
    out.append("- Verdict against the baseline (p < 0.05, lower/higher/no difference): "
               + (f"changes for rows {', '.join(map(str, changed))}." if changed else "the same under both "
                  "attacks for every row."))
    return out


def merged(args: argparse.Namespace, out: Path, identity: dict[str, Any], fresh: list[dict[str, Any]],
           piece: dict[str, Any]) -> dict[str, Any]:
    """The fresh rows plus, with --merge, the rows of an earlier run with the same identity."""
    doc = {**identity, "pieces": [piece], "rows": list(fresh)}
    if args.merge and out.with_suffix(".json").exists():
        saved = read_json(out.with_suffix(".json"), "the earlier check")
        differ = [k for k in identity if saved.get(k) != identity[k]]
        if differ:
            fail(f"--merge: '{out.with_suffix('.json')}' was measured with other {', '.join(differ)}; "
                 "use the same settings or another --out")
        redone = {r["index"] for r in fresh}
        doc["rows"] += [r for r in saved["rows"] if r["index"] not in redone]
        doc["pieces"] = saved["pieces"] + [piece]
    doc["summary"] = summarize(doc["rows"])
    return doc


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    if args.n < 1:
        fail("--n must be at least 1", 2)
    table_path = Path(args.table or f"benchmarks/results/evidence-{args.protocol}.json")
    table = read_json(table_path, "the evidence table")
    s = table_settings(table, args.protocol)
    definitions = rows_of(args.protocol, s["model"])
    indices = parse_list(args.rows, [r["index"] for r in table["rows"]], "rows", range(len(definitions)))
    out = Path(args.out or f"benchmarks/results/evidence-{args.protocol}-{args.attack}.md")
    identity = {"table": str(table_path), "protocol": args.protocol, "model": s["model"], "data": table["data"],
                "attack": args.attack, "eps": s["eps"], "n": args.n, "seed": args.seed, "eval_seed": s["eval_seed"],
                "device": device_name()}
    piece = {"command": "python benchmarks/attack_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rows": indices}
    entries = {r["index"]: r for r in table["rows"]}
    fresh = []
    for index in indices:
        if index not in entries:
            fail(f"row {index} is not in the table; measure it with reproduce.py first")
        fresh.append(check_row(entries[index], definitions[index].training, args, table, s))
        done = fresh[-1]
        print(f"row {index}: {done['weaker']} {done['weaker_robust']:.1f}%, {args.attack} {done['robust_acc']:.1f}% "
              f"(n={args.n}, gap {done['gap']:.1f}), {done['seconds']:.0f} s", flush=True)
    doc = merged(args, out, identity, fresh, piece)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    with atomic_path(out) as tmp:
        tmp.write_text(markdown(doc))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except harden.errors.HardenError as exc:
        fail(str(exc), 2 if isinstance(exc, harden.errors.UsageError) else 1)
