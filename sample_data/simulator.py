"""Running a simulation: the public entry points, streaming events, labels and statistics.

The organisation is simulated in SHARDS independent parts (see engine.py), merged into one
stream in arrival order (see merge.py); write_sample runs the parts in worker processes that
place their own lines (see placement.py) when the run is large and CPUs are idle. Everything
is drawn from random.Random instances seeded from the config, so a seed always gives the same
bytes, however many processes run.
"""

from __future__ import annotations

import gc
import gzip
import random
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, cast

import orjson

from .config import SimulationConfig, agent_count_for
from .engine import ShardStats
from .ids import Ids
from .merge import MergedRun
from .placement import can_place, spare_cpus, write_placed
from .records import Event, Label, SampleStats

__all__ = [
    "SimulationConfig",
    "agent_count_for",
    "iter_events",
    "simulate",
    "write_sample",
]

_LINES_PER_WRITE = 128
PARALLEL_FROM_EVENTS = 200_000
"""write_sample uses worker processes for runs this large: below, starting them costs more."""


def simulate(config: SimulationConfig) -> Iterator[Event | Label]:
    """Yield events in arrival order, each chain's Label as soon as its last event is generated."""
    loads = orjson.loads
    for item in MergedRun(config).items():
        if isinstance(item, Label):
            yield item
        else:
            for line in item:
                yield loads(line)


def iter_events(config: SimulationConfig) -> Iterator[Event]:
    """Yield only the events, in arrival order, as JSON-ready dicts."""
    loads = orjson.loads
    for item in MergedRun(config).items():
        if not isinstance(item, Label):
            for line in item:
                yield loads(line)


def _open_output(stack: ExitStack, target: IO[bytes] | Path) -> IO[bytes]:
    if not isinstance(target, Path):
        return target
    raw = stack.enter_context(target.open("wb"))
    if target.suffix == ".gz":
        # No file name and a zero mtime in the header, so the same events give the same bytes.
        compressed = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        stack.callback(compressed.close)
        return cast(IO[bytes], compressed)
    return raw


def write_sample(
    config: SimulationConfig,
    events_out: IO[bytes] | Path,
    labels_out: IO[bytes] | Path | None = None,
    *,
    parallel: bool | None = None,
) -> SampleStats:
    """Stream the simulation as JSONL (gzip when a path ends in .gz); return what was written.

    parallel runs the shards in worker processes (where processes can be forked; elsewhere the
    run stays in this one); by default, when the run is large and one and a half CPUs are idle
    (on a busy machine the workers' extra work costs more than their second CPU gives). The
    bytes written are the same either way.
    """
    if parallel is None:
        parallel = config.events >= PARALLEL_FROM_EVENTS and spare_cpus() >= 1.5
    counts = {"lines": 0, "labels": 0, "negative": 0}
    stats: list[ShardStats] = []
    with ExitStack() as stack:
        if gc.isenabled():
            # The run allocates millions of short-lived, acyclic objects; generational collection
            # would only rescan the long-lived scheduler state.
            gc.disable()
            stack.callback(gc.enable)
        labels_file = _open_output(stack, labels_out) if labels_out is not None else None

        def on_label(label: Label) -> None:
            counts["labels"] += 1
            counts["negative"] += label.negative
            if labels_file is not None:
                labels_file.write(orjson.dumps(label.to_json(), option=orjson.OPT_APPEND_NEWLINE))

        events_file = _open_output(stack, events_out)
        if parallel and can_place():
            plain_file = isinstance(events_out, Path) and events_out.suffix != ".gz"
            counts["lines"], stats = write_placed(
                config, events_file, on_label, positional=plain_file
            )
        else:
            run = MergedRun(config)
            for item in run.items():
                if isinstance(item, Label):
                    on_label(item)
                    continue
                counts["lines"] += len(item)
                # A few lines at a time: joining megabytes at once runs at memory speed, not at
                # cache speed (three times slower here).
                for first in range(0, len(item), _LINES_PER_WRITE):
                    part = item[first : first + _LINES_PER_WRITE]
                    part.append("")  # for the newline after the last line
                    events_file.write("\n".join(part).encode())
            stats = run.stats
    firsts = [shard.first_micros for shard in stats if shard.first_micros is not None]
    lasts = [shard.last_micros for shard in stats if shard.last_micros is not None]
    time_text = Ids(random.Random(0)).time_text
    return SampleStats(
        events=counts["lines"],
        duplicates=sum(shard.duplicates for shard in stats),
        late=sum(shard.late for shard in stats),
        labels=counts["labels"],
        positive_chains=counts["labels"] - counts["negative"],
        negative_chains=counts["negative"],
        agents=sum(shard.agents for shard in stats),
        first_time=time_text(min(firsts)) if firsts else None,
        last_time=time_text(max(lasts)) if lasts else None,
    )
