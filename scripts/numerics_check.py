"""Digest of harden's numerics, for checking that a restructuring changed none of them.

Run it on two commits and compare the outputs; every line must be equal::

    python scripts/numerics_check.py > before.json     # on the old commit
    python scripts/numerics_check.py > after.json      # on the new one
    diff before.json after.json && echo identical

It uses only harden's public API (``load_model``, ``apply``, ``finetune``, ``evaluate``, ``save``) on the
bundled Fashion-MNIST sample with a tiny network, so it runs in about a minute on 2 CPU cores. What it
digests: the weights after every transform; the weights after a short fine-tuning with every training
method (and AWP, and the Lipschitz penalty); the evaluation report of every attack (timings and host
details left out); the eps-sweep table; a model file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import harden

SPEC = "cifar:wrn-10-1"
MODEL = {"num_classes": 10, "input_size": "1x28x28", "model_kwargs": {"base_width": 8}, "mean": [0.286], "std": [0.353]}
DATA = "sample:fashion-mnist"
TRANSFORMS = ["upsample:factor=2", "stride-mod", "strides:pattern=12", "activation:name=silu",
              "last-stage-width:ratio=0.5", "stage-widths:widths=1/2/0.5"]
METHODS: dict[str, dict[str, Any]] = {
    "clean": {"method": "clean"}, "pgd": {"method": "pgd", "steps": 2}, "fgsm-rs": {"method": "fgsm-rs"},
    "n-fgsm": {"method": "n-fgsm"}, "trades": {"method": "trades", "steps": 2},
    "mart": {"method": "mart", "steps": 2}, "pgd+awp": {"method": "pgd", "steps": 2, "awp": 0.005},
    "pgd+lipschitz": {"method": "pgd", "steps": 2, "lipschitz_reg": 0.01},
}
ATTACKS = {"pgd": {"steps": 3}, "fgsm": {}, "cw": {"steps": 3}, "apgd-ce": {}, "autoattack-fast": {}}
# report keys that vary between runs of the same numbers
VOLATILE = {"seconds", "elapsed", "duration", "time", "started", "finished", "date", "host", "device", "versions",
            "timings", "created", "wall_seconds", "throughput", "batch_size", "path", "file", "report"}


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the state dict, key by key in sorted order (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def outputs_digest(model: torch.nn.Module) -> str:
    """sha256 of the logits on a fixed batch (a transform may change the graph but not the weights)."""
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return hashlib.sha256(model.eval()(x).numpy().tobytes()).hexdigest()[:16]


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stable(value: Any) -> Any:
    """A report without its volatile keys (timings, host, paths)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in sorted(value.items()) if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def base() -> harden.HardenedModel:
    torch.manual_seed(0)
    return harden.load_model(SPEC, **MODEL)


def main() -> int:
    out: dict[str, Any] = {"base": weights_digest(base())}
    for spec in TRANSFORMS:
        changed = harden.apply(base(), [spec])
        out[f"apply {spec}"] = f"{weights_digest(changed)} {outputs_digest(changed)}"
    common = {"eps": 0.1, "epochs": 1, "batch_size": 32, "train_n": 96, "val_n": 32, "val_steps": 2, "lr": 0.05,
              "seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for name, method in METHODS.items():
            tuned = harden.finetune(base(), DATA, progress=False, curves=False, **common, **method)
            out[f"finetune {name}"] = f"{weights_digest(tuned)} {outputs_digest(tuned)}"
        tuned = harden.finetune(harden.apply(base(), ["activation:name=silu"]), DATA, progress=False,
                                curves=False, **common, method="pgd", steps=2)
        for name, extra in ATTACKS.items():
            attack, fast = ("autoattack", True) if name == "autoattack-fast" else (name, False)
            report = harden.evaluate(tuned, DATA, attack=attack, fast=fast, eps=0.1, n=24, seed=0, batch_size=12,
                                     check_examples=8, **extra)
            out[f"evaluate {name}"] = text_digest(json.dumps(stable(report.to_dict()), sort_keys=True))
        sweep = harden.evaluate(tuned, DATA, attack="pgd", steps=2, eps=0.1, n=16, seed=0, batch_size=16,
                                eps_sweep=["0.05", "0.1"], check_examples=0)
        out["eps sweep"] = text_digest(json.dumps(stable(sweep.to_dict()), sort_keys=True))
        path = Path(tmp) / "m.safetensors"
        harden.save(tuned, path)
        out["load(save(m))"] = weights_digest(harden.load(path))
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
