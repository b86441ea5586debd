"""A longer fuzz of hostile inputs than the suite's: random (not derandomized) draws, many more of them.

    python benchmarks/fuzz.py                     # 300 draws of each target
    python benchmarks/fuzz.py --examples 2000 --targets files,recipes

Targets: ``files`` (byte, header, metadata and tensor-entry damage to a harden safetensors file),
``recipes`` (YAML keys, types, tags, anchors and aliases), ``transforms`` (random transform strings)
and ``options`` (random values of ``harden apply``'s options). Every draw must end in success or in
exit 1/2 with one ``error:`` line, write no partial or stray file and run no code from a file; the
first draw that does not is shrunk by hypothesis and printed, and the script exits 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests import fuzz_cases as fc  # noqa: E402

TARGETS = ("files", "recipes", "transforms", "options")


def _targets(folder: Path) -> dict:
    blob = fc.model_file(folder).read_bytes()
    sentinel = folder / fc.SENTINEL_NAME
    return {
        "files": given(st.data())(lambda data: fc.check_damaged_file(data.draw(fc.damaged_files(blob)))),
        "recipes": given(st.data())(lambda data: fc.check_recipe(data.draw(fc.recipe_texts(sentinel)), sentinel)),
        "transforms": given(st.lists(fc.transform_strings(), min_size=1, max_size=3))(
            lambda ts: fc.check_apply([a for t in ts for a in ("-t", t)] + ["--num-classes", "10",
                                                                             "--input-size", "32"])),
        "options": given(st.sampled_from(sorted(fc.OPTION_VALUES)), st.data())(
            lambda option, data: fc.check_apply([option, data.draw(fc.OPTION_VALUES[option]), "--num-classes", "10",
                                                 "--input-size", "32"])),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="draws per target")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    args = ap.parse_args()
    chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        print(f"error: unknown target {unknown[0]} (known: {', '.join(TARGETS)})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        tests = _targets(Path(tmp))
        for name in chosen:
            start = time.perf_counter()
            run = settings(max_examples=args.examples, deadline=None, database=None,
                           suppress_health_check=list(HealthCheck))(tests[name])
            try:
                run()
            except Exception as exc:  # hypothesis has printed the shrunk failing draw
                traceback.print_exc()
                print(f"{name}: FAILED after {time.perf_counter() - start:.0f} s: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {args.examples} draws held the invariant ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
