"""Merging a run's shards, generated in this process, into one stream in arrival order.

Shards never interact, and each draws from its own seeded random streams, so a shard's batches
are the same wherever it runs; the merge orders lines by arrival time, then by shard. The output
of a run therefore does not depend on how many processes made it (see placement.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import replace
from operator import itemgetter

import numpy as np

from .config import SHARDS, SimulationConfig
from .engine import NEVER, Batch, ShardEngine, ShardStats
from .records import Label

__all__ = ["LabelQueue", "MergedRun", "group_batches"]

_LINES_PER_GROUP = 1024
"""Consecutive batches are merged (or sent) together until they hold this many lines."""
_time_of = itemgetter(0)


class MergedRun:
    """One run in this process: iterate items() for lists of lines and labels, then read stats."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.stats: list[ShardStats] = []

    def items(self) -> Iterator[list[str] | Label]:
        """Yield lists of lines and, after the lines of their last events, the chains' labels."""
        sources = [
            group_batches(ShardEngine(self.config, shard, SHARDS).run()) for shard in range(SHARDS)
        ]
        yield from self._merge(sources)

    def _merge(self, sources: list[Iterator[Batch | ShardStats]]) -> Iterator[list[str] | Label]:
        count = len(sources)
        bounds = [-1] * count  # each shard's later lines arrive at or after its bound
        times: list[list[int]] = [[] for _ in sources]
        lines: list[list[str]] = [[] for _ in sources]
        labels = LabelQueue()
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
            labels.add(shard, item.labels)
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
            yield from labels.due(limit)
        self.stats = [item for item in stats if item is not None]


class LabelQueue:
    """Chains' labels waiting for the merge to pass their last events; numbered on the way out."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, int, Label]] = []  # (time of the last event, shard, label)
        self._chains = 0

    def add(self, shard: int, labels: list[tuple[int, Label]]) -> None:
        """Queue a shard's labels, each with the time of its chain's last event."""
        self._waiting += [(when, shard, label) for when, label in labels]

    def due(self, limit: int) -> list[Label]:
        """Take the labels of chains that ended before limit, in order of time, then shard."""
        waiting = self._waiting
        if not waiting or min(waiting, key=_time_of)[0] >= limit:
            return []
        waiting.sort(key=itemgetter(0, 1))  # stable: a shard's labels at one time keep order
        count = bisect_left(waiting, limit, key=_time_of)
        due = []
        for _, _, label in waiting[:count]:
            self._chains += 1
            due.append(replace(label, chain_id=f"chain-{self._chains:06d}"))
        del waiting[:count]
        return due


def group_batches(batches: Iterator[Batch | ShardStats]) -> Iterator[Batch | ShardStats]:
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
        if size >= _LINES_PER_GROUP or item.labels or item.until == NEVER:
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
