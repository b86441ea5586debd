"""Running a plan's stages: the clean pass, then each attack on the examples still correctly
classified, batch by batch, dealt out round-robin to the ranks of a ``torchrun`` job.

After every round of batches the ranks' outcomes are merged into each example's status and the
progress is saved (for ``--resume``), exactly where ``AutoAttack.run_standard_evaluation`` would be
between two batches, so splitting the loop changes no number.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from harden.attacks import get_attack
from harden.evaluation import honesty_checks as chk
from harden.evaluation.attack_plan import AUTOATTACK_STAGES, AttackPlan
from harden.evaluation.autoattack import autoattack_for, autoattack_perturb
from harden.evaluation.examples import Examples
from harden.evaluation.progress import MISCLASSIFIED, ROBUST, Progress, count_correct, robust_at_start
from harden.runtime import distributed as hd
from harden.runtime import events as ev

# marks a rank sets for an example of its batch (merged over the ranks by their maximum)
_BROKEN = _CORRECT = 1
_WRONG = 2


class Attacker:
    """Runs one stage of a plan on one batch: AutoAttack's stages through ``pyautoattack``, the
    others through the registered attack's own runner (seeded per batch)."""

    def __init__(self, model: nn.Module, plan: AttackPlan, device: torch.device) -> None:
        self.model = model
        self.plan = plan
        self.aa = autoattack_for(model, plan, device)

    def __call__(self, stage: str, x: torch.Tensor, y: torch.Tensor, batch_no: int) -> torch.Tensor:
        p = self.plan
        if stage in AUTOATTACK_STAGES:
            with torch.no_grad():  # as in AutoAttack.run_standard_evaluation; the attacks enable grad inside
                return autoattack_perturb(self.aa, stage, x, y)
        spec = get_attack(p.attack)
        if spec is None or spec.run is None:
            raise ValueError(f"attack '{p.attack}' has no way to run its stage '{stage}'")
        gen = torch.Generator().manual_seed((p.seed * 1_000_003 + batch_no) % (1 << 62))
        return spec.run(self.model, x, y, eps=p.eps, norm=p.norm, steps=p.steps, step_size=p.step_size,
                        generator=gen)


