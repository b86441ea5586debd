"""One schema per command: the CLI options, the recipe keys and the library's keyword arguments agree.

A setting is one field of a schema dataclass (:mod:`harden.schemas`); adding one adds the command
line option and the recipe key.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from dataclasses import dataclass

import click
import pytest
import yaml
from click.testing import CliRunner

from harden.cli import main
from harden.cli._options import schema_options
from harden.errors import UsageError
from harden.recipes import SCHEMA, Key
from harden.recipes.schema import NodeChecker, schema_keys
from harden.schemas.evaluate import EvaluateConfig, make_evaluate_config
from harden.schemas.fields import check_choices, check_names, flag, integer, number, parse_numbers, settings_of, text
from harden.schemas.finetune import FinetuneConfig
from harden.schemas.search import SearchConfig, make_search_config


@dataclass
class Toy:
    mode: str = text("fast", choices=("fast", "slow"), help="How.")
    size: int = integer(3, help="How many.")
    scale: float = number("1/2", metavar="S")
    loud: bool = flag(help="Say more.")
    hidden: int = integer(7, cli=False)


@dataclass
class ToyPlus(Toy):
    gain: float = number("8/255", help="A new setting.")


def _command(schema: type) -> click.Command:
    @click.command()
    @schema_options(schema)
    def run(**values) -> None:
        click.echo(json.dumps(values))

    return run


def _invoke(schema: type, args: list[str]) -> dict:
    result = CliRunner().invoke(_command(schema), args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _yaml(schema: type, text: str) -> dict:
    return NodeChecker("t.yaml").check(yaml.compose(text), Key("map", children=schema_keys(schema)), "")


def test_adding_a_field_adds_the_option_and_the_recipe_key() -> None:
    before = {p.name for p in _command(Toy).params}
    after = {p.name for p in _command(ToyPlus).params}
    assert before == {"mode", "size", "scale", "loud"} and after - before == {"gain"}
    assert set(schema_keys(ToyPlus)) - set(schema_keys(Toy)) == {"gain"}
    assert _invoke(ToyPlus, []) == {"mode": "fast", "size": 3, "scale": "1/2", "loud": False, "gain": "8/255"}
    assert _invoke(ToyPlus, ["--gain", "4/255", "--loud", "--size", "5"])["gain"] == "4/255"
    assert _yaml(ToyPlus, "gain: 4/255\nhidden: 2\n") == {"gain": pytest.approx(4 / 255), "hidden": 2}
    with pytest.raises(UsageError, match="t.yaml, line 1: unknown key 'gian' in the recipe; did you mean: gain"):
        _yaml(ToyPlus, "gian: 1\n")
    with pytest.raises(UsageError, match="gain must be a number"):
        _yaml(ToyPlus, "gain: loud\n")
    with pytest.raises(UsageError, match="unknown toy setting 'gian'; did you mean: gain"):
        check_names(ToyPlus, {"gian": 1}, "toy setting")
    assert parse_numbers(ToyPlus, {"gain": "2/255", "size": 4}) == {"gain": pytest.approx(2 / 255), "size": 4}


def test_choices_defaults_and_help_come_from_the_field() -> None:
    command = _command(Toy)
    mode = next(p for p in command.params if p.name == "mode")
    assert list(mode.type.choices) == ["fast", "slow"] and mode.default == "fast" and mode.help == "How."
    out = CliRunner().invoke(command, ["--help"]).output
    assert "--scale S" in out and "[default: 1/2]" in out and "--hidden" not in out
    assert CliRunner().invoke(command, ["--mode", "medium"]).exit_code == 2
    assert Toy().scale == 0.5
    with pytest.raises(UsageError, match="--mode must be one of fast, slow, got 'medium'"):
        check_choices(Toy(mode="medium"))
    with pytest.raises(UsageError, match="must be a number"):
        _yaml(Toy, "scale: half\n")
    with pytest.raises(UsageError, match="mode must be one of fast, slow"):
        _yaml(Toy, "mode: medium\n")


def test_on_flags_and_unset_flags_get_their_negative_spelling() -> None:
    @dataclass
    class Switches:
        augment: bool = flag(True, help="No augmentation.")
        layout: bool | None = flag(None)

    params = {p.name: p for p in _command(Switches).params}
    assert params["augment"].opts == ["--no-augment"] and params["layout"].secondary_opts == ["--no-layout"]
    assert _invoke(Switches, ["--no-augment", "--no-layout"]) == {"augment": False, "layout": False}
    assert _invoke(Switches, []) == {"augment": True, "layout": None}


def _cli_value(setting, value):
    return value if value is None or setting.kind in ("bool", "list[str]") else str(value)


@pytest.mark.parametrize(("schema", "command"), [(FinetuneConfig, "finetune"), (EvaluateConfig, "evaluate"),
                                                 (SearchConfig, "search"), (FinetuneConfig, "search")])
def test_every_cli_setting_is_an_option_with_the_fields_default_and_choices(schema: type, command: str) -> None:
    params = {p.name: p for p in main.commands[command].params}
    for name, (f, setting) in settings_of(schema).items():
        if not setting.cli:
            assert name not in params
            continue
        p = params[name]
        default = setting.default_text if setting.kind == "number" else f.default
        if setting.kind == "list[str]":
            assert p.multiple and f.default == ()
        elif setting.cli_text or setting.kind == "number":
            assert p.default == _cli_value(setting, default), name
        else:
            assert p.default == default, name
        if setting.choices and not setting.cli_text:
            assert tuple(p.type.choices) == setting.choices, name
        assert p.help == (setting.help or None), name


@pytest.mark.parametrize(("schema", "sections", "recipe_only"), [
    (FinetuneConfig, ("finetune", "pretrain"), set()),
    (EvaluateConfig, ("evaluate",), {"attacks", "start"}),
])
def test_every_yaml_setting_is_a_recipe_key_of_its_kind(schema: type, sections: tuple[str, ...],
                                                       recipe_only: set[str]) -> None:
    settings = settings_of(schema)
    for section in sections:
        keys = SCHEMA[section].children or {}
        assert set(keys) - recipe_only == {n for n, (_, s) in settings.items() if s.yaml}
        for name in set(keys) - recipe_only:
            assert (keys[name].kind, tuple(keys[name].allowed())) == (settings[name][1].kind,
                                                                      settings[name][1].choice_names())


@pytest.mark.parametrize("schema", [FinetuneConfig, EvaluateConfig, SearchConfig])
def test_each_library_entry_point_takes_its_config_and_copies_none_of_its_fields(schema: type) -> None:
    import harden

    function = {FinetuneConfig: harden.finetune, EvaluateConfig: harden.evaluate, SearchConfig: harden.search}[schema]
    parameters = inspect.signature(function).parameters
    assert any(p.annotation in (schema.__name__, f"{schema.__name__} | None") for p in parameters.values())
    assert any(p.kind is p.VAR_KEYWORD for p in parameters.values())  # keywords: a convenience building it
    assert not {f.name for f in dataclasses.fields(schema)} & set(parameters)  # the defaults live in the schema


def test_a_config_passes_through_and_keywords_override_a_copy() -> None:
    base = make_evaluate_config(attack="pgd", n=64)
    assert make_evaluate_config(base) == base
    changed = make_evaluate_config(base, n="all", seed="2")
    assert (changed.attack, changed.n, changed.seed, base.n) == ("pgd", None, 2, 64)
    with pytest.raises(UsageError, match="-n/--num-examples must be positive"):
        make_evaluate_config(base, n=0)


def test_evaluate_settings_read_command_line_text() -> None:
    cfg = make_evaluate_config(n="all", batch_size=" Auto ", seed="3", steps="5")
    assert (cfg.n, cfg.batch_size, cfg.seed, cfg.steps) == (None, "auto", 3, 5)
    assert make_evaluate_config().n == 1000
    for options, message in [({"seed": "x"}, "--seed must be a whole number, got 'x'"),
                             ({"n": "many"}, "--num-examples must be a whole number or all, got 'many'"),
                             ({"n": 0}, "-n/--num-examples must be positive, got 0"),
                             ({"batch_size": "0"}, "--batch-size must be positive, got 0"),
                             ({"resume": True}, "--resume needs --report"),
                             ({"atack": "pgd"}, "unknown evaluation setting 'atack'; did you mean: attack")]:
        with pytest.raises(UsageError, match=message):
            make_evaluate_config(**options)


def test_search_settings_take_a_duration_and_check_their_ranges() -> None:
    assert make_search_config(timeout="2h").timeout == 7200 and make_search_config(timeout=90).timeout == 90
    for options, message in [({"timeout": "soon"}, "--timeout takes a positive duration"),
                             ({"timeout": 0}, "--timeout must be positive"),
                             ({"trials": 0}, "--trials must be at least 1"),
                             ({"pruner": "asha"}, "--pruner must be one of halving, hyperband, median, none"),
                             ({"recipe_epochs": 0}, "--recipe-epochs must be at least 1")]:
        with pytest.raises(UsageError, match=message):
            make_search_config(**options)


def test_the_schemas_import_without_torch() -> None:
    probe = ("import sys, harden.schemas.finetune, harden.schemas.evaluate, harden.schemas.search; "
             "print('torch' in sys.modules, 'click' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr
