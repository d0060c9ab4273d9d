"""Running a run's shards, here or in worker processes, and merging them in arrival order.

Shards never interact, and each draws from its own seeded random streams, so a shard's batches
are the same wherever it runs; the merge orders lines by arrival time, then by shard. The output
of a run therefore does not depend on how many processes made it.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import sys
import time
import traceback
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import ExitStack, suppress
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
    """How many of the CPUs this process may use are idle: sampled for a moment where the
    system says (Linux), else going by the load average."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    usable = usable or 1
    try:
        before = _cpu_jiffies()
        time.sleep(_IDLE_SAMPLE_SECONDS)
        after = _cpu_jiffies()
    except OSError:
        try:
            return usable - os.getloadavg()[0]
        except (AttributeError, OSError):
            return float(usable)
    busy = (after[0] - before[0]) - (after[1] - before[1])
    elapsed = (after[0] - before[0]) / (os.cpu_count() or 1)
    return usable - busy / max(1, elapsed)


_IDLE_SAMPLE_SECONDS = 0.05


def _cpu_jiffies() -> tuple[int, int]:
    """(all, idle) CPU time of the whole system so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        # user nice system idle iowait irq softirq steal (guest time is counted in user)
        fields = [int(value) for value in stat.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4]


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
    """A batch as a worker sends it through the pipe: one blob of text pickles much faster than
    many lines."""

    until: int
    times: bytes
    text: bytes
    labels: list[tuple[int, Label]]


@dataclass(frozen=True)
class _Shared:
    """A batch whose text a worker left in a slot of the memory it shares with the parent."""

    until: int
    times: bytes
    slot: int
    size: int
    labels: list[tuple[int, Label]]


@dataclass(frozen=True)
class _WorkerFailure:
    """What a worker sends instead of its next batch when its shard raised."""

    trace: str


_SLOTS = 2
_SLOT_BYTES = 4 << 20
"""Room for a message's text (1,024 lines are about 0.7 MB); larger ones go through the pipe."""


def _run_shard(
    config: SimulationConfig, shard: int, connection: Connection, slots: mmap.mmap | None
) -> None:
    """The body of a worker process: send the shard's (grouped) batches, then its stats.

    With slots (memory shared with the parent), a batch's text is left in a free slot and only
    the rest goes through the pipe: the parent answers each such message with the slot's number
    once it has read the text, and the worker reuses the slot only after that.
    """
    gc.disable()  # as in write_sample: the run's garbage is acyclic
    free = [True] * _SLOTS
    sent = 0
    try:
        for item in _grouped(ShardEngine(config, shard, SHARDS).run()):
            if not isinstance(item, Batch):
                connection.send(item)
                continue
            text = "\n".join(item.lines).encode()
            times = array("q", item.times).tobytes()
            if slots is None or len(text) > _SLOT_BYTES:
                connection.send(_Packed(item.until, times, text, item.labels))
                continue
            slot = sent % _SLOTS
            sent += 1
            while not free[slot]:
                free[connection.recv()] = True
            start = slot * _SLOT_BYTES
            slots[start : start + len(text)] = text
            free[slot] = False
            connection.send(_Shared(item.until, times, slot, len(text), item.labels))
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
    # Forking is cheap, the child needs nothing it has not imported, and it inherits memory
    # shared with this process; elsewhere, spawn, and pass everything through the pipe.
    context: ForkContext | SpawnContext
    slots: mmap.mmap | None = None
    if sys.platform == "linux":
        context = multiprocessing.get_context("fork")
        slots = mmap.mmap(-1, _SLOTS * _SLOT_BYTES)
    else:
        context = multiprocessing.get_context("spawn")
    mine, theirs = context.Pipe()
    worker = context.Process(
        target=_run_shard, args=(config, shard, theirs, slots), name=f"simulator-shard-{shard}"
    )
    worker.daemon = True
    worker.start()
    workers.append(worker)
    theirs.close()
    return _received(mine, shard, slots)


def _received(
    connection: Connection, shard: int, slots: mmap.mmap | None
) -> Iterator[Batch | ShardStats]:
    with connection, ExitStack() as stack:
        view: memoryview | None = None
        if slots is not None:
            stack.callback(slots.close)
            view = stack.enter_context(memoryview(slots))
        while True:
            try:
                item = connection.recv()
            except EOFError:
                raise RuntimeError(f"simulator shard {shard} stopped without a result") from None
            if isinstance(item, _WorkerFailure):
                raise RuntimeError(f"simulator shard {shard} failed:\n{item.trace}")
            if isinstance(item, _Shared):
                assert view is not None
                start = item.slot * _SLOT_BYTES
                text = str(view[start : start + item.size], "utf-8")
                with suppress(BrokenPipeError, ConnectionResetError):  # unless it is done
                    connection.send(item.slot)  # the worker may fill the slot again
                yield _unpacked(item.until, item.times, text, item.labels)
            elif isinstance(item, _Packed):
                yield _unpacked(item.until, item.times, item.text.decode(), item.labels)
            else:
                yield item
                if isinstance(item, ShardStats):
                    return


def _unpacked(until: int, times: bytes, text: str, labels: list[tuple[int, Label]]) -> Batch:
    lines = text.split("\n") if text else []
    return Batch(until, array("q", times).tolist(), lines, labels)
