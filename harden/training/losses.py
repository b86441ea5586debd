"""The training objectives of the adversarial fine-tuning methods.

* ``pgd`` / ``fgsm-rs`` / ``clean``: cross-entropy on the (attacked) inputs.
* ``trades`` (Zhang et al. 2019): cross-entropy on the clean inputs plus ``beta`` times
  KL(p(clean) || p(adv)), averaged over the batch.
* ``mart`` (Wang et al. 2020, "Improving adversarial robustness requires revisiting misclassified
  examples"): the boosted cross-entropy on the adversarial inputs,
  ``-log p_y(adv) - log(1 - max_{k != y} p_k(adv))``, plus ``beta`` times KL(p(clean) || p(adv))
  weighted per example by ``1 - p_y(clean)``, so that misclassified examples count more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# keeps log(1 - max other probability) finite when that probability rounds to 1
_LOG_FLOOR = 1e-12


def _kl_per_example(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """KL(p(clean) || p(adv)) of each example, from logits (log-softmax for stability)."""
    log_nat = F.log_softmax(logits_nat, dim=1)
    return (log_nat.exp() * (log_nat - F.log_softmax(logits_adv, dim=1))).sum(1)


def trades_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *, beta: float,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """TRADES: CE(clean) + beta * mean KL(p(clean) || p(adv))."""
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_nat, y, label_smoothing=label_smoothing) + beta * kl


def mart_loss(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, *, beta: float,
              label_smoothing: float = 0.0) -> torch.Tensor:
    """MART: boosted CE on the adversarial logits + beta * mean of KL(p(clean) || p(adv)) * (1 - p_y(clean))."""
    p_adv = F.softmax(logits_adv, dim=1)
    own = F.one_hot(y, p_adv.shape[1]).bool()
    top_other = p_adv.masked_fill(own, 0.0).amax(dim=1)
    margin = -torch.log((1.0 - top_other).clamp_min(_LOG_FLOOR))
    boosted_ce = F.cross_entropy(logits_adv, y, label_smoothing=label_smoothing) + margin.mean()
    p_true_nat = F.softmax(logits_nat, dim=1).gather(1, y[:, None]).squeeze(1)
    weighted_kl = (_kl_per_example(logits_nat, logits_adv) * (1.0 - p_true_nat)).mean()
    return boosted_ce + beta * weighted_kl
