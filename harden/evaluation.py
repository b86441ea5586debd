"""Robustness evaluation: AutoAttack through the official ``pyautoattack`` code, and quick attacks.

:func:`evaluate` runs the attacks of a plan one after the other on the examples each earlier attack
left correctly classified, exactly as ``AutoAttack.run_standard_evaluation`` does: for every attack
the still-robust examples are taken in order and cut into batches of ``batch_size``, and each batch
goes through the official attack object (which re-seeds itself on every call). Driving the loop
here, rather than inside one call, is what makes the rest possible without changing a single
number: progress is saved after every batch (``resume``), batches are dealt out to the ranks of a
``torchrun`` job and the outcomes reduced, and the report records robust accuracy after each attack
and the attack that broke each example.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harden import checks as chk
from harden import tracking
from harden.attacks import ATTACKS, NORMS, fgsm, pgd
from harden.data import ImageDataset, Selection, load_dataset, select, skip_unreadable
from harden.errors import HardenError, UsageError, close_matches
from harden.model import HardenedModel
from harden.runtime import distributed as hd
from harden.runtime import events as ev
from harden.runtime.atomic import save_figure
from harden.runtime.modes import eval_mode
from harden.runtime.session import session
from harden.runtime.stamp import REPORT_LIBRARIES, device_text, versions
from harden.runtime.store import Store, as_json, differences, state_digest
from harden.schemas.evaluate import EvaluateConfig, make_evaluate_config
from harden.stats import wilson_interval

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
FAST_ATTACKS = ("apgd-ce", "apgd-t")
AUTOATTACK_STAGES = frozenset({"apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"})
DEFAULT_STEPS = 20
REPORT_FORMAT = "harden.evaluate/1"
PROGRESS_FORMAT = "harden.evaluate.progress/1"
CPU_BATCH = 250            # AutoAttack's own default batch size
PRELOAD_LIMIT = 2 << 30    # examples up to this many bytes are held in memory, larger sets load per batch

# per-example status codes; a positive code k means "broken by the k-th attack"
PENDING, MISCLASSIFIED, ROBUST = -2, -1, 0


# ------------------------------------------------------------------------------------------- eps


def eps_text(value: float) -> str:
    """``8/255`` for multiples of 1/255, else the shortest decimal."""
    k = value * 255
    if value > 0 and abs(k - round(k)) < 1e-6 and round(k) != 255:
        return f"{round(k)}/255"
    return f"{value:g}"


def parse_eps(value: str | float, *, norm: str = "Linf", allow_zero: bool = False) -> tuple[float, str]:
    """``"8/255"``, ``"0.031"`` or a number -> ``(value, text)``; refuses eps <= 0 and (for Linf) > 1."""
    if isinstance(value, (int, float)):
        eps, text = float(value), eps_text(float(value))
    else:
        text = value.strip()
        try:
            if "/" in text:
                num, _, den = text.partition("/")
                eps = float(Fraction(num.strip()) / Fraction(den.strip()))
            else:
                eps = float(text)
        except (ValueError, ZeroDivisionError):
            raise UsageError(f"eps must be a number or a fraction like 8/255, got '{value}'") from None
    if not math.isfinite(eps) or eps < 0 or (eps == 0 and not allow_zero):
        raise UsageError(f"eps must be positive, got {text}")
    if norm == "Linf" and eps > 1:
        raise UsageError(f"Linf eps must be at most 1 (images are in [0, 1]); got {text}, did you mean {text}/255?")
    return eps, text


def parse_eps_list(text: str | Sequence[str | float], *, norm: str = "Linf") -> list[tuple[float, str]]:
    """``"0,1/255,2/255"`` -> sorted unique ``(value, text)`` pairs; 0 (clean accuracy) is allowed."""
    parts = [p for p in text.split(",") if p.strip()] if isinstance(text, str) else list(text)
    if not parts:
        raise UsageError("--eps-sweep needs a comma-separated list of eps values, e.g. 0,2/255,4/255,8/255")
    seen: dict[float, str] = {}
    for p in parts:
        v, t = parse_eps(p, norm=norm, allow_zero=True)
        seen.setdefault(v, t)
    return sorted(seen.items())


# ------------------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class AttackPlan:
    """What to run: the attack sequence (``stages``) and its settings."""

    attack: str
    stages: tuple[str, ...]
    eps: float
    eps_text: str
    norm: str
    seed: int
    version: str | None = None
    steps: int | None = None
    step_size: float | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack, "attacks": list(self.stages)}
        if self.version:
            out["version"] = self.version
        if self.steps is not None:
            out["steps"] = self.steps
            out["step_size"] = self.step_size if self.step_size is not None else self.eps / 4
        return out


def plan_attack(attack: str = "autoattack", *, eps: str | float = 8 / 255, norm: str = "Linf", fast: bool = False,
                seed: int = 0, steps: int | None = None, step_size: float | None = None) -> AttackPlan:
    """Validate an attack request and expand it into an :class:`AttackPlan`."""
    attack = attack.strip().lower()
    if attack not in ATTACKS:
        raise UsageError(f"unknown attack '{attack}'{close_matches(attack, ATTACKS)} (known: {', '.join(ATTACKS)})")
    if norm not in NORMS:
        raise UsageError(f"unknown norm '{norm}'{close_matches(norm, NORMS)} (use Linf or L2)")
    value, text = parse_eps(eps, norm=norm)
    if fast and attack != "autoattack":
        raise UsageError("--fast applies to --attack autoattack only")
    if steps is not None and (attack not in ("pgd", "cw") or steps <= 0):
        raise UsageError("--steps takes a positive number and applies to --attack pgd or cw")
    if step_size is not None and (attack not in ("pgd", "cw", "fgsm") or step_size <= 0):
        raise UsageError("--step-size takes a positive number and applies to --attack pgd, cw or fgsm")
    if attack == "autoattack":
        return AttackPlan(attack, FAST_ATTACKS if fast else STANDARD_ATTACKS, value, text, norm, seed,
                          version="fast" if fast else "standard")
    if attack == "apgd-ce":
        return AttackPlan(attack, ("apgd-ce",), value, text, norm, seed)
    if attack == "fgsm":
        return AttackPlan(attack, ("fgsm",), value, text, norm, seed, step_size=step_size)
    k = steps or DEFAULT_STEPS
    return AttackPlan(attack, (f"{attack}-{k}",), value, text, norm, seed, steps=k, step_size=step_size)


def check_settings(cfg: EvaluateConfig) -> tuple[AttackPlan, list[tuple[float, str]] | None]:
    """Check an evaluation's attack, eps and files before anything loads: its plan and eps sweep (or None)."""
    step = cfg.step_size
    if isinstance(step, str):  # command line text
        step = parse_eps(step, norm="L2")[0] if step.strip() else None
    plan = plan_attack(cfg.attack, eps=cfg.eps, norm=cfg.norm, fast=cfg.fast, seed=cfg.seed, steps=cfg.steps,
                       step_size=step)
    sweep = parse_eps_list(cfg.eps_sweep, norm=cfg.norm) if cfg.eps_sweep is not None else None
    if cfg.resume and sweep is not None:
        raise UsageError("--resume does not apply to --eps-sweep; run the sweep again")
    if cfg.report is not None and Path(cfg.report).is_dir():
        raise UsageError(f"--report '{cfg.report}' is a directory; give a file name such as report.json")
    if cfg.into is not None:
        from harden.serialization import read_provenance

        read_provenance(cfg.into)  # fails early (one line) when it is not a harden model file
    return plan, sweep


