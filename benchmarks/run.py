"""Run benchmarks: `python benchmarks/run.py [NAME ...]` runs `bench_NAME.py` (all when none given).

Each bench module exposes `main(argv: list[str] | None = None) -> int` and writes its results with
`common.write_results` to benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the bench_*.py modules beside this file."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks in order; return non-zero if any failed."""
    names = (argv if argv is not None else sys.argv[1:]) or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE))
    status = 0
    for name in names:
        print(f"== bench_{name}", flush=True)
        status |= int(importlib.import_module(f"bench_{name}").main([]) or 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
