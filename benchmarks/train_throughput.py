"""Images per second of PGD adversarial training: harden's loop against the seeds' plain fp32 loop.

Both loops train the same ResNet-18 at 32x32 (``cifar:resnet18``, the CIFAR variant of rcm and most
adversarial-training papers) with PGD-``steps`` (eps 8/255, step 2/255), SGD and batch 128, in the same
process, one after the other:

* ``reference``: the loop of the seeds' codebases (Madry/TRADES-style PyTorch): a torchvision-style
  dataset that turns uint8 arrays into PIL images, ``RandomCrop(32, 4)``, ``RandomHorizontalFlip`` and
  ``ToTensor`` in DataLoader workers, fp32, NCHW, the attack with ``torch.autograd.grad`` on the input.
* ``reference-gpu-data``: the same fp32 loop with the batches already on the device (no loader), to
  separate the data pipeline from the arithmetic.
* ``harden``: :class:`harden.training.Trainer` as ``harden finetune`` runs it: uint8 images on the device,
  crop and flip there, attack in eval mode, bf16 autocast and channels-last on a GPU (fp32 on CPU),
  optionally ``torch.compile``.

Usage::

    python benchmarks/train_throughput.py                       # GPU: the figures of benchmarks/results
    python benchmarks/train_throughput.py --steps 2 --iters 3 --batch-size 32   # a quick CPU check
    python benchmarks/train_throughput.py --json benchmarks/results/NAME.json
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import harden
from harden.runtime.atomic import atomic_path
from harden.runtime.session import DistSession
from harden.training import Trainer, make_config

EPS, STEP = 8 / 255, 2 / 255


class SeedStyleCIFAR(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC array -> PIL image -> transforms."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, transform) -> None:
        self.data, self.labels, self.transform = data, labels, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.data[i])), int(self.labels[i])


def reference_step(model, opt, x, y, steps: int) -> None:
    """One PGD-AT step as the seeds write it: fp32, train mode, random start, sign steps."""
    delta = torch.empty_like(x).uniform_(-EPS, EPS)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, [delta])
        delta = (delta.detach() + STEP * grad.sign()).clamp(-EPS, EPS)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    opt.zero_grad()
    F.cross_entropy(model(x + delta), y).backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(step, batches, warmup: int, iters: int, device: torch.device, batch: int) -> float:
    """Images per second over ``iters`` steps after ``warmup`` steps."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(*next(it))
    sync(device)
    return iters * batch / (time.perf_counter() - t0)


def endless(loader):
    while True:
        yield from loader


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cifar:resnet18")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    ap.add_argument("--iters", type=int, default=30, help="timed training steps per loop")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first [default: 5 on GPU, 1 on CPU]")
    ap.add_argument("--workers", type=int, default=None, help="reference DataLoader workers [4 on GPU, 0 on CPU]")
    ap.add_argument("--n", type=int, default=10000, help="synthetic training images")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also time harden's loop under torch.compile")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    return ap


def device_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterator[tuple]:
    """Endless shuffled batches of tensors already on the device."""
    n = len(images)
    while True:
        perm = torch.randperm(n, device=images.device)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            yield images[idx], labels[idx]


def time_references(base: torch.nn.Module, data: np.ndarray, labels: np.ndarray, args: argparse.Namespace,
                    device: torch.device, warmup: int, workers: int) -> dict[str, float]:
    """Images/s of the seeds' fp32 loop: with its CPU data pipeline, then with the data on the device."""
    import torchvision.transforms as T

    gpu = device.type == "cuda"
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()])
    loader = torch.utils.data.DataLoader(SeedStyleCIFAR(data, labels, tf), batch_size=args.batch_size, shuffle=True,
                                         num_workers=workers, pin_memory=gpu, drop_last=True,
                                         persistent_workers=workers > 0)
    results = {}
    ref = copy.deepcopy(base).to(device).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    results["reference"] = time_loop(
        lambda x, y: reference_step(ref, opt, x.to(device), y.to(device), args.steps),
        endless(loader), warmup, args.iters, device, args.batch_size)
    print(f"reference (seeds' loop, fp32, CPU data pipeline): {results['reference']:.1f} img/s", flush=True)
    del loader
    x_dev = torch.from_numpy(data).permute(0, 3, 1, 2).float().div(255).to(device)
    y_dev = torch.from_numpy(labels).long().to(device)
    ref = copy.deepcopy(base).to(device).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    results["reference-gpu-data"] = time_loop(
        lambda x, y: reference_step(ref, opt, x, y, args.steps), device_batches(x_dev, y_dev, args.batch_size),
        warmup, args.iters, device, args.batch_size)
    print(f"reference with the data on the device (fp32): {results['reference-gpu-data']:.1f} img/s", flush=True)
    return results


def time_harden(base: torch.nn.Module, data: np.ndarray, labels: np.ndarray, args: argparse.Namespace,
                device: torch.device, warmup: int) -> tuple[dict[str, float], str]:
    """Images/s of harden's loop (uint8 data and augmentation on the device), eager and compiled; its precision."""
    u8 = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous().to(device)
    y_dev = torch.from_numpy(labels).long().to(device)
    results, precision = {}, "?"
    for label, compiled in [("harden", False)] + ([("harden-compile", True)] if args.compile else []):
        cfg = make_config(method="pgd", eps=EPS, steps=args.steps, step_size=STEP, lr=0.1, batch_size=args.batch_size,
                          compile=compiled)
        trainer = Trainer(copy.deepcopy(base), cfg, device=device, dist=DistSession())
        precision = "bf16 autocast" if trainer.bf16 else "fp32"
        layout = "channels-last" if trainer.channels_last else "NCHW"
        results[label] = time_loop(
            lambda x, y, tr=trainer: tr.train_step(x, y, eps=EPS, lr=0.1), device_batches(u8, y_dev, args.batch_size),
            warmup + (3 if compiled else 0), args.iters, device, args.batch_size)
        print(f"{label} ({precision}, {layout}, data and augmentation on the device): {results[label]:.1f} img/s",
              flush=True)
    return results, precision


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    workers = args.workers if args.workers is not None else (4 if gpu else 0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=args.n)
    base = harden.load_model(args.model, num_classes=10, input_size=32)
    name = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    print(f"device: {name} ({device}), torch {torch.__version__}, model {args.model}, batch {args.batch_size}, "
          f"PGD-{args.steps}", flush=True)
    results = time_references(base, data, labels, args, device, warmup, workers)
    harden_results, precision = time_harden(base, data, labels, args, device, warmup)
    results.update(harden_results)
    best = max(harden_results.values())
    ratio, ratio_gpu_data = best / results["reference"], best / results["reference-gpu-data"]
    print(f"speed-up over the reference loop: {ratio:.2f}x (over the fp32 loop with device data: "
          f"{ratio_gpu_data:.2f}x)")
    out = {
        "benchmark": "train_throughput", "date": dt.date.today().isoformat(), "device": name,
        "device_type": device.type, "torch": torch.__version__, "python": sys.version.split()[0],
        "model": args.model, "input": "3x32x32", "batch_size": args.batch_size, "pgd_steps": args.steps,
        "iters": args.iters, "warmup": warmup, "reference_workers": workers, "harden_precision": precision,
        "images_per_second": {k: round(v, 1) for k, v in results.items()},
        "speedup": round(ratio, 3), "speedup_vs_device_data": round(ratio_gpu_data, 3),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