def _split(positions: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [positions[i:i + size] for i in range(0, len(positions), size)]


class _StageRun:
    """One run of :func:`run_stages`: the state its batches share."""

    def __init__(self, model: nn.Module, examples: Examples, plan: AttackPlan, prog: Progress, *,
                 device: torch.device, log: chk.WarningLog, events: ev.Events, start_time: float) -> None:
        self.model, self.examples, self.plan, self.prog = model, examples, plan, prog
        self.device, self.log, self.events, self.start_time = device, log, events, start_time
        self.rank, self.world = hd.rank(), hd.world_size()
        self.attacker = Attacker(model, plan, device)
        self.names = ("clean", *plan.stages)
        self.first_output_checked = prog.resumed

    def positions(self, stage: int) -> torch.Tensor:
        """The examples ``stage`` works on: all for the clean pass, else those still robust."""
        if stage == 0:
            return torch.arange(self.examples.n)
        return torch.nonzero(robust_at_start(self.prog.status, stage)).flatten()

    def units_done(self) -> int:
        """Progress-bar units a resumed run has already done (an example per stage)."""
        n, prog = self.examples.n, self.prog
        done = n * min(prog.stage, len(self.names))
        if prog.stage < len(self.names):
            pos = self.positions(prog.stage)
            done += (n - len(pos)) + min(len(pos), prog.batches_done * prog.batch_size)
        return done

    def save(self) -> None:
        self.prog.save(self.log, self.prog.elapsed + time.perf_counter() - self.start_time)

    def stage(self, s: int) -> None:
        """Stage ``s`` (0 = clean) from where the progress left it, a round of batches at a time."""
        n, prog, name = self.examples.n, self.prog, self.names[s]
        positions = self.positions(s)
        batches = _split(positions, prog.batch_size)
        first = prog.batches_done if s == prog.stage else 0
        self.events.emit(ev.ProgressMade(n - len(positions) if first == 0 and s > 0 else 0, label=name))
        t0 = time.perf_counter()
        for r0 in range(first, len(batches), self.world):
            self.round(s, batches, r0)
            done = min(r0 + self.world, len(batches))
            prog.stage, prog.batches_done = s, done
            prog.stage_seconds[s] += time.perf_counter() - t0  # type: ignore[index]
            t0 = time.perf_counter()
            self.save()
            self.events.emit(ev.ProgressMade(int(sum(len(batches[b]) for b in range(r0, done))),
                                             status=f"acc {100 * count_correct(prog.status, s) / n:.2f}%"))
            self.events.emit(ev.Record("batch", {"stage": name, "batch": done, "batches": len(batches),
                                                 "rank": self.rank}))
        prog.stage_seconds[s] += time.perf_counter() - t0  # type: ignore[index]
        prog.stage, prog.batches_done = s + 1, 0
        self.save()

    def round(self, s: int, batches: list[torch.Tensor], r0: int) -> None:
        """This rank's batch of the round starting at batch ``r0`` (if any), then every rank's marks merged."""
        mine = r0 + self.rank
        mark = torch.zeros(self.examples.n, dtype=torch.long)
        lo, hi = math.inf, -math.inf
        if mine < len(batches):
            pos = batches[mine]
            x, y = self.examples.get(pos)
            x, y = x.to(self.device), y.to(self.device)
            if s == 0:
                lo, hi = float(x.min()), float(x.max())
                self.clean(pos, x, y, mark)
            else:
                self.attack(self.names[s], mine, pos, x, y, mark)
        mark = hd.all_reduce_max(mark)
        status, prog = self.prog.status, self.prog
        if s == 0:
            status[mark == _CORRECT] = ROBUST
            status[mark == _WRONG] = MISCLASSIFIED
            rng = hd.all_reduce_max(torch.tensor([-lo, hi], dtype=torch.float64)).tolist()
            prog.x_range = (min(prog.x_range[0], -rng[0]), max(prog.x_range[1], rng[1]))
        else:
            status[mark == _BROKEN] = s

    def clean(self, pos: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mark: torch.Tensor) -> None:
        """Marks which examples of a batch the model classifies correctly (and checks its first output)."""
        with torch.no_grad():
            logits = self.model(x)
        if not self.first_output_checked:
            self.log.extend(chk.check_outputs(logits))
            self.first_output_checked = True
        correct = y.eq(logits.max(dim=1)[1]).cpu()
        mark[pos] = torch.where(correct, _CORRECT, _WRONG)

    def attack(self, name: str, batch_no: int, pos: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               mark: torch.Tensor) -> None:
        """Marks the examples of a batch that attack ``name`` breaks (and checks its images stay in bounds)."""
        plan = self.plan
        adv = self.attacker(name, x, y, batch_no)
        with torch.no_grad():
            pred = self.model(adv).max(dim=1)[1]
        broken = (~y.eq(pred)).cpu()
        mark[pos[broken]] = _BROKEN
        bad = chk.check_perturbation(x, adv, plan.eps, plan.norm) if broken.any() else 0
        if bad:
            self.log.add("perturbation-out-of-bounds",
                         f"{name} returned adversarial images outside the {plan.norm} ball of eps "
                         f"{plan.eps_text} or outside [0, 1] (count = images); the result is invalid", count=bad)


def run_stages(model: nn.Module, examples: Examples, plan: AttackPlan, prog: Progress, *,
               device: torch.device, log: chk.WarningLog, events: ev.Events | None = None,
               start_time: float) -> None:
    """Clean pass then each attack of ``plan``, batch by batch, dealt out round-robin to the ranks."""
    run = _StageRun(model, examples, plan, prog, device=device, log=log, events=events or ev.Events(),
                    start_time=start_time)
    if prog.stage_seconds is None:
        prog.stage_seconds = [0.0] * len(run.names)
    run.events.emit(ev.ProgressMade(run.units_done()))
    for s in range(prog.stage, len(run.names)):
        run.stage(s)
