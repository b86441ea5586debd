"""Everything GPU-side in one command that finishes within 10 minutes on one H100/H200.

    python benchmarks/gpu.py                 # on the GPU machine; figures into benchmarks/results/
    python benchmarks/gpu.py --dry-run --out-dir /tmp/g   # the same steps at toy size on the CPU (tested)

Steps, each timed, its figures written (atomically) as soon as it ends, so a run cut short keeps them:

a. ``paths``: every GPU-only code path once, failing loudly: bf16 autocast with channels-last, the
   fused optimizer, ``--compile``, training images resident on the GPU as uint8 (harden.finetune),
   DistributedDataParallel over an nccl group of one process, ``evaluate`` with ``--batch-size auto``,
   and ``evaluate`` twice with deterministic kernels (the outcomes must agree image by image).
b. ``throughput``: PGD-10 training images/s of harden's loop (eager and compiled) against the seeds'
   plain fp32 loop, same run (benchmarks/train_throughput.py).
c. ``autoattack``: images/s of AutoAttack standard and ``--fast`` on 1,000 test images of a model
   adversarially trained in step a (robust enough that every attack of the suite has work).
d. ``rows``: the rows of benchmarks/reproduce.py with FGSM-RS (the fast-AT reference), the epochs
   chosen from the measured speeds to fit the minutes left, APGD-CE on 1,000 images per row and
   AutoAttack ``--fast`` on the same 1,000; rows that would overrun the budget are skipped and named.

``--dry-run`` uses the bundled sample, a WRN-16-1, a handful of images and gloo instead of nccl;
``torch.compile`` runs with its eager backend there (tracing, not code generation).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import harden
from harden.runtime.atomic import atomic_path
from harden.runtime.session import DistSession
from harden.training import TrainData, Trainer, make_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocols  # noqa: E402
import reproduce  # noqa: E402
import train_throughput  # noqa: E402

FULL = {"model": "cifar:resnet18", "data": None, "budget_s": 600, "paths_train_n": 10000, "paths_epochs": 2,
        "det_n": 200, "aa_n": 1000, "tp_batch": 512, "tp_iters": 20, "tp_steps": 10, "rows_n": 1000,
        "rows_train_n": None, "max_epochs": 15, "batch_size": 512, "val_n": 512, "overhead_s": 20,
        "check_examples": None}
DRY = {"model": "cifar:wrn-16-1", "data": "sample", "budget_s": 10**6, "paths_train_n": 32, "paths_epochs": 1,
       "det_n": 4, "aa_n": 4, "tp_batch": 8, "tp_iters": 1, "tp_steps": 1, "rows_n": 4, "rows_train_n": 16,
       "max_epochs": 1, "batch_size": 8, "val_n": 8, "overhead_s": 0,
       "check_examples": 0}  # harden's evaluation checks would dominate a toy run; the GPU run keeps them


class Recorder:
    """The figures of the run, rewritten atomically to ``path`` after every step."""

    def __init__(self, path: Path, device: torch.device, dry: bool) -> None:
        self.path, self.t0 = path, time.perf_counter()
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
        self.data: dict[str, Any] = {
            "benchmark": "gpu", "dry_run": dry, "device": name, "date": dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]),
            "torch": torch.__version__, "harden": harden.__version__, "steps": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        figures: dict[str, Any] = {}
        start = time.perf_counter()
        try:
            yield figures
        except Exception as exc:
            figures["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            figures["seconds"] = round(time.perf_counter() - start, 1)
            self.data["steps"][name] = figures
            self.write()
            print(f"[{self.elapsed():5.0f}s] {name}: {json.dumps(figures)}", flush=True)

    def write(self) -> None:
        self.data["total_seconds"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n")


def require(ok: bool, what: str) -> None:
    """Fail loudly: a GPU path that did not engage is an error, not a footnote."""
    if not ok:
        raise RuntimeError(f"GPU path check failed: {what}")


@contextlib.contextmanager
def one_process_group(device: torch.device) -> Iterator[str]:
    """A process group of one (nccl on a GPU, gloo on the CPU), as torchrun would set it up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    try:
        yield backend
    finally:
        torch.distributed.destroy_process_group()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _GroupOfOne(DistSession):
    """harden's process view with DDP switched on although the group has one process."""

    @property
    def active(self) -> bool:
        return True


