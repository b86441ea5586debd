"""The evidence table of benchmarks/reproduce.py: merging pieces, paired tests per seed, JSON and markdown."""

from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path
from typing import Any

from evidence_plot import has_curves, plot_curves, plot_table
from pitch import budget_rows, pitch_sentences, plot_pitch

from harden.runtime.atomic import atomic_path
from harden.stats import mcnemar_exact_p, paired_difference
from harden.summary import human
from harden.training.collapse import collapse_message

ALPHA = 0.05
ATTACK_NAMES = {"apgd-ce": "APGD-CE (AutoAttack's standard settings)", "autoattack": "AutoAttack (standard)",
                "autoattack-fast": "AutoAttack --fast (APGD-CE, APGD-T)", "pgd": "PGD-10", "fgsm": "FGSM"}


def attack_text(attack: str | None) -> str:
    return ATTACK_NAMES.get(attack or "", str(attack))


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Robust accuracy of ``b`` minus ``a`` on the same images, with the exact McNemar p."""
    d = paired_difference([o == "robust" for o in a["outcome"]], [o == "robust" for o in b["outcome"]])
    return {"difference": round(d["difference"], 2), "p_value": d["p_value"], "only_a": d["only_a"],
            "only_b": d["only_b"], "n": d["n"]}


def _compare(rows: dict[int, dict[str, Any]], reference: dict[int, int]) -> None:
    """Fill each seed's ``vs_baseline`` (and ``vs_reference``) from the same seed of row 0 (or its reference)."""
    for index, row in rows.items():
        for entry in row["seeds"]:
            entry.pop("vs_baseline", None)
            entry.pop("vs_reference", None)
            for key, other in (("vs_baseline", 0), ("vs_reference", reference.get(index))):
                if other is None or other == index or other not in rows:
                    continue
                match = next((e for e in rows[other]["seeds"] if e["seed"] == entry["seed"]), None)
                if match is not None and match["n"] == entry["n"]:
                    entry[key] = {"row": other, **_paired(match, entry)}


