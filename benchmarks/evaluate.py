"""harden evaluate against a direct pyautoattack call: overhead ratio and images per second.

Runs AutoAttack (``--fast`` and/or standard) on the same tensors twice, once through
``pyautoattack.AutoAttack.run_standard_evaluation`` and once through ``harden.evaluate`` (with its
checks, per-batch progress file and report), checks that both give the same robust examples, and
prints/writes the wall times, the ratio harden/direct and images per second.

    python benchmarks/evaluate.py                      # GPU: ResNet-18 (pyautoattack's), n=1000, both versions
    python benchmarks/evaluate.py --device cpu --n 32 --versions fast   # a CPU smoke run

The default model is the CIFAR-10 ResNet-18 that ships with pyautoattack (examples/model_test.pt),
evaluated on the bundled CIFAR-10 sample.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import harden
from harden import evaluation
from harden.attacks import FAST_STAGES, STANDARD_STAGES
from harden.data import load_dataset, load_tensors, select
from harden.runtime.atomic import atomic_path
from harden.runtime.distributed import resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _direct(model, x, y, *, attacks, eps, batch_size, device, seed) -> tuple[float, float, list[bool]]:
    from pyautoattack import AutoAttack

    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=device, seed=seed)
    aa.attacks_to_run = list(attacks)
    with torch.no_grad():
        _, y_adv = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, (y_adv.cpu() == y.cpu()).tolist()


def _harden(model, x, y, *, fast, eps, batch_size, device, seed,
            workdir) -> tuple[float, float, evaluation.EvaluationReport]:
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    report = evaluation.evaluate(model, (x, y), attack="autoattack", fast=fast, eps=eps, batch_size=batch_size,
                                 device=str(device), seed=seed, n=None, report=Path(workdir) / "report.json")
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pyautoattack.examples.resnet:ResNet18")
    ap.add_argument("--weights", default=None, help="default: pyautoattack's examples/model_test.pt")
    ap.add_argument("--data", default="sample")
    ap.add_argument("--n", type=int, default=None, help="examples (default 1000 on GPU, 32 on CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 500 on GPU, 32 on CPU")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--versions", default="fast,standard", help="comma list of fast, standard")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON results (default benchmarks/results/evaluate-<device>.json)")
    return ap


def _warm_up(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> None:
    """GPU only: warm the kernels so neither side pays for it, and make both sides deterministic."""
    with torch.enable_grad():
        xw = x.to(device).requires_grad_(True)
        model(xw).sum().backward()
    model.zero_grad(set_to_none=True)
    torch.backends.cudnn.benchmark = False  # identical outcomes on a GPU need deterministic kernels on both sides
    torch.backends.cudnn.deterministic = True


def compare_version(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, version: str, *, eps: float,
                    eps_text: str, batch_size: int, device: torch.device, seed: int) -> dict:
    """One AutoAttack version run directly and through harden on the same tensors: times, accuracy, agreement."""
    fast = version == "fast"
    direct_s, direct_cpu, direct_flags = _direct(model, x, y, attacks=FAST_STAGES if fast else STANDARD_STAGES,
                                                 eps=eps, batch_size=batch_size, device=device, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        harden_s, harden_cpu, report = _harden(model, x, y, fast=fast, eps=eps, batch_size=batch_size,
                                               device=device, seed=seed, workdir=tmp)
    n = len(y)
    return {
        "version": version, "n": n, "batch_size": batch_size, "eps": eps_text,
        "direct_seconds": round(direct_s, 2), "harden_seconds": round(harden_s, 2),
        "ratio": round(harden_s / direct_s, 4), "overhead_pct": round(100 * (harden_s / direct_s - 1), 2),
        # CPU time of this process: steadier than wall time on a shared machine
        "direct_cpu_seconds": round(direct_cpu, 2), "harden_cpu_seconds": round(harden_cpu, 2),
        "cpu_ratio": round(harden_cpu / max(direct_cpu, 1e-9), 4),
        "harden_images_per_second": round(n / harden_s, 2), "direct_images_per_second": round(n / direct_s, 2),
        "clean_acc": report.clean_acc, "robust_acc": report.robust_acc,
        "same_result": [o == "robust" for o in report.outcome] == direct_flags,
        "per_attack": {r.attack: r.acc for r in report.per_attack},
        "warnings": [w.name for w in report.warnings],
    }


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    n = args.n or (1000 if gpu else 32)
    bs = args.batch_size or (500 if gpu else 32)
    eps, eps_text = evaluation.parse_eps(args.eps)
    weights = args.weights
    if weights is None and args.model == "pyautoattack.examples.resnet:ResNet18":
        weights = str(Path(__import__("pyautoattack").__file__).parent / "examples" / "model_test.pt")
    model = harden.load_model(args.model, weights=weights, input_size=32).to(device).eval()
    ds = load_dataset(args.data, "test", image_size=32)
    x, y = load_tensors(ds, select(ds, n))
    if gpu:
        _warm_up(model, x[:bs], device)
    rows = []
    for version in [v.strip() for v in args.versions.split(",") if v.strip()]:
        row = compare_version(model, x, y, version, eps=eps, eps_text=eps_text, batch_size=bs, device=device,
                              seed=args.seed)
        rows.append(row)
        print(f"{version:<9} n={n} bs={bs}  direct {row['direct_seconds']:8.1f}s  harden {row['harden_seconds']:8.1f}s"
              f"  ratio {row['ratio']:.3f} ({row['overhead_pct']:+.1f}%, cpu time {row['cpu_ratio']:.3f})  "
              f"{row['harden_images_per_second']:.1f} img/s  "
              f"clean {row['clean_acc']:.1f}% robust {row['robust_acc']:.1f}%  same result: {row['same_result']}",
              flush=True)
    device_name = torch.cuda.get_device_name(device) if gpu else f"cpu ({torch.get_num_threads()} threads)"
    result = {"device": device_name, "model": args.model, "data": args.data, "torch": torch.__version__,
              "python": platform.python_version(), "rows": rows}
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"evaluate-{'gpu' if gpu else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
