"""The settings of adversarial fine-tuning: :class:`FinetuneConfig`, the schema of ``harden finetune``.

Its fields are the command's training options (in ``--help`` order), the keys of a recipe's
``finetune:`` and ``pretrain:`` sections and the keyword arguments of :func:`harden.finetune`;
:func:`make_config` builds and checks one. No torch here: the command line reads it for ``--help``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harden.errors import UsageError
from harden.methods import METHODS as REGISTERED_METHODS
from harden.methods import get_method, method_names
from harden.schemas.fields import NORMS, check_choices, check_names, flag, integer, number, parse_numbers, text

ON_COLLAPSE = ("stop", "warn", "ignore")
SCHEDULES = ("cosine", "multistep", "onecycle", "constant")
ATTACK_MODES = ("eval", "train")
PRECISIONS = ("auto", "fp32", "bf16")
KEEP = ("best", "last")
AUGMENTS = ("none", "crop-flip", "strong")
CROPS = ("center", "none")
#: the validation attacks and their default iterations: PGD with step eps/4, or APGD-CE (one restart), which does
#: not overstate the robustness of smooth activations as PGD's small fixed step can
VAL_ATTACKS = {"pgd": 10, "apgd-ce": 25}

AWP_MAX_GAMMA = 0.1


def awp_methods() -> list[str]:
    """The methods adversarial weight perturbation (harden.training.awp) works with: those with an AWP gamma default."""
    return [name for name in method_names() if get_method(name).awp_gamma is not None]


def extra_count(fraction: float, batch_size: int) -> int:
    """Extra examples per batch: ``round(fraction * batch_size)``."""
    return int(round(fraction * batch_size))


def parse_resize(value: int | str | Sequence[int] | None, option: str = "--resize") -> int | tuple[int, int] | None:
    """``--resize``: ``N`` (the short side, aspect kept) or ``HxW`` / ``(H, W)`` (exactly); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        if not all(p.strip().isdigit() for p in parts) or len(parts) > 2:
            raise UsageError(f"{option} must be N or HxW (e.g. 36 or 72x64), got '{value}'")
        nums: list[int] = [int(p) for p in parts]
    elif isinstance(value, int) and not isinstance(value, bool):
        nums = [value]
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) for v in value):
        nums = list(value)
    else:
        raise UsageError(f"{option} must be N or HxW (e.g. 36 or 72x64), got {value!r}")
    if min(nums) <= 0:
        raise UsageError(f"{option} must be positive, got {value!r}")
    return nums[0] if len(nums) == 1 else (nums[0], nums[1])


def resize_text(value: int | str | Sequence[int] | None, option: str = "--resize") -> str | None:
    """``value`` as a setting records it: ``"36"`` or ``"72x64"`` (None stays None)."""
    size = parse_resize(value, option)
    if size is None:
        return None
    return str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"


def augment_name(value: str | bool) -> str:
    """``--augment`` as a name; the library's older ``augment=True``/``False`` mean crop-flip/none."""
    if isinstance(value, bool):
        return "crop-flip" if value else "none"
    return value


