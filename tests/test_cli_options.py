"""Command-line parsing: click's own errors are one line, and every option survives torchrun.

torchrun's argument parser accepts abbreviations of its own options anywhere on the line, so an
option of ours that is a prefix of one of torchrun's (``--n`` of ``--nnodes``) would be taken by it.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from click.testing import CliRunner
from torch.distributed.run import get_args_parser

from harden.cli import main


def _options():
    for name, command in sorted(main.commands.items()):
        for param in command.params:
            for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if opt.startswith("--"):
                    yield name, opt, bool(getattr(param, "is_flag", False))


def test_the_sweep_sees_every_command() -> None:
    assert {"apply", "evaluate", "finetune", "run", "inspect", "scale"} <= {name for name, _, _ in _options()}


@pytest.mark.parametrize(("command", "option", "flag"), list(_options()))
def test_option_passes_through_torchrun(command: str, option: str, flag: bool) -> None:
    argv = ["--nproc_per_node", "2", "-m", "harden.cli", command, "model", option, *([] if flag else ["1"])]
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            parsed = get_args_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"torchrun takes `{option}` of `harden {command}` for one of its own options")
    assert parsed.training_script == "harden.cli"
    assert parsed.training_script_args == [command, "model", option, *([] if flag else ["1"])]


def test_evaluate_n_has_a_torchrun_safe_spelling() -> None:
    evaluate = main.commands["evaluate"]
    n = next(p for p in evaluate.params if p.name == "n")
    assert {"-n", "--num-examples"} <= set(n.opts)


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "m.safetensors", "--n", "5"], "No such option '--n'"),
    (["finetune", "m.safetensors", "-o", "x.safetensors", "--method", "foo"], "Invalid value for '--method'"),
    (["evaluate"], "Missing argument 'MODEL'"),
    (["evalute"], "No such command 'evalute'"),
])
def test_command_line_mistakes_are_one_line_with_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args, prog_name="harden")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    command = "harden" if args[0] == "evalute" else f"harden {args[0]}"
    assert lines[0].endswith(f"(see '{command} --help')")
