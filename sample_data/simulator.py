"""The simulation engine: merges every agent's activity and the injected chains into one stream.

The engine advances a minute at a time. It first generates every background session that
starts within the minute (each agent's life is a generator resumed at its wake-ups; a session is
generated whole, as lines of JSON), filing the events by the minute they happen in; then it
sorts the minute's events (injected chains' included) by time and delivers them in *arrival*
order: a configurable fraction is held back and delivered late, and a fraction is delivered a
second time later (a client retry with the same event_id); then it injects the chains that are
due. Everything is drawn from random.Random instances seeded from the config, so a seed always
gives the same bytes; nothing is buffered beyond what is in flight (sessions under way, late
events), so memory stays flat however many events are asked for.
"""

from __future__ import annotations

import gc
import gzip
import heapq
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import IO, cast

import orjson

from .activity import agent_life
from .chains import ChainInjector
from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE, Ids, to_micros
from .org import build_organisation
from .records import Event, Label, SampleStats
from .scenarios import SCENARIO_SPECS
from .session import Scheduled, World

__all__ = [
    "SimulationConfig",
    "agent_count_for",
    "iter_events",
    "simulate",
    "write_sample",
]

EVENTS_PER_AGENT = 1_500
"""The organisation grows with the requested size, so any run spans about a working week."""
MIN_AGENTS = 24
MAX_AGENTS = 5_000
_LATE_MIN = 2 * MICROS_PER_MINUTE
_LATE_MAX = 6 * MICROS_PER_HOUR
_RETRY_MIN = 200_000
_RETRY_MAX = 10 * MICROS_PER_MINUTE
_WRITE_BATCH = 4096
_STEP = MICROS_PER_MINUTE
"""The engine generates, orders and delivers the events of one minute at a time."""
_NEVER = 1 << 62
_time_of = itemgetter(0)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate: how many events, from which seed and moment, delivered how."""

    events: int = 100_000
    seed: int = 7
    start: datetime = field(default_factory=lambda: datetime(2026, 11, 2, 8, 0, tzinfo=UTC))
    late_fraction: float = 0.01
    """Share of events delivered with an event time far (2 min to 6 h) behind arrival order."""
    duplicate_fraction: float = 0.005
    """Share of events delivered a second time, 0.2 s to 10 min later (same event_id)."""
    attack_rate: float = 2.0
    """Injected chains (attacks and hard negatives together) per 1,000 events."""

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError("events must not be negative")
        if not 0.0 <= self.late_fraction < 1.0:
            raise ValueError("late_fraction must be in [0, 1)")
        if not 0.0 <= self.duplicate_fraction < 1.0:
            raise ValueError("duplicate_fraction must be in [0, 1)")
        if self.attack_rate < 0:
            raise ValueError("attack_rate must not be negative")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


def agent_count_for(events: int) -> int:
    """How many agents the organisation has for a run of this many events."""
    return max(MIN_AGENTS, min(MAX_AGENTS, events // EVENTS_PER_AGENT))


def _log_uniform(rnd: float, low: int, high: int) -> int:
    return int(low * (high / low) ** rnd)


class _Engine:
    """One run. Iterate run(); the counters hold the statistics afterwards."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.late = 0
        self.duplicates = 0
        self.first_micros: int | None = None
        self.last_micros: int | None = None
        self.time_text = Ids(random.Random(0)).time_text
        self.agents = agent_count_for(config.events)

    def run(self) -> Iterator[list[str] | Label]:
        """Yield lists of event lines in arrival order, each chain's label after its last event."""
        config = self.config
        budget = config.events
        world_rng = random.Random(f"chainsight-world-{config.seed}")
        delivery = random.Random(f"chainsight-delivery-{config.seed}").random
        ids = Ids(world_rng)
        start = to_micros(config.start)
        org = build_organisation(world_rng, ids, self.agents, start)
        world = World(world_rng, ids, org)
        pending = world.pending
        # (next wake-up, agent number, its life): the number breaks ties between equal times.
        wakeups: list[tuple[int, int, Iterator[int]]] = []
        for number, agent in enumerate(org.agents):
            first = start + int(world_rng.random() * 30 * MICROS_PER_MINUTE)
            life = agent_life(world, agent, first)
            wakeups.append((next(life), number, life))
        heapq.heapify(wakeups)
        injector = ChainInjector(world, config.attack_rate, SCENARIO_SPECS)

        late_fraction = config.late_fraction
        duplicate_fraction = config.duplicate_fraction
        late_in = _events_until_next(delivery, late_fraction)
        duplicate_in = _events_until_next(delivery, duplicate_fraction)
        buckets: defaultdict[int, list[Scheduled]] = defaultdict(list)
        delayed: list[tuple[int, int, str]] = []  # (release time, order, line)
        next_release = _NEVER
        order = 0
        committed = 0  # events emitted, held back, or promised by a chain already injected
        chain_pending = 0
        pulled = 0
        next_chain_at = injector.next_gap()
        labels: list[Label] = []
        last_micros = start
        step = start // _STEP
        while committed < budget or chain_pending:
            horizon = (step + 1) * _STEP
            if committed < budget:
                # Generate every session that starts within this step before ordering its events.
                while wakeups[0][0] < horizon:
                    wake, number, life = wakeups[0]
                    world.clock = wake
                    heapq.heapreplace(wakeups, (next(life), number, life))
                    for entry in pending:
                        buckets[entry[0] // _STEP].append(entry)
                    del pending[:]
            bucket = buckets.pop(step, None)
            if bucket:
                bucket.sort(key=_time_of)  # stable: a session's events at one time keep order
                if self.first_micros is None:
                    self.first_micros = bucket[0][0]
                out: list[str] = []
                for t, line, tag in bucket:
                    if t >= next_release:
                        while delayed and delayed[0][0] <= t:
                            out.append(heapq.heappop(delayed)[2])
                        next_release = delayed[0][0] if delayed else _NEVER
                    if tag is None:
                        if committed >= budget:
                            continue  # out of budget: background stops, injected chains finish
                        committed += 1
                    else:
                        chain_pending -= 1
                        if tag.label is not None:
                            labels.append(tag.label)
                    pulled += 1
                    last_micros = t
                    late_in -= 1
                    if late_in:
                        out.append(line)
                        release = t
                    else:
                        late_in = _events_until_next(delivery, late_fraction)
                        self.late += 1
                        order += 1
                        release = t + _log_uniform(delivery(), _LATE_MIN, _LATE_MAX)
                        heapq.heappush(delayed, (release, order, line))
                        next_release = min(next_release, release)
                    duplicate_in -= 1
                    if not duplicate_in:
                        duplicate_in = _events_until_next(delivery, duplicate_fraction)
                        if committed < budget:
                            committed += 1
                            self.duplicates += 1
                            order += 1
                            again = release + _log_uniform(delivery(), _RETRY_MIN, _RETRY_MAX)
                            heapq.heappush(delayed, (again, order, line))
                            next_release = min(next_release, again)
                    if labels:
                        yield out
                        out = []
                        yield from labels
                        labels.clear()
                if out:
                    yield out
            if committed < budget and pulled >= next_chain_at:
                now = horizon - 1  # chains start after every event delivered so far
                rate = pulled / max(1, now - start)
                while pulled >= next_chain_at:
                    next_chain_at += injector.next_gap()
                    for plan in injector.inject(now, budget - committed, rate):
                        committed += len(plan.events)
                        chain_pending += len(plan.events)
                        for entry in plan.events:
                            buckets[entry[0] // _STEP].append(entry)
            step += 1
        self.last_micros = last_micros
        out = []
        while delayed:
            out.append(heapq.heappop(delayed)[2])
        if out:
            yield out


def _events_until_next(rnd: Callable[[], float], fraction: float) -> int:
    """Events to count until the next one that is picked with probability fraction (geometric)."""
    if fraction <= 0.0:
        return _NEVER
    return 1 + int(math.log(1.0 - rnd()) / math.log(1.0 - fraction))


def simulate(config: SimulationConfig) -> Iterator[Event | Label]:
    """Yield events in arrival order, each chain's Label as soon as its last event is generated."""
    loads = orjson.loads
    for item in _Engine(config).run():
        if isinstance(item, Label):
            yield item
        else:
            for line in item:
                yield loads(line)


def iter_events(config: SimulationConfig) -> Iterator[Event]:
    """Yield only the events, in arrival order, as JSON-ready dicts."""
    loads = orjson.loads
    for item in _Engine(config).run():
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
) -> SampleStats:
    """Stream the simulation as JSONL (gzip when a path ends in .gz); return what was written."""
    engine = _Engine(config)
    positive = negative = labels = lines = 0
    with ExitStack() as stack:
        if gc.isenabled():
            # The run allocates millions of short-lived, acyclic dicts; generational collection
            # would only rescan the long-lived scheduler state (about a fifth of the run time).
            gc.disable()
            stack.callback(gc.enable)
        events_file = _open_output(stack, events_out)
        labels_file = _open_output(stack, labels_out) if labels_out is not None else None
        batch: list[str] = []
        for item in engine.run():
            if not isinstance(item, Label):
                batch += item
                if len(batch) >= _WRITE_BATCH:
                    lines += len(batch)
                    batch.append("")  # for the newline after the last line
                    events_file.write("\n".join(batch).encode())
                    batch.clear()
                continue
            labels += 1
            if item.negative:
                negative += 1
            else:
                positive += 1
            if labels_file is not None:
                labels_file.write(orjson.dumps(item.to_json(), option=orjson.OPT_APPEND_NEWLINE))
        if batch:
            lines += len(batch)
            batch.append("")
            events_file.write("\n".join(batch).encode())
    first, last = engine.first_micros, engine.last_micros
    return SampleStats(
        events=lines,
        duplicates=engine.duplicates,
        late=engine.late,
        labels=labels,
        positive_chains=positive,
        negative_chains=negative,
        agents=engine.agents,
        first_time=engine.time_text(first) if first is not None else None,
        last_time=engine.time_text(last) if last is not None else None,
    )