@dataclass
class FinetuneConfig:
    """Hyper-parameters of :func:`finetune`; the CLI options and the recipe keys use the same names."""

    method: str = text("pgd", registry=REGISTERED_METHODS,
                       help="PGD-AT (Madry), TRADES (Zhang), MART (Wang), FGSM with random start (Wong), N-FGSM "
                            "(de Jorge), or clean training.")
    eps: float = number("8/255", help="Perturbation budget (images in [0, 1]).")
    norm: str = text("Linf", choices=NORMS)
    steps: int = integer(10, help="Attack steps during training.")
    step_size: float | None = number(help="Attack step [default: 2.5*eps/steps, 1.25*eps for fgsm-rs, eps for "
                                          "n-fgsm].")
    nfgsm_noise: float | None = number(metavar="K", help="N-FGSM's uniform noise magnitude, in multiples of eps "
                                                         "[default: 2, the paper's].")
    beta: float = number("6", help="TRADES / MART trade-off weight.")
    epochs: int = integer(10)
    lr: float = number("0.01", help="Peak learning rate (SGD, momentum 0.9).")
    schedule: str = text("cosine", choices=SCHEDULES)
    batch_size: int = integer(128, help="Per process.")
    weight_decay: float = number("5e-4")
    momentum: float = number("0.9")
    ema: bool = flag(help="Validate and keep an exponential moving average of the weights.")
    ema_decay: float = number("0.999")
    label_smoothing: float = number("0")
    eps_warmup: float = number("1", metavar="EPOCHS",
                               help="Ramp eps linearly from 0 over the first EPOCHS epochs (0: full eps from the "
                                    "start).")
    val_n: int = integer(512, help="Training examples held out for per-epoch validation (0: none, keep the last "
                                   "epoch); more than a third of the training split: a tenth of it instead.")
    val_attack: str = text("pgd", choices=tuple(VAL_ATTACKS),
                           help="Attack of the per-epoch validation that picks the kept epoch: pgd (step eps/4) or "
                                "apgd-ce (AutoAttack's APGD on cross-entropy, one restart; about 2x pgd's cost at "
                                "the default iterations, and it does not overstate smooth activations' robustness "
                                "as pgd can).")
    val_steps: int | None = integer(None, help="Iterations of the validation attack (default: 10 for pgd, 25 for "
                                               "apgd-ce).")
    attack_mode: str = text("eval", choices=ATTACK_MODES,
                            help="Model mode while crafting training attacks (eval: batch-norm statistics "
                                 "untouched).")
    bn_recalib: bool = flag(True, help="Do not recompute batch-norm statistics on clean data before training.")
    augment: str = text("crop-flip", choices=AUGMENTS,
                        help="Training augmentation: crop-flip (random crop after padding by 1/8 of the side, and "
                             "horizontal flip, on the device), strong (TrivialAugmentWide per image, then crop-flip) "
                             "or none.")
    keep: str = text("best", choices=KEEP, help="Keep the best robust validation epoch or the last one.")
    patience: int | None = integer(help="Stop after this many epochs without a better robust score.")
    on_collapse: str = text("stop", choices=ON_COLLAPSE,
                            help="Catastrophic overfitting (validation PGD accuracy below half its best while the "
                                 "training attack's accuracy rises): stop and keep the best epoch, warn, or ignore.")
    train_n: int | None = integer(help="Train on at most this many examples.")
    split: str = text("train", yaml=False, help="Split of the data to train on: train, or any split folder of an "
                                                "ImageFolder tree (or x_NAME/y_NAME arrays of an npz file).")
    resize: str | None = text(metavar="N|HxW", cli_text=True, yaml=False,
                              help="Resize images before the centre crop to the model's input: N for the short "
                                   "side, HxW exactly [default: the short side to the input].")
    crop: str = text("center", choices=CROPS, yaml=False,
                     help="center: crop the resized images to the model's input; none: resize straight to it.")
    lipschitz_reg: float = number("0", metavar="LAMBDA",
                                  help="Add LAMBDA times harden.lipschitz's spectral penalty to the loss.")
    awp: float = number("0", metavar="GAMMA",
                        help="Adversarial weight perturbation (Wu et al.) of relative size GAMMA, with pgd, trades "
                             "or mart (the paper: 0.01 for pgd, 0.005 for trades).")
    awp_warmup: int | None = integer(metavar="EPOCHS", help="Epochs before AWP starts [default: the paper's code, 0 "
                                                            "for pgd, 10 for trades and mart].")
    extra_data: str | None = text(metavar="SPEC", help="A second training source mixed into every batch (its train "
                                                       "split).")
    extra_fraction: float | None = number(metavar="F", help="Share of every batch taken from --extra-data, in (0, 1) "
                                                            "[default: 0.5].")
    pseudo_label: str | None = text(metavar="MODEL", help="Label --extra-data with the predictions (eval mode) of "
                                                          "this teacher, a harden file.")
    precision: str = text("auto", choices=PRECISIONS, help="auto: bf16 autocast on GPU, fp32 on CPU.")
    channels_last: bool | None = flag(None, help="[default: on GPU only]")
    compile: bool = flag(help="torch.compile the model (GPU; first epoch pays the compile time).")
    workers: int | None = integer(help="Data decoding processes.")
    skip_bad_images: bool = flag(help="Leave out images that cannot be decoded (the model file counts them) instead "
                                      "of stopping.")
    seed: int = integer(0, help="Seeds the data order, the attacks and a model spec's random initialisation.")
    # library and recipe settings without a command line option
    bn_recalib_n: int = integer(2048, cli=False)
    log_every: int = integer(10, cli=False)
    cache_limit_gb: float = number("8", cli=False)

    def resolved_step_size(self) -> float:
        """The attack step: given, else 1.25 eps for FGSM-RS, else 2.5 eps / steps (2/255 for PGD-10 at 8/255)."""
        if self.step_size is not None:
            return float(self.step_size)
        return get_method(self.method).step_size(self.eps, self.steps)

    def resolved_val_steps(self) -> int:
        """Iterations of the validation attack: given, else the attack's default (:data:`VAL_ATTACKS`)."""
        return validation_steps(self.val_attack, self.val_steps)

    def resolved_awp_warmup(self) -> int:
        """Epochs before AWP starts: given, else the AWP authors' default for the method (0 for PGD-AT, 10 else)."""
        if self.awp_warmup is not None:
            return int(self.awp_warmup)
        return get_method(self.method).awp_warmup

    def method_options(self) -> dict[str, Any]:
        """The settings only some methods read, for :meth:`harden.methods.TrainingMethod.perturb`."""
        return {"nfgsm_noise": self.nfgsm_noise}

    def extra_per_batch(self) -> int:
        """Examples of the extra data in every batch (0 without extra data)."""
        return extra_count(self.extra_fraction, self.batch_size) if self.extra_data and self.extra_fraction else 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(FinetuneConfig))


