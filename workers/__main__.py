"""Worker entry point: `python -m workers SPEC_FILE`. Same on a laptop process or a Ray task."""

from __future__ import annotations

import sys

from workers.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