def check_trainer(base: harden.HardenedModel, device: torch.device, batch: int, figures: dict) -> None:
    """bf16 autocast, channels-last, fused SGD, compile and DDP over a group of one: a few steps each."""
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    gpu = device.type == "cuda"
    cfg = make_config(method="pgd", steps=2, batch_size=batch, precision="auto" if gpu else "bf16",
                      channels_last=None if gpu else True)
    trainer = Trainer(_copy(base), cfg, device=device, dist=DistSession())
    require(trainer.bf16 and trainer.channels_last, "bf16 autocast with channels-last is not on")
    require(not gpu or trainer.optimizer.param_groups[0].get("fused") is True, "the fused optimizer is not used")
    loss, _ = trainer.train_step(x, y, eps=8 / 255, lr=0.01)
    require(bool(torch.isfinite(loss)), "non-finite loss under bf16 autocast")
    figures.update(bf16=True, channels_last=True, fused_sgd=bool(trainer.optimizer.param_groups[0].get("fused")))
    compiled = Trainer(_copy(base), make_config(**{**cfg.as_dict(), "compile": True}), device=device,
                       dist=DistSession())
    for _ in range(2):
        loss, _ = compiled.train_step(x, y, eps=8 / 255, lr=0.01)
    require(bool(torch.isfinite(loss)), "non-finite loss under torch.compile")
    figures["compile"] = True
    with one_process_group(device) as backend:
        ddp = Trainer(_copy(base), cfg, device=device, dist=_GroupOfOne(0, 1))
        require(type(ddp.objective).__name__ == "DistributedDataParallel", "DDP did not wrap the model")
        loss, _ = ddp.train_step(x, y, eps=8 / 255, lr=0.01)
        total = torch.ones(1, device=device)
        torch.distributed.all_reduce(total)
        require(bool(torch.isfinite(loss)) and total.item() == 1.0, f"{backend} all-reduce in a group of one")
        figures["ddp_backend"] = backend


def _copy(model: harden.HardenedModel) -> harden.HardenedModel:
    import copy

    return copy.deepcopy(model).cpu()


def check_resident_data(data: str, device: torch.device, figures: dict) -> None:
    """Training images decoded once and kept on the GPU as uint8, as harden.finetune keeps them."""
    from harden.data import load_dataset

    dataset = load_dataset(data, split="train", image_size=32)
    td = TrainData(dataset, list(range(64)), batch_size=32, device=device, dist=DistSession(), seed=0, workers=0,
                   cache_limit_gb=8.0)
    require(td.x is not None and td.x.dtype == torch.uint8 and td.x.device.type == device.type,
            f"training images are not resident on {device} as uint8")
    figures["resident_uint8"] = str(td.x.device)


def deterministic_evaluations(model: torch.nn.Module, data: str, n: int, figures: dict,
                              checks: int | None = None) -> None:
    """``evaluate`` twice with deterministic kernels and ``--batch-size auto``: identical outcomes."""
    torch.backends.cudnn.benchmark = False  # harden's training turns it on for speed
    torch.backends.cudnn.deterministic = True
    reports = [harden.evaluate(model, data, attack="apgd-ce", n=n, random_subset=True, seed=0, batch_size="auto",
                               check_examples=checks) for _ in range(2)]
    same = reports[0].outcome == reports[1].outcome
    require(same, "two deterministic evaluations differ")
    figures.update(deterministic_identical=True, auto_batch_size=reports[0].batch_size, n=n,
                   clean_acc=reports[0].clean_acc, apgd_ce_acc=reports[0].robust_acc)


def step_paths(rec: Recorder, cfg: dict, data: str, device: torch.device, work: Path) -> harden.HardenedModel:
    """(a) every GPU-only path once; returns a briefly adversarially trained model for step c."""
    with rec.step("paths") as figures:
        base = harden.load_model(cfg["model"], num_classes=10, input_size=32)
        check_trainer(base, device, cfg["batch_size"] if device.type == "cuda" else 4, figures)
        check_resident_data(data, device, figures)
        torch.manual_seed(0)
        model = harden.finetune(_copy(base), data, output=work / "paths.safetensors", force=True, progress=False,
                                method="fgsm-rs", epochs=cfg["paths_epochs"], lr=0.1, schedule="onecycle",
                                train_n=cfg["paths_train_n"], batch_size=cfg["batch_size"], val_n=cfg["val_n"],
                                val_steps=3, curves=False)
        figures["finetune"] = {"method": "fgsm-rs", "epochs": cfg["paths_epochs"], "train_n": cfg["paths_train_n"]}
        deterministic_evaluations(model, data, cfg["det_n"], figures, cfg["check_examples"])
    return model