class _Attacker:
    """Runs one stage of a plan on one batch."""

    def __init__(self, model: nn.Module, plan: AttackPlan, device: torch.device) -> None:
        self.model = model
        self.plan = plan
        self.aa = None
        if any(s in AUTOATTACK_STAGES for s in plan.stages):
            from pyautoattack import AutoAttack

            # version='standard' sets the standard parameters (APGD-CE 1 restart, 9 target classes, ...);
            # --fast and apgd-ce run a prefix of its attack list with exactly those parameters.
            self.aa = AutoAttack(model, norm=plan.norm, eps=plan.eps, version="standard", device=device,
                                 seed=plan.seed)
            self.aa.attacks_to_run = list(plan.stages)

    def __call__(self, stage: str, x: torch.Tensor, y: torch.Tensor, batch_no: int) -> torch.Tensor:
        p = self.plan
        if stage in AUTOATTACK_STAGES:
            with torch.no_grad():  # as in AutoAttack.run_standard_evaluation; the attacks enable grad inside
                return _autoattack_perturb(self.aa, stage, x, y)
        gen = torch.Generator().manual_seed((p.seed * 1_000_003 + batch_no) % (1 << 62))
        if stage == "fgsm":
            return fgsm(self.model, x, y, eps=p.eps, norm=p.norm, step_size=p.step_size, generator=gen)
        loss = "cw" if stage.startswith("cw") else "ce"
        return pgd(self.model, x, y, eps=p.eps, steps=p.steps or DEFAULT_STEPS, step_size=p.step_size,
                   norm=p.norm, loss=loss, generator=gen)


