"""Adversarial fine-tuning of an existing model: PGD-AT, TRADES, MART and FGSM with a random start.

:func:`finetune` starts from the weights a model already has: batch-norm statistics are recalibrated
on clean training data (a transform changes what every layer sees), eps can be ramped up, and after
every epoch the clean and PGD accuracy on a held-out slice of the training split decide which weights
are kept (robust overfitting is the classic failure of long adversarial training). A checkpoint is
written after every epoch; ``resume=True`` continues an interrupted run to the same final weights (on
CPU, bit for bit: every random draw of an epoch comes from generators seeded by (seed, epoch, rank)).

Speed: the attack costs ``steps`` forward and backward passes per image, so on a GPU the attack and
the update run under bf16 autocast in channels-last layout, the training images live on the GPU as
uint8 (or come through pinned memory without blocking) and are augmented there. Validation and the
final numbers are computed in fp32. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and each process trains on its shard of every epoch's order.

The package's modules, one job each: :mod:`~harden.training.finetuning` (:func:`finetune`, the run from
arguments to the saved model), :mod:`~harden.training.epochs` (the epoch loop),
:mod:`~harden.training.trainer` (one optimisation step), :mod:`~harden.training.inner_attack` (the
training attack), :mod:`~harden.training.train_data` (the training and held-out data),
:mod:`~harden.training.checkpoint` (fingerprint and resume), :mod:`~harden.training.schedule`,
:mod:`~harden.training.augment`, :mod:`~harden.training.batchnorm`, :mod:`~harden.training.ema` and
:mod:`~harden.training.curves`. Options that live in their own modules: the losses
(:mod:`~harden.training.losses`), adversarial weight perturbation (:mod:`~harden.training.awp`,
``awp``) and a second data source mixed into every batch (:mod:`~harden.training.extra_data`,
``extra_data``), whose images are decoded as uint8 like the training images
(:mod:`~harden.training.uint8_images`).
"""

from __future__ import annotations

from harden.runtime.store import checkpoint_path_for, state_digest
from harden.schemas.finetune import CONFIG_FIELDS, FinetuneConfig, check_config, make_config
from harden.training.augment import augment
from harden.training.batchnorm import batchnorm_layers, recalibrate_bn
from harden.training.checkpoint import checkpoint_store
from harden.training.curves import curves_path_for, write_curves
from harden.training.ema import EMA
from harden.training.finetuning import finetune
from harden.training.inner_attack import perturb
from harden.training.schedule import eps_at, lr_at
from harden.training.train_data import TrainData, resolve_data
from harden.training.trainer import Trainer

__all__ = ["CONFIG_FIELDS", "EMA", "FinetuneConfig", "TrainData", "Trainer", "augment", "batchnorm_layers",
           "check_config", "checkpoint_path_for", "checkpoint_store", "curves_path_for", "eps_at", "finetune", "lr_at",
           "make_config", "perturb", "recalibrate_bn", "resolve_data", "state_digest", "write_curves"]