def step_throughput(rec: Recorder, cfg: dict, dry: bool) -> dict[str, Any]:
    """(b) PGD-10 training images/s, harden's loop against the plain fp32 loop."""
    with rec.step("throughput") as figures:
        argv = ["--model", cfg["model"], "--batch-size", str(cfg["tp_batch"]), "--steps", str(cfg["tp_steps"]),
                "--iters", str(cfg["tp_iters"]), "--compile"]
        argv += ["--n", "64", "--warmup", "1", "--device", "cpu"] if dry else []
        out = train_throughput.main(argv)
        figures.update({k: out[k] for k in ("images_per_second", "speedup", "speedup_vs_device_data",
                                            "harden_precision", "batch_size", "pgd_steps", "model")})
        figures["targets"] = {"speedup_at_least": 3.0, "images_per_second_at_least": 6000}
    return figures


def step_autoattack(rec: Recorder, cfg: dict, model: harden.HardenedModel, data: str) -> dict[str, Any]:
    """(c) AutoAttack standard and --fast images/s on ``aa_n`` test images."""
    with rec.step("autoattack") as figures:
        for fast in (True, False):
            r = harden.evaluate(model, data, attack="autoattack", fast=fast, n=cfg["aa_n"], random_subset=True,
                                seed=0, batch_size="auto", check_examples=cfg["check_examples"])
            figures["fast" if fast else "standard"] = {
                "n": r.n, "seconds": round(r.seconds, 1), "images_per_second": round(r.n / r.seconds, 2),
                "clean_acc": r.clean_acc, "robust_acc": r.robust_acc, "batch_size": r.batch_size,
                "per_attack": [{"attack": a.attack, "acc": a.acc, "seconds": a.seconds} for a in r.per_attack]}
    return figures


