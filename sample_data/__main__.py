"""Regenerate the committed sample: `python -m sample_data [--events N] [--seed S] [OUT_DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .simulator import SimulationConfig, write_sample

_DEFAULT_DIR = Path(__file__).resolve().parent / "sample"


def main(argv: list[str] | None = None) -> int:
    """Write events.jsonl.gz and labels.jsonl into the output directory."""
    parser = argparse.ArgumentParser(prog="python -m sample_data", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("out_dir", nargs="?", type=Path, default=_DEFAULT_DIR)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    config = SimulationConfig(events=args.events, seed=args.seed)
    stats = write_sample(config, args.out_dir / "events.jsonl.gz", args.out_dir / "labels.jsonl")
    print(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
