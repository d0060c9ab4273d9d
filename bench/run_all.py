"""Run every benchmark in its own process; each prints one JSON line of figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = sorted(p.name for p in HERE.glob("bench_*.py"))


def main() -> int:
    """Run each bench_*.py with its default (full-size) settings."""
    failed = 0
    for name in BENCHMARKS:
        result = subprocess.run([sys.executable, name], cwd=HERE, check=False)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
