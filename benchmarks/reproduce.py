"""Reproduce the seed papers' architecture claims on CIFAR-10 with harden itself, over several seeds.

    python benchmarks/reproduce.py --protocol cpu --rows 0 --seeds 0 --merge   # one piece of the CPU table
    python benchmarks/reproduce.py --protocol cpu --rows 1 --seeds 0 --merge   # ... the next, same table
    python benchmarks/reproduce.py --protocol gpu                              # the GPU protocol, all rows
    python benchmarks/reproduce.py --quick --out /tmp/r.md                     # toy size (tested in the suite)

A protocol fixes everything but the rows and seeds: model, training method and budget, the attack of
every seed (on ``n`` fixed test images) and a stronger check attack on a fixed subset for the first
seed of the protocol. Each (row, seed) trains its model with the same budget; the seed sets the
initialisation, the data order and the training attack's random starts; the test images and the
attack's own seed are the same for every model, so any two models are paired image by image.

``--merge`` keeps the (row, seed) results of earlier pieces written to the same table with the same
protocol settings, model, data and device, and refuses anything else; a (row, seed) run again
replaces its earlier result. The table is rewritten after every piece with the command of each.

Data: an ImageFolder tree of CIFAR-10; by default the JPEG copy in ../shared/data/cifar10-jpeg is
unpacked once into data/cifar10-jpeg (git-ignored). The JPEG re-encoding costs accuracy, so absolute
numbers sit below the papers'; the comparison between rows is what counts.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

import harden
from harden.runtime.atomic import atomic_path
from harden.summary import model_facts
from harden.training import checkpoint_path_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_table import join_tables, merge_results, readme_summary, write_table  # noqa: E402
from protocols import PITCH_REASON, PROTOCOLS, ROWS, TABLES, Row, method_passes, reference_of, rows_of  # noqa: E402
from readme_block import readme_parts, replace_block  # noqa: E402


def cifar_folder(shared: Path, cache: Path) -> str:
    """An ImageFolder spec for CIFAR-10, unpacking the shared JPEG tarballs once if needed."""
    if not (cache / "test").is_dir() or not (cache / "train").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        for split in ("train", "test"):
            with tarfile.open(shared / f"{split}.tar.gz") as tar:
                tar.extractall(cache, filter="data")
    return f"imagefolder:{cache}"


SHARED = {"fmnist": "../shared/data/fashion-mnist"}


def protocol_data(protocol: str, args: argparse.Namespace) -> str:
    """The data spec of a run: ``--data``; Fashion-MNIST's IDX files read where they are; else the CIFAR-10
    JPEG copy, unpacked once (not when joining: that measures nothing, only the spec must match)."""
    if args.data:
        return args.data
    if protocol in SHARED:
        return f"idx:{args.shared or SHARED[protocol]}"
    if args.join:
        return f"imagefolder:{args.cache}"
    return cifar_folder(Path(args.shared or "../shared/data/cifar10-jpeg"), Path(args.cache))


def command_line() -> str:
    return "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def parse_list(text: str | None, default: list[int], what: str, allowed: range | None = None) -> list[int]:
    """'0,2' -> [0, 2]; ``default`` when not given; exit 2 with one line when malformed."""
    if text is None:
        return list(default)
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or (allowed is not None and any(v not in allowed for v in values)) or min(values) < 0:
        bound = f" from {allowed.start} to {allowed.stop - 1}" if allowed is not None else " (0 or more)"
        print(f"error: --{what} takes numbers{bound} separated by commas, got '{text}'", file=sys.stderr)
        sys.exit(2)
    return values


def _train(model: harden.HardenedModel, data: str, out: Path, s: dict, seed: int, *, clean: bool,
           progress: bool, training: dict[str, Any] | None = None) -> harden.HardenedModel:
    """Adversarial training of the protocol (or its clean pre-training) of ``model`` with ``seed``."""
    common: dict[str, Any] = {"batch_size": s["batch_size"], "train_n": s["train_n"], "val_n": s["val_n"],
                              "val_steps": s["val_steps"], "eps": s["eps"], "seed": seed}
    resume = checkpoint_path_for(out).exists()  # an interrupted piece continues from its last epoch
    common.update(curves=False, resume=resume, force=not resume)
    if clean:
        settings = {"method": "clean", "epochs": s["pretrain_epochs"], "lr": s["pretrain_lr"], "keep": "last"}
    else:
        settings = _adversarial_settings(s, training)
    with warnings.catch_warnings():  # random weights are what a scratch row and the clean pre-training start from
        warnings.filterwarnings("ignore", message=".* with random weights", category=harden.errors.HardenWarning)
        return harden.finetune(model, data, output=out, progress=progress, schedule=s["schedule"], **settings,
                               **common)


def _adversarial_settings(s: dict[str, Any], training: dict[str, Any] | None) -> dict[str, Any]:
    """The protocol's adversarial training settings with a row's changes (its method, its share of the budget)."""
    training = dict(training or {})
    epochs = max(1, round(s["epochs"] * training.pop("budget", 1.0)))
    # the protocol's step size belongs to the protocol's method, not to a row that trains with another one
    own_step = {"step_size": s["step_size"]} if s.get("step_size") and "method" not in training else {}
    return {"method": s["method"], "steps": s["steps"], **own_step, "on_collapse": s.get("on_collapse", "stop"),
            **training, "epochs": epochs, "lr": s["lr"]}


def settings_digest(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:10]


def model_path(work: Path, index: int, seed: int, data: str, s: dict, training: dict[str, Any]) -> Path:
    """Where row ``index`` trained with ``seed`` is kept: the name carries a digest of the settings and data."""
    digest = settings_digest({**s, "data": data, **({"training": training} if training else {})})
    return work / f"row{index}-{digest}-seed{seed}.safetensors"


def new_model(s: dict[str, Any]) -> harden.HardenedModel:
    """The protocol's network with fresh weights (seed them first)."""
    with warnings.catch_warnings():  # random weights are the point of training from scratch
        warnings.simplefilter("ignore", harden.errors.HardenWarning)
        return harden.load_model(s["model"], num_classes=10, input_size=s.get("input_size", 32),
                                 model_kwargs=s.get("model_kwargs"))


