"""The settings of an evaluation: :class:`EvaluateConfig`, the schema of ``harden evaluate``.

Its fields are the command's options (in ``--help`` order), the keyword arguments of
:func:`harden.evaluate` (whose defaults are the same) and, where marked, the keys of a recipe's
``evaluate:`` section. The command line hands most values over as typed (``-n all``,
``--batch-size auto``); :func:`make_evaluate_config` reads them, and :func:`harden.evaluation.check_settings`
checks the attack, eps and files before anything loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harden.errors import UsageError
from harden.schemas.fields import check_names, flag, integer, number, settings_of, text, whole_number
from harden.schemas.finetune import resize_text

EVALUATION_NORMS = ("Linf", "L2", "L1")  # L1: AutoAttack's suite only
AUTOATTACK_VERSIONS = ("standard", "rand")
THREATS = ("adversarial", "corruptions")  # what an evaluation measures accuracy under


@dataclass
class EvaluateConfig:
    """What :func:`harden.evaluate` measures and how; the CLI options and recipe keys use the same names."""

    split: str = text("test", help="Split of the data: test, train, or any split folder of an ImageFolder tree "
                                   "(val, ...).", yaml=False)
    resize: str | None = text(metavar="N|HxW", cli_text=True, yaml=False,
                              help="Resize images before the centre crop to the model's input: N for the short "
                                   "side, HxW exactly [default: the short side to the input].")
    crop: str = text("center", choices=("center", "none"), yaml=False,
                     help="center: crop the resized images to the model's input; none: resize straight to it.")
    download: bool = flag(help="Download cifar10/cifar100 into ROOT if missing.", yaml=False)
    threat: str = text("adversarial", choices=THREATS, yaml=False,
                       help="adversarial: attacks within an eps-ball (--attack, --eps, --norm); corruptions: the 15 "
                            "common corruptions at severities 1-5, generated from --data or read from an npyc:DIR "
                            "folder of CIFAR-10-C .npy files.")
    corruptions: str | None = text(metavar="TYPES", yaml=False,
                                   help="With --threat corruptions: the types, comma-separated (gaussian_noise,fog; "
                                        "short names such as jpeg; families noise, blur, weather, digital) "
                                        "[default: all 15].")
    eps: float | str = number("8/255", cli_text=True, help="Perturbation size: 8/255 or 0.031.")
    norm: str = text("Linf", choices=EVALUATION_NORMS, cli_text=True,
                     help="Threat model: Linf, L2, or L1 (AutoAttack's: --attack autoattack or apgd-ce).")
    attack: str = text("autoattack", help="autoattack, apgd-ce, pgd, fgsm or cw.", yaml=False)
    fast: bool = flag(help="AutoAttack's APGD-CE then APGD-T only (about a third of the cost).")
    version: str = text("standard", choices=AUTOATTACK_VERSIONS,
                        help="AutoAttack's version: standard, or rand for randomized models (APGD-CE and APGD-DLR "
                             "with gradients averaged over 20 draws).")
    n: int | None = integer(1000, flags=("-n", "--num-examples"), cli_text=True, help="Number of examples (or all).")
    random_subset: bool = flag(help="A random subset of n (seeded by --seed), not the first n.")
    skip_bad_images: bool = flag(help="Leave out images that cannot be decoded (the report counts them) instead of "
                                      "stopping.")
    batch_size: int | str | None = integer("auto", cli_text=True, help="Batch size, or auto (largest that fits).")
    seed: int = integer(0, cli_text=True, help="Seed of the attacks (and of --random-subset).")
    device: str = text("auto", help="auto, cpu, cuda or cuda:N.", yaml=False)
    steps: int | None = integer(cli_text=True, help="Steps of --attack pgd/cw (default 20).")
    step_size: float | str | None = number(cli_text=True, help="Step size of pgd/cw/fgsm (default eps/4; eps for "
                                                               "fgsm).", yaml=False)
    report: str | None = text(path="file", help="Write the JSON report here (progress is kept beside it for "
                                                "--resume).", yaml=False)
    resume: bool = flag(help="Continue an interrupted run from REPORT.progress.", yaml=False)
    into: str | None = text(path="file", help="Also store the report in this harden model file's metadata.",
                            yaml=False)
    bpda: bool | None = flag(None, help="Attack a model with straight-through operators (MeanSparse) also with "
                                        "BPDA and count the lower per image [default: whenever it has them].")
    eps_sweep: str | None = text(metavar="LIST", help="Robust accuracy at each eps of a list, e.g. "
                                                      "0,1/255,2/255,4/255,8/255 (table + PNG).", yaml=False)


# whole-number settings the command line gives as text, and the words each also takes
_WHOLE = {"n": ("all",), "batch_size": ("auto",), "seed": (), "steps": ()}


def make_evaluate_config(config: EvaluateConfig | None = None, /, **options: Any) -> EvaluateConfig:
    """A checked :class:`EvaluateConfig`: ``config`` (default: harden's defaults) with ``options`` (its fields,
    as values or command line text) in place of its values; ``config`` itself is not changed.

    ``n`` may be ``"all"`` (None: every example), ``batch_size`` ``"auto"`` (or None). Raises
    :class:`UsageError` naming the option for an unknown name, text that is no whole number, a count
    that is not positive or ``resume`` without a report.
    """
    check_names(EvaluateConfig, options, "evaluation setting")
    fields = settings_of(EvaluateConfig)
    values = dict(options)
    for name, words in _WHOLE.items():
        if name in values:
            values[name] = whole_number(values[name], fields[name][1].option_name(name), allow=words)
    if values.get("n") == "all":
        values["n"] = None
    if values.get("resize") is not None:
        values["resize"] = resize_text(values["resize"])
    cfg = dataclasses.replace(config, **values) if config is not None else EvaluateConfig(**values)
    if cfg.threat not in THREATS:
        raise UsageError(f"--threat must be adversarial or corruptions, got '{cfg.threat}'")
    if cfg.corruptions is not None and cfg.threat != "corruptions":
        raise UsageError("--corruptions applies to --threat corruptions")
    if cfg.crop not in ("center", "none"):
        raise UsageError(f"--crop must be center or none, got '{cfg.crop}'")
    if cfg.n is not None and cfg.n <= 0:
        raise UsageError(f"-n/--num-examples must be positive, got {cfg.n}")
    if isinstance(cfg.batch_size, int) and cfg.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {cfg.batch_size}")
    if cfg.resume and not cfg.report:
        raise UsageError("--resume needs --report PATH (progress is kept next to the report)")
    return cfg
