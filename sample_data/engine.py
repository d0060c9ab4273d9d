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
from .session import Scheduled, World

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
        while wakeups[0][0] < horizon:
            wake, number, life = wakeups[0]
            world.clock = wake
            heapq.heapreplace(wakeups, (next(life), number, life))
            for entry in world.pending:
                buckets[entry[0] // _STEP].append(entry)
            world.pending.clear()

    def _deliver(self, bucket: list[Scheduled], horizon: int) -> Batch | None:
        """Deliver one step's events and whatever held-back events fall due before horizon."""
        bucket.sort(key=_time_of)  # stable: a session's events at one time keep their order
        if bucket and self.first_micros is None:
            self.first_micros = bucket[0][0]
        # The per-event loop works on locals; the state is stored back after it.
        delivery = self.delivery
        config = self.config
        budget = self.budget
        delayed = self.delayed
        committed = self.committed
        late_in = self.late_in
        duplicate_in = self.duplicate_in
        next_release = delayed[0][0] if delayed else NEVER
        times: list[int] = []
        lines: list[str] = []
        labels: list[tuple[int, Label]] = []
        pulled = 0
        last = -1
        for t, line, tag in bucket:
            if t >= next_release:
                while delayed and delayed[0][0] <= t:
                    release, _, held = heapq.heappop(delayed)
                    times.append(release)
                    lines.append(held)
                next_release = delayed[0][0] if delayed else NEVER
            if tag is None:
                if committed >= budget:
                    continue  # out of budget: background stops, injected chains still finish
                committed += 1
            else:
                self.chain_pending -= 1
                if tag.label is not None:
                    labels.append((t, tag.label))
            pulled += 1
            last = t
            late_in -= 1
            if late_in:
                times.append(t)
                lines.append(line)
                release = t
            else:
                late_in = _events_until_next(delivery, config.late_fraction)
                self.late += 1
                self.order += 1
                release = t + _log_uniform(delivery(), _LATE_MIN, _LATE_MAX)
                heapq.heappush(delayed, (release, self.order, line))
                next_release = min(next_release, release)
            duplicate_in -= 1
            if not duplicate_in:
                duplicate_in = _events_until_next(delivery, config.duplicate_fraction)
                if committed < budget:
                    committed += 1
                    self.duplicates += 1
                    self.order += 1
                    again = release + _log_uniform(delivery(), _RETRY_MIN, _RETRY_MAX)
                    heapq.heappush(delayed, (again, self.order, line))
                    next_release = min(next_release, again)
        while delayed and delayed[0][0] < horizon:
            release, _, held = heapq.heappop(delayed)
            times.append(release)
            lines.append(held)
        self.committed = committed
        self.late_in = late_in
        self.duplicate_in = duplicate_in
        self.pulled += pulled
        if pulled:
            self.last_micros = last
        if not lines and not labels:
            return None
        return Batch(horizon, times, lines, labels)

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