def fit_epochs(remaining_s: float, row_costs: list[float], epoch_s: float, eval_s: float, cap: int,
               overhead_s: float = 0.0) -> int:
    """Epochs of every row such that all rows (training, evaluation and a fixed ``overhead_s`` each: data
    decoding, model set-up) fit ``remaining_s`` with 15% to spare."""
    usable = 0.85 * remaining_s - eval_s * sum(row_costs) - overhead_s * (len(row_costs) + 1)
    per_epoch = epoch_s * (sum(row_costs) + 0.5)  # + the clean pre-training (one pass per image, not two)
    return max(1, min(cap, int(usable // per_epoch)))


def row_costs(model_spec: str, s: dict[str, Any]) -> list[float]:
    """Each reproduce row's cost per image relative to the baseline's: its MACs times its training passes."""
    from harden.summary import model_facts

    base = harden.load_model(model_spec, num_classes=10, input_size=32)
    macs0 = model_facts(base).macs
    return [(model_facts(harden.apply(base, r.transforms)).macs / macs0 if r.transforms else 1.0)
            * r.training_cost(s) for r in protocols.ROWS]


def rows_settings(cfg: dict, epochs: int) -> dict[str, Any]:
    return {**protocols.PROTOCOLS["gpu"], "model": cfg["model"], "method": "fgsm-rs", "steps": 1, "epochs": epochs,
            "train_n": cfg["rows_train_n"], "lr": 0.2, "schedule": "onecycle", "batch_size": cfg["batch_size"],
            "val_n": cfg["val_n"], "val_steps": 5, "pretrain_epochs": epochs, "pretrain_lr": 0.2,
            "attack": "apgd-ce", "n": cfg["rows_n"], "check_attack": "autoattack-fast", "check_n": cfg["rows_n"],
            "seeds": [0], "steps_eval": 10, "check_examples": cfg["check_examples"]}


def step_rows(rec: Recorder, cfg: dict, data: str, work: Path, out_dir: Path, speeds: dict) -> None:
    """(d) the reproduction rows at the FGSM-RS budget that fits the minutes left."""
    with rec.step("rows") as figures:
        costs = row_costs(cfg["model"], rows_settings(cfg, 1))
        n_train = cfg["rows_train_n"] or 50000 - cfg["val_n"]
        epoch_s = n_train / speeds["fgsm_img_s"]
        eval_s = cfg["rows_n"] / speeds["apgd_img_s"] + cfg["rows_n"] / speeds["aa_fast_img_s"]
        remaining = cfg["budget_s"] - rec.elapsed()
        epochs = fit_epochs(remaining, costs, epoch_s, eval_s, cfg["max_epochs"], overhead_s=cfg["overhead_s"])
        s = rows_settings(cfg, epochs)
        figures.update(epochs=epochs, estimated_epoch_s=round(epoch_s, 1), row_costs=[round(c, 2) for c in costs])
        identity = {"protocol": "gpu-fit", "model": s["model"], "data": data, "settings": s,
                    "device": rec.data["device"], "row_definitions": [r.definition() for r in protocols.ROWS]}
        piece = {"command": rec.data["command"], "date": rec.data["date"], "device": rec.data["device"],
                 "rows": [], "seeds": [0], "harden": harden.__version__, "torch": torch.__version__}
        fresh, skipped, predicted, actual = [], [], 0.0, 0.0
        for i in sorted(range(len(costs)), key=lambda i: (i != 0, costs[i])):  # baseline first, then cheapest
            need = costs[i] * (epochs * epoch_s + eval_s) + cfg["overhead_s"]
            scale = max(1.0, actual / predicted) if predicted else 1.0  # learn from the rows already run
            if rec.elapsed() + scale * need > cfg["budget_s"] - 10:
                skipped.append(i)
                continue
            t0 = time.perf_counter()
            fresh.append(reproduce.run_one(i, 0, data, work, s, progress=False))
            piece["rows"].append(i)
            predicted, actual = predicted + need, actual + time.perf_counter() - t0
        table = reproduce.merge_results(None, identity, piece, fresh, protocols.REFERENCE)
        reproduce.write_table(out_dir / f"evidence-gpu-fit-{rec.data['date'][:10]}.md", table, protocols.PITCH_REASON)
        figures.update(rows_run=piece["rows"], rows_skipped_for_time=skipped)


def measured_speeds(tp: dict, aa: dict) -> dict[str, float]:
    """FGSM-RS training and attack images/s estimated from steps b and c."""
    pgd = max(v for k, v in tp["images_per_second"].items() if k.startswith("harden"))
    return {"fgsm_img_s": pgd * (tp["pgd_steps"] + 1) / 2,  # PGD-k costs k+1 passes per image, FGSM-RS 2
            "apgd_img_s": aa["fast"]["images_per_second"] * 2,  # APGD-CE: about half of --fast's time
            "aa_fast_img_s": aa["fast"]["images_per_second"]}


def patched_compile(dry: bool) -> Callable:
    """torch.compile as is on the GPU; its eager backend for the CPU dry run."""
    return torch.compile if not dry else functools.partial(torch.compile, backend="eager")


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="toy size on the CPU (gloo, eager compile)")
    ap.add_argument("--out-dir", default="benchmarks/results", help="where the figures go")
    ap.add_argument("--work", default="runs/gpu", help="folder for the trained models")
    ap.add_argument("--data", default=None, help="data spec (default: shared CIFAR-10 JPEG; sample in a dry run)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of the whole run (600)")
    args = ap.parse_args(argv)
    if args.dry_run:  # the CPU alone, also on a machine with a GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    cfg = dict(DRY if args.dry_run else FULL)
    if args.budget_s:
        cfg["budget_s"] = args.budget_s
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.dry_run else torch.device("cpu")
    if device.type != "cuda" and not args.dry_run:
        print("error: no CUDA GPU here; run with --dry-run for the CPU check", file=sys.stderr)
        sys.exit(1)
    data = args.data or cfg["data"] or reproduce.cifar_folder(Path("../shared/data/cifar10-jpeg"),
                                                              Path("data/cifar10-jpeg"))
    out_dir, work = Path(args.out_dir), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out_dir / f"gpu-{'dry-run' if args.dry_run else dt.date.today().isoformat()}.json", device,
                   args.dry_run)
    torch.compile = patched_compile(args.dry_run)  # type: ignore[assignment]
    model = step_paths(rec, cfg, data, device, work)
    tp = step_throughput(rec, cfg, args.dry_run)
    aa = step_autoattack(rec, cfg, model, data)
    step_rows(rec, cfg, data, work, out_dir, measured_speeds(tp, aa))
    rec.write()
    print(f"wrote {rec.path} in {rec.elapsed():.0f}s")
    return rec.path


if __name__ == "__main__":
    main()
