"""One shard of a simulation run: part of the organisation, generated a minute at a time.

A shard advances a minute (a step) at a time. It first generates every background session that
starts within the step (each agent's life is a generator resumed at its wake-ups; a session is
generated whole, as lines of JSON) and files the events by the step they happen in. Then it
sorts the step's events (injected chains' included) by time and delivers them in *arrival*
order: a configurable fraction is held back and delivered late, and a fraction is delivered a
second time later (a client retry with the same event_id). Last, it injects the chains that are
due. Every line delivered carries its arrival time, so that shards can be merged into one
stream in arrival order. Nothing is kept beyond what is in flight (sessions under way, held-back
events), so memory stays flat however many events are asked for.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from .activity import agent_life
from .chains import ChainInjector
from .config import SimulationConfig, agent_count_for
from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE, Ids, to_micros
from .org import build_organisation
from .records import Label
from .scenarios import SCENARIO_SPECS
from .session import ChainTag, Scheduled, World

__all__ = ["NEVER", "Batch", "ShardEngine", "ShardStats"]

NEVER = 1 << 62
"""A time after every simulated time."""
_STEP = MICROS_PER_MINUTE
_LATE_MIN = 2 * MICROS_PER_MINUTE
_LATE_MAX = 6 * MICROS_PER_HOUR
_RETRY_MIN = 200_000
_RETRY_MAX = 10 * MICROS_PER_MINUTE
_time_of = itemgetter(0)


@dataclass(frozen=True, slots=True)
class Batch:
    """What a shard delivered before `until`: lines in arrival order and the labels made then."""

    until: int
    """Every line the shard delivers later arrives at or after this time."""
    times: list[int]
    """The arrival time of each line."""
    lines: list[str]
    labels: list[tuple[int, Label]]
    """(time of the chain's last event, the chain's label)."""


@dataclass(frozen=True, slots=True)
class ShardStats:
    """What a shard produced, reported after its last batch."""

    agents: int
    late: int
    duplicates: int
    first_micros: int | None
    last_micros: int | None


def shard_budget(events: int, shard: int, shards: int) -> int:
    """How many of the run's lines this shard delivers."""
    return events // shards + (1 if shard < events % shards else 0)


