"""`python -m bench [name ...] [-- options]`: run every benchmark (or the named ones) and write bench/results/*.json.

Options after the names (from the first argument that starts with "-") go to the named benchmark, e.g.
`python -m bench load --duration 10 --clients 5`; they need exactly one name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:split], [a for a in argv[split:] if a != "--"]
    if options and len(names) != 1:
        print("options need exactly one benchmark name, e.g. `python -m bench load --duration 10`", file=sys.stderr)
        return 2
    names = names or sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    failed = []
    for name in names:
        mod = importlib.import_module(f"bench.{name if name.startswith('bench_') else 'bench_' + name}")
        started = time.time()
        print(f"== {name}", flush=True)
        try:
            if inspect.signature(mod.main).parameters:
                mod.main(options)
            elif options:
                raise ValueError(f"{name} takes no options")
            else:
                mod.main()
        except Exception as exc:  # keep going: one broken benchmark must not hide the others
            print(f"!! {name} failed: {exc}", flush=True)
            failed.append(name)
        print(f"== {name} done in {time.time() - started:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