def make_config(config: FinetuneConfig | None = None, /, **options: Any) -> FinetuneConfig:
    """A checked :class:`FinetuneConfig`: ``config`` (default: harden's defaults) with ``options`` (its fields;
    eps-like values may be strings such as ``"8/255"``) in place of its values; ``config`` itself is not changed.

    None stands for the default. Raises :class:`UsageError` naming the option for an unknown name or an
    out-of-range value.
    """
    check_names(FinetuneConfig, options, "fine-tuning setting")
    values = parse_numbers(FinetuneConfig, {k: v for k, v in options.items() if v is not None})
    if "augment" in values:
        values["augment"] = augment_name(values["augment"])
    if "resize" in values:
        values["resize"] = resize_text(values["resize"])
    if values.get("extra_data") and values.get("extra_fraction") is None and (config is None or
                                                                              config.extra_fraction is None):
        values["extra_fraction"] = 0.5  # half of every batch, as Carmon et al.
    cfg = dataclasses.replace(config, **values) if config is not None else FinetuneConfig(**values)
    check_config(cfg)
    return cfg


def validation_steps(attack: str, steps: int | None) -> int:
    """Iterations of the validation ``attack``: ``steps`` when given, else the attack's default."""
    return int(steps) if steps is not None else VAL_ATTACKS[attack]


