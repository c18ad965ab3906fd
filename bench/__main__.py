"""``python -m bench [NAME [ARGS...]]``: run the benchmark in ``bench/NAME_bench.py``, or,
with no name (``make bench``), every benchmark in turn; each rewrites its own section of
``bench/RESULTS.md``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(p.name.removesuffix("_bench.py") for p in here.glob("*_bench.py"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv:
        failed = [name for name in names if main([name]) != 0]
        if failed:
            print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0
    if argv[0] not in names:
        print(f"usage: python -m bench {{{','.join(names)}}} [ARGS...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{argv[0]}_bench")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
