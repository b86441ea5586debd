"""``--batch-size auto``: probing how large a batch fits in GPU memory."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from harden.errors import HardenError

CPU_BATCH = 250            # AutoAttack's own default batch size


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
