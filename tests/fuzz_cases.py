"""Hypothesis strategies and checks for fuzzing harden with hostile files and values.

Shared by ``tests/test_fuzz.py`` (a few dozen draws, derandomized, in every ``make test``) and
``benchmarks/fuzz.py`` (thousands of random draws). Each check states the invariant for one draw:
success, or exit 1/2 with one ``error:`` line; never an escaped exception, never a partial or
clobbered output, never code run from a file.
"""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

import harden
from harden.errors import HardenError
from tests.cli_contract import assert_calm, run_cli, stray_files

BUILTIN_SPEC = "cifar:wrn-16-1"       # a file of a built-in model: loading it imports no user code
TINY_SPEC = "tests.tiny_models:tiny_cnn"
SENTINEL_NAME = "code-ran"

# ------------------------------------------------------------------------------ safetensors files


def model_file(folder: Path) -> Path:
    """A small harden file (a built-in model with one transform and one report)."""
    path = folder / "base.safetensors"
    if not path.exists():
        model = harden.apply(harden.load_model(BUILTIN_SPEC, num_classes=10, input_size=32), ["activation:name=silu"])
        harden.save(model, path, reports=[{"attack": "fgsm", "robust_acc": 1.0}])
    return path


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (size,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + size]), blob[8 + size:]


def _join(header: dict[str, Any], body: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


small_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 64) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _set(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _set(value[path[0]], path[1:], new)
    return value


@st.composite
def damaged_files(draw: st.DrawFn, blob: bytes) -> bytes:
    """``blob`` (a safetensors file) with its header, metadata or tensor bytes damaged."""
    how = draw(st.sampled_from(["bytes", "truncate", "metadata", "entry"]))
    if how == "bytes":
        data = bytearray(blob)
        header_end = 8 + struct.unpack("<Q", blob[:8])[0]
        for _ in range(draw(st.integers(1, 8))):
            where = draw(st.integers(0, header_end + 64 if draw(st.booleans()) else len(data) - 1))
            data[min(where, len(data) - 1)] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "truncate":
        return blob[:draw(st.integers(0, len(blob) - 1))]
    header, body = _split(blob)
    if how == "entry":  # a tensor entry with another dtype, shape or offsets
        name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[name][field] = draw(st.sampled_from(["F16", "I64", "BOOL", "X"]) if field == "dtype"
                                   else st.lists(st.integers(-2, 10**6), max_size=4))
        return _join(header, body)
    meta = header["__metadata__"]
    key = draw(st.sampled_from(sorted(meta)))
    doc = json.loads(meta[key])
    path = draw(st.sampled_from(_paths(doc)))
    doc = _set(doc, path, draw(small_values))
    meta[key] = json.dumps(doc) if draw(st.booleans()) else json.dumps(doc)[: draw(st.integers(0, 40))]
    return _join(header, body)


def check_damaged_file(blob: bytes) -> None:
    """Loading, inspecting and re-applying a damaged file: a model or one clear error, nothing written."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "m.safetensors"
        path.write_bytes(blob)
        try:
            harden.load(path)
        except HardenError:
            pass
        assert_calm(run_cli(["inspect", path]))
        out = folder / "out.safetensors"
        result = run_cli(["apply", path, "--upsample", "2", "-o", out])
        assert_calm(result)
        assert out.exists() == (result.exit_code == 0)
        assert path.read_bytes() == blob and not stray_files(folder)


# ------------------------------------------------------------------------------------ recipe YAML

BASE_RECIPE = {
    "name": "fuzz",
    "model": {"spec": BUILTIN_SPEC, "num_classes": 10, "input_size": 32, "seed": 0},
    "data": {"train": "sample", "test": "sample"},
    "transforms": ["activation:name=silu"],
    "finetune": {"method": "fgsm-rs", "eps": "8/255", "epochs": 1, "lr": 0.05},
    "evaluate": {"attacks": ["pgd"], "n": 8, "steps": 2},
}

_TAGS = ["!!python/object/apply:os.system [\"touch {sentinel}\"]", "!!python/name:os.system",
         "!!binary aGVsbG8=", "!!set {a, b}", "!custom value", "!!timestamp 2001-12-14", "!!float nan",
         "!!str 3", "!!int '7'", "!!omap [a: 1]"]


@st.composite
def recipe_texts(draw: st.DrawFn, sentinel: Path) -> str:
    """A recipe with keys renamed, dropped or retyped, tags, anchors, aliases and merge keys."""
    doc = json.loads(json.dumps(BASE_RECIPE))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(doc)[1:]))
        op = draw(st.sampled_from(["retype", "drop", "rename"]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        if op == "retype":
            parent[path[-1]] = draw(small_values)
        elif op == "drop" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif isinstance(parent, dict) and path[-1] in parent:
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(path[-1])
        if not isinstance(doc, dict):
            break
    text = yaml.safe_dump(doc, sort_keys=False)
    lines = text.splitlines()
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        key, sep, _value = lines[i].partition(": ")
        extra = draw(st.sampled_from([*_TAGS, "&a 5", "*a", "*missing", "{<<: *a}", "&b [1, *b]", "'unclosed"]))
        lines[i] = f"{key}{sep or ': '}{extra.replace('{sentinel}', str(sentinel))}"
    if draw(st.booleans()):
        lines.insert(0, "anchor: &a {spec: x}")
    return "\n".join(lines) + "\n"


def check_recipe(text: str, sentinel: Path) -> None:
    """``harden run --check`` on a mutated recipe: valid, or one error line; no code runs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(text)
        assert_calm(run_cli(["run", path, "--check"]))
    assert not sentinel.exists(), "a recipe ran code"


# --------------------------------------------------------------------- transform strings and options

NAMES = ["upsample", "stride-mod", "strides", "activation", "last-stage-width", "stage-widths", "nope"]
KEYS = ["factor", "mode", "pattern", "name", "ratio", "widths", "x", ""]
VALUES = st.one_of(st.sampled_from(["2", "0", "-1", "1e9", "nan", "inf", "1/2", "0.5", "silu", "gelu", "1122",
                                    "2/2/0.5", "bilinear", "", "=", ",", ":"]),
                   st.text(max_size=6), st.integers(-5, 9).map(str))


@st.composite
def transform_strings(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=20))
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=3))
    body = ",".join(f"{k}={v}" for k, v in pairs)
    return draw(st.sampled_from(NAMES)) + (f":{body}" if body or draw(st.booleans()) else "")


OPTION_VALUES = {
    "--upsample": VALUES, "--strides": VALUES, "--activation": VALUES, "--last-stage-width": VALUES,
    "--stage-widths": VALUES, "--upsample-mode": VALUES, "--input-size": VALUES, "--num-classes": VALUES,
}


def check_apply(args: list[str]) -> None:
    """``harden apply`` with hostile transforms or options: a model file, or one error line and no file."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.safetensors"
        result = run_cli(["apply", TINY_SPEC, *args, "-o", out])
        assert_calm(result)
        assert out.exists() == (result.exit_code == 0)
        assert not stray_files(Path(tmp))