class ShardEngine:
    """Shard `shard` of `shards` of one run; iterate run() for its batches, then its stats."""

    def __init__(self, config: SimulationConfig, shard: int, shards: int) -> None:
        self.config = config
        self.budget = shard_budget(config.events, shard, shards)
        self.start = to_micros(config.start)
        org_rng = random.Random(f"chainsight-org-{config.seed}")
        whole = build_organisation(
            org_rng, Ids(org_rng), agent_count_for(config.events), self.start
        )
        world_rng = random.Random(f"chainsight-world-{config.seed}-{shard}")
        self.world = World(world_rng, Ids(world_rng), whole.part(shard, shards))
        self.delivery = random.Random(f"chainsight-delivery-{config.seed}-{shard}").random
        self.injector = ChainInjector(
            self.world,
            config.attack_rate,
            SCENARIO_SPECS,
            part=shard,
            parts=shards,
        )
        # (next wake-up, agent number, its life): the number breaks ties between equal times.
        self.wakeups: list[tuple[int, int, Iterator[int]]] = []
        for number, agent in enumerate(self.world.org.agents):
            first = self.start + int(world_rng.random() * 30 * MICROS_PER_MINUTE)
            life = agent_life(self.world, agent, first)
            self.wakeups.append((next(life), number, life))
        heapq.heapify(self.wakeups)
        self.buckets: defaultdict[int, list[Scheduled]] = defaultdict(list)
        self.delayed: list[tuple[int, int, str]] = []  # (release time, order, line)
        self.order = 0
        self.committed = 0  # lines delivered, held back, or promised by a chain already injected
        self.chain_pending = 0
        self.pulled = 0
        self.late = 0
        self.duplicates = 0
        self.late_in = _events_until_next(self.delivery, config.late_fraction)
        self.duplicate_in = _events_until_next(self.delivery, config.duplicate_fraction)
        self.next_chain_at = self.injector.next_gap()
        self.first_micros: int | None = None
        self.last_micros: int | None = None

    def run(self) -> Iterator[Batch | ShardStats]:
        """Yield the shard's batches in time order, then its statistics."""
        step = self.start // _STEP
        while self.committed < self.budget or self.chain_pending:
            horizon = (step + 1) * _STEP
            if self.committed < self.budget:
                self._generate(horizon)
            batch = self._deliver(self.buckets.pop(step, []), horizon)
            if batch is not None:
                yield batch
            if self.committed < self.budget and self.pulled >= self.next_chain_at:
                self._inject(horizon - 1)  # chains start after every event delivered so far
            step += 1
        times: list[int] = []
        lines: list[str] = []
        while self.delayed:
            release, _, line = heapq.heappop(self.delayed)
            times.append(release)
            lines.append(line)
        yield Batch(NEVER, times, lines, [])
        yield ShardStats(
            len(self.world.org.agents),
            self.late,
            self.duplicates,
            self.first_micros,
            self.last_micros,
        )

    def _generate(self, horizon: int) -> None:
        """Generate every background session that starts before horizon."""
        world = self.world
        wakeups = self.wakeups
        buckets = self.buckets
        pending = world.pending
        while wakeups[0][0] < horizon:
            wake, number, life = wakeups[0]
            world.clock = wake
            heapq.heapreplace(wakeups, (next(life), number, life))
            # File the session's events by step, a slice per step (the sort is stable, and a
            # session's events mostly come in time order already).
            pending.sort(key=_time_of)
            first = 0
            while first < len(pending):
                step = pending[first][0] // _STEP
                end = bisect_left(pending, (step + 1) * _STEP, first, key=_time_of)
                buckets[step] += pending[first:end]
                first = end
            pending.clear()

    def _deliver(self, bucket: list[Scheduled], horizon: int) -> Batch | None:
        """Deliver one step's events and whatever held-back events fall due before horizon.

        Most events go straight out: runs of them up to the next one that needs attention (a
        chain's, a late or repeated one, one before which held-back events fall due, the end of
        the budget) are passed on as slices; those are delivered one at a time.
        """
        bucket.sort(key=_time_of)  # stable: a session's events at one time keep their order
        out_times: list[int] = []
        out_lines: list[str] = []
        labels: list[tuple[int, Label]] = []
        if bucket:
            if self.first_micros is None:
                self.first_micros = bucket[0][0]
            times, lines, tags = zip(*bucket, strict=True)
            size = len(bucket)
            if tags.count(None) == size:
                chained = [size]
            else:
                chained = [at for at, tag in enumerate(tags) if tag is not None]
                chained.append(size)
            next_chain = 0
            at = 0
            while at < size:
                chain_at = chained[next_chain]
                room = self.budget - self.committed
                if room <= 0:
                    at = chain_at  # out of budget: background stops, injected chains still finish
                else:
                    stop = min(
                        chain_at, at + room, at + self.late_in - 1, at + self.duplicate_in - 1
                    )
                    if self.delayed:
                        stop = bisect_left(times, self.delayed[0][0], at, stop)
                    if stop > at:
                        out_times += times[at:stop]
                        out_lines += lines[at:stop]
                        count = stop - at
                        self.committed += count
                        self.pulled += count
                        self.late_in -= count
                        self.duplicate_in -= count
                        self.last_micros = times[stop - 1]
                        at = stop
                if at == size:
                    break
                if at == chain_at:
                    next_chain += 1
                self._deliver_one(times[at], lines[at], tags[at], out_times, out_lines, labels)
                at += 1
        delayed = self.delayed
        while delayed and delayed[0][0] < horizon:
            release, _, held = heapq.heappop(delayed)
            out_times.append(release)
            out_lines.append(held)
        if not out_lines and not labels:
            return None
        return Batch(horizon, out_times, out_lines, labels)

    def _deliver_one(
        self,
        t: int,
        line: str,
        tag: ChainTag | None,
        out_times: list[int],
        out_lines: list[str],
        labels: list[tuple[int, Label]],
    ) -> None:
        """Deliver one event: held-back events due before it, then it (late, or twice, maybe)."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= t:
            release, _, held = heapq.heappop(delayed)
            out_times.append(release)
            out_lines.append(held)
        if tag is None:
            if self.committed >= self.budget:
                return  # out of budget: background stops, injected chains still finish
            self.committed += 1
        else:
            self.chain_pending -= 1
            if tag.label is not None:
                labels.append((t, tag.label))
        self.pulled += 1
        self.last_micros = t
        delivery = self.delivery
        self.late_in -= 1
        if self.late_in:
            out_times.append(t)
            out_lines.append(line)
            release = t
        else:
            self.late_in = _events_until_next(delivery, self.config.late_fraction)
            self.late += 1
            self.order += 1
            release = t + _log_uniform(delivery(), _LATE_MIN, _LATE_MAX)
            heapq.heappush(delayed, (release, self.order, line))
        self.duplicate_in -= 1
        if not self.duplicate_in:
            self.duplicate_in = _events_until_next(delivery, self.config.duplicate_fraction)
            if self.committed < self.budget:
                self.committed += 1
                self.duplicates += 1
                self.order += 1
                again = release + _log_uniform(delivery(), _RETRY_MIN, _RETRY_MAX)
                heapq.heappush(delayed, (again, self.order, line))

    def _inject(self, now: int) -> None:
        """Inject the chains that are due, as seen at time now."""
        injector = self.injector
        rate = self.pulled / max(1, now - self.start)
        while self.pulled >= self.next_chain_at:
            self.next_chain_at += injector.next_gap()
            for plan in injector.inject(now, self.budget - self.committed, rate):
                self.committed += len(plan.events)
                self.chain_pending += len(plan.events)
                for entry in plan.events:
                    self.buckets[entry[0] // _STEP].append(entry)


def _log_uniform(rnd: float, low: int, high: int) -> int:
    return int(low * (high / low) ** rnd)


def _events_until_next(rnd: Callable[[], float], fraction: float) -> int:
    """Events to count until the next one that is picked with probability fraction (geometric)."""
    if fraction <= 0.0:
        return NEVER
    return 1 + int(math.log(1.0 - rnd()) / math.log(1.0 - fraction))