def _autoattack_perturb(aa: Any, attack: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One attack of AutoAttack on one batch, set up exactly as ``run_standard_evaluation`` does."""
    if attack in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = "ce" if attack == "apgd-ce" else "dlr"
        aa.apgd.seed = aa.get_seed()
        return aa.apgd.perturb(x, y)
    if attack == "apgd-t":
        aa.apgd_targeted.seed = aa.get_seed()
        return aa.apgd_targeted.perturb(x, y)
    if attack == "fab":
        aa.fab.targeted = False
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if attack == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = aa.get_seed()
        return aa.fab.perturb(x, y)
    if attack == "square":
        aa.square.seed = aa.get_seed()
        return aa.square.perturb(x, y)
    raise ValueError(f"not an AutoAttack attack: {attack}")


# --------------------------------------------------------------------------------------- examples


class Examples:
    """The selected examples, held in memory or (for large sets) loaded batch by batch."""

    def __init__(self, *, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                 dataset: ImageDataset | None = None, indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.indices = list(indices) if indices is not None else list(range(len(y) if y is not None else 0))
        if y is None:
            assert dataset is not None
            y = torch.tensor([dataset.labels[i] for i in self.indices], dtype=torch.long)
        self.y = y.long().cpu()
        self.x = x
        if self.x is None and dataset is not None:
            first, _ = dataset[self.indices[0]]
            if first.numel() * 4 * len(self.indices) <= PRELOAD_LIMIT:
                self.x = torch.stack([first] + [dataset[i][0] for i in self.indices[1:]])

    @property
    def n(self) -> int:
        return len(self.y)

    def get(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels at ``positions`` (indices into the selection)."""
        if self.x is not None:
            return self.x[positions], self.y[positions]
        assert self.dataset is not None
        return (torch.stack([self.dataset[self.indices[int(p)]][0] for p in positions]), self.y[positions])

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(self.indices).encode())
        h.update(self.y.numpy().tobytes())
        if self.dataset is None and self.x is not None:
            h.update(self.x.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ batch size


def largest_fitting(try_batch: Callable[[int], None], cap: int, start: int = 8) -> int:
    """The largest power of two from ``start`` (doubling; the last try may pass ``cap``) for which
    ``try_batch`` does not raise ``torch.cuda.OutOfMemoryError``; 0 when even ``start`` fails."""
    best, bs = 0, start
    while True:
        try:
            try_batch(bs)
        except torch.cuda.OutOfMemoryError:
            return best
        best = bs
        if bs >= cap:
            return best
        bs *= 2


def pick_batch_size(model: nn.Module, shape: Sequence[int], device: torch.device, cap: int) -> int:
    """``--batch-size auto``: the largest power of two whose forward+backward fits on the GPU, halved
    for headroom (the attacks keep extra per-example state, FAB-T most), at most ``cap``.

    On the CPU memory is rarely the limit: AutoAttack's default of 250 (or ``cap``) is used.
    """
    cap = max(1, cap)
    if device.type != "cuda":
        return min(CPU_BATCH, cap)

    def try_batch(bs: int) -> None:
        try:
            x = torch.rand(bs, *shape, device=device, requires_grad=True)
            model(x).float().logsumexp(1).sum().backward()
            del x
        finally:
            model.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()

    best = largest_fitting(try_batch, cap)
    if best == 0:
        raise HardenError("even a batch of 8 does not fit in GPU memory; use --device cpu or a smaller model")
    return max(1, min(cap, best // 2 if best >= 16 else best))


# ------------------------------------------------------------------------------------------- core


class Interrupted(HardenError):
    """Raised (by a callback) to stop an evaluation after a batch; its progress file stays."""


def progress_store(report_path: Path) -> Store:
    """Where an evaluation writing ``report_path`` keeps its per-batch progress: ``REPORT.progress``."""
    return Store(Path(str(report_path) + ".progress"), format=PROGRESS_FORMAT,
                 unreadable="progress file '{path}' is unreadable ({reason}); delete it to start again",
                 foreign="'{path}' is not a harden evaluation progress file; delete it to start again")


@dataclass
class _Progress:
    store: Store | None
    fingerprint: dict[str, Any]
    batch_size: int
    status: torch.Tensor
    stage: int = 0
    batches_done: int = 0
    stage_seconds: list[float] | None = None
    elapsed: float = 0.0
    warnings: list[dict[str, Any]] | None = None
    x_range: tuple[float, float] = (math.inf, -math.inf)
    resumed: bool = False

    def save(self, log: chk.WarningLog, elapsed: float) -> None:
        if self.store is None or not hd.is_main():
            return
        self.store.save({
            "format": PROGRESS_FORMAT, "fingerprint": self.fingerprint, "batch_size": self.batch_size,
            "stage": self.stage, "batches_done": self.batches_done, "status": self.status.tolist(),
            "stage_seconds": self.stage_seconds, "elapsed": elapsed, "warnings": log.as_dicts(),
            "x_range": list(self.x_range) if math.isfinite(self.x_range[0]) else None,
        })

    @classmethod
    def load(cls, store: Store, fingerprint: dict[str, Any], batch_size: int | None) -> _Progress | None:
        state = store.load()
        if state is None:
            return None
        path = store.path
        old = state.get("fingerprint")
        for key, was, now in differences(old if isinstance(old, dict) else {}, as_json(fingerprint), depth=1):
            if key in fingerprint:
                raise UsageError(f"progress file '{path}' belongs to another run ({key} was {was!r}, "
                                 f"now {now!r}); delete it or run without --resume")
        if batch_size is not None and batch_size != state["batch_size"]:
            raise UsageError(f"progress file '{path}' was written with --batch-size {state['batch_size']}; "
                             "resume with the same batch size (or auto)")
        rng = state.get("x_range")
        return cls(store, fingerprint, int(state["batch_size"]), torch.tensor(state["status"], dtype=torch.long),
                   int(state["stage"]), int(state["batches_done"]), list(state["stage_seconds"]),
                   float(state["elapsed"]), list(state.get("warnings") or []),
                   (rng[0], rng[1]) if rng else (math.inf, -math.inf), True)


def _split(positions: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [positions[i:i + size] for i in range(0, len(positions), size)]


def _robust_at_start(status: torch.Tensor, stage: int) -> torch.Tensor:
    """Examples still correctly classified when attack ``stage`` (1-based) starts."""
    return (status == ROBUST) | (status >= stage)


def _run_stages(model: nn.Module, examples: Examples, plan: AttackPlan, prog: _Progress, *,
                device: torch.device, log: chk.WarningLog, events: ev.Events | None = None,
                start_time: float) -> None:
    """Clean pass then each attack of ``plan``, batch by batch, dealt out round-robin to the ranks."""
    n, bs = examples.n, prog.batch_size
    rank, world = hd.rank(), hd.world_size()
    attacker = _Attacker(model, plan, device)
    names = ("clean", *plan.stages)
    if prog.stage_seconds is None:
        prog.stage_seconds = [0.0] * len(names)
    status = prog.status
    first_output_checked = prog.resumed
    events = events or ev.Events()
    done_units = n * min(prog.stage, len(names))
    if prog.stage < len(names):
        pos = torch.arange(n) if prog.stage == 0 else torch.nonzero(_robust_at_start(status, prog.stage)).flatten()
        done_units += (n - len(pos)) + min(len(pos), prog.batches_done * bs)
    events.emit(ev.ProgressMade(done_units))
    for s in range(prog.stage, len(names)):
        name = names[s]
        positions = torch.arange(n) if s == 0 else torch.nonzero(_robust_at_start(status, s)).flatten()
        batches = _split(positions, bs)
        first = prog.batches_done if s == prog.stage else 0
        events.emit(ev.ProgressMade(n - len(positions) if first == 0 and s > 0 else 0, label=name))
        t0 = time.perf_counter()
        for r0 in range(first, len(batches), world):
            mine = r0 + rank
            mark = torch.zeros(n, dtype=torch.long)
            lo, hi = math.inf, -math.inf
            if mine < len(batches):
                pos = batches[mine]
                x, y = examples.get(pos)
                x, y = x.to(device), y.to(device)
                if s == 0:
                    lo, hi = float(x.min()), float(x.max())
                    with torch.no_grad():
                        logits = model(x)
                    if not first_output_checked:
                        log.extend(chk.check_outputs(logits))
                        first_output_checked = True
                    correct = y.eq(logits.max(dim=1)[1]).cpu()
                    mark[pos] = torch.where(correct, 1, 2)
                else:
                    adv = attacker(name, x, y, mine)
                    with torch.no_grad():
                        pred = model(adv).max(dim=1)[1]
                    broken = (~y.eq(pred)).cpu()
                    mark[pos[broken]] = 1
                    bad = chk.check_perturbation(x, adv, plan.eps, plan.norm) if broken.any() else 0
                    if bad:
                        log.add("perturbation-out-of-bounds",
                                f"{name} returned adversarial images outside the {plan.norm} ball of eps "
                                f"{plan.eps_text} or outside [0, 1] (count = images); the result is invalid", count=bad)
            mark = hd.all_reduce_max(mark)
            if s == 0:
                status[mark == 1] = ROBUST
                status[mark == 2] = MISCLASSIFIED
                rng = hd.all_reduce_max(torch.tensor([-lo, hi], dtype=torch.float64)).tolist()
                prog.x_range = (min(prog.x_range[0], -rng[0]), max(prog.x_range[1], rng[1]))
            else:
                status[mark == 1] = s
            done = min(r0 + world, len(batches))
            prog.stage, prog.batches_done = s, done
            prog.stage_seconds[s] += time.perf_counter() - t0
            t0 = time.perf_counter()
            prog.save(log, prog.elapsed + time.perf_counter() - start_time)
            events.emit(ev.ProgressMade(int(sum(len(batches[b]) for b in range(r0, done))),
                                        status=f"acc {100 * _count_correct(status, s) / n:.2f}%"))
            events.emit(ev.Record("batch", {"stage": name, "batch": done, "batches": len(batches),
                                            "rank": rank}))
        prog.stage_seconds[s] += time.perf_counter() - t0
        prog.stage, prog.batches_done = s + 1, 0
        prog.save(log, prog.elapsed + time.perf_counter() - start_time)


def _count_correct(status: torch.Tensor, stage: int) -> int:
    """Examples still correctly classified after ``stage`` (0 = clean) has finished."""
    return int(((status == ROBUST) | (status > stage)).sum())


def _preflight(model: nn.Module, examples: Examples, plan: AttackPlan, *, batch_size: int, device: torch.device,
               log: chk.WarningLog, check_examples: int) -> None:
    """AutoAttack's checks (as it runs them, on the first batch) and harden's checks on clean inputs."""
    from pyautoattack import checks as aa_checks

    log.extend(chk.check_eval_mode(model))
    x, y = examples.get(torch.arange(min(batch_size, examples.n)))
    x, y = x.to(device), y.to(device)
    logger = logging.getLogger(chk.AUTOATTACK_LOGGER)
    aa_checks.check_randomized(model, x, y, bs=batch_size, logger=logger)
    n_cls = aa_checks.check_range_output(model, x, logger=logger)
    # check_dynamic counts calls in a module-level dict it never resets, and clears any tracer (a
    # debugger, coverage): start each check from zero and put the tracer back afterwards
    for key in aa_checks.funcs:
        aa_checks.funcs[key] = 0
    tracer = sys.gettrace()
    try:
        aa_checks.check_dynamic(model, x, False, logger=logger)
    finally:
        sys.settrace(tracer)
    if any(s in AUTOATTACK_STAGES for s in plan.stages):
        aa_checks.check_n_classes(n_cls, list(plan.stages), 9, 9, logger=logger)  # standard: 9 targets each
    if check_examples > 0:
        m = min(check_examples, examples.n)
        xs, ys = examples.get(torch.arange(m))
        log.extend(chk.check_gradients(model, xs.to(device), ys.to(device)))


def _outcomes(status: torch.Tensor, stages: Sequence[str]) -> list[str]:
    out = []
    for code in status.tolist():
        if code == MISCLASSIFIED:
            out.append("misclassified")
        elif code == ROBUST:
            out.append("robust")
        elif code > 0:
            out.append(stages[code - 1])
        else:
            out.append("pending")
    return out


def _model_info(model: nn.Module) -> dict[str, Any]:
    if isinstance(model, HardenedModel):
        m = model.provenance.model
        return {"spec": m.spec, "num_classes": m.num_classes, "input_size": list(m.input_size),
                "transforms": [t.name for t in model.provenance.transforms]}
    return {"spec": type(model).__name__}


# -------------------------------------------------------------------------------------------- api


def _resolve_model(model: nn.Module | str, trust_code: bool) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    import harden

    if str(model).endswith((".safetensors", ".pt", ".pth")) or Path(model).is_file():
        if str(model).endswith((".pt", ".pth")):
            raise UsageError(f"'{model}' is a torch checkpoint; build the model with harden.load_model(spec, "
                             "weights=...) and pass it")
        return harden.load(model, trust_code=trust_code)
    return harden.load_model(model)


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    with torch.no_grad():
        return int(model(x).shape[-1])


def _select_examples(data: Any, model: nn.Module, *, n: int | None, split: str, random_subset: bool, seed: int,
                     download: bool, skip_bad_images: bool = False) -> tuple[Examples, dict[str, Any]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or len(y) == 0:
            raise UsageError("tensor data must be (x, y) with x of shape (N, C, H, W) and N labels")
        total = len(y)
        if n is not None and n <= 0:
            raise UsageError(f"n must be positive, got {n}")
        k = total if n is None else min(n, total)
        if random_subset:
            idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:k].tolist()
        else:
            idx = list(range(k))
        examples = Examples(x=x[idx].detach().cpu().float(), y=y[idx], indices=idx)
        desc = {"data": "tensors", "split": None, "n": k, "selection": "random" if random_subset else "first",
                "indices_head": idx[:10]}
        if random_subset:
            desc["selection_seed"] = seed
        label_max = int(y.max())
        ncls = _num_classes(model, examples.x[:2].to(_device_of(model)))  # type: ignore[index]
        if label_max >= ncls:
            raise UsageError(f"labels go up to {label_max} but the model has {ncls} classes")
        return examples, desc
    if isinstance(data, str):
        size = None
        insize = getattr(model, "input_size", None)
        if isinstance(insize, tuple) and len(insize) == 3 and insize[1] == insize[2]:
            size = int(insize[1])
        dataset = load_dataset(data, split, download=download, image_size=size)
    elif isinstance(data, ImageDataset):
        dataset = data
    else:
        raise UsageError("data must be a data spec (sample, imagefolder:ROOT, cifar10:ROOT, cifar100:ROOT), "
                         "an ImageDataset or an (x, y) pair of tensors")
    selection: Selection = select(dataset, n, random_subset=random_subset, seed=seed)
    if skip_bad_images:
        selection = skip_unreadable(dataset, selection)
    examples = Examples(dataset=dataset, indices=selection.indices)
    probe = examples.get(torch.arange(min(2, examples.n)))[0].to(_device_of(model))
    ncls = _num_classes(model, probe)
    if ncls != dataset.num_classes:
        raise UsageError(f"the model has {ncls} classes but {dataset.spec} has {dataset.num_classes}; "
                         "evaluate on data with the model's classes (or rebuild the model with --num-classes)")
    return examples, selection.describe()


def evaluate(model: nn.Module | str, data: str | ImageDataset | tuple[torch.Tensor, torch.Tensor] = "sample", *,
             attack: str = "autoattack", eps: str | float = 8 / 255, norm: str = "Linf", fast: bool = False,
             n: int | None = 1000, seed: int = 0, batch_size: int | str | None = "auto", device: str = "auto",
             split: str = "test", random_subset: bool = False, download: bool = False, steps: int | None = None,
             step_size: float | None = None, report: str | os.PathLike[str] | None = None, resume: bool = False,
             into: str | os.PathLike[str] | None = None, eps_sweep: str | Sequence[str | float] | None = None,
             progress: bool = False, check_examples: int | None = None, trust_code: bool = False,
             on_batch: Callable[[dict[str, Any]], None] | None = None,
             skip_bad_images: bool = False, tracker: Any = None) -> dict[str, Any]:
    """Evaluate the robustness of ``model`` (images in [0, 1] -> logits) and return the report.

    ``data`` is a data spec, an :class:`~harden.data.ImageDataset` or ``(x, y)`` tensors; the first
    ``n`` examples (or a seeded random subset) are used. ``attack`` is ``autoattack`` (``fast`` for
    APGD-CE + APGD-T), ``apgd-ce``, ``pgd``, ``fgsm`` or ``cw``. ``report`` writes the JSON report
    (and keeps per-batch progress beside it, as ``REPORT.progress``, for ``resume``); ``into`` adds
    the report to a harden model file. Under ``torchrun`` the batches are shared among the ranks.
    ``check_examples`` is the size of the subset harden's gradient and strength checks use (default
    n/20, between 8 and 32; 0 turns them off). ``skip_bad_images`` leaves out images that cannot be
    decoded (the report's ``selection`` counts and names them) instead of stopping at the first one.
    ``tracker`` (``"mlflow"``, ``"mlflow:URI"`` or a :class:`harden.tracking.Tracker`) records what was
    measured, the figures (accuracy after each attack, 95% intervals) and the report file.
    """
    t_start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    cfg = make_evaluate_config(attack=attack, eps=eps, norm=norm, fast=fast, n=n, seed=seed, batch_size=batch_size,
                               device=device, split=split, random_subset=random_subset, download=download,
                               steps=steps, step_size=step_size, report=report, resume=resume, into=into,
                               eps_sweep=eps_sweep, skip_bad_images=skip_bad_images)
    plan, sweep = check_settings(cfg)
    n, batch_size = cfg.n, None if cfg.batch_size == "auto" else cfg.batch_size
    report_path = Path(report) if report is not None else None

    with tracking.Session(tracker, run_name=report_path.stem if report_path else None) as tracked, \
            session(device) as dist:
        model = _resolve_model(model, trust_code).to(dist.device)
        main = dist.is_main
        events = ev.Events(ev.Terminal() if progress and main else None, ev.Callbacks(on_batch=on_batch),
                           ev.ReportFile(report_path) if report_path is not None and main else None,
                           tracking.TrackerSink(tracked))
        with eval_mode(model):
            result = _evaluate_loaded(model, data, plan, sweep, n=n, split=split, random_subset=random_subset,
                                      download=download, batch_size=batch_size, device=dist.device,
                                      report_path=report_path, resume=resume, events=events,
                                      check_examples=check_examples, t_start=t_start, started=started,
                                      skip_bad_images=skip_bad_images)
        events.emit(ev.Record("report", result))
        if main and report_path is not None:
            progress_store(report_path).remove()
        if main and into is not None:
            from harden.serialization import add_report

            add_report(into, {k: v for k, v in result.items() if k != "examples"})
        events.emit(ev.ArtifactWritten(report_path))
        dist.barrier()
    return result


def _evaluate_loaded(model: nn.Module, data: Any, plan: AttackPlan, sweep: list[tuple[float, str]] | None, *,
                     n: int | None, split: str, random_subset: bool, download: bool, batch_size: int | None,
                     device: torch.device, report_path: Path | None, resume: bool, events: ev.Events,
                     check_examples: int | None, t_start: float, started: _dt.datetime,
                     skip_bad_images: bool = False) -> dict[str, Any]:
    buffers = chk.snapshot_buffers(model)
    examples, selection = _select_examples(data, model, n=n, split=split, random_subset=random_subset,
                                           seed=plan.seed, download=download, skip_bad_images=skip_bad_images)
    if check_examples is None:  # a small subset: the checks cost about 1% of a real evaluation
        check_examples = min(32, max(8, examples.n // 20))
    log = chk.WarningLog()
    world = hd.world_size()
    per_rank = math.ceil(examples.n / world)
    store = progress_store(report_path) if report_path is not None else None
    fingerprint: dict[str, Any] = {}
    if store is not None:  # what a progress file must match to be resumed
        fingerprint = {
            "attack": plan.attack, "attacks": list(plan.stages), "eps": plan.eps, "norm": plan.norm,
            "seed": plan.seed, "steps": plan.steps, "step_size": plan.step_size, "n": examples.n,
            "examples": examples.digest(), "model": state_digest(model, short=True),
        }
    prog: _Progress | None = None
    if resume and store is not None:
        prog = _Progress.load(store, fingerprint, batch_size)
        if prog is not None:
            log.merge_max(prog.warnings or [])
    if prog is None:
        if batch_size is None:
            shape = tuple(examples.get(torch.arange(1))[0].shape[1:])
            batch_size = pick_batch_size(model, shape, device, per_rank)
            batch_size = int(-hd.all_reduce_max(torch.tensor([-batch_size])).item())
        prog = _Progress(store, fingerprint, batch_size, torch.full((examples.n,), PENDING, dtype=torch.long))
    bs = prog.batch_size

    events.emit(ev.ProgressStarted(examples.n * (1 + len(plan.stages)), unit="ex"))
    t_run = time.perf_counter()
    try:
        pre = chk.WarningLog()  # merged without double counting what a resumed run saw before
        with chk.capture_autoattack(pre):
            if hd.is_main():
                _preflight(model, examples, plan, batch_size=bs, device=device, log=pre,
                           check_examples=check_examples)
        log.merge_max(pre.as_dicts())
        with chk.capture_autoattack(log):
            _run_stages(model, examples, plan, prog, device=device, log=log, events=events, start_time=t_run)
    finally:
        events.emit(ev.ProgressEnded())
    run_seconds = prog.elapsed + time.perf_counter() - t_run
    status = prog.status

    # AutoAttack's own check on Square, over the attacks that actually ran
    if any(s in AUTOATTACK_STAGES for s in plan.stages) and hd.is_main():
        from pyautoattack import checks as aa_checks

        acc = {"clean": _count_correct(status, 0) / examples.n}
        for k, name in enumerate(plan.stages, start=1):
            if int(_robust_at_start(status, k).sum()) == 0:
                break
            acc[name] = _count_correct(status, k) / examples.n
        with chk.capture_autoattack(log):
            aa_checks.check_square_sr(acc, logger=logging.getLogger(chk.AUTOATTACK_LOGGER))

    x_lo, x_hi = prog.x_range  # already reduced over the ranks: checked once, on rank 0
    if math.isfinite(x_lo) and hd.is_main():
        log.extend(chk.check_inputs(x_lo, x_hi))
    strength: dict[str, Any] | None = None
    if hd.is_main() and check_examples > 0 and plan.stages:
        m = min(check_examples, examples.n)
        xs, ys = examples.get(torch.arange(m))
        # the main attack must beat PGD-5 when it is a many-step attack on the same loss family
        compare = plan.attack in ("autoattack", "apgd-ce") or (plan.attack == "pgd" and (plan.steps or 0) > 5)
        final = (status[:m] == ROBUST) if compare else None
        warns, strength = chk.check_strength(model, xs.to(device), ys.to(device), eps=plan.eps, norm=plan.norm,
                                             seed=plan.seed, final_robust=final, final_name=plan.stages[-1]
                                             if plan.attack != "autoattack" else f"autoattack {plan.version}",
                                             steps=1 if plan.attack == "fgsm" else 5)
        log.extend(warns)

    sweep_rows = None
    if sweep is not None:
        sweep_rows = _sweep(model, examples, plan, sweep, status, bs, device, log)

    if hd.is_main():
        log.extend(chk.check_buffers_unchanged(model, buffers))
    # every rank saw its own batches: the same warning from several ranks adds up its counts
    gathered = hd.all_gather_objects(log.as_dicts())
    merged = chk.WarningLog([w for part in gathered for w in part])
    return _build_report(model, plan, examples, selection, status, prog, merged, device=device,
                         run_seconds=run_seconds, started=started,
                         total_seconds=time.perf_counter() - t_start + (prog.elapsed if prog.resumed else 0.0),
                         strength=strength, sweep_rows=sweep_rows)


def _sweep(model: nn.Module, examples: Examples, plan: AttackPlan, sweep: list[tuple[float, str]],
           main_status: torch.Tensor, bs: int, device: torch.device, log: chk.WarningLog) -> list[dict[str, Any]]:
    rows = []
    n = examples.n
    for value, text in sweep:
        if value == plan.eps:
            status = main_status
        else:
            sub = replace(plan, eps=value, eps_text=text, stages=plan.stages if value > 0 else ())
            prog = _Progress(None, {}, bs, torch.full((n,), PENDING, dtype=torch.long))
            with chk.capture_autoattack(log):
                _run_stages(model, examples, sub, prog, device=device, log=log, start_time=time.perf_counter())
            status = prog.status
        robust = int((status == ROBUST).sum())
        rows.append({"eps": value, "eps_text": text, "robust_acc": 100 * robust / n, "robust_correct": robust,
                     "robust_ci95": [round(v, 3) for v in wilson_interval(robust, n)]})
    log.extend(chk.check_sweep([(r["eps"], r["robust_correct"]) for r in rows], n))
    return rows


def _build_report(model: nn.Module, plan: AttackPlan, examples: Examples, selection: dict[str, Any],
                  status: torch.Tensor, prog: _Progress, log: chk.WarningLog, *, device: torch.device,
                  run_seconds: float, total_seconds: float, started: _dt.datetime,
                  strength: dict[str, Any] | None, sweep_rows: list[dict[str, Any]] | None) -> dict[str, Any]:
    n = examples.n
    clean = _count_correct(status, 0)
    robust = int((status == ROBUST).sum())
    seconds = prog.stage_seconds or [0.0] * (1 + len(plan.stages))
    per_attack = [{"attack": "clean", "acc": 100 * clean / n, "correct": clean, "seconds": round(seconds[0], 3)}]
    for k, name in enumerate(plan.stages, start=1):
        c = _count_correct(status, k)
        per_attack.append({"attack": name, "acc": 100 * c / n, "correct": c, "seconds": round(seconds[k], 3),
                           "attacked": int(_robust_at_start(status, k).sum())})
    full_aa = plan.attack == "autoattack" and plan.version == "standard"
    dataset = str(selection.get("data", ""))
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "kind": "robustness",
        "model": _model_info(model),
        **plan.describe(),
        "norm": plan.norm,
        "threat_model": plan.norm,
        "eps": plan.eps,
        "eps_text": plan.eps_text,
        "n": n,
        "seed": plan.seed,
        "batch_size": prog.batch_size,
        "clean_acc": 100 * clean / n,
        "robust_acc": 100 * robust / n,
        "clean_correct": clean,
        "robust_correct": robust,
        "clean_ci95": [round(v, 3) for v in wilson_interval(clean, n)] if n else None,
        "robust_ci95": [round(v, 3) for v in wilson_interval(robust, n)] if n else None,
        "per_attack": per_attack,
        "selection": selection,
        "examples": {"indices": examples.indices, "labels": examples.y.tolist(),
                     "outcome": _outcomes(status, plan.stages)},
        "seconds": round(total_seconds, 3),
        "attack_seconds": round(run_seconds, 3),
        "device": device_text(device),
        "world_size": hd.world_size(),
        "resumed": prog.resumed,
        "created": started.isoformat(timespec="seconds"),
        "versions": versions(REPORT_LIBRARIES, python=True),
        "warnings": log.as_dicts(),
    }
    if full_aa:
        report["autoattack_acc"] = report["robust_acc"]
    pub = _published(model)
    if pub is not None:  # the leaderboard's figures for this model, beside the measured ones
        report["published"] = pub
    if strength is not None:
        report["strength_check"] = strength
    if sweep_rows is not None:
        report["eps_sweep"] = sweep_rows
    report["robustbench"] = {
        "clean_acc": f"{100 * clean / n:.2f}",
        "autoattack_acc": f"{100 * robust / n:.2f}" if full_aa else None,
        "eps": plan.eps_text,
        "threat_model": plan.norm,
        "dataset": dataset.split(":")[0] if dataset.startswith(("cifar10", "cifar100")) else dataset,
        "n_examples": n,
    }
    return report


def _published(model: nn.Module) -> dict[str, Any] | None:
    try:
        from harden.zoo.robustbench import published
    except ImportError:
        return None
    return published(model.provenance if isinstance(model, HardenedModel) else None)


# ---------------------------------------------------------------------------------------- output


def summary_table(report: dict[str, Any]) -> str:
    """The per-attack table printed at the end of ``harden evaluate``."""
    n = report["n"]
    sel = report.get("selection", {})
    how = sel.get("selection", "first")
    lines = [
        f"model    {report['model'].get('spec')}",
        f"data     {sel.get('data')} ({sel.get('split') or 'tensors'}, {how} {n})"
        + (f"; skipped {sel['skipped_images']} damaged images" if sel.get("skipped_images") else ""),
        f"threat   {report['norm']} eps={report['eps_text']} ({report['eps']:.5g})",
        f"attack   {report['attack']}" + (f" {report['version']}" if report.get("version") else "")
        + f"  (seed {report['seed']}, batch {report['batch_size']}, {report['device']}"
        + (f", {report['world_size']} processes" if report.get("world_size", 1) > 1 else "") + ")",
        "",
        f"{'after':<12} {'accuracy':>9} {'correct':>11} {'seconds':>9}",
    ]
    for row in report["per_attack"]:
        lines.append(f"{row['attack']:<12} {row['acc']:>8.2f}% {row['correct']:>5}/{n:<5} {row['seconds']:>9.1f}")
    lines.append("")
    lines.append(f"clean accuracy:  {report['clean_acc']:.2f}%{_ci_text(report.get('clean_ci95'))}")
    lines.append(f"robust accuracy: {report['robust_acc']:.2f}%{_ci_text(report.get('robust_ci95'))}   "
                 f"({report['seconds']:.1f} s)")
    if report.get("published"):
        from harden.zoo.robustbench import published_line

        lines.append(published_line(report["published"], report["norm"], report["eps_text"]))
    return "\n".join(lines)


def _ci_text(ci: Sequence[float] | None) -> str:
    return f"   (95% interval {ci[0]:.1f} to {ci[1]:.1f})" if ci else ""


def sweep_table(report: dict[str, Any]) -> str:
    """Robust accuracy against eps as a small table."""
    rows = report.get("eps_sweep") or []
    lines = [f"{'eps':<10} {'robust accuracy':>16}   95% interval"]
    lines += [f"{r['eps_text']:<10} {r['robust_acc']:>15.2f}%   "
              + (f"{r['robust_ci95'][0]:.1f} to {r['robust_ci95'][1]:.1f}" if r.get("robust_ci95") else "")
              for r in rows]
    return "\n".join(lines)


def plot_sweep(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write robust accuracy against eps as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("eps_sweep") or []
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs = [r["eps"] * (255 if report["norm"] == "Linf" else 1) for r in rows]
    ax.plot(xs, [r["robust_acc"] for r in rows], marker="o")
    if rows and all(r.get("robust_ci95") for r in rows):
        ax.fill_between(xs, [r["robust_ci95"][0] for r in rows], [r["robust_ci95"][1] for r in rows], alpha=0.2,
                        label=f"95% interval (n={report['n']})")
        ax.legend(fontsize=8)
    ax.set_xlabel("eps (x/255)" if report["norm"] == "Linf" else "eps (L2)")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    attack = report["attack"] + (f" {report['version']}" if report.get("version") else "")
    if report["attack"] != "autoattack":
        attack = ", ".join(report.get("attacks") or [report["attack"]])
    ax.set_title(f"{report['model'].get('spec')} - {attack}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
