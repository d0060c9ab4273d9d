"""Writing the run from worker processes that place their lines in the output themselves.

Merging the shards' lines in one process means handling every line there: splitting texts
into lines, reordering and joining them again. Only their order needs merging. This process
runs shard 0 and each other shard runs in a forked worker, which sends the arrival times and
sizes of its lines; this process merges those (by time, then shard, as merge.MergedRun does)
into places in a ring of memory shared with the workers, copies its own lines there and sends
each worker the places of its lines; the worker copies its lines there, a run of adjacent lines
at a time, and says so. Each filled stretch of the ring is then written out: by the worker that
filled it, when the output is a plain file, else by this process. The bytes are those of the
other ways of running write_sample.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import IO

import numpy as np

from .config import SHARDS, SimulationConfig
from .engine import NEVER, Batch, ShardEngine, ShardStats
from .merge import LabelQueue, group_batches
from .records import Label

__all__ = ["can_place", "spare_cpus", "write_placed"]

_IN_FLIGHT = 8
"""Batches a worker may have sent before it is told where they go; keeps the pipes unblocked."""
_RING_BYTES = 16 << 20
_MOST_PER_PLACING = 4 << 20
"""A placing (a stretch of the ring written out at once) holds at most this many bytes."""


def can_place() -> bool:
    """Whether write_placed works here: it needs workers forked with the ring mapped in them."""
    return "fork" in multiprocessing.get_all_start_methods()


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


_IDLE_SAMPLE_SECONDS = 0.02


def _cpu_jiffies() -> tuple[int, int]:
    """(all, idle) CPU time of the whole system so far, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        # user nice system idle iowait irq softirq steal (guest time is counted in user)
        fields = [int(value) for value in stat.readline().split()[1:9]]
    return sum(fields), fields[3] + fields[4]


@dataclass(frozen=True)
class _Sizes:
    """A worker's batch without its text: when its lines arrive and how many bytes each takes."""

    until: int
    times: bytes
    sizes: bytes
    labels: list[tuple[int, Label]]


@dataclass(frozen=True)
class _Place:
    """Where in the ring the worker's next lines go (one offset per line), for placing `number`.

    With an output position, the worker also writes the whole placing (ring[start:start + size])
    there once its lines are in.
    """

    number: int
    offsets: bytes
    start: int
    size: int
    position: int | None


@dataclass(slots=True)
class _Placing:
    """A stretch of the ring (start, size) that goes to the output at position."""

    number: int
    start: int
    size: int
    waiting: int
    """Workers yet to copy their lines in."""
    fillers: int
    """Workers copying lines in."""
    position: int


@dataclass(frozen=True)
class _Placed:
    """The worker has copied its lines of placing `number` into the ring."""

    number: int


@dataclass(frozen=True)
class _Done:
    """A worker has placed all its lines, or failed (with the trace)."""

    trace: str | None = None


def write_placed(
    config: SimulationConfig,
    out: IO[bytes],
    on_label: Callable[[Label], None],
    *,
    positional: bool = False,
) -> tuple[int, list[ShardStats]]:
    """Write the run's lines to out: shard 0 here, each other in a worker; return lines, stats.

    Running one shard here rather than only merging keeps to one process per CPU. positional
    says out is a plain file (its descriptor takes writes at any position): then a worker
    writes out the placings it fills last, which shares the writing between the processes.
    """
    context = multiprocessing.get_context("fork")
    ring = mmap.mmap(-1, _RING_BYTES)
    descriptor = out.fileno() if positional else None
    workers: list[multiprocessing.process.BaseProcess] = []
    connections: list[Connection] = []
    try:
        for shard in range(1, SHARDS):
            mine, theirs = context.Pipe()
            worker = context.Process(
                target=_place_shard,
                args=(config, shard, ring, descriptor, theirs),
                name=f"simulator-shard-{shard}",
            )
            worker.daemon = True
            worker.start()
            workers.append(worker)
            connections.append(mine)
            theirs.close()
        local = group_batches(ShardEngine(config, 0, SHARDS).run())
        with memoryview(ring) as view:
            placer = _Placer(local, connections, view, out, descriptor, on_label)
            lines, stats = placer.run()
        for started in workers:
            started.join()
        return lines, stats
    finally:
        for started in workers:
            if started.is_alive():
                started.terminate()
            started.join()
        for connection in connections:
            connection.close()
        ring.close()