def check_config(cfg: FinetuneConfig) -> None:
    """Raise :class:`UsageError` for the first setting out of its range."""
    check_choices(cfg)
    checks: list[tuple[bool, str]] = [
        (0 < cfg.eps <= 1, f"--eps must be in (0, 1] (images are in [0, 1]; 8/255 is usual), got {cfg.eps:g}"),
        (cfg.steps >= 1, f"--steps must be at least 1, got {cfg.steps}"),
        (cfg.step_size is None or cfg.step_size > 0, f"--step-size must be positive, got {cfg.step_size}"),
        (cfg.nfgsm_noise is None or (math.isfinite(cfg.nfgsm_noise) and cfg.nfgsm_noise >= 0),
         f"--nfgsm-noise must be a non-negative multiple of eps (2 in the paper), got {cfg.nfgsm_noise}"),
        (cfg.beta >= 0, f"--beta must be non-negative, got {cfg.beta:g}"),
        (cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}"),
        (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr must be positive, got {cfg.lr:g}"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
        (cfg.weight_decay >= 0, f"--weight-decay must be non-negative, got {cfg.weight_decay:g}"),
        (0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum:g}"),
        (0 < cfg.ema_decay < 1, f"--ema-decay must be in (0, 1), got {cfg.ema_decay:g}"),
        (0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing:g}"),
        (cfg.eps_warmup >= 0, f"--eps-warmup must be non-negative (epochs), got {cfg.eps_warmup:g}"),
        (cfg.val_n >= 0, f"--val-n must be non-negative (0 turns validation off), got {cfg.val_n}"),
        (cfg.val_steps is None or cfg.val_steps >= 1, f"--val-steps must be at least 1, got {cfg.val_steps}"),
        (cfg.bn_recalib_n >= 1, f"bn_recalib_n must be at least 1, got {cfg.bn_recalib_n}"),
        (cfg.patience is None or cfg.patience >= 1, f"--patience must be at least 1, got {cfg.patience}"),
        (cfg.train_n is None or cfg.train_n >= 1, f"--train-n must be at least 1, got {cfg.train_n}"),
        (cfg.lipschitz_reg >= 0, f"--lipschitz-reg must be non-negative, got {cfg.lipschitz_reg:g}"),
        (cfg.workers is None or cfg.workers >= 0, f"--workers must be non-negative, got {cfg.workers}"),
        (cfg.log_every >= 1, f"log_every must be at least 1, got {cfg.log_every}"),
    ]
    for ok, message in checks + _extension_checks(cfg):
        if not ok:
            raise UsageError(message)
    if cfg.keep == "best" and cfg.val_n == 0:
        cfg.keep = "last"


def _extension_checks(cfg: FinetuneConfig) -> list[tuple[bool, str]]:
    """Range checks of the AWP and extra-data settings, as (ok, message) pairs in order."""
    gamma, frac, warmup = cfg.awp, cfg.extra_fraction, cfg.resolved_awp_warmup()
    k = extra_count(frac, cfg.batch_size) if frac is not None else None
    return [
        (math.isfinite(gamma) and 0 <= gamma <= AWP_MAX_GAMMA,
         f"--awp must be in [0, {AWP_MAX_GAMMA:g}] (gamma, relative to each layer's weight norm; Wu et al. use 0.005 "
         f"for TRADES and 0.01 for PGD-AT), got {gamma:g}"),
        (gamma == 0 or get_method(cfg.method).awp_gamma is not None,
         f"--awp works with --method {', '.join(awp_methods())}, not {cfg.method}"),
        (cfg.awp_warmup is None or cfg.awp_warmup >= 0, f"--awp-warmup must be non-negative, got {cfg.awp_warmup}"),
        (gamma == 0 or warmup < cfg.epochs,
         f"AWP would never start: --awp-warmup is {warmup} (the default for {cfg.method}, from Wu et al.'s code, "
         f"unless given) and the run has {cfg.epochs} epochs; pass a smaller --awp-warmup"),
        (frac is None or bool(cfg.extra_data), "--extra-fraction needs --extra-data SPEC"),
        (cfg.pseudo_label is None or bool(cfg.extra_data), "--pseudo-label needs --extra-data SPEC to label"),
        (frac is None or (math.isfinite(frac) and 0 < frac < 1),
         f"--extra-fraction must be in (0, 1) (the share of every batch taken from --extra-data), got {frac}"),
        (k is None or 1 <= k <= cfg.batch_size - 1,
         f"--extra-fraction {frac} of --batch-size {cfg.batch_size} gives {k} extra examples per batch; both sources "
         "need at least one: change the fraction or the batch size"),
    ]
