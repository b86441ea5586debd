"""Collectives over :mod:`torch.distributed`, and where a torchrun process finds its rank and device.

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in its environment; :func:`harden.runtime.session.session` joins the process group.
Every helper is a no-op in a single process, so callers write one code path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from harden.errors import HardenError


def _env_int(name: str, default: int) -> int:
    """An integer torchrun puts in the environment, ``default`` when it is missing or not a number."""
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not started by torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def env_rank() -> int:
    """``RANK`` from the environment (0 when not started by torchrun); valid before and after the group."""
    return _env_int("RANK", 0)


def is_distributed() -> bool:
    """True when a process group with more than one process is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 in a single process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 in a single process)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0 (the process that prints and writes files)."""
    return rank() == 0


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` means this rank's GPU when there is one, else the CPU; ``cuda`` gets ``cuda:LOCAL_RANK``."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank()}" if env_world_size() > 1 else "cuda"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise HardenError(f"unknown device '{device}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HardenError(f"device '{device}' asked for but no CUDA GPU is available; use --device cpu")
    return dev


def _comm_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: torch.Tensor, op: Any) -> torch.Tensor:
    if not is_distributed():
        return tensor
    buf = tensor.detach().to(_comm_device()).clone()
    dist.all_reduce(buf, op=op)
    return buf.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (returns a new tensor on the input's device)."""
    return _all_reduce(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``tensor`` over all ranks."""
    return _all_reduce(tensor, dist.ReduceOp.MAX)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for all ranks."""
    if is_distributed():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