def merge_results(saved: dict[str, Any] | None, identity: dict[str, Any], piece: dict[str, Any],
                  fresh: list[dict[str, Any]], reference: dict[int, int]) -> dict[str, Any]:
    """Earlier pieces (``saved``) plus this one: a (row, seed) measured again replaces the earlier result."""
    pieces = list(saved["pieces"]) if saved else []
    pieces.append(piece)
    rows: dict[int, dict[str, Any]] = {r["index"]: r for r in (saved["rows"] if saved else [])}
    for result in fresh:
        entry = {**result["seed_result"], "piece": len(pieces) - 1}
        row = rows.setdefault(result["index"], {"seeds": []})
        row.update({k: v for k, v in result.items() if k != "seed_result"})
        row["seeds"] = sorted([e for e in row["seeds"] if e["seed"] != entry["seed"]] + [entry],
                              key=lambda e: e["seed"])
    _compare(rows, reference)
    return {**identity, "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "pieces": pieces, "rows": [rows[i] for i in sorted(rows)]}


def pieces_of(table: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each piece of a table with its results in the form :func:`merge_results` takes (comparisons dropped)."""
    out = []
    for i, piece in enumerate(table["pieces"]):
        fresh = [{**{k: v for k, v in row.items() if k != "seeds"},
                  "seed_result": {k: v for k, v in e.items() if k not in ("piece", "vs_baseline", "vs_reference")}}
                 for row in table["rows"] for e in row["seeds"] if e["piece"] == i]
        out.append((piece, fresh))
    return out


def join_tables(table: dict[str, Any] | None, other: dict[str, Any], identity: dict[str, Any],
                reference: dict[int, int]) -> tuple[dict[str, Any], int]:
    """``table`` plus the pieces of ``other`` (measured elsewhere) that it lacks; the joined table and how many
    pieces were added. A piece is the same piece when its command and date are."""
    known = {(p["command"], p["date"]) for p in (table or {}).get("pieces", [])}
    added = 0
    for piece, fresh in pieces_of(other):
        if (piece["command"], piece["date"]) not in known and fresh:
            table = merge_results(table, identity, piece, fresh, reference)
            added += 1
    if table is None:
        raise ValueError("nothing to join: the other table has no measured pieces")
    return table, added


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f} (1 seed)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def verdict(seeds: list[dict[str, Any]], key: str, what: str) -> str:
    """A plain statement of what the per-seed paired tests against ``what`` show."""
    comps = [e[key] for e in seeds if key in e]
    if not comps:
        return f"not yet paired with {what} (its seeds are not measured)"
    k, mean = len(comps), statistics.mean(c["difference"] for c in comps)
    sig = [c for c in comps if c["p_value"] < ALPHA]
    directions = {c["difference"] > 0 for c in comps if c["difference"]}
    same_way = k > 1 and len(directions) == 1 and all(c["difference"] for c in comps)
    if not sig:
        aside = f", {'higher' if directions.pop() else 'lower'} in all {k}" if same_way else ""
        return (f"no significant difference in robust accuracy from {what} (p >= {ALPHA} in all {k} seed"
                f"{'s' if k > 1 else ''}{aside}; mean difference {mean:+.1f} points)")
    signs = {c["difference"] > 0 for c in sig}
    if len(sig) == k and len(signs) == 1:
        return (f"robust accuracy {'higher' if signs.pop() else 'lower'} than {what} in every seed measured "
                f"({k} of {k} with p < {ALPHA}; mean difference {mean:+.1f} points)")
    listed = ", ".join(format(c["difference"], "+.1f") for c in comps)
    if same_way:
        return (f"{'higher' if directions.pop() else 'lower'} than {what} in all {k} seeds (differences {listed}) "
                f"but p < {ALPHA} in only {len(sig)} of {k}: a consistent direction, not a difference by the rule")
    return f"mixed: p < {ALPHA} in {len(sig)} of {k} seeds (differences {listed}); not a consistent difference"


def pooled(seeds: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """The seeds' paired comparisons pooled: discordant images summed over seeds, one exact McNemar p.

    A secondary test: it covers the choice of test images with all seeds' evidence at once, not the
    training noise (the spread of the per-seed differences shows that)."""
    comps = [e[key] for e in seeds if key in e and "only_a" in e[key]]
    if len(comps) < 2:
        return None
    only_a, only_b, n = (sum(c[f] for c in comps) for f in ("only_a", "only_b", "n"))
    return {"seeds": len(comps), "difference": 100 * (only_b - only_a) / n, "p_value": mcnemar_exact_p(only_a, only_b)}


def _pooled_text(seeds: list[dict[str, Any]], key: str) -> str:
    p = pooled(seeds, key)
    return "" if p is None else (f"; pooled over {p['seeds']} seeds' test images: {p['difference']:+.1f} points, "
                                 f"exact McNemar p={p['p_value']:.2g} (secondary)")


def _per_seed(seeds: list[dict[str, Any]], key: str) -> str:
    parts = [f"s{e['seed']}: {e[key]['difference']:+.1f} (p={e[key]['p_value']:.2g})" for e in seeds if key in e]
    return "; ".join(parts) or "-"


def _check_cell(seeds: list[dict[str, Any]]) -> str:
    e = next((e for e in seeds if "check" in e), None)
    return "-" if e is None else f"{e['check']['clean_acc']:.1f} / {e['check']['robust_acc']:.1f} (s{e['seed']})"


def _methods(table: dict[str, Any]) -> list[str]:
    """One line per row that trains with its own method (the row definitions' fourth entry)."""
    lines = []
    for index, definition in enumerate(table.get("row_definitions", [])):
        if len(definition) > 3 and definition[3]:
            t = dict(definition[3])
            budget = t.pop("budget", None)
            if budget is not None:
                epochs = max(1, round(table["settings"]["epochs"] * budget))
                lines.append(f"row {index}: {epochs} adversarial epoch{'s' if epochs > 1 else ''} ({budget:.0%} of "
                             f"the from-scratch budget), the same schedule shape.")
            if "method" not in t:
                continue
            extra = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in t.items() if k not in ("method", "steps"))
            inside = (f" with a {t['steps']}-step PGD inside (step 2.5 eps / {t['steps']})" if "steps" in t
                      else " (its own single step, harden's defaults)")
            lines.append(f"row {index}: {t['method'].upper()}{inside}{', ' + extra if extra else ''}, "
                         "otherwise the same training.")
    return lines


def _kwargs_text(s: dict[str, Any]) -> str:
    kwargs = s.get("model_kwargs") or {}
    return f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""


def converged_cell(seeds: list[dict[str, Any]]) -> str:
    """Which seeds' validation curves converged by the protocol's rule ('-' for tables measured without it)."""
    judged = [e for e in seeds if e.get("converged") is not None]
    if not judged:
        return "-"
    missed = [str(e["seed"]) for e in judged if not e["converged"]]
    return f"{len(judged) - len(missed)}/{len(judged)}" + (f" (not: s{', s'.join(missed)})" if missed else "")


def _title(table: dict[str, Any]) -> str:
    """The table's heading: the architecture evidence table, or the fast methods side by side at one eps."""
    dataset = table["settings"].get("dataset", "CIFAR-10")
    if table.get("table") == "methods":
        measured = [r["row"].split(" (")[0] for r in table["rows"]]  # the methods measured, not all listed
        names = " and ".join(filter(None, [", ".join(measured[:-1]), measured[-1] if measured else ""]))
        return (f"# Fast adversarial training side by side on {dataset}: {names} at eps {table['settings']['eps']} "
                f"(protocol `{table['protocol']}`)")
    return f"# Architecture changes on {dataset}: evidence table (protocol `{table['protocol']}`)"


def _guard(table: dict[str, Any], curves: str | None) -> list[str]:
    """What the catastrophic-overfitting guard found, seed by seed, and the picture of the curves."""
    found = [(r["index"], e["seed"], e["collapse"]) for r in table["rows"] for e in r["seeds"] if e.get("collapse")]
    out = ["", "## Validation curves and the catastrophic-overfitting guard", ""]
    if found:
        out += [f"- row {i}, seed {seed}: `{collapse_message(c, c.get('action', 'stop'))}`" for i, seed, c in found]
    else:
        out.append("- the guard found no collapse in any row or seed.")
    if curves:
        out += ["", f"![validation PGD accuracy per epoch, each row and seed]({curves})"]
    return out


def _header(table: dict[str, Any], reason: str) -> list[str]:
    s = table["settings"]
    n_pre = s["pretrain_epochs"]
    steps = "" if s["method"] == "fgsm-rs" else f" ({s['steps']} steps" + (
        f" of {s['step_size']})" if s.get("step_size") else ")")
    aside = " (the method aside, in the rows listed next)" if _methods(table) else ""
    starts = [d[2] for d in table.get("row_definitions", []) if len(d) > 2] or [r["start"] for r in table["rows"]]
    pretrained = "pretrained" in starts
    return [
        _title(table), "",
        f"model: `{table['model']}`{_kwargs_text(s)} at {s.get('input_size', 32)}; data: `{table['data']}`; "
        f"updated {table['updated']}",
        f"training, every row and seed alike{aside}: "
        f"{s['method'].upper()} at eps {s['eps']}"
        f"{steps}, {s['epochs']} epochs on "
        f"{s['train_n'] or 'all'} training images, lr {s['lr']} {s['schedule']}, batch {s['batch_size']}, the best "
        f"epoch by PGD-{s['val_steps']} on {s['val_n']} held-out training images. The seed sets the "
        "initialisation, the data order and the training attack's random starts.",
        *_methods(table),
        *([f"rows marked `pretrained` start from a network of the same seed trained without attacks ({n_pre} "
           f"epochs, lr {s['pretrain_lr']}; trained once per seed and shared by those rows), then get the same "
           "adversarial training. " + reason] if pretrained else []),
        f"robust accuracy: {attack_text(s['attack'])}, Linf eps {s['eps']}, n={s['n']} fixed test images (a "
        f"random subset drawn with seed {s['eval_seed']}, the same for every model and seed; attack seed "
        f"{s['eval_seed']})."
        + (f" Check: {attack_text(s['check_attack'])} on a fixed subset of n={s['check_n']}, first seed "
           f"({s['seeds'][0]}) of each row." if s.get("check_attack") else ""), "",
    ]


def _rows_table(table: dict[str, Any]) -> list[str]:
    s = table["settings"]
    atk, chk = f"{attack_text(s['attack'])}, Linf {s['eps']}, n={s['n']}", attack_text(s.get("check_attack"))
    lines = [f"| # | change | start | seeds | clean % (n={s['n']}), mean ± sd | robust % ({atk}), mean ± sd | "
             f"robust vs baseline per seed: difference in points (exact McNemar p; {atk}) | "
             f"clean / robust % ({chk}, Linf {s['eps']}, n={s.get('check_n')}) | params | MACs | feature map | "
             "train min per seed | converged |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        seeds = r["seeds"]
        minutes = statistics.mean(e["train_seconds"] for e in seeds) / 60
        lines.append(
            f"| {r['index']} | {r['row']} | {r['start']} | {', '.join(str(e['seed']) for e in seeds)} | "
            f"{mean_sd([e['clean_acc'] for e in seeds])} | {mean_sd([e['robust_acc'] for e in seeds])} | "
            f"{_per_seed(seeds, 'vs_baseline') if r['index'] else '-'} | {_check_cell(seeds)} | {human(r['params'])} "
            f"| {human(r['macs'])} | {r['feature_map']} | {minutes:.1f} | {converged_cell(seeds)} |")
    return lines


def _findings(table: dict[str, Any]) -> list[str]:
    out = ["", "## What the table shows, row by row", ""]
    labels = {r["index"]: r["row"] for r in table["rows"]}
    planned = len(table["settings"]["seeds"])
    for r in table["rows"]:
        if r["index"] == 0:
            continue
        text = (f"- {r['index']}. {r['row']}: {verdict(r['seeds'], 'vs_baseline', 'the baseline')}"
                f"{_pooled_text(r['seeds'], 'vs_baseline')}")
        if any("vs_reference" in e for e in r["seeds"]):
            ref = next(e["vs_reference"]["row"] for e in r["seeds"] if "vs_reference" in e)
            what = f"row {ref}"
            text += (f". Against row {ref} ({labels[ref]}): {verdict(r['seeds'], 'vs_reference', what)} "
                     f"[{_per_seed(r['seeds'], 'vs_reference')}]{_pooled_text(r['seeds'], 'vs_reference')}")
        if len(r["seeds"]) < planned:
            text += f" ({len(r['seeds'])} of the protocol's {planned} seeds measured so far)"
        out.append(text + ".")
    return out


def readme_summary(table: dict[str, Any], link: str) -> str:
    """The README's short form of the table written at ``link`` (relative to the README): each row's accuracies,
    its per-seed comparison with the baseline, the check attack and convergence, what each row shows, the
    pitch's sentences and the pictures."""
    s = table["settings"]
    atk, chk = f"{attack_text(s['attack'])}, Linf {s['eps']}, n={s['n']}", attack_text(s.get("check_attack"))
    lines = [f"Robust accuracy: {atk}; check: {chk} on n={s.get('check_n')} of the same images, first seed. "
             f"Per seed: difference from the same seed's baseline in points (exact McNemar p).", "",
             "| # | change | start | seeds | clean % | robust % | vs baseline per seed | check clean / robust % "
             "| converged |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        seeds = r["seeds"]
        lines.append(f"| {r['index']} | {r['row']} | {r['start']} | {', '.join(str(e['seed']) for e in seeds)} | "
                     f"{mean_sd([e['clean_acc'] for e in seeds])} | {mean_sd([e['robust_acc'] for e in seeds])} | "
                     f"{_per_seed(seeds, 'vs_baseline') if r['index'] else '-'} | {_check_cell(seeds)} | "
                     f"{converged_cell(seeds)} |")
    stem = link.removesuffix(".md")
    findings = _findings(table)[3:]  # the row-by-row statements, without their heading
    lines += (["", *findings] if findings else []) + ["", f"![{PICTURE}]({stem}.png)"]
    if budget_rows(table):
        lines += ["", "The pitch, measured (compute: training passes; the clean pre-training not counted):", "",
                  *(pitch_sentences(table) or ["- not yet measured"]), "",
                  f"![robust accuracy against training compute]({stem}-pitch.png)"]
    lines += ["", f"The whole table, its curves and every piece's command: [{Path(link).name}]({link})."]
    return "\n".join(lines) + "\n"


def _pieces(table: dict[str, Any]) -> list[str]:
    out = ["", "## Pieces", "", "| piece | date (UTC) | device | rows | seeds | command |", "|---|---|---|---|---|---|"]
    for i, p in enumerate(table["pieces"]):
        out.append(f"| {i} | {p['date']} | {p['device']} | {', '.join(map(str, p['rows']))} | "
                   f"{', '.join(map(str, p['seeds']))} | `{p['command']}` |")
    return out


FOOTNOTE = ("p: two-sided exact McNemar test on the test images that only one of the two models (same seed) "
            "withstands; it covers the choice of test images. The spread over seeds (sd) is the training noise. "
            f"A row differs from the baseline only where p < {ALPHA} in every seed with the same sign. The pooled "
            "test in the findings (discordant images summed over seeds, one exact McNemar p) was added after the "
            "first seeds were in; it is secondary: it does not cover the training noise, and it does not change "
            "the rule.")


CONVERGED_NOTE = ("converged: the seeds whose adversarial training's validation curve (PGD robust accuracy on the "
                  "held-out training images, every epoch) stayed within 1 point of its best epoch over the last 20% "
                  "of epochs; the rule was fixed before the first result.")

PICTURE = "robust and clean accuracy of each row minus the baseline's, per training seed"


def write_table(out: Path, table: dict[str, Any], reason: str) -> str:
    """Write ``out`` (markdown), ``out.png`` (the picture) and ``out.json`` atomically; return the markdown."""
    warned = sorted({(r["index"], w) for r in table["rows"] for e in r["seeds"] for w in e.get("warnings", [])})
    s = table["settings"]
    picture = out.with_suffix(".png")
    lines = _header(table, reason) + _rows_table(table) + ["", FOOTNOTE]
    if any(e.get("converged") is not None for r in table["rows"] for e in r["seeds"]):
        lines += ["", CONVERGED_NOTE]
    lines += ["", f"![{PICTURE}]({picture.name})"]
    lines += _findings(table)
    if budget_rows(table):
        pitch = out.with_name(f"{out.stem}-pitch.png")
        plot_pitch(table, pitch, f"{attack_text(s['attack'])}, Linf {s['eps']}, n={s['n']}")
        lines += ["", "## The pitch: fine-tuning a clean network against training from scratch", "",
                  *(pitch_sentences(table) or ["- not yet measured: no fine-tuning row has a baseline of its seed"]),
                  "", "Compute: forward-backward passes over training images (the attack's steps plus the loss), "
                  "validation not counted; the clean pre-training is not counted either, since it is the network "
                  "the user already has. Share of robust accuracy: each seed's fine-tuned robust accuracy over the "
                  "same seed's from-scratch one; interval: Student t over seeds. Wall-clock: as each piece measured "
                  "it; pieces that shared their cores with other jobs ran slower, so the passes are the figure to "
                  "compare.", "",
                  f"![robust accuracy against training compute]({pitch.name})"]
    curves = out.with_name(f"{out.stem}-curves.png") if has_curves(table) else None
    lines += _guard(table, curves.name if curves else None)
    if warned:
        lines += ["", "Warnings of the evaluations (harden's checks and AutoAttack's own): "
                  + "; ".join(f"row {i}: {w}" for i, w in warned)]
    lines += _pieces(table)
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_table(table, picture, f"{attack_text(s['attack'])}, Linf {s['eps']}, n={s['n']}", alpha=ALPHA)
    if curves:
        plot_curves(table, curves)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(table, indent=1) + "\n")
    return text
