"""The simulation engine: merges every agent's activity and the injected chains into one stream.

Events are produced in event-time order by a heap of running scripts (one per agent, plus
delegated sub-tasks), then delivered in *arrival* order: a configurable fraction is held back and
delivered late, and a fraction is delivered a second time later (a client retry with the same
event_id). Everything is drawn from random.Random instances seeded from the config, so a seed
always gives the same bytes; nothing is buffered beyond what is in flight, so memory stays flat
however many events are asked for.
"""

from __future__ import annotations

import gc
import gzip
import heapq
import random
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, cast

import orjson

from .activity import agent_life
from .chains import ChainInjector
from .ids import MICROS_PER_HOUR, MICROS_PER_MINUTE, Ids, to_micros
from .org import build_organisation
from .records import Event, Label, SampleStats
from .scenarios import SCENARIO_SPECS
from .session import Step, World

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

    def run(self) -> Iterator[str | Label]:
        config = self.config
        budget = config.events
        world_rng = random.Random(f"chainsight-world-{config.seed}")
        delivery = random.Random(f"chainsight-delivery-{config.seed}").random
        ids = Ids(world_rng)
        start = to_micros(config.start)
        org = build_organisation(world_rng, ids, self.agents, start)

        heap: list[tuple[int, int, str | None, Iterator[Step] | None]] = []
        push = heapq.heappush
        pop = heapq.heappop
        order = 0

        def spawn(script: Iterator[Step]) -> None:
            nonlocal order
            first = next(script, None)
            if first is not None:
                order += 1
                push(heap, (first[0], order, first[1], script))

        world = World(world_rng, ids, org, spawn)
        for agent in org.agents:
            spawn(
                agent_life(world, agent, start + int(world_rng.random() * 30 * MICROS_PER_MINUTE))
            )
        injector = ChainInjector(world, config.attack_rate, SCENARIO_SPECS)

        late_fraction = config.late_fraction
        duplicate_fraction = config.duplicate_fraction
        delayed: list[tuple[int, int, str]] = []
        labels_due: dict[int, Label] = {}  # heap order of a chain's last event -> its label
        committed = 0  # events emitted, held back, or promised by a chain already scheduled
        chain_pending = 0
        pulled = 0
        next_chain_at = injector.next_gap()
        last_micros = start

        while heap:
            t, popped, event, script = pop(heap)
            if script is None:
                chain_pending -= 1
                assert event is not None  # chains never schedule wake-ups
            else:
                if committed >= budget:
                    # Out of budget: background stops, scheduled chains still finish.
                    if chain_pending == 0:
                        break
                    continue
                following = next(script, None)
                if following is not None:
                    order += 1
                    push(heap, (following[0], order, following[1], script))
                if event is None:
                    continue
                committed += 1
            pulled += 1
            last_micros = t
            if pulled == 1:
                self.first_micros = t
            while delayed and delayed[0][0] <= t:
                yield pop(delayed)[2]
            if late_fraction and delivery() < late_fraction:
                self.late += 1
                order += 1
                release = t + _log_uniform(delivery(), _LATE_MIN, _LATE_MAX)
                push(delayed, (release, order, event))
            else:
                release = t
                yield event
            if duplicate_fraction and delivery() < duplicate_fraction and committed < budget:
                committed += 1
                self.duplicates += 1
                order += 1
                again = release + _log_uniform(delivery(), _RETRY_MIN, _RETRY_MAX)
                push(delayed, (again, order, event))
            if script is None:
                label = labels_due.pop(popped, None)
                if label is not None:
                    yield label
            if pulled >= next_chain_at:
                next_chain_at = pulled + injector.next_gap()
                rate = pulled / max(1, t - start)
                for plan in injector.inject(t, budget - committed, rate):
                    committed += len(plan.events)
                    chain_pending += len(plan.events)
                    for when, chain_event in plan.events:
                        order += 1
                        push(heap, (when, order, chain_event, None))
                    labels_due[order] = plan.label
        self.last_micros = last_micros
        while delayed:
            yield pop(delayed)[2]


def simulate(config: SimulationConfig) -> Iterator[Event | Label]:
    """Yield events in arrival order, each chain's Label as soon as its last event is generated."""
    loads = orjson.loads
    for item in _Engine(config).run():
        if isinstance(item, Label):
            yield item
        else:
            yield loads(item)


def iter_events(config: SimulationConfig) -> Iterator[Event]:
    """Yield only the events, in arrival order, as JSON-ready dicts."""
    loads = orjson.loads
    for item in _Engine(config).run():
        if type(item) is str:
            yield loads(item)


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
        append = batch.append
        for item in engine.run():
            if type(item) is str:
                append(item)
                if len(batch) >= _WRITE_BATCH:
                    lines += len(batch)
                    append("")  # for the newline after the last line
                    events_file.write("\n".join(batch).encode())
                    batch.clear()
                continue
            assert isinstance(item, Label)
            labels += 1
            if item.negative:
                negative += 1
            else:
                positive += 1
            if labels_file is not None:
                labels_file.write(orjson.dumps(item.to_json(), option=orjson.OPT_APPEND_NEWLINE))
        if batch:
            lines += len(batch)
            append("")
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