class _Placer:
    """Runs shard 0, merges all shards' times into places in the ring and writes the ring out.

    Shard 0's lines are copied into the ring here, the other shards' by their workers (one
    connection each, for shards 1, 2 ...).
    """

    def __init__(
        self,
        local: Iterator[Batch | ShardStats],
        connections: list[Connection],
        ring: memoryview,
        out: IO[bytes],
        descriptor: int | None,
        on_label: Callable[[Label], None],
    ) -> None:
        self.local: Iterator[Batch | ShardStats] | None = local
        self.local_waiting: deque[tuple[bytes, np.ndarray, np.ndarray]] = deque()
        self.connections = connections
        self.ring = ring
        self.out = out
        self.descriptor = descriptor
        self.position = 0  # where in the output the next placing goes
        self.on_label = on_label
        count = 1 + len(connections)
        self.bounds = [-1] * count  # each shard's later lines arrive at or after its bound
        self.times = [np.empty(0, dtype=np.int64) for _ in range(count)]
        self.sizes = [np.empty(0, dtype=np.int64) for _ in range(count)]
        self.labels = LabelQueue()
        self.stats: list[ShardStats | None] = [None] * count
        self.done = [False] * count  # for the workers' shards: all their lines are placed
        self.placings: deque[_Placing] = deque()  # their room in the ring not free yet
        self.numbered = 0
        self.head = 0  # where the next placing starts in the ring
        self.lines = 0

    def run(self) -> tuple[int, list[ShardStats]]:
        """Place and write every line; return how many, and the shards' stats."""
        shards = {connection: shard for shard, connection in enumerate(self.connections, 1)}
        while self.local is not None or not all(self.done[1:]) or self.placings:
            # Run shard 0 a batch further unless it is too far ahead of the others.
            ran = self.local is not None and len(self.local_waiting) <= _IN_FLIGHT
            if ran:
                self._run_local()
            running = [c for c in self.connections if not self.done[shards[c]]]
            if running:
                for connection in wait(running, timeout=0 if ran else None):
                    assert isinstance(connection, Connection)
                    self._receive(shards[connection])
            self._place()
            for label in self.labels.due(min(self.bounds)):
                self.on_label(label)
            self._write_placed()
        return self.lines, [item for item in self.stats if item is not None]

    def _run_local(self) -> None:
        assert self.local is not None
        item = next(self.local)
        if isinstance(item, ShardStats):
            self.stats[0] = item
            self.bounds[0] = NEVER
            self.local = None
            return
        text, sizes = _encoded(item.lines)
        self._add(0, np.array(item.times, dtype=np.int64), sizes, item)
        if len(sizes):
            self.local_waiting.append((text, np.cumsum(sizes) - sizes, sizes))

    def _add(self, shard: int, times: np.ndarray, sizes: np.ndarray, item: Batch | _Sizes) -> None:
        self.times[shard] = np.concatenate((self.times[shard], times))
        self.sizes[shard] = np.concatenate((self.sizes[shard], sizes))
        self.labels.add(shard, item.labels)
        self.bounds[shard] = item.until

    def _receive(self, shard: int) -> None:
        try:
            item = self.connections[shard - 1].recv()
        except EOFError:
            raise RuntimeError(f"simulator shard {shard} stopped without a result") from None
        if isinstance(item, _Sizes):
            times = np.frombuffer(item.times, dtype=np.int64)
            sizes = np.frombuffer(item.sizes, dtype=np.int64)
            self._add(shard, times, sizes, item)
        elif isinstance(item, _Placed):
            for placing in self.placings:
                if placing.number == item.number:
                    placing.waiting -= 1
        elif isinstance(item, ShardStats):
            self.stats[shard] = item
            self.bounds[shard] = NEVER
        elif isinstance(item, _Done):
            if item.trace is not None:
                raise RuntimeError(f"simulator shard {shard} failed:\n{item.trace}")
            self.done[shard] = True

    def _place(self) -> None:
        """Give every line arriving before the shards' bounds a place, while the ring has room."""
        limit = min(self.bounds)
        cuts = [int(np.searchsorted(shard_times, limit)) for shard_times in self.times]
        while any(cuts):
            # Take whole lines, in merge order, up to the most a placing holds.
            due_times = np.concatenate([t[:cut] for t, cut in zip(self.times, cuts, strict=True)])
            due_sizes = np.concatenate([s[:cut] for s, cut in zip(self.sizes, cuts, strict=True)])
            owners = np.repeat(np.arange(len(cuts)), cuts)
            order = np.argsort(due_times, kind="stable")  # lines arriving together: shard order
            ends = np.cumsum(due_sizes[order])
            take = max(1, int(np.searchsorted(ends, _MOST_PER_PLACING, side="right")))
            size = int(ends[take - 1])
            start = self._room(size)
            if start is None:
                return  # the ring is full until the workers catch up
            order = order[:take]
            owners = owners[order]
            starts = start + ends[:take] - due_sizes[order]
            number = self.numbered
            self.numbered += 1
            counts = np.bincount(owners, minlength=len(cuts)).tolist()
            fillers = [shard for shard, count in enumerate(counts) if count and shard]
            position = self.position
            self.position += size
            if counts[0]:
                _copy_lines(self.ring, starts[owners == 0], self.local_waiting)
            for shard in fillers:
                # A worker filling a placing alone writes it out (shard 0's lines are in).
                writes = self.descriptor is not None and len(fillers) == 1
                offsets = starts[owners == shard].tobytes()
                place = _Place(number, offsets, start, size, position if writes else None)
                self.connections[shard - 1].send(place)
            for shard, count in enumerate(counts):
                self.times[shard] = self.times[shard][count:]
                self.sizes[shard] = self.sizes[shard][count:]
                cuts[shard] -= count
            self.placings.append(
                _Placing(number, start, size, len(fillers), len(fillers), position)
            )
            if not fillers and self.descriptor is not None:
                _write_at(self.descriptor, self.ring[start : start + size], position)
            self.lines += take

    def _room(self, size: int) -> int | None:
        """Where a placing of size bytes can go in the ring now (placings are contiguous)."""
        if size > _RING_BYTES:
            raise ValueError("a line longer than the simulator's ring")
        if not self.placings:
            start = 0
        else:
            oldest = self.placings[0].start
            if oldest < self.head:  # in use: [oldest, head); free: after head and before oldest
                if self.head + size <= _RING_BYTES:
                    start = self.head
                elif size <= oldest:
                    start = 0
                else:
                    return None
            elif self.head + size <= oldest:  # wrapped; free: [head, oldest)
                start = self.head
            else:
                return None
        self.head = start + size
        return start

    def _write_placed(self) -> None:
        """Write out, in order, the placings the workers have filled (and free their room)."""
        while self.placings and self.placings[0].waiting == 0:
            placing = self.placings.popleft()
            start, size, position = placing.start, placing.size, placing.position
            if self.descriptor is None:
                self.out.write(self.ring[start : start + size])
            elif placing.fillers > 1:
                _write_at(self.descriptor, self.ring[start : start + size], position)


