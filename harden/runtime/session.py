"""A run's place in a torchrun job: join the process group on entry, leave it on exit.

``with session(device) as dist:`` is how fine-tuning, evaluation and ``harden run`` start: it picks
this process's device, joins the group torchrun's environment describes (``nccl`` on a GPU, ``gloo``
otherwise) and leaves it again afterwards, also on an error. A group that was already joined (by the
caller, or by an enclosing session) is used and left alone. Outside torchrun it is rank 0 of 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist

from harden.errors import HardenError
from harden.runtime import distributed as hd


@dataclass
class DistSession:
    """This process's rank among ``world`` processes and its device (rank 0 of 1 on the CPU by default)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world > 1

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the processes (a new tensor; ``t`` itself in a single process)."""
        return hd.all_reduce_sum(t) if self.active else t

    def barrier(self) -> None:
        """Wait for every process."""
        hd.barrier()

    def close(self) -> None:
        """Leave the process group if this session joined it."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()
        self.owns_group = False


def _join(device: torch.device) -> bool:
    """Join the group of torchrun's environment; True when this call created it."""
    if hd.env_world_size() <= 1 or (tdist.is_available() and tdist.is_initialized()):
        return False
    if not tdist.is_available():
        raise HardenError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


@contextlib.contextmanager
def session(device: str | torch.device | None = "auto") -> Iterator[DistSession]:
    """A :class:`DistSession` for the block: joined on entry, left on exit (also when the block raises).

    ``device`` is ``auto`` (this rank's GPU if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """
    dev = hd.resolve_device(device if device is not None else "auto")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    owns = _join(dev)
    dist = DistSession(hd.rank(), hd.world_size(), dev, owns)
    try:
        yield dist
    finally:
        dist.close()
