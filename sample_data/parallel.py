"""Running a run's shards, here or in worker processes, and merging them in arrival order.

Shards never interact, and each draws from its own seeded random streams, so a shard's batches
are the same wherever it runs; the merge orders lines by arrival time, then by shard. The output
of a run therefore does not depend on how many processes made it.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import traceback
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext
from operator import itemgetter

import numpy as np

from .config import SHARDS, SimulationConfig
from .engine import NEVER, Batch, ShardEngine, ShardStats
from .records import Label

__all__ = ["MergedRun", "spare_cpus"]

_LINES_PER_MESSAGE = 1024
"""Consecutive batches are sent (and merged) together until they hold this many lines."""
_time_of = itemgetter(0)


def spare_cpus() -> float:
    """How many of the CPUs this process may run on are idle, going by the load average."""
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    else:
        usable = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return usable - load


class MergedRun:
    """One run: iterate items() for chunks of lines (arrival order) and labels, then read stats.

    With parallel, each shard runs in a worker process and this one only merges.
    """

    def __init__(self, config: SimulationConfig, parallel: bool = False) -> None:
        self.config = config
        self.parallel = parallel
        self.stats: list[ShardStats] = []
        self._chains = 0

    def items(self) -> Iterator[list[str] | Label]:
        """Yield lists of lines and, after the lines of their last events, the chains' labels."""
        workers: list[multiprocessing.process.BaseProcess] = []
        sources: list[Iterator[Batch | ShardStats]] = []
        try:
            for shard in range(SHARDS):
                if self.parallel:
                    sources.append(_in_worker(self.config, shard, workers))
                else:
                    sources.append(_grouped(ShardEngine(self.config, shard, SHARDS).run()))
            yield from self._merge(sources)
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
                worker.join()

    def _merge(self, sources: list[Iterator[Batch | ShardStats]]) -> Iterator[list[str] | Label]:
        count = len(sources)
        bounds = [-1] * count  # each shard's later lines arrive at or after its bound
        times: list[list[int]] = [[] for _ in sources]
        lines: list[list[str]] = [[] for _ in sources]
        labels: list[tuple[int, int, Label]] = []
        stats: list[ShardStats | None] = [None] * count
        live = list(range(count))
        while live:
            # Read from the shard that is furthest behind: its lines are merged next.
            shard = min(live, key=bounds.__getitem__)
            item = next(sources[shard])
            if isinstance(item, ShardStats):
                stats[shard] = item
                live.remove(shard)
                bounds[shard] = NEVER
                continue
            times[shard] += item.times
            lines[shard] += item.lines
            labels += [(when, shard, label) for when, label in item.labels]
            bounds[shard] = item.until
            limit = min(bounds)
            due_times: list[int] = []
            due_lines: list[str] = []
            parts = 0
            for shard_times, shard_lines in zip(times, lines, strict=True):
                cut = bisect_left(shard_times, limit)
                if cut:
                    due_times += shard_times[:cut]
                    due_lines += shard_lines[:cut]
                    del shard_times[:cut], shard_lines[:cut]
                    parts += 1
            if parts > 1:
                # Stable: lines arriving at the same time keep shard order.
                order = np.argsort(np.array(due_times, dtype=np.int64), kind="stable")
                due_lines = list(itemgetter(*order.tolist())(due_lines))
            if due_lines:
                yield due_lines
            if labels and labels[0][0] < limit:
                labels.sort(key=itemgetter(0, 1))
                due = bisect_left(labels, limit, key=_time_of)
                for _, _, label in labels[:due]:
                    yield self._numbered(label)
                del labels[:due]
        self.stats = [item for item in stats if item is not None]

    def _numbered(self, label: Label) -> Label:
        """Number chains across shards, in the order their labels are given out."""
        self._chains += 1
        return replace(label, chain_id=f"chain-{self._chains:06d}")


def _grouped(batches: Iterator[Batch | ShardStats]) -> Iterator[Batch | ShardStats]:
    """Join consecutive batches until they hold enough lines to be worth merging or sending."""
    group: list[Batch] = []
    size = 0
    for item in batches:
        if isinstance(item, ShardStats):
            if group:
                yield _joined(group)
            yield item
            return
        group.append(item)
        size += len(item.times)
        if size >= _LINES_PER_MESSAGE or item.labels or item.until == NEVER:
            yield _joined(group)
            group = []
            size = 0


def _joined(group: list[Batch]) -> Batch:
    if len(group) == 1:
        return group[0]
    times: list[int] = []
    lines: list[str] = []
    labels: list[tuple[int, Label]] = []
    for batch in group:
        times += batch.times
        lines += batch.lines
        labels += batch.labels
    return Batch(group[-1].until, times, lines, labels)


@dataclass(frozen=True)
class _Packed:
    """A batch as a worker sends it: pickling one blob of text is cheaper than many lines."""

    until: int
    times: bytes
    text: bytes
    labels: list[tuple[int, Label]]

    @classmethod
    def of(cls, batch: Batch) -> _Packed:
        """Pack a batch for sending."""
        text = "\n".join(batch.lines).encode()
        return cls(batch.until, array("q", batch.times).tobytes(), text, batch.labels)

    def unpacked(self) -> Batch:
        """The batch that was packed."""
        lines = self.text.decode().split("\n") if self.text else []
        return Batch(self.until, array("q", self.times).tolist(), lines, self.labels)


@dataclass(frozen=True)
class _WorkerFailure:
    """What a worker sends instead of its next batch when its shard raised."""

    trace: str


def _run_shard(config: SimulationConfig, shard: int, connection: Connection) -> None:
    """The body of a worker process: send the shard's (grouped) batches, then its stats."""
    gc.disable()  # as in write_sample: the run's garbage is acyclic
    try:
        for item in _grouped(ShardEngine(config, shard, SHARDS).run()):
            connection.send(_Packed.of(item) if isinstance(item, Batch) else item)
    except BaseException:
        connection.send(_WorkerFailure(traceback.format_exc()))
    finally:
        connection.close()


def _in_worker(
    config: SimulationConfig,
    shard: int,
    workers: list[multiprocessing.process.BaseProcess],
) -> Iterator[Batch | ShardStats]:
    """Start a worker process for the shard; yield what it sends."""
    # Forking is cheap and the child needs nothing it has not imported; elsewhere, spawn.
    context: ForkContext | SpawnContext
    if sys.platform == "linux":
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(
        target=_run_shard, args=(config, shard, sender), name=f"simulator-shard-{shard}"
    )
    worker.daemon = True
    worker.start()
    workers.append(worker)
    sender.close()
    return _received(receiver, shard)


def _received(receiver: Connection, shard: int) -> Iterator[Batch | ShardStats]:
    with receiver:
        while True:
            try:
                item = receiver.recv()
            except EOFError:
                raise RuntimeError(f"simulator shard {shard} stopped without a result") from None
            if isinstance(item, _WorkerFailure):
                raise RuntimeError(f"simulator shard {shard} failed:\n{item.trace}")
            if isinstance(item, _Packed):
                yield item.unpacked()
                continue
            yield item
            if isinstance(item, ShardStats):
                return