def _place_shard(
    config: SimulationConfig,
    shard: int,
    ring: mmap.mmap,
    descriptor: int | None,
    connection: Connection,
) -> None:
    """The body of a worker: run the shard, send its lines' times and sizes, place its lines."""
    gc.disable()  # as in write_sample: the run's garbage is acyclic
    # Sent batches' text, oldest first: (encoded lines, start of each line, its size).
    waiting: deque[tuple[bytes, np.ndarray, np.ndarray]] = deque()
    view = memoryview(ring)
    try:
        for item in group_batches(ShardEngine(config, shard, SHARDS).run()):
            if not isinstance(item, Batch):
                connection.send(item)
                continue
            text, sizes = _encoded(item.lines)
            times = np.array(item.times, dtype=np.int64).tobytes()
            connection.send(_Sizes(item.until, times, sizes.tobytes(), item.labels))
            if len(sizes):
                waiting.append((text, np.cumsum(sizes) - sizes, sizes))
            while len(waiting) > _IN_FLIGHT or (waiting and connection.poll()):
                _copy_placed(view, descriptor, connection, waiting)
        while waiting:
            _copy_placed(view, descriptor, connection, waiting)
        connection.send(_Done())
    except BaseException:
        with suppress(OSError):
            connection.send(_Done(traceback.format_exc()))
    finally:
        view.release()
        connection.close()


def _write_at(descriptor: int, data: memoryview, position: int) -> None:
    """Write all of data to the file at position."""
    while data:
        written = os.pwrite(descriptor, data, position)
        data = data[written:]
        position += written


def _encoded(lines: list[str]) -> tuple[bytes, np.ndarray]:
    """The lines as bytes, each with its newline, and each one's size in bytes."""
    text = "\n".join([*lines, ""]).encode()
    sizes = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) + 1
    if len(text) != int(sizes.sum()):  # not all ASCII: count bytes, not characters
        sizes = np.array([len(line.encode()) + 1 for line in lines], dtype=np.int64)
    return text, sizes


def _copy_placed(
    ring: memoryview,
    descriptor: int | None,
    connection: Connection,
    waiting: deque[tuple[bytes, np.ndarray, np.ndarray]],
) -> None:
    """Receive the places of the next lines, copy them there (and write the placing out if
    asked), and say so."""
    place = connection.recv()
    assert isinstance(place, _Place)
    _copy_lines(ring, np.frombuffer(place.offsets, dtype=np.int64), waiting)
    if place.position is not None:
        assert descriptor is not None
        _write_at(descriptor, ring[place.start : place.start + place.size], place.position)
    connection.send(_Placed(place.number))


def _copy_lines(
    ring: memoryview, offsets: np.ndarray, waiting: deque[tuple[bytes, np.ndarray, np.ndarray]]
) -> None:
    """Copy the next waiting lines (as many as offsets) into the ring at the offsets."""
    done = 0
    while done < len(offsets):
        text, starts, sizes = waiting[0]
        take = min(len(starts), len(offsets) - done)
        _copy(ring, text, starts[:take], sizes[:take], offsets[done : done + take])
        done += take
        if take == len(starts):
            waiting.popleft()
        else:
            waiting[0] = (text, starts[take:], sizes[take:])


def _copy(
    ring: memoryview, text: bytes, starts: np.ndarray, sizes: np.ndarray, targets: np.ndarray
) -> None:
    """Copy lines of text into the ring, a run of lines adjacent in both at a time."""
    breaks = np.flatnonzero(targets[1:] != targets[:-1] + sizes[:-1]) + 1
    firsts = np.concatenate(([0], breaks))
    lasts = np.concatenate((breaks, [len(targets)])) - 1
    sources = starts[firsts]
    lengths = starts[lasts] + sizes[lasts] - sources
    for source, length, target in zip(
        sources.tolist(), lengths.tolist(), targets[firsts].tolist(), strict=True
    ):
        ring[target : target + length] = text[source : source + length]
