"""Write `frozen/<scenario>.json`: the outputs of `scenarios.py` computed by the code of THIS checkout.

The files in `frozen/` were produced at commit 707386d (the code BEFORE the workers restructuring), from a
clean checkout of that commit, on the CPU with one torch thread. They are the reference the restructured
code must reproduce. NEVER regenerate them to make `test_equivalence.py` pass: a failing comparison means
the current code computes different numbers, which is exactly what the test is there to catch. The only
legitimate use of this script is to re-freeze from commit 707386d itself (e.g. to add a new scenario),
which is why it refuses to overwrite an existing file without `--overwrite` and records the commit it ran
at in every file.

Usage (from the repository root, with the checkout's own code first on the path)::

    python -m tests.refactor_compatibility.freeze [--overwrite] [--check-determinism] [scenario ...]
    python tests/refactor_compatibility/freeze.py ...

`--check-determinism` runs each scenario twice in this process and reports whether both runs are
bit-for-bit identical (it writes nothing unless `--overwrite` or the file is missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FROZEN = HERE / "frozen"
FROZEN_AT = "707386d"


def load_scenarios() -> ModuleType:
    """`scenarios.py` by file location (works under `python -m`, as a script and under pytest)."""
    name = "refactor_compatibility_scenarios"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "scenarios.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dump(obj: Any) -> str:
    """Stable text: sorted keys, one dict entry a line, a list without dicts on one line; floats in Python's
    shortest round-trip repr (nothing rounded), NaN/Infinity as JSON's `allow_nan` writes them."""

    def write(x: Any, depth: int) -> str:
        pad = " " * depth
        if isinstance(x, dict) and x:
            items = [f"{pad} {json.dumps(str(k))}: {write(x[k], depth + 1)}" for k in sorted(x, key=str)]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(x, list) and any(isinstance(v, dict) for v in x):
            return "[\n" + ",\n".join(f"{pad} {write(v, depth + 1)}" for v in x) + f"\n{pad}]"
        return json.dumps(x, separators=(",", ":"), sort_keys=True, allow_nan=True)

    return write(obj, 0) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing frozen files")
    parser.add_argument("--check-determinism", action="store_true", help="run each scenario twice and compare")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))  # freeze the code of this checkout, never an installed copy
    import workers

    if not Path(workers.__file__).resolve().is_relative_to(REPO):
        raise SystemExit(f"workers imported from {workers.__file__}, not from {REPO}")
    scenarios = load_scenarios()
    names = args.scenarios or list(scenarios.SCENARIOS)
    commit = _git("rev-parse", "HEAD")
    changed = [line for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()
               if "tests/refactor_compatibility/" not in line]
    print(f"code: {Path(workers.__file__).parent} at {commit}; modified tracked files: {changed or 'none'}")
    if not commit.startswith(FROZEN_AT):
        print(f"WARNING: the frozen outputs belong to commit {FROZEN_AT}, this checkout is at {commit}")
    FROZEN.mkdir(exist_ok=True)
    status = 0
    for name in names:
        t0 = time.perf_counter()
        outputs = scenarios.run_scenario(name)
        seconds = time.perf_counter() - t0
        note = ""
        if args.check_determinism:
            again = scenarios.run_scenario(name)
            same = dump(again) == dump(outputs)
            note = "; second run identical" if same else "; SECOND RUN DIFFERS"
            status |= 0 if same else 1
        path = FROZEN / f"{name}.json"
        if path.exists() and not args.overwrite:
            print(f"{name}: {seconds:.1f} s{note}; {path} exists, not overwritten (--overwrite)")
            continue
        import numpy
        import torch
        import transformers

        doc = {"scenario": name, "frozen_at_commit": commit, "modified_tracked_files": changed,
               "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                            "transformers": transformers.__version__, "numpy": numpy.__version__},
               "outputs": outputs}
        path.write_text(dump(doc))
        print(f"{name}: {seconds:.1f} s{note}; wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return status


if __name__ == "__main__":
    sys.exit(main())
