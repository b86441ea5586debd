"""Property-based fuzzing of hostile files and values (a modest, derandomized draw; benchmarks/fuzz.py runs more)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzz_cases as fc

SUITE = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def base_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return fc.model_file(tmp_path_factory.mktemp("fuzz")).read_bytes()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentinel") / fc.SENTINEL_NAME


def test_the_undamaged_file_loads(base_blob: bytes) -> None:
    fc.check_damaged_file(base_blob)  # the premise: a draw fails because of its damage, not the base file


@settings(SUITE, max_examples=20)
@given(data=st.data())
def test_damaged_model_files(base_blob: bytes, data: st.DataObject) -> None:
    fc.check_damaged_file(data.draw(fc.damaged_files(base_blob)))


@SUITE
@given(data=st.data())
def test_mutated_recipes(sentinel: Path, data: st.DataObject) -> None:
    fc.check_recipe(data.draw(fc.recipe_texts(sentinel)), sentinel)


@SUITE
@given(transforms=st.lists(fc.transform_strings(), min_size=1, max_size=2))
def test_transform_strings(transforms: list[str]) -> None:
    fc.check_apply([a for t in transforms for a in ("-t", t)] + ["--num-classes", "10", "--input-size", "32"])


@SUITE
@given(option=st.sampled_from(sorted(fc.OPTION_VALUES)), data=st.data())
def test_option_values(option: str, data: st.DataObject) -> None:
    value = data.draw(fc.OPTION_VALUES[option])
    args = [option, value]
    if option not in ("--num-classes", "--input-size"):
        args += ["--num-classes", "10", "--input-size", "32"]
    if option == "--upsample-mode":
        args += ["--upsample", "2"]
    fc.check_apply(args)