def pretrained_start(data: str, work: Path, s: dict, seed: int, progress: bool) -> harden.HardenedModel:
    """The clean-trained network of ``seed``, trained once and cached in ``work`` (shared by the rows)."""
    path = work / f"pretrain-{settings_digest({**s, 'data': data})}-seed{seed}.safetensors"
    if not path.exists():
        torch.manual_seed(seed)
        _train(new_model(s), data, path, s, seed, clean=True, progress=progress)
    return harden.load(path)


def trained_model(model: harden.HardenedModel, data: str, path: Path, s: dict, seed: int,
                  progress: bool, training: dict[str, Any]) -> tuple[harden.HardenedModel, float]:
    """The protocol's adversarial training of ``model``, or its result from an earlier, interrupted piece.

    The file name carries a digest of the settings and data, so only the same training is reused. The
    seconds are the training's as the model file records them (a resumed piece's include its earlier epochs).
    """
    seconds = path.with_suffix(".seconds.json")
    if path.exists() and seconds.exists():
        return harden.load(path), json.loads(seconds.read_text())["train_seconds"]
    trained = _train(model, data, path, s, seed, clean=False, progress=progress, training=training)
    assert trained.provenance.finetune is not None
    elapsed = round(trained.provenance.finetune.seconds, 1)
    with atomic_path(seconds) as tmp:
        tmp.write_text(json.dumps({"train_seconds": elapsed}))
    return trained, elapsed


def evaluate(model: harden.HardenedModel, data: str, attack: str, n: int, s: dict) -> dict[str, Any]:
    """Clean and robust accuracy on the protocol's fixed test images, outcome per image."""
    fast = attack == "autoattack-fast"
    name = "autoattack" if fast else attack
    report = harden.evaluate(model, data, attack=name, fast=fast, eps=s["eps"], n=n, random_subset=True,
                             seed=s["eval_seed"], steps=s["steps_eval"] if name in ("pgd", "cw") else None,
                             check_examples=s.get("check_examples"))
    return {"attack": attack, "attacks": report.attacks, "n": report.n, "eps": s["eps"],
            "clean_acc": report.clean_acc, "robust_acc": report.robust_acc, "outcome": report.outcome,
            "warnings": [w.name for w in report.warnings], "seconds": round(report.seconds, 1)}


#: the convergence rule, fixed before any result: the last 20% of epochs all within 1 point of the best epoch
CONVERGED_TAIL, CONVERGED_POINTS = 0.2, 1.0


def converged(curve: list[dict[str, Any]], key: str = "val_robust") -> bool | None:
    """Whether the last 20% of epochs (at least one) all stayed within 1 point of the best ``key``; None
    without a validation curve."""
    values = [c[key] for c in curve if c.get(key) is not None]
    if not values:
        return None
    tail = max(1, math.ceil(CONVERGED_TAIL * len(values)))
    return all(max(values) - v <= CONVERGED_POINTS for v in values[-tail:])


def training_record(model: harden.HardenedModel, method: dict[str, Any]) -> dict[str, Any]:
    """The adversarial training's validation curve, its convergence by the rule, and its compute."""
    entry = model.provenance.finetune
    assert entry is not None
    curve = [{k: h.get(k) for k in ("epoch", "val_clean", "val_robust", "train_acc")} for h in entry.history]
    record = {"curve": curve, "converged": converged(curve), "kept_epoch": entry.kept_epoch,
              "epochs_run": entry.epochs_run, "train_images": entry.train_n,
              "train_passes": entry.epochs_run * entry.train_n * method_passes(method)}
    if entry.collapse is not None:  # the catastrophic-overfitting guard's finding, as the model file has it
        record["collapse"] = entry.collapse.to_dict()
    return record


def run_one(index: int, seed: int, data: str, work: Path, s: dict, progress: bool,
            rows: list[Row] = ROWS) -> dict[str, Any]:
    """Train and evaluate row ``index`` of ``rows`` with ``seed``; the per-seed result with its model facts."""
    label, transforms, start, training = rows[index]
    t0 = time.perf_counter()
    if start == "pretrained":
        model = pretrained_start(data, work, s, seed, progress)
    else:
        torch.manual_seed(seed)
        model = new_model(s)
    model = harden.apply(model, transforms) if transforms else model
    facts = model_facts(model)
    t1 = time.perf_counter()
    trained, train_seconds = trained_model(model, data, model_path(work, index, seed, data, s, training), s,
                                           seed, progress, training)
    result = {"seed": seed, **evaluate(trained, data, s["attack"], s["n"], s),
              "pretrain_seconds": round(t1 - t0, 1), "train_seconds": train_seconds,
              **training_record(trained, {"method": s["method"], "steps": s["steps"], **training})}
    if s["check_attack"] and seed == s["seeds"][0]:
        result["check"] = evaluate(trained, data, s["check_attack"], s["check_n"], s)
    return {"index": index, "row": label, "transforms": transforms, "start": start,
            **({"training": training} if training else {}), "params": facts.params,
            "macs": facts.macs, "feature_map": facts.feature_map_text(), "seed_result": result}


