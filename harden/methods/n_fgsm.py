"""N-FGSM (de Jorge et al. 2022, "Make some noise"): a single step from a large random start, unprojected.

The start is uniform noise of ``noise`` x eps (the paper's k = 2 eps) around the image; one gradient-sign
step of ``step`` (the paper's alpha = eps) follows; the result is clipped to the image range only, not
back to the eps ball, so training perturbations reach up to 3 eps in Linf. Same cost as FGSM-RS, and the
benchmark of fast adversarial training finds it free of FGSM-RS's catastrophic overfitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harden.methods.base import TrainingMethod, register_method

if TYPE_CHECKING:
    import torch
    from torch import nn

#: the paper's noise magnitude, in multiples of eps
DEFAULT_NOISE = 2.0


def n_fgsm_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, noise: float,
                    generator: torch.Generator | None) -> torch.Tensor:
    """x + eta + step * sign(grad CE at x + eta), eta ~ U[-noise eps, noise eps]; clipped to [0, 1] only."""
    import torch
    import torch.nn.functional as F

    x = x.detach()
    eta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * (noise * eps)
    start = (x + eta).clamp(0, 1).requires_grad_(True)
    loss = F.cross_entropy(model(start).float(), y)
    (grad,) = torch.autograd.grad(loss, start)
    return (start.detach() + step * grad.sign()).clamp(0, 1)


class NFGSM(TrainingMethod):
    """N-FGSM: noise of 2 eps, a step of eps, no projection (``nfgsm_noise`` and ``--step-size`` change them)."""

    name, label = "n-fgsm", "N-FGSM (de Jorge et al. 2022)"
    fixed_steps = 1
    norms = ("Linf",)

    def step_size(self, eps: float, steps: int) -> float:
        return eps

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, step: float, steps: int,
                norm: str, generator: torch.Generator, options: dict[str, Any]) -> torch.Tensor:
        if eps <= 0:
            return x.detach()
        noise = options.get("nfgsm_noise")
        return n_fgsm_examples(model, x, y, eps=eps, step=step, noise=DEFAULT_NOISE if noise is None else noise,
                               generator=generator)

    def recorded_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        noise = options.get("nfgsm_noise")
        return {"nfgsm_noise": DEFAULT_NOISE if noise is None else noise}


register_method(NFGSM())