def protocol_settings(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    name = "quick" if args.quick else args.protocol
    s = {**PROTOCOLS[name], "steps_eval": 10}
    if args.model:
        s["model"] = args.model
    if args.eps:  # training and evaluation at another eps (recorded in the settings, so tables never mix)
        s["eps"] = args.eps
    return name, s


def default_out(name: str, s: dict[str, Any], args: argparse.Namespace) -> Path:
    """``benchmarks/results/evidence-PROTOCOL.md``, or ``methods-PROTOCOL-epsE.md`` for the methods table."""
    if args.table == "methods":
        eps = str(s["eps"]).replace("/", "-")
        return Path(f"benchmarks/results/methods-{name}-eps{eps}.md")
    return Path(f"benchmarks/results/evidence-{name}.md")


def mismatched(saved: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """What a saved table was measured with otherwise; rows added since (at the end) do not count."""
    differ = [k for k in identity if k != "row_definitions" and saved.get(k) != identity[k]]
    before = saved.get("row_definitions")
    if not isinstance(before, list) or before != identity["row_definitions"][:len(before)]:
        differ.append("row_definitions")
    return differ


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="gpu", help="fixed settings of the table")
    ap.add_argument("--quick", action="store_true", help="the same as --protocol quick (toy size, CPU)")
    ap.add_argument("--model", default=None, help="model spec instead of the protocol's (recorded in the table)")
    ap.add_argument("--table", choices=TABLES, default="evidence",
                    help="evidence: the architecture rows (and the pitch); methods: FGSM-RS against N-FGSM")
    ap.add_argument("--eps", default=None, help="train and evaluate at this eps instead of the protocol's")
    ap.add_argument("--rows", default=None, help="comma-separated row numbers (default: all the protocol's rows)")
    ap.add_argument("--seeds", default=None, help="comma-separated training seeds (default: the protocol's)")
    ap.add_argument("--merge", action="store_true", help="keep the results of earlier pieces with the same settings")
    ap.add_argument("--join", nargs="+", metavar="TABLE.json", default=None,
                    help="measure nothing: add the pieces of tables measured elsewhere (other clones or machines, "
                         "the same settings) to the table at --out")
    ap.add_argument("--data", default=None, help="data spec (default: the shared CIFAR-10 JPEG copy)")
    ap.add_argument("--shared", default=None, help="the shared data folder (default: ../shared/data/cifar10-jpeg, "
                    "for fmnist ../shared/data/fashion-mnist)")
    ap.add_argument("--cache", default="data/cifar10-jpeg")
    ap.add_argument("--work", default="runs/reproduce", help="folder for the trained models")
    ap.add_argument("--readme", type=Path, default=None,
                    help="also rewrite the table's short form between its markers in this README "
                         "(<!-- evidence-PROTOCOL: generated by benchmarks/reproduce.py --readme -->)")
    ap.add_argument("--out", default=None, help="markdown table (default: benchmarks/results/evidence-PROTOCOL.md, "
                    "methods-PROTOCOL-epsEPS.md)")
    return ap


def _read(out: Path) -> dict[str, Any] | None:
    path = out.with_suffix(".json")
    return json.loads(path.read_text()) if path.exists() else None


def _saved_table(out: Path, identity: dict[str, Any], option: str) -> dict[str, Any] | None:
    """The table already at ``out``, if any; exit 1 with one line if it was measured otherwise."""
    saved = _read(out)
    differ = mismatched(saved, identity) if saved is not None else []
    if differ:
        print(f"error: --{option}: '{out.with_suffix('.json')}' was measured with other {', '.join(differ)}; "
              "use the same settings or another --out", file=sys.stderr)
        sys.exit(1)
    return saved


README_GENERATOR = "benchmarks/reproduce.py --readme"


def publish(out: Path, table: dict[str, Any], readme: Path | None) -> str:
    """Write the table at ``out`` (markdown, JSON, pictures) and, given ``readme``, its short form there."""
    text = write_table(out, table, PITCH_REASON)
    if readme is not None:
        link = Path(os.path.relpath(out.resolve(), readme.resolve().parent)).as_posix()
        replace_block(readme, f"evidence-{table['protocol']}", README_GENERATOR, readme_summary(table, link))
        print(f"updated the evidence-{table['protocol']} block in {readme}")
    return text


def join(paths: list[str], out: Path, table: dict[str, Any] | None, identity: dict[str, Any],
         readme: Path | None = None) -> Path:
    """Add the pieces of the tables at ``paths`` to ``table`` (the one at ``out``) and rewrite it."""
    for path in paths:
        try:
            other = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"error: --join: cannot read '{path}' as a table ({type(exc).__name__}); give the .json of "
                  "an evidence table", file=sys.stderr)
            sys.exit(2)
        differ = mismatched(other, identity)
        if differ:
            print(f"error: --join: '{path}' was measured with other {', '.join(differ)}", file=sys.stderr)
            sys.exit(1)
        reference = reference_of(identity["protocol"], identity.get("table", "evidence"))
        table, added = join_tables(table, other, identity, reference)
        print(f"{path}: {added} piece(s) added")
    assert table is not None
    publish(out, table, readme)
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    name, s = protocol_settings(args)
    table_rows = rows_of(name, s["model"], args.table)
    rows = parse_list(args.rows, list(range(len(table_rows))), "rows", range(len(table_rows)))
    seeds = parse_list(args.seeds, s["seeds"], "seeds")
    out = Path(args.out) if args.out else default_out(name, s, args)
    data = protocol_data(name, args)
    identity = {"protocol": name, "model": s["model"], "data": data, "settings": s, "device": device_name(),
                "row_definitions": [r.definition() for r in table_rows],
                **({"table": args.table} if args.table != "evidence" else {})}
    saved = _saved_table(out, identity, "join" if args.join else "merge") if args.merge or args.join else None
    if args.readme is not None:  # an unusable README stops the run before anything is measured
        if args.table != "evidence":
            print("error: --readme writes an evidence table's block; the methods tables reach the README through "
                  "benchmarks/which_method.py --readme", file=sys.stderr)
            sys.exit(2)
        readme_parts(args.readme, f"evidence-{name}", README_GENERATOR)
    if args.join:
        return join(args.join, out, saved, identity, args.readme)
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    piece = {"command": command_line(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "device": identity["device"], "rows": rows, "seeds": seeds,
        "harden": harden.__version__, "torch": torch.__version__}
    fresh = []
    for seed in seeds:
        for index in rows:
            fresh.append(run_one(index, seed, data, work, s, progress=not args.quick, rows=table_rows))
            print(json.dumps({k: v for k, v in fresh[-1]["seed_result"].items() if k != "outcome"}
                             | {"row": fresh[-1]["row"]}), flush=True)
    table = merge_results(saved, identity, piece, fresh, reference_of(name, args.table))
    text = publish(out, table, args.readme)
    print(text)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except harden.errors.HardenError as exc:  # one line, as the harden command prints it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, harden.errors.UsageError) else 1)
